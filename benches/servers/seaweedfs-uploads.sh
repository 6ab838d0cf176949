#!/usr/bin/env bash
# Small uploads beside SeaweedFS's own benchmark, in one run (issue 18, part 1: "SeaweedFS
# publishes about 15,700 1-KiB writes per second on a laptop; be ahead of that here"). Each
# round runs, one after the other on the same machine:
#   - `weed benchmark -writeOnly -c 64 -size 1024` (SeaweedFS's own tool and the source of
#     its published figure: its Go client asks the master for a file id, then posts the body
#     to the volume server) against a single-node SeaweedFS on loopback with its defaults
#     (30,000 MB volumes), which acknowledge a write before it reaches the disk;
#   - the same with `-fsync` (the volume server syncs each write before answering);
#   - the librarian's durable 1 KiB uploads from 64 connections (`uploads-cpu.sh` with
#     SIZE=1024: wrk posting distinct bodies, each acknowledged after its group fsync).
# SeaweedFS pads each body with 0-63 random bytes; the librarian's are 1,024 bytes.
# Listens on 127.0.0.1 only; every load stops by itself (a count, or a duration, under
# `timeout`). Data on the real disk under BENCH_DIR.
#
#   benches/servers/seaweedfs-uploads.sh
#   ROUNDS=3 N=40000 FSYNC_N=10000 LIBRARIAN=/path/to/librarian benches/servers/seaweedfs-uploads.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
ROUNDS="${ROUNDS:-3}"
N="${N:-40000}"
FSYNC_N="${FSYNC_N:-10000}"
DURATION="${DURATION:-8}"
BENCH_DIR="${BENCH_DIR:-$HOME/.cache/lpstore/bench}"
export SEAWEEDFS_PORT="${SEAWEEDFS_PORT:-28380}" SEAWEEDFS_VOLUME_MB=30000
mkdir -p "$BENCH_DIR"
weed_dir="$(mktemp -d "$BENCH_DIR/seaweedfs.XXXXXX")"
cleanup() {
    scripts/seaweedfs.sh stop "$weed_dir" || true
    rm -rf "$weed_dir"
}
trap cleanup EXIT
if [ -z "${LIBRARIAN:-}" ]; then
    cargo build --release -p servers --bin librarian
    export LIBRARIAN="${CARGO_TARGET_DIR:-target}/release/librarian"
fi
scripts/seaweedfs.sh start "$weed_dir" >/dev/null
# shellcheck disable=SC1091
source "$weed_dir/env"

# Prints SeaweedFS's rate for COUNT writes, with the benchmark's extra flags.
seaweed_round() {
    local count=$1 label=$2
    shift 2
    local out
    out=$(timeout 300 "$SEAWEEDFS_WEED" benchmark -master="127.0.0.1:$SEAWEEDFS_PORT" -c=64 -n="$count" \
        -size=1024 -writeOnly -list="$weed_dir/list.txt" "$@" 2>&1)
    echo "$out" | grep -E "Failed requests|Requests per second" | sed "s/^/$label: /"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; SeaweedFS $("$SEAWEEDFS_WEED" version 2>/dev/null | head -n 1) (master + volume server) and $LIBRARIAN; data under $BENCH_DIR"
for round in $(seq "$ROUNDS"); do
    echo "## round $round: load average $(cut -d' ' -f1-3 /proc/loadavg)"
    seaweed_round "$N" "seaweedfs, acknowledged before the disk, $N writes"
    seaweed_round "$FSYNC_N" "seaweedfs -fsync, $FSYNC_N writes" -fsync
    ROUNDS=1 DURATION="$DURATION" SIZE=1024 benches/servers/uploads-cpu.sh |
        grep -E "Requests/sec|Non-2xx|server CPU" | sed "s/^/librarian, durable, ${DURATION} s: /"
done
