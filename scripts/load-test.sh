#!/usr/bin/env bash
# A bounded load test of both services on loopback (issue 9): mixed uploads, downloads and
# graph queries at high concurrency for DURATION seconds, then a report. It stops by itself
# and stops the servers it started. Fails when any request gets an answer other than success
# or the deliberate 503 of the concurrency limit, when a socket error occurs, or when the
# resident memory of a server grows by more than half from the first sample after warm-up
# to the last.
#
#   scripts/load-test.sh                         # release build, 60 s
#   DURATION=180 CONNECTIONS=512 scripts/load-test.sh
#   PROFILE=dev scripts/load-test.sh             # debug build (slower figures)
#
# Environment: DURATION (s, default 60, at most 300), CONNECTIONS (default 256, per download
# and query stream; uploads use a quarter), MAX_CONCURRENCY (the servers' limit, default 64,
# below CONNECTIONS so that the 503 path is exercised), FILES (seeded downloads, default 500),
# PERSONS (default 5000).
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${DURATION:-60}"
[ "$duration" -le 300 ] || { echo "DURATION is at most 300 s" >&2; exit 2; }
connections="${CONNECTIONS:-256}"
max_concurrency="${MAX_CONCURRENCY:-64}"
files="${FILES:-500}"
persons="${PERSONS:-5000}"
profile="${PROFILE:-release}"

if ! command -v wrk >/dev/null; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk curl
fi

cargo build --profile "$profile" -p servers --bins
target="${CARGO_TARGET_DIR:-target}"
bin="$target/$([ "$profile" = dev ] && echo debug || echo "$profile")"

work="$(mktemp -d)"
pids=()
stop() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap stop EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
lib="127.0.0.1:$(free_port)"
dir="127.0.0.1:$(free_port)"
RUST_LOG=warn "$bin/librarian" --data-dir "$work/librarian" serve --dev --listen "$lib" \
    --max-concurrency "$max_concurrency" 2>"$work/librarian.log" &
lib_pid=$!; pids+=("$lib_pid")
RUST_LOG=warn "$bin/directory" --data-dir "$work/directory" serve --dev --listen "$dir" \
    --max-concurrency "$max_concurrency" 2>"$work/directory.log" &
dir_pid=$!; pids+=("$dir_pid")
for addr in "$lib" "$dir"; do
    for _ in $(seq 200); do curl -fsS "http://$addr/health" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fsS "http://$addr/health" >/dev/null
done

echo "seeding $files files and a team graph of $persons persons"
head -c 4096 /dev/urandom > "$work/body"
for i in $(seq "$files"); do
    printf '%08d' "$i" | cat - "$work/body" |
        curl -fsS --data-binary @- "http://$lib/buckets/seed/files?filename=f$i.bin"
    echo
done | sed -n 's/.*"url":"\([^"]*\)".*/\1/p' > "$work/urls"
[ "$(wc -l < "$work/urls")" -eq "$files" ]
{
    printf 'team\tmember\trole\texpires\n'
    # 100 teams in a tree of fan-out 3; persons spread over them, some in several.
    for t in $(seq 1 99); do printf 't%d\tt%d\tmember\t\n' $(((t - 1) / 3)) "$t"; done
    for p in $(seq 0 $((persons - 1))); do
        printf 't%d\tp%d\tmember\t\n' $((p % 100)) "$p"
        if [ $((p % 7)) -eq 0 ]; then printf 't%d\tp%d\tadmin\t\n' $(((p / 7) % 100)) "$p"; fi
    done
} | awk '!seen[$1 FS $2]++' > "$work/teams.tsv"
curl -fsS --data-binary @"$work/teams.tsv" "http://$dir/import/teams" >/dev/null

# wrk scripts: a shared prelude counts answers by class in every thread and reports them.
cat > "$work/prelude.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; s503 = 0; other = 0; math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000) end
function response(status, headers, body)
  if status >= 200 and status < 400 then ok = ok + 1
  elseif status == 503 then s503 = s503 + 1
  else other = other + 1; if other <= 3 then io.stderr:write("unexpected " .. status .. " " .. body:sub(1, 200) .. "\n") end end
