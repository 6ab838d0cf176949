#!/usr/bin/env bash
# What the online scrub costs downloads (issue 17: at most 5% of their throughput at the
# default rate). Keeps a store of FILES files of SIZE bytes (blob files, not inline) in WORK
# (made on the first run), then starts the librarian binary BIN over it alternately with the
# scrub off (`scrub_bytes_per_sec = 0`) and on at its default rate (16 MiB/s), ROUNDS times
# each in the order off, on, on, off, ..., and measures wrk's download throughput (random
# files of the set, 2 threads, 8 connections, D seconds after a 2 s warm-up) in each phase.
# With the scrub on, the period is 1 s so that pass follows pass and the scrub reads at its
# rate through the whole phase (the default period, a week, would leave it idle after one
# pass); each "on" phase prints the bytes the scrub read meanwhile (`/metrics`), to show it
# ran, and the server's CPU time per GiB downloaded. Prints each phase and the ratio of the
# medians. RATE=N sets another scrub rate (bytes per second) for the "on" phases. Everything listens on 127.0.0.1 and
# stops by itself; delete WORK afterwards (about FILES x SIZE bytes).
#
#   cargo build --release -p servers --bin librarian && benches/servers/scrub-downloads.sh
#   ROUNDS=6 D=15 FILES=512 benches/servers/scrub-downloads.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/librarian}"
WORK="${WORK:-/tmp/librarian-scrub-downloads}"
FILES="${FILES:-256}"
SIZE="${SIZE:-1048576}"
ROUNDS="${ROUNDS:-4}"
D="${D:-10}"
PORT="${PORT:-28191}"
mkdir -p "$WORK"

cat > "$WORK/off.toml" <<TOML
[store]
scrub_bytes_per_sec = 0
TOML
{ echo "[store]"; echo "scrub_period_secs = 1"
  [ -n "${RATE:-}" ] && echo "scrub_bytes_per_sec = $RATE"; } > "$WORK/on.toml"

server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT
start_server() { # $1: off or on
    RUST_LOG=warn timeout 600 "$BIN" --config "$WORK/$1.toml" --data-dir "$WORK/data" \
        serve --dev --listen "127.0.0.1:$PORT" 2>>"$WORK/librarian.log" &
    server_pid=$!
    for _ in $(seq 200); do
        curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "the librarian did not start: see $WORK/librarian.log" >&2
    exit 1
}
scrubbed() { curl -fsS "http://127.0.0.1:$PORT/metrics" | awk '/^librarian_scrub_checked_bytes_total / {print $2}'; }

if [ ! -f "$WORK/paths" ]; then
    start_server off
    python3 - "$PORT" "$WORK" "$FILES" "$SIZE" <<'PY'
import json, os, sys, urllib.request
port, work, files, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(f"{work}/paths", "w") as out:
    for i in range(files):
        body = os.urandom(size)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/buckets/bench/files?filename=f{i:05d}", data=body,
            headers={"Content-Type": "application/octet-stream"}, method="POST")
        out.write(json.load(urllib.request.urlopen(request))["url"] + "\n")
PY
    stop_server
fi
cat > "$WORK/download.lua" <<'LUA'
function init(args)
    paths = {}
    for line in io.lines(args[1]) do paths[#paths + 1] = line end
    math.randomseed(os.time() + #args[1])
end
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
LUA

echo "# $(date -u +%FT%TZ) load average $(cut -d' ' -f1-3 /proc/loadavg); $FILES files of $SIZE bytes; $BIN"
declare -A rates
order=""
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="$order off on"; else order="$order on off"; fi
done
for side in $order; do
    start_server "$side"
    wrk -t 2 -c 8 -d 2s -s "$WORK/download.lua" "http://127.0.0.1:$PORT" -- "$WORK/paths" >/dev/null
    before=$(scrubbed)
    ticks=$(awk '{print $14 + $15}' "/proc/$(pgrep -P "$server_pid")/stat")
    out=$(wrk -t 2 -c 8 -d "${D}s" -s "$WORK/download.lua" "http://127.0.0.1:$PORT" -- "$WORK/paths")
    after=$(scrubbed)
    ticks=$(( $(awk '{print $14 + $15}' "/proc/$(pgrep -P "$server_pid")/stat") - ticks ))
    stop_server
    if echo "$out" | grep -q "Non-2xx"; then echo "failed downloads: $out" >&2; exit 1; fi
    requests=$(echo "$out" | grep -o "[0-9]* requests in" | awk '{print $1}')
    mib=$(python3 -c "print(f'{$requests * $SIZE / $D / 1048576:.1f}')")
    rates[$side]="${rates[$side]:-} $mib"
    python3 -c "print(f'scrub $side: {$mib} MiB/s of downloads ({$requests} requests in ${D} s); scrub read {(${after:-0} - ${before:-0}) / $D / 1048576:.1f} MiB/s meanwhile; server CPU {$ticks / $(getconf CLK_TCK) / ($requests * $SIZE / 2**30):.2f} s per GiB')"
done
python3 - "${rates[off]}" "${rates[on]}" <<'PY'
import statistics, sys
off = [float(x) for x in sys.argv[1].split()]
on = [float(x) for x in sys.argv[2].split()]
m_off, m_on = statistics.median(off), statistics.median(on)
print(f"medians: scrub off {m_off:.1f} MiB/s, on {m_on:.1f} MiB/s: the scrub costs {100 * (1 - m_on / m_off):.1f}% "
      f"({len(off)} phases each; means {statistics.mean(off):.1f} vs {statistics.mean(on):.1f})")
PY
echo "# load average $(cut -d' ' -f1-3 /proc/loadavg)"
