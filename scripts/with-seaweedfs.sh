#!/usr/bin/env bash
# Runs a command with a real single-node SeaweedFS S3 gateway started for it:
#
#   scripts/with-seaweedfs.sh cargo test -p objectstore
#
# Starts scripts/seaweedfs.sh in a temporary directory (ports from $SEAWEEDFS_PORT, default
# 18380), exports its environment (SEAWEEDFS_S3_ENDPOINT, SEAWEEDFS_S3_ACCESS_KEY,
# SEAWEEDFS_S3_SECRET_KEY, SEAWEEDFS_S3_REGION), runs the command, and always stops SeaweedFS
# and removes the directory, whatever the command's outcome. Exits with the command's status.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: with-seaweedfs.sh COMMAND [ARG...]" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/seaweedfs.XXXXXX")
cleanup() {
    "$here/seaweedfs.sh" stop "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$here/seaweedfs.sh" start "$dir"
# shellcheck disable=SC1091
source "$dir/env"
status=0
"$@" || status=$?
exit "$status"