end
function done(summary, latency, requests)
  local o, s, x = 0, 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); s = s + t:get("s503"); x = x + t:get("other") end
  local e = summary.errors
  io.write(string.format("RESULT ok=%d s503=%d other=%d rps=%.0f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f socket_errors=%d\n",
    o, s, x, summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, e.connect + e.read + e.write + e.timeout))
end
LUA
{ cat "$work/prelude.lua"; cat <<LUA
local urls = {}
for line in io.lines("$work/urls") do urls[#urls + 1] = line end
request = function() return wrk.format("GET", urls[math.random(#urls)]) end
LUA
} > "$work/downloads.lua"
{ cat "$work/prelude.lua"; cat <<'LUA'
local body = string.rep("x", 4088)
local n = 0
request = function()
  n = n + 1
  local id = string.format("%08d", math.random(0, 99999999))
  return wrk.format("POST", "/buckets/load/files?filename=u" .. n .. ".bin", nil, id .. body)
end
LUA
} > "$work/uploads.lua"
{ cat "$work/prelude.lua"; cat <<LUA
request = function()
  local r = math.random(10)
  local p = math.random(0, $persons - 1)
  if r <= 6 then return wrk.format("GET", "/teams/t0/members/p" .. p)
  elseif r <= 8 then return wrk.format("GET", "/persons/p" .. p .. "/teams?transitive=true")
  elseif r == 9 then return wrk.format("GET", "/teams/t" .. math.random(0, 99) .. "/members?transitive=true&type=person&limit=100")
  else return wrk.format("GET", "/teams/t" .. math.random(0, 99) .. "/members?transitive=true") end
end
LUA
} > "$work/queries.lua"

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo "load: ${duration}s, $connections connections for downloads and queries, $((connections / 4)) for uploads, servers' limit $max_concurrency"
wrk -t1 -c"$connections" -d"${duration}s" -s "$work/downloads.lua" "http://$lib" > "$work/downloads.out" 2>&1 &
w1=$!
wrk -t1 -c"$((connections / 4))" -d"${duration}s" -s "$work/uploads.lua" "http://$lib" > "$work/uploads.out" 2>&1 &
w2=$!
wrk -t1 -c"$connections" -d"${duration}s" -s "$work/queries.lua" "http://$dir" > "$work/queries.out" 2>&1 &
w3=$!
sleep $((duration < 20 ? duration / 2 : 10))
lib_first=$(rss "$lib_pid"); dir_first=$(rss "$dir_pid")
wait "$w1" "$w2" "$w3"
lib_last=$(rss "$lib_pid"); dir_last=$(rss "$dir_pid")

status=0
for stream in downloads uploads queries; do
    line=$(grep '^RESULT' "$work/$stream.out" || true)
    echo "$stream: ${line#RESULT }"
    grep -q '^unexpected' "$work/$stream.out" && grep '^unexpected' "$work/$stream.out" | head -3
    case "$line" in
        *" other=0 "*"socket_errors=0") ;;
        *) echo "  FAILED: answers other than success and 503, or socket errors" >&2; status=1 ;;
    esac
done
echo "librarian RSS: ${lib_first} KiB after warm-up, ${lib_last} KiB at the end"
echo "directory RSS: ${dir_first} KiB after warm-up, ${dir_last} KiB at the end"
for pair in "librarian $lib_first $lib_last" "directory $dir_first $dir_last"; do
    set -- $pair
    if [ "$3" -gt $(($2 * 3 / 2)) ]; then echo "  FAILED: $1 grew by more than half" >&2; status=1; fi
done
for log in librarian directory; do
    if grep -q ' ERROR ' "$work/$log.log"; then echo "$log logged errors:"; grep ' ERROR ' "$work/$log.log" | head -5; fi
done
exit "$status"
