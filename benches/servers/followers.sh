#!/usr/bin/env bash
# Followers (issue 16): follower lag at RATE writes/s, and reads on a follower against one
# embedded (RocksDB) instance. Three `directory serve` on one PostgreSQL schema plus one
# embedded directory, all on 127.0.0.1; every load bounded in time.
#   1. lag: followers_lag.py writes PUT /teams/bench/members/pK to the writer at RATE/s for
#      DURATION s and notes when each revision reaches each follower (a long poll of
#      /changes there);
#   2. reads: wrk, CLIENTS connections for READ_SECS s, GET /teams/bench/members/p1 on a
#      follower, then on the embedded instance holding the same team.
# Run under scripts/with-postgres.sh (it sets LPSTORE_TEST_POSTGRES):
#   bash scripts/with-postgres.sh benches/servers/followers.sh
#   RATE=1000 DURATION=10 READ_SECS=10 CLIENTS=8 bash scripts/with-postgres.sh benches/servers/followers.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
: "${LPSTORE_TEST_POSTGRES:?run under scripts/with-postgres.sh}"
RATE="${RATE:-1000}"
DURATION="${DURATION:-10}"
READ_SECS="${READ_SECS:-10}"
CLIENTS="${CLIENTS:-8}"
PORT="${PORT:-28191}"

command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release -p servers --bin directory
bin="${CARGO_TARGET_DIR:-target}/release/directory"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/pg.toml" <<TOML
[server]
lease_ttl_ms = 3000
[store]
backend = "postgres"
[store.postgres]
url = "$LPSTORE_TEST_POSTGRES"
schema = "bench_followers_$$"
TOML
cat >"$work/embedded.toml" <<TOML
[store]
data_dir = "$work/embedded"
TOML

addrs=()
for i in 0 1 2; do
    addr="127.0.0.1:$((PORT + i))"
    "$bin" --config "$work/pg.toml" serve --dev --listen "$addr" 2>"$work/d$i.log" &
    pids+=($!)
    addrs+=("$addr")
done
embedded="127.0.0.1:$((PORT + 3))"
"$bin" --config "$work/embedded.toml" serve --dev --listen "$embedded" 2>"$work/embedded.log" &
pids+=($!)

writer=""
for _ in $(seq 1 200); do
    for addr in "${addrs[@]}"; do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/health/writer")" = 200 ]; then
            writer="$addr"
        fi
    done
    [ -n "$writer" ] && break
    sleep 0.1
done
[ -n "$writer" ] || { echo "no writer elected" >&2; cat "$work"/d*.log >&2; exit 1; }
followers=()
for addr in "${addrs[@]}"; do [ "$addr" != "$writer" ] && followers+=("$addr"); done
for _ in $(seq 1 200); do
    curl -sf -o /dev/null "http://$embedded/health" && break
    sleep 0.1
done
curl -sf -o /dev/null "http://$embedded/health" || { echo "the embedded instance did not start" >&2; cat "$work/embedded.log" >&2; exit 1; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); writer $writer, followers ${followers[*]}"
python3 benches/servers/followers_lag.py --writer "$writer" \
    $(printf -- '--follower %s ' "${followers[@]}") --rate "$RATE" --duration "$DURATION"
echo "# load after the writes: $(cut -d' ' -f1-3 /proc/loadavg)"

# The same team on the embedded instance (what the reads ask for).
curl -sf -o /dev/null -X PUT "http://$embedded/teams/bench/members/p1" \
    -H 'content-type: application/json' -d '{"role":"member"}'
for target in "follower ${followers[0]}" "embedded $embedded"; do
    set -- $target
    echo "## reads on the $1 ($2): GET /teams/bench/members/p1, $CLIENTS connections, ${READ_SECS}s"
    wrk -t2 -c"$CLIENTS" -d"${READ_SECS}s" --latency "http://$2/teams/bench/members/p1" |
        grep -E 'Requests/sec|50%|99%|Non-2xx'
done
echo "# load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
