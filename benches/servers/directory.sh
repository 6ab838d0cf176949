#!/usr/bin/env bash
# The directory's performance figures of issue 7, side by side with PostgreSQL in one run:
#   1. the transitive person members of the largest generated team (18,000 persons at
#      DIVISOR=1) as JSON over loopback, one client: the directory's p50 (wrk --latency)
#      against PostgreSQL answering from a Launchpad-style TeamParticipation(team, person)
#      table holding the same closure (pgbench, one client, rows fetched; p50 from its log);
#   2. person-in-team checks on random (team, person) pairs: wrk against the directory and
#      pgbench against PostgreSQL (prepared statements, `-M prepared`), CLIENTS clients each,
#      and one client each;
#   3. is-merged checks on random branch pairs of a generated COMMITS-commit repository
#      (graphdb's DAG generator, BRANCHES branches), MERGED_CLIENTS connections.
# Installs wrk and PostgreSQL with apt-get when missing; both servers listen on 127.0.0.1
# only; every load is bounded in time. The graph is graphdb's generator at the production
# shape divided by DIVISOR.
#
#   benches/servers/directory.sh
#   DIVISOR=1 THREADS=2 CLIENTS=8 DURATION=10 benches/servers/directory.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
DIVISOR="${DIVISOR:-1}"
THREADS="${THREADS:-2}"
CLIENTS="${CLIENTS:-8}"
DURATION="${DURATION:-10}"
COMMITS="${COMMITS:-1000000}"
BRANCHES="${BRANCHES:-100}"
MERGED_CLIENTS="${MERGED_CLIENTS:-32}"
DPORT="${DPORT:-28082}"
PGPORT="${PGPORT:-25432}"

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2"; }; }
need wrk wrk
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$pgbin" ]; then apt-get update -qq && apt-get install -y -qq postgresql; pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1); fi

