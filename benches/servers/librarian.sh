#!/usr/bin/env bash
# The librarian's performance figures of issue 6, side by side with nginx in one run:
#   1. small uploads: 4 KiB distinct bodies from 64 connections (wrk), durable;
#   2. small downloads: 4 KiB files, random among 10,000, 32 connections (wrk), against nginx
#      serving the same 10,000 files from a directory with as many workers as the
#      librarian has runtime threads;
#   3. a large download: one 256 MiB file to curl and to wrk (1 connection), both servers;
#   4. memory: UPLOADS concurrent uploads of UPLOAD_MIB MiB each; the librarian's peak RSS.
# Installs wrk and nginx with apt-get when missing. Everything listens on 127.0.0.1 only and
# every load is bounded in time. Figures go to stdout; keep them with the command line.
#
# The librarian's data (blob files and its engine: what the durable uploads fsync) goes under
# BENCH_DIR (default: the project's cache, ~/.cache/lpstore/bench), which must be on a real
# disk: the script refuses tmpfs, where an fsync costs nothing and the figures would measure
# memory. nginx's copies of the files and the scripts stay in a temporary directory (nginx's
# workers must be able to read them; both servers answer the downloads from the page cache).
#
#   benches/servers/librarian.sh
#   THREADS=2 DURATION=10 ROUNDS=2 UPLOADS=200 UPLOAD_MIB=100 benches/servers/librarian.sh
#   BENCH_DIR=/srv/bench benches/servers/librarian.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
THREADS="${THREADS:-2}"
DURATION="${DURATION:-10}"
FILES="${FILES:-10000}"
UPLOADS="${UPLOADS:-200}"
UPLOAD_MIB="${UPLOAD_MIB:-100}"
LARGE_MIB="${LARGE_MIB:-256}"
LPORT="${LPORT:-28081}"
ROUNDS="${ROUNDS:-2}"
BACKEND="${BACKEND:-rocksdb}"   # the librarian's metadata engine: rocksdb, sled or memory
NPORT="${NPORT:-28080}"
BENCH_DIR="${BENCH_DIR:-$HOME/.cache/lpstore/bench}"
mkdir -p "$BENCH_DIR"
if [ "$(stat -f -c %T "$BENCH_DIR")" = tmpfs ]; then
    echo "BENCH_DIR=$BENCH_DIR is on tmpfs: durable figures need a real disk (set BENCH_DIR)" >&2
    exit 1
fi

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2"; }; }
need wrk wrk
need nginx nginx-light || need nginx nginx
need python3 python3

cargo build --release -p servers --bin librarian
target="${CARGO_TARGET_DIR:-target}/release"
work="$(mktemp -d)"
chmod 755 "$work"  # nginx workers run as an unprivileged user
data="$(mktemp -d "$BENCH_DIR/librarian.XXXXXX")"
librarian_pid=""
nginx_pid=""
cleanup() {
    [ -n "$librarian_pid" ] && kill -TERM "$librarian_pid" 2>/dev/null && wait "$librarian_pid" 2>/dev/null || true
    [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null || true
    rm -rf "$work" "$data"
}
trap cleanup EXIT
# Clock ticks of user + system time used so far by the given processes (all their threads).
cpu_ticks() { local total=0 p; for p in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$total"; }

echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores; librarian ($BACKEND) with $THREADS runtime threads, nginx with $THREADS workers"
echo "# librarian data in $data ($(stat -f -c %T "$data"), $(df --output=source "$data" | tail -1))"

TOKIO_WORKER_THREADS="$THREADS" RUST_LOG=warn "$target/librarian" --data-dir "$data" --backend "$BACKEND" \
    serve --dev --listen "127.0.0.1:$LPORT" --max-concurrency 100000 &
librarian_pid=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$LPORT/health" >/dev/null 2>&1 && break; sleep 0.1; done

# 1. Small uploads.
echo "## small uploads: 4 KiB, 64 connections, ${DURATION}s"
wrk -t "$THREADS" -c 64 -d "${DURATION}s" -s benches/servers/upload-4k.lua "http://127.0.0.1:$LPORT" | grep -E "Requests/sec|Latency|Non-2xx|requests in"

# 2. Small downloads: the first $FILES uploaded files, and the same bytes under nginx.
python3 - "$LPORT" "$FILES" "$work" <<'PY'
import json, os, sys, urllib.request
port, want, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
paths, after = [], None
os.makedirs(f"{work}/www", exist_ok=True)
while len(paths) < want:
    url = f"http://127.0.0.1:{port}/buckets/bench/files?limit=1000" + (f"&after={after}" if after else "")
    page = json.load(urllib.request.urlopen(url))
    paths += [f["url"] for f in page["files"]]
    after = page["next"]
    if after is None:
        break
paths = paths[:want]
if len(paths) < want:
    sys.exit(f"only {len(paths)} files were uploaded; raise DURATION")
with open(f"{work}/librarian.paths", "w") as out:
    out.write("\n".join(paths) + "\n")
with open(f"{work}/nginx.paths", "w") as out:
    for i, p in enumerate(paths):
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}{p}").read() if i < 3 else None
        name = f"/f{i}"
        with open(f"{work}/www{name}", "wb") as f:
            f.write(body if body is not None else (p.split("/")[-1].ljust(24) + "u" * (4096 - 24)).encode())
        out.write(name + "\n")
PY
cat > "$work/nginx.conf" <<CONF
worker_processes $THREADS;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    open_file_cache max=20000 inactive=60s;
    server { listen 127.0.0.1:$NPORT; root $work/www; }
}
CONF
nginx -c "$work/nginx.conf" -p "$work" &
nginx_pid=$!
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$NPORT/f0" 2>/dev/null && break; sleep 0.1; done
curl -fsS -o /dev/null "http://127.0.0.1:$NPORT/f0" || { echo "nginx did not start" >&2; exit 1; }

