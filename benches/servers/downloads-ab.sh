#!/usr/bin/env bash
# A/B harness for the librarian's small downloads (the step table of RESULTS.md): keeps one
# store of 10,000 4 KiB files in WORK (made on the first run, with the same files under nginx),
# starts the librarian binary BIN over it, and alternates wrk runs against nginx and the
# librarian (SIDES), printing req/s and each server's CPU time per request. With `perf` as
# the argument it also records a profile of the librarian (WORK/perf.data; the VM has no
# hardware counters, hence cpu-clock). Everything listens on 127.0.0.1 and stops by itself.
#
#   benches/servers/downloads-ab.sh
#   BIN=/tmp/librarian-before SIDES="librarian" D=6 benches/servers/downloads-ab.sh
#   SIDES="librarian" benches/servers/downloads-ab.sh perf
set -euo pipefail

cd "$(dirname "$0")/../.."
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/librarian}"
WORK="${WORK:-/tmp/librarian-downloads-ab}"
THREADS="${THREADS:-2}"
D="${D:-8}"
SIDES="${SIDES:-nginx librarian nginx librarian}"
LPORT="${LPORT:-28181}"
NPORT="${NPORT:-28180}"
mkdir -p "$WORK"
chmod 755 "$WORK" # nginx workers run as an unprivileged user

TOKIO_WORKER_THREADS="$THREADS" RUST_LOG=warn timeout 600 "$BIN" --data-dir "$WORK/data" \
    serve --dev --listen "127.0.0.1:$LPORT" --max-concurrency 100000 2>"$WORK/librarian.log" &
timeout_pid=$!
nginx_pid=""
cleanup() {
    kill -TERM "$timeout_pid" 2>/dev/null && wait "$timeout_pid" 2>/dev/null || true
    [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$LPORT/health" >/dev/null 2>&1 && break; sleep 0.1; done
librarian_pid=$(pgrep -P "$timeout_pid")

if [ ! -f "$WORK/librarian.paths" ]; then
    python3 - "$LPORT" "$WORK" <<'PY'
import os, sys, urllib.request
port, work = sys.argv[1], sys.argv[2]
os.makedirs(f"{work}/www", exist_ok=True)
with open(f"{work}/librarian.paths", "w") as lib, open(f"{work}/nginx.paths", "w") as ngx:
    for i in range(10000):
        name = f"f{i:05d}"
        body = (name.ljust(24) + "u" * (4096 - 24)).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/buckets/bench/files?filename={name}", data=body,
            headers={"Content-Type": "application/octet-stream"}, method="POST")
        url = __import__("json").load(urllib.request.urlopen(request))["url"]
        lib.write(url + "\n")
        with open(f"{work}/www/{name}", "wb") as f:
            f.write(body)
        ngx.write(f"/{name}\n")
PY
fi
cat > "$WORK/download.lua" <<'LUA'
function init(args)
    paths = {}
    for line in io.lines(args[1]) do paths[#paths + 1] = line end
    math.randomseed(os.time() + #args[1])
end
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
LUA
cat > "$WORK/nginx.conf" <<CONF
worker_processes $THREADS;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    open_file_cache max=20000 inactive=60s;
    server { listen 127.0.0.1:$NPORT; root $WORK/www; }
}
CONF
timeout 600 nginx -c "$WORK/nginx.conf" -p "$WORK" &
nginx_pid=$!
sleep 0.5
nginx_master=$(pgrep -P "$nginx_pid")

cpu_ticks() { local total=0 p; for p in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$total"; }
# Warm the librarian's hot-file cache.
wrk -t "$THREADS" -c 32 -d 2s -s "$WORK/download.lua" "http://127.0.0.1:$LPORT" -- "$WORK/librarian.paths" >/dev/null
echo "# $(date -u +%FT%TZ) load average $(cut -d' ' -f1-3 /proc/loadavg); $BIN"
for side in $SIDES; do
    port=$([ "$side" = nginx ] && echo "$NPORT" || echo "$LPORT")
    pids=$([ "$side" = nginx ] && echo "$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')" || echo "$librarian_pid")
    perf_pid=""
    if [ "${1:-}" = perf ] && [ "$side" = librarian ]; then
        perf record -e cpu-clock -F 1999 -g -p "$librarian_pid" -o "$WORK/perf.data" -- sleep $((D - 1)) >/dev/null 2>&1 &
        perf_pid=$!
    fi
    before=$(cpu_ticks $pids)
    out=$(wrk -t "$THREADS" -c 32 -d "${D}s" -s "$WORK/download.lua" "http://127.0.0.1:$port" -- "$WORK/$side.paths")
    ticks=$(( $(cpu_ticks $pids) - before ))
    requests=$(echo "$out" | grep -o "[0-9]* requests in" | awk '{print $1}')
    rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    python3 -c "print(f'$side: {float($rate):,.0f} req/s, server CPU {$ticks / $(getconf CLK_TCK) / $requests * 1e6:.2f} us per request')"
    [ -n "$perf_pid" ] && wait "$perf_pid"
done
echo "# load average $(cut -d' ' -f1-3 /proc/loadavg)"
