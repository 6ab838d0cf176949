#!/usr/bin/env bash
# The directory's performance figures of issues 7 and 18, side by side with PostgreSQL and
# nginx in one run:
#   1. the transitive person members of the largest generated team (18,000 persons at
#      DIVISOR=1) as JSON over loopback, one client: the directory's p50 (wrk --latency)
#      against PostgreSQL answering from a Launchpad-style TeamParticipation(team, person)
#      table holding the same closure (pgbench, one client, rows fetched; p50 from its log);
#      then a page of 100 of them at a cursor in the middle (`?limit=100&after=NAME`);
#   2. the same whole list at 64 connections, against nginx serving the same JSON bytes as a
#      static file, ROUNDS alternating rounds;
#   3. person-in-team checks on random (team, person) pairs and the teams of random persons:
#      the directory, nginx serving one such answer as a static file for every path of the
#      route (driven by the same wrk Lua script, so the client does the same work) and
#      pgbench against PostgreSQL (prepared statements, `-M prepared`), CLIENTS connections
#      each, ROUNDS alternating rounds, with each server's CPU time per request (and wrk's:
#      the client shares the cores); then one client each;
#   4. the teams of the person in 300 teams, one client: directory p50 against PostgreSQL's
#      `SELECT team ... WHERE person = $heavy`;
#   5. is-merged checks on random branch pairs of a generated COMMITS-commit repository
#      (graphdb's DAG generator, BRANCHES branches), MERGED_CLIENTS connections, against
#      nginx serving one such answer (PostgreSQL has no like question to ask).
# The generated graph's names are spread over ids as in a real import (see
# `graphdb::generate`): names unrelated to creation order, large teams' members all over the
# id space. Installs wrk, nginx and PostgreSQL with apt-get when missing; every server listens
# on 127.0.0.1 only; every load is bounded in time. The graph is graphdb's generator at the
# production shape divided by DIVISOR.
#
#   benches/servers/directory.sh
#   DIVISOR=1 THREADS=2 CLIENTS=8 DURATION=10 ROUNDS=3 benches/servers/directory.sh
#   DIRECTORY=/path/to/an/older/directory benches/servers/directory.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
DIVISOR="${DIVISOR:-1}"
THREADS="${THREADS:-2}"
CLIENTS="${CLIENTS:-8}"
DURATION="${DURATION:-10}"
COMMITS="${COMMITS:-1000000}"
BRANCHES="${BRANCHES:-100}"
MERGED_CLIENTS="${MERGED_CLIENTS:-32}"
ROUNDS="${ROUNDS:-3}"
WIDE_CLIENTS="${WIDE_CLIENTS:-64}"
DPORT="${DPORT:-28082}"
NPORT="${NPORT:-28083}"
PGPORT="${PGPORT:-25432}"

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2"; }; }
need wrk wrk
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time; }
need nginx nginx-light || need nginx nginx
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$pgbin" ]; then apt-get update -qq && apt-get install -y -qq postgresql; pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1); fi

