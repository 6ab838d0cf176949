#!/usr/bin/env bash
# Durable 4 KiB uploads to the librarian from 64 connections (the upload part of
# librarian.sh), ROUNDS times in a row, printing the rate and the server's CPU time per upload
# (user + system of all its threads, from /proc/PID/stat) beside the client's (wrk shares
# the two cores: its CPU per upload bounds the rate here too), and the server's thread switches
# per upload (`perf stat -e context-switches` over all its threads, when perf is there: a
# switch costs a few microseconds of kernel time, and they were half of an upload's CPU in the
# issue-18 profile). With PERF=1 it also records a
# profile of the server during one more round into $PERF_OUT (default /tmp/uploads-perf.data).
# Listens on 127.0.0.1 only; every load is bounded in time.
#
#   benches/servers/uploads-cpu.sh
#   ROUNDS=5 DURATION=10 PERF=1 benches/servers/uploads-cpu.sh
#   LIBRARIAN=/path/to/an/older/librarian benches/servers/uploads-cpu.sh
#   SIZE=1024 benches/servers/uploads-cpu.sh     (another body size in bytes; default 4096)
set -euo pipefail

cd "$(dirname "$0")/../.."
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-8}"
THREADS="${THREADS:-2}"
LPORT="${LPORT:-28191}"
PERF="${PERF:-0}"
SIZE="${SIZE:-4096}"
PERF_OUT="${PERF_OUT:-/tmp/uploads-perf.data}"
BENCH_DIR="${BENCH_DIR:-$HOME/.cache/lpstore/bench}"
mkdir -p "$BENCH_DIR"
if [ "$(stat -f -c %T "$BENCH_DIR")" = tmpfs ]; then
    echo "BENCH_DIR=$BENCH_DIR is on tmpfs: durable figures need a real disk (set BENCH_DIR)" >&2
    exit 1
fi
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time; }

# LIBRARIAN=path runs a binary built before (to alternate two builds in one session).
if [ -z "${LIBRARIAN:-}" ]; then
    cargo build --release -p servers --bin librarian
    LIBRARIAN="${CARGO_TARGET_DIR:-target}/release/librarian"
fi
work="$(mktemp -d)"
data="$(mktemp -d "$BENCH_DIR/librarian.XXXXXX")"
pid=""
cleanup() {
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$work" "$data"
}
trap cleanup EXIT

TOKIO_WORKER_THREADS="$THREADS" RUST_LOG=warn "$LIBRARIAN" --data-dir "$data" --backend rocksdb \
    serve --dev --listen "127.0.0.1:$LPORT" --max-concurrency 100000 &
pid=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$LPORT/health" >/dev/null 2>&1 && break; sleep 0.1; done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rounds="$ROUNDS"
[ "$PERF" = 1 ] && rounds=$((ROUNDS + 1))
echo "# $(date -u +%FT%TZ) $(nproc) cores; librarian (rocksdb) with $THREADS runtime threads; $SIZE-byte uploads; data in $data"
for round in $(seq "$rounds"); do
    if [ "$PERF" = 1 ] && [ "$round" = "$rounds" ]; then
        echo "## profiled round (perf record -g, into $PERF_OUT)"
        perf record -F 999 -g -p "$pid" -o "$PERF_OUT" -- sleep $((DURATION - 1)) >/dev/null 2>&1 &
        perf_pid=$!
    fi
    before=$(cpu_ticks "$pid")
    echo "## round $round: load average $(cut -d' ' -f1-3 /proc/loadavg)"
    switches_pid=""
    if [ -z "${perf_pid:-}" ] && command -v perf >/dev/null 2>&1; then
        perf stat -x, -e context-switches -p "$pid" -o "$work/switches" -- sleep "$DURATION" 2>/dev/null &
        switches_pid=$!
    fi
    out=$({ /usr/bin/time -f "client-cpu %U %S" wrk -t "$THREADS" -c 64 -d "${DURATION}s" -s benches/servers/upload-4k.lua "http://127.0.0.1:$LPORT" -- "$SIZE"; } 2>&1)
    ticks=$(( $(cpu_ticks "$pid") - before ))
    echo "$out" | grep -E "Requests/sec|requests in|Non-2xx" || true
    requests=$(echo "$out" | grep -oE "^ +[0-9]+ requests" | grep -oE "[0-9]+")
    client=$(echo "$out" | awk '/^client-cpu/ {print $2 + $3}')
    python3 -c "print(f'server CPU {$ticks / $(getconf CLK_TCK) / $requests * 1e6:.1f} us per upload; the client (wrk) {$client / $requests * 1e6:.1f} us')"
    if [ -n "$switches_pid" ]; then
        wait "$switches_pid" || true
        # perf stat's window is the same $DURATION as wrk's, started a moment before it.
        switches=$(grep -E ",context-switches" "$work/switches" | cut -d, -f1)
        [ -n "$switches" ] && python3 -c "print(f'server thread switches {$switches / $requests:.2f} per upload ($switches in the round)')"
    fi
done
[ -n "${perf_pid:-}" ] && wait "$perf_pid" || true
