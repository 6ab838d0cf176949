#!/usr/bin/env bash
# Runs a command with a real single-node Swift (native API + S3 API) started for it:
#
#   scripts/with-swift.sh cargo test -p objectstore
#
# scripts/swift-saio.sh in a temporary directory (port $SWIFT_PORT, default 18080), its
# environment exported (SWIFT_AUTH_URL, SWIFT_USER, SWIFT_KEY, S3_ENDPOINT, S3_ACCESS_KEY,
# S3_SECRET_KEY, S3_REGION), always stopped afterwards; see with-service.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/with-service.sh" swift-saio.sh "$@"