cargo build --release -p servers --bin directory --example team_graph --example commit_graph
target="${CARGO_TARGET_DIR:-target}/release"
# DIRECTORY=path measures another build of the server (an A/B against an older commit).
directory_bin="${DIRECTORY:-$target/directory}"
work="$(mktemp -d)"
chmod 755 "$work"
directory_pid=""
nginx_pid=""
cleanup() {
    [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null || true
    [ -n "$directory_pid" ] && kill -TERM "$directory_pid" 2>/dev/null && wait "$directory_pid" 2>/dev/null || true
    [ -f "$work/pg/postmaster.pid" ] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

now=$(date +%s)
info=$("$target/examples/team_graph" "$DIVISOR" "$work/graph" "$now")
chmod -R a+rX "$work/graph"
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores; graph: $info"
eval "$(echo "$info" | tr ' ' '\n' | grep -E '^(persons|teams|largest_team|largest_index|heavy_person|heavy_index)=')"

start=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/import.peak" "$directory_bin" --data-dir "$work/directory" import teams "$work/graph/teams.tsv" >/dev/null
echo "directory import teams: $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s, peak RSS $(cat "$work/import.peak") kB"
echo "repository: $("$target/examples/commit_graph" "$COMMITS" "$BRANCHES" "$work/repo")"
start=$(date +%s.%N)
"$directory_bin" --data-dir "$work/directory" import repo bench "$work/repo/rev-list" --refs "$work/repo/refs" >/dev/null
echo "directory import repo: $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"

TOKIO_WORKER_THREADS="$THREADS" RUST_LOG=warn "$directory_bin" --data-dir "$work/directory" \
    serve --dev --listen "127.0.0.1:$DPORT" --max-concurrency 100000 &
directory_pid=$!
for _ in $(seq 600); do curl -fsS "http://127.0.0.1:$DPORT/health" >/dev/null 2>&1 && break; sleep 0.1; done
echo "directory after a restart (the team index loaded): $(grep -E "VmRSS" "/proc/$directory_pid/status" | tr -s ' \t' ' ')"

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
middle=$(curl -fsS "http://127.0.0.1:$DPORT/teams/$largest_team/members?type=person" \
    | python3 -c 'import json,sys; m=json.load(sys.stdin)["members"]; print(m[len(m)//2])')
echo "### directory: a page of 100 after the middle name $middle"
wrk -t 1 -c 1 -d "${DURATION}s" --latency "http://127.0.0.1:$DPORT/teams/$largest_team/members?type=person&limit=100&after=$middle" \
    | grep -E "^ +(50|90|99)%|Requests/sec"


# nginx serves answers of the directory as static files: the same bytes.
mkdir -p "$work/www"
curl -fsS -o "$work/www/members.json" "http://127.0.0.1:$DPORT/teams/$largest_team/members?type=person"
sample_team=$(sed -n 2p "$work/graph/teams.txt")
curl -fsS -o "$work/www/teams-of.json" "http://127.0.0.1:$DPORT/persons/$(sed -n 2p "$work/graph/persons.txt")/teams"
curl -fsS -o "$work/www/is-member.json" "http://127.0.0.1:$DPORT/teams/$sample_team/members/$(sed -n 2p "$work/graph/persons.txt")"
echo '{"merged":false}' > "$work/www/merged.json"
chmod -R a+rX "$work/www"
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
    open_file_cache max=100 inactive=60s;
    default_type application/json;
    # Any path of a route gets that route's static answer, so nginx is driven by the very
    # Lua scripts that drive the directory: the client's work per request is the same on
    # both sides (a fixed path instead cost wrk 12-15 us a request against 18-25 us for
    # the random one, on the two cores the servers share).
    server {
        listen 127.0.0.1:$NPORT;
        root $work/www;
        location /teams/ { try_files /is-member.json =404; }
        location /persons/ { try_files /teams-of.json =404; }
        location /repos/ { try_files /merged.json =404; }
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work" &
nginx_pid=$!
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$NPORT/merged.json" 2>/dev/null && break; sleep 0.1; done
echo "nginx files: $(cd "$work/www" && ls -l --time-style=+ | awk 'NR > 1 {printf "%s %s bytes; ", $6, $5}')"

cpu_ticks() { local total=0 p; for p in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$total"; }
nginx_pids() { echo "$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')"; }
# Runs wrk against one server and prints req/s, p50, p99, the server's CPU per request and
# the client's (wrk's user + system time: on these two cores it competes with the server).
measure() {
    local label="$1" pids="$2"; shift 2
    local before out ticks requests
    before=$(cpu_ticks $pids)
    out=$({ /usr/bin/time -f "client-cpu %U %S" wrk "$@"; } 2>&1)
    ticks=$(( $(cpu_ticks $pids) - before ))
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    echo "$out" | awk -v label="$label" -v ticks="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$requests" '
        /Requests\/sec/ {rate = $2} / 50%/ {p50 = $2} / 99%/ {p99 = $2} /Non-2xx/ {bad = $0}
        /^client-cpu/ {client = $2 + $3}
        END {printf "%-10s %10.0f req/s  p50 %-8s p99 %-8s CPU %.1f us/request (wrk %.1f) %s\n", label, rate, p50, p99, ticks / hz / n * 1e6, client / n * 1e6, bad}'
}

echo "## the whole list of $json members at $WIDE_CLIENTS connections, ${DURATION}s, $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
    echo "### round $round (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    measure nginx "$(nginx_pids)" -t "$THREADS" -c "$WIDE_CLIENTS" -d "${DURATION}s" --latency "http://127.0.0.1:$NPORT/members.json"
    measure directory "$directory_pid" -t "$THREADS" -c "$WIDE_CLIENTS" -d "${DURATION}s" --latency \
        "http://127.0.0.1:$DPORT/teams/$largest_team/members?type=person"
done

cat > "$work/check.lua" <<LUA
function init(args)
    teams = {}
    for line in io.lines("$work/graph/teams.txt") do teams[#teams + 1] = line end
    persons = {}
    for line in io.lines("$work/graph/persons.txt") do persons[#persons + 1] = line end
    math.randomseed(os.time() + #teams)
end
request = function()
    return wrk.format("GET", "/teams/" .. teams[math.random(#teams)] .. "/members/" .. persons[math.random(#persons)])
end
LUA
cat > "$work/teams-of.lua" <<LUA
function init(args)
    persons = {}
    for line in io.lines("$work/graph/persons.txt") do persons[#persons + 1] = line end
    math.randomseed(os.time() + #persons)
end
request = function()
    return wrk.format("GET", "/persons/" .. persons[math.random(#persons)] .. "/teams")
end
LUA
cat > "$work/pgb/check.sql" <<SQL
\\set t random(0, $teams - 1)
\\set p random(0, $persons - 1)
SELECT 1 FROM teamparticipation WHERE team = :t AND person = :p;
SQL
cat > "$work/pgb/teams-of.sql" <<SQL
\\set p random(0, $persons - 1)
SELECT team FROM teamparticipation WHERE person = :p;
SQL
# PostgreSQL's CPU: the postmaster's own and its reaped children's (a backend ends with its
# pgbench connection, and its time is added to the postmaster's cutime and cstime when it is
# reaped), plus the children still running (the background writer, checkpointer and the
# others).
pg_cpu_ticks() {
    local main total p
    main=$(head -1 "$work/pg/postmaster.pid")
    total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$main/stat")
    for p in $(pgrep -P "$main"); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
# pgbench's rate, PostgreSQL's CPU per answer, which says what the rate would be with the
# client on other cores (here the client shares the server's two), and pgbench's own CPU per
# answer beside wrk's: the rates compare servers plus clients.
pg_rate() {
    local clients="$1" file="$2" before out ticks
    before=$(pg_cpu_ticks)
    out=$(cd "$work/pgb" && { /usr/bin/time -f "client-cpu %U %S" runuser -u postgres -- "$pgbin/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres -n -M prepared \
        -c "$clients" -j "$([ "$clients" -ge "$THREADS" ] && echo "$THREADS" || echo 1)" -T "$DURATION" -f "$file" postgres; } 2>&1)
    # The backends end as pgbench disconnects: wait until the postmaster has reaped them.
    for _ in $(seq 50); do [ "$(pgrep -P "$(head -1 "$work/pg/postmaster.pid")" -f "postgres: postgres postgres" | wc -l)" = 0 ] && break; sleep 0.1; done
    ticks=$(( $(pg_cpu_ticks) - before ))
    echo "$out" | awk -v ticks="$ticks" -v hz="$(getconf CLK_TCK)" '
        /^number of transactions actually processed/ {n = $NF} /^tps/ {rate = $3}
        /^client-cpu/ {client = $2 + $3}
        END {printf "%-10s %10.0f req/s (pgbench -M prepared)  CPU %.1f us/request (pgbench %.1f)\n", "postgresql", rate, ticks / hz / n * 1e6, client / n * 1e6}'
}
for question in person-in-team teams-of-person; do
    if [ "$question" = person-in-team ]; then lua=check.lua; sql=check.sql; else lua=teams-of.lua; sql=teams-of.sql; fi
    for clients in "$CLIENTS" 1; do
        rounds=$([ "$clients" = 1 ] && echo 1 || echo "$ROUNDS")
        echo "## $question, random, $clients connection(s), ${DURATION}s, $rounds round(s)"
        for round in $(seq "$rounds"); do
            echo "### round $round (load average $(cut -d' ' -f1-3 /proc/loadavg))"
            t=$([ "$clients" -ge "$THREADS" ] && echo "$THREADS" || echo 1)
            measure nginx "$(nginx_pids)" -t "$t" -c "$clients" -d "${DURATION}s" --latency -s "$work/$lua" "http://127.0.0.1:$NPORT"
            measure directory "$directory_pid" -t "$t" -c "$clients" -d "${DURATION}s" --latency -s "$work/$lua" "http://127.0.0.1:$DPORT"
            pg_rate "$clients" "$sql"
        done
    done
done

echo "## the teams of $heavy_person (the person in 300 teams), one client, ${DURATION}s"
curl -fsS "http://127.0.0.1:$DPORT/persons/$heavy_person/teams" | python3 -c 'import json,sys; print("directory:", len(json.load(sys.stdin)["teams"]), "teams")'
echo "PostgreSQL: $(psql -c "SELECT count(*) FROM teamparticipation WHERE person = $heavy_index") rows"
measure directory "$directory_pid" -t 1 -c 1 -d "${DURATION}s" --latency "http://127.0.0.1:$DPORT/persons/$heavy_person/teams"
echo "SELECT team FROM teamparticipation WHERE person = $heavy_index;" > "$work/pgb/heavy.sql"
pgbench_p50 "$work/pgb" -c 1 -T "$DURATION" -f "$work/pgb/heavy.sql"

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
echo "## is-merged checks, random branch pairs of $COMMITS commits, $MERGED_CLIENTS connections, ${DURATION}s, $ROUNDS rounds"
curl -fsS "http://127.0.0.1:$DPORT/repos/bench/branches/main/merged" | python3 -c 'import json,sys; print("branches merged into main:", len(json.load(sys.stdin)["merged"]))'
# Warm-up: every target tip's reach vector is cached after a few questions.
wrk -t "$THREADS" -c "$MERGED_CLIENTS" -d 2s -s "$work/merged.lua" "http://127.0.0.1:$DPORT" >/dev/null
for round in $(seq "$ROUNDS"); do
    echo "### round $round (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    measure nginx "$(nginx_pids)" -t "$THREADS" -c "$MERGED_CLIENTS" -d "${DURATION}s" --latency -s "$work/merged.lua" "http://127.0.0.1:$NPORT"
    measure directory "$directory_pid" -t "$THREADS" -c "$MERGED_CLIENTS" -d "${DURATION}s" --latency -s "$work/merged.lua" "http://127.0.0.1:$DPORT"
done
grep -E "VmHWM|VmRSS" "/proc/$directory_pid/status" | tr -s ' \t' ' '