cargo build --release -p servers --bin directory --example team_graph --example commit_graph
target="${CARGO_TARGET_DIR:-target}/release"
work="$(mktemp -d)"
chmod 755 "$work"
directory_pid=""
cleanup() {
    [ -n "$directory_pid" ] && kill -TERM "$directory_pid" 2>/dev/null && wait "$directory_pid" 2>/dev/null || true
    [ -f "$work/pg/postmaster.pid" ] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

now=$(date +%s)
info=$("$target/examples/team_graph" "$DIVISOR" "$work/graph" "$now")
chmod -R a+rX "$work/graph"
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores; graph: $info"
eval "$(echo "$info" | tr ' ' '\n' | grep -E '^(persons|teams|largest_team|largest_index)=')"

start=$(date +%s.%N)
"$target/directory" --data-dir "$work/directory" import teams "$work/graph/teams.tsv" >/dev/null
echo "directory import teams: $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
echo "repository: $("$target/examples/commit_graph" "$COMMITS" "$BRANCHES" "$work/repo")"
start=$(date +%s.%N)
"$target/directory" --data-dir "$work/directory" import repo bench "$work/repo/rev-list" --refs "$work/repo/refs" >/dev/null
echo "directory import repo: $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"

TOKIO_WORKER_THREADS="$THREADS" RUST_LOG=warn "$target/directory" --data-dir "$work/directory" \
    serve --dev --listen "127.0.0.1:$DPORT" --max-concurrency 100000 &
directory_pid=$!
for _ in $(seq 600); do curl -fsS "http://127.0.0.1:$DPORT/health" >/dev/null 2>&1 && break; sleep 0.1; done

mkdir -p "$work/pg" && chown postgres "$work/pg" && chmod 700 "$work/pg"
chmod 1777 "$work"  # the postgres user writes its log and socket here
runuser -u postgres -- "$pgbin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
    -o "-p $PGPORT -c listen_addresses=127.0.0.1 -k $work -c shared_buffers=256MB -c fsync=off" start >/dev/null
psql() { runuser -u postgres -- "$pgbin/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qAt "$@"; }
psql -c "CREATE TABLE teamparticipation (team integer NOT NULL, person integer NOT NULL, PRIMARY KEY (team, person))"
psql -c "\\copy teamparticipation FROM '$work/graph/closure.tsv'"
psql -c "CREATE INDEX ON teamparticipation (person, team)" -c "VACUUM ANALYZE teamparticipation"
rows=$(psql -c "SELECT count(*) FROM teamparticipation WHERE team = $largest_index")
json=$(curl -fsS "http://127.0.0.1:$DPORT/teams/$largest_team/members?type=person" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["members"]))')
echo "the largest team $largest_team: directory $json persons, PostgreSQL $rows rows"
[ "$json" = "$rows" ] || echo "WARNING: the two sides disagree"

# pgbench's per-transaction log: the 3rd field is the latency in µs. `-M prepared`: each
# client prepares the query once and then only binds and executes it, PostgreSQL at its best
# (the simple protocol parses and plans every query again, which handicapped it before).
pgbench_p50() {
    local dir="$1"; shift
    (cd "$dir" && runuser -u postgres -- "$pgbin/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres -n -M prepared -l "$@" postgres) | grep -E "tps|latency average"
    cat "$dir"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "p50 %.3f ms, p99 %.3f ms over %d\n", a[int(NR/2)+1]/1000, a[int(NR*0.99)+1]/1000, NR}'
    rm -f "$dir"/pgbench_log.*
}

echo "## the $json transitive members of $largest_team, one client, ${DURATION}s"
echo "### directory (JSON names over HTTP)"
wrk -t 1 -c 1 -d "${DURATION}s" --latency "http://127.0.0.1:$DPORT/teams/$largest_team/members?type=person" \
    | grep -E "^ +(50|90|99)%|Requests/sec"
echo "### PostgreSQL (SELECT person FROM teamparticipation WHERE team = \$largest, rows fetched by pgbench)"
mkdir -p "$work/pgb" && chmod 777 "$work/pgb"
echo "SELECT person FROM teamparticipation WHERE team = $largest_index;" > "$work/pgb/members.sql"
pgbench_p50 "$work/pgb" -c 1 -T "$DURATION" -f "$work/pgb/members.sql"

cat > "$work/check.lua" <<LUA
function init(args)
    teams = {}
    for line in io.lines("$work/graph/teams.txt") do teams[#teams + 1] = line end
    math.randomseed(os.time() + #teams)
end
request = function()
    return wrk.format("GET", "/teams/" .. teams[math.random(#teams)] .. "/members/person-" .. math.random(0, $persons - 1))
end
LUA
cat > "$work/pgb/check.sql" <<SQL
\\set t random(0, $teams - 1)
\\set p random(0, $persons - 1)
SELECT 1 FROM teamparticipation WHERE team = :t AND person = :p;
SQL
for clients in "$CLIENTS" 1; do
    echo "## person-in-team checks, random pairs, $clients client(s), ${DURATION}s"
    echo "### directory"
    wrk -t "$([ "$clients" -ge "$THREADS" ] && echo "$THREADS" || echo 1)" -c "$clients" -d "${DURATION}s" --latency \
        -s "$work/check.lua" "http://127.0.0.1:$DPORT" | grep -E "^ +(50|99)%|Requests/sec|Non-2xx"
    echo "### PostgreSQL"
    pgbench_p50 "$work/pgb" -c "$clients" -j "$([ "$clients" -ge "$THREADS" ] && echo "$THREADS" || echo 1)" -T "$DURATION" -f "$work/pgb/check.sql"
done

cat > "$work/merged.lua" <<LUA
function init(args)
    branches = {}
    for line in io.lines("$work/repo/branches.txt") do branches[#branches + 1] = line end
    math.randomseed(os.time() + #branches)
end
request = function()
    return wrk.format("GET", "/repos/bench/branches/" .. branches[math.random(#branches)]
        .. "/merged-into/" .. branches[math.random(#branches)])
end
LUA
echo "## is-merged checks, random branch pairs of $COMMITS commits, $MERGED_CLIENTS connections, ${DURATION}s"
curl -fsS "http://127.0.0.1:$DPORT/repos/bench/branches/main/merged" | python3 -c 'import json,sys; print("branches merged into main:", len(json.load(sys.stdin)["merged"]))'
wrk -t "$THREADS" -c "$MERGED_CLIENTS" -d "${DURATION}s" --latency -s "$work/merged.lua" "http://127.0.0.1:$DPORT" \
    | grep -E "^ +(50|99)%|Requests/sec|Non-2xx"
