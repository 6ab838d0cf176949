#!/usr/bin/env bash
# Runs a command with a real single-node Swift (native API + S3 API) started for it:
#
#   scripts/with-swift.sh cargo test -p objectstore
#
# Starts scripts/swift-saio.sh in a temporary directory (port $SWIFT_PORT, default 18080),
# exports its environment (SWIFT_AUTH_URL, SWIFT_USER, SWIFT_KEY, S3_ENDPOINT, S3_ACCESS_KEY,
# S3_SECRET_KEY, S3_REGION, and SWIFT_SAIO_DIR), runs the command, and always stops Swift and
# removes the directory, whatever the command's outcome. Exits with the command's status.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: with-swift.sh COMMAND [ARG...]" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/swift-saio.XXXXXX")
cleanup() {
    "$here/swift-saio.sh" stop "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$here/swift-saio.sh" start "$dir"
# shellcheck disable=SC1091
source "$dir/env"
export SWIFT_SAIO_DIR="$dir"
status=0
"$@" || status=$?
exit "$status"
