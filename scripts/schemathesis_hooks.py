"""Schemathesis hooks for scripts/schemathesis.sh: the tus PATCH body's media type.

tus 1.0 sends appended bytes as `application/offset+octet-stream`, which schemathesis has no
serializer for; they are plain bytes, sent as its `application/octet-stream` ones are.
"""

import schemathesis
from schemathesis.transport.serialization import serialize_binary


@schemathesis.serializer("application/offset+octet-stream")
def offset_octet_stream(ctx, value):
    return {"data": serialize_binary(value)}
