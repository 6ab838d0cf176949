#!/usr/bin/env bash
# The change feed's figures of issue 15, from real server binaries (release build) on loopback:
#   1. the time from a write's acknowledgement to a long-polling watcher (wait=30) and to an
#      event-stream reader seeing its event: p50/p99 over WRITES writes, one at a time;
#   2. the server's VmRSS before, with CONNS long polls and with CONNS event streams open;
#   3. the librarian's write rate (WRITERS concurrent 64-byte uploads for RATE_SECS) with the
#      feed on and off (the hidden --bench-no-change-feed flag), ROUNDS alternating rounds.
#      The directory's on/off comparison is the criterion teams bench (record_changes).
# Each server's data goes under BENCH_DIR (a real disk: the writes are durable). Everything
# listens on 127.0.0.1 only; every wait is bounded. Figures go to stdout with the load average.
#
#   benches/servers/feed-watch.sh
#   SERVERS=librarian WRITES=1000 CONNS=1000 RATE_SECS=10 ROUNDS=2 benches/servers/feed-watch.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
SERVERS="${SERVERS:-librarian directory}"
WRITES="${WRITES:-1000}"
CONNS="${CONNS:-1000}"
RATE_SECS="${RATE_SECS:-10}"
WRITERS="${WRITERS:-16}"
ROUNDS="${ROUNDS:-2}"
THREADS="${THREADS:-2}"
PORT="${PORT:-28090}"
BACKEND="${BACKEND:-rocksdb}"
BENCH_DIR="${BENCH_DIR:-$HOME/.cache/lpstore/bench}"
mkdir -p "$BENCH_DIR"
if [ "$(stat -f -c %T "$BENCH_DIR")" = tmpfs ]; then
    echo "BENCH_DIR=$BENCH_DIR is on tmpfs: durable figures need a real disk (set BENCH_DIR)" >&2
    exit 1
fi
# Both ends hold CONNS sockets (and the server its engine's files).
ulimit -n "$(( CONNS * 2 + 4096 ))"

if [ -z "${SKIP_BUILD:-}" ]; then  # SKIP_BUILD=1 runs the binaries already built
    cargo build --release -p servers --bin librarian --bin directory
    cargo build --release -p benches --bin feed_watch
fi
target="${CARGO_TARGET_DIR:-target}/release"
data="$(mktemp -d "$BENCH_DIR/feed.XXXXXX")"
server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
cleanup() { stop_server; rm -rf "$data"; }
trap cleanup EXIT

# start SERVER DIR [FLAGS...]: a fresh data directory per run.
start() {
    local server="$1" dir="$2"
    shift 2
    TOKIO_WORKER_THREADS="$THREADS" RUST_LOG=warn "$target/$server" --data-dir "$dir" --backend "$BACKEND" "$@" \
        serve --dev --listen "127.0.0.1:$PORT" --max-concurrency 100000 &
    server_pid=$!
    for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return; sleep 0.1; done
    echo "$server did not start" >&2
    exit 1
}
load() { cut -d' ' -f1-3 /proc/loadavg; }

echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores, $THREADS runtime threads, $BACKEND; data in $data ($(stat -f -c %T "$data"))"
for server in $SERVERS; do
    echo "# $server: latency and memory (load average $(load))"
    start "$server" "$data/$server"
    "$target/feed_watch" --server "$server" --url "http://127.0.0.1:$PORT" --pid "$server_pid" \
        --writes "$WRITES" --conns "$CONNS" --rate-secs 0
    stop_server
    echo "# (load average $(load))"
done

[ "$RATE_SECS" -gt 0 ] || exit 0
for round in $(seq "$ROUNDS"); do
    for feed in on off; do
        flags=()
        [ "$feed" = off ] && flags=(--bench-no-change-feed)
        echo "# librarian rate, round $round, feed $feed (load average $(load))"
        start librarian "$data/rate-$round-$feed" "${flags[@]}"
        "$target/feed_watch" --server librarian --url "http://127.0.0.1:$PORT" --pid "$server_pid" \
            --only rate --rate-secs "$RATE_SECS" --writers "$WRITERS"
        stop_server
    done
done
