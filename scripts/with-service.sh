#!/usr/bin/env bash
# Runs a command with a service started for it by one of this directory's `start|stop DIR`
# scripts (swift-saio.sh, seaweedfs.sh):
#
#   scripts/with-service.sh seaweedfs.sh cargo test -p objectstore
#
# Starts `SCRIPT start DIR` in a temporary directory, exports what it writes to DIR/env, runs
# the command, and always stops the service and removes the directory, whatever the
# command's outcome. Exits with the command's status.
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: with-service.sh SCRIPT COMMAND [ARG...]" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
service="$here/$1"
shift
dir=$(mktemp -d "${TMPDIR:-/tmp}/$(basename "$service" .sh).XXXXXX")
cleanup() {
    "$service" stop "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$service" start "$dir"
set -a
# shellcheck disable=SC1091
source "$dir/env"
set +a
status=0
"$@" || status=$?
exit "$status"