cat > "$work/download.lua" <<'LUA'
function init(args)
    paths = {}
    for line in io.lines(args[1]) do paths[#paths + 1] = line end
    math.randomseed(os.time() + #args[1])
end
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
LUA
# ROUNDS alternate runs of both sides: the first librarian run follows the uploads closely
# (RocksDB may still be flushing and compacting them) and starts with an empty hot-file cache.
echo "## small downloads: 4 KiB, random among $FILES files, 32 connections, ${DURATION}s, $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
    for side in nginx librarian; do
        port=$([ $side = nginx ] && echo "$NPORT" || echo "$LPORT")
        pids=$([ $side = nginx ] && echo "$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')" || echo "$librarian_pid")
        before=$(cpu_ticks $pids)
        echo "### round $round: $side (load average $(cut -d' ' -f1-3 /proc/loadavg))"
        wrk -t "$THREADS" -c 32 -d "${DURATION}s" -s "$work/download.lua" "http://127.0.0.1:$port" -- "$work/$side.paths" \
            | grep -E "Requests/sec|Latency|Non-2xx|requests in" | tee "$work/$side.wrk"
        echo "server CPU ticks: $(( $(cpu_ticks $pids) - before ))" | tee -a "$work/$side.wrk"
    done
    # The ratio of rates, and each server's CPU time per request (user + system, all its
    # threads or processes): the second depends less on how much CPU the machine's other
    # work left to each side.
    python3 - "$work/nginx.wrk" "$work/librarian.wrk" "$(getconf CLK_TCK)" <<'PY'
import re, sys
def figures(path):
    text = open(path).read()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    ticks = int(re.search(r"server CPU ticks: (\d+)", text).group(1))
    return rate, ticks / int(sys.argv[3]) / requests * 1e6
(nginx_rate, nginx_us), (lib_rate, lib_us) = figures(sys.argv[1]), figures(sys.argv[2])
print(f"### round ratio librarian/nginx: {lib_rate / nginx_rate:.2f} (req/s); "
      f"server CPU per request: nginx {nginx_us:.1f} us, librarian {lib_us:.1f} us")
PY
done

# 3. A large download.
head -c "$((LARGE_MIB << 20))" /dev/urandom > "$work/www/large"
large=$(curl -fsS -T "$work/www/large" -X POST "http://127.0.0.1:$LPORT/buckets/bench/files?filename=large" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
echo "## large download: $LARGE_MIB MiB"
for side in nginx librarian; do
    url=$([ $side = nginx ] && echo "http://127.0.0.1:$NPORT/large" || echo "http://127.0.0.1:$LPORT$large")
    curl -fsS -o /dev/null "$url"
    speed=$(curl -fsS -o /dev/null -w '%{speed_download}' "$url")
    echo "### $side: curl $(python3 -c "print(f'{$speed/1e9:.2f}')") GB/s"
    wrk -t 1 -c 1 -d "${DURATION}s" "$url" | grep -E "Transfer/sec|requests in"
done

# 4. Memory under concurrent large uploads (UPLOADS=0 skips it).
[ "$UPLOADS" -gt 0 ] || exit 0
head -c "$((UPLOAD_MIB << 20))" /dev/urandom > "$work/upload.bin"
rm -f "$work/www/large"
echo "## memory: $UPLOADS concurrent uploads of $UPLOAD_MIB MiB"
pids=()
for i in $(seq "$UPLOADS"); do
    curl -fsS -o /dev/null -T "$work/upload.bin" -X POST \
        "http://127.0.0.1:$LPORT/buckets/memory/files?filename=m$i" &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
grep -E "VmHWM|VmRSS" "/proc/$librarian_pid/status" | tr -s ' \t' ' '
echo "failed uploads: $failed"
curl -fsS "http://127.0.0.1:$LPORT/buckets/memory" | python3 -c 'import json,sys; print("bucket memory:", json.load(sys.stdin))'
