#!/usr/bin/env bash
# General graphs over HTTP (issue 19) side by side with PostgreSQL in one run, on the same
# generated graph of Debian's shape (graphdb::generate::debian; SCALE=1: 64,000 binaries,
# 34,000 sources, 275,000 depends edges, 55 cycles; SCALE=10: ten times that):
#   1. the import: POST /import/graphs/debian (TSV, index built, synced) against PostgreSQL's
#      \copy into edges(src, dst, label) plus its two indexes (src, dst) and (dst, src);
#   2. reachability, one client, three mixes (random binary to hub-ish binary, mostly true;
#      random binary to random binary, mostly false; the largest set to a random binary): the directory's
#      GET /graphs/debian/reachable (wrk --latency) and graphdb embedded (`debian_graph
#      --embedded`, same mixes, same run) against PostgreSQL's WITH RECURSIVE walk from the
#      source (UNION, so cycles end), EXISTS on the target (pgbench -M prepared, p50 from its
#      log);
#   3. the descendants of the largest section (section:libs), all of them sorted, one client:
#      GET /graphs/debian/nodes/section:libs/descendants?limit=1000000 against WITH RECURSIVE
#      ... ORDER BY.
# Installs wrk and PostgreSQL with apt-get when missing; both servers listen on 127.0.0.1
# only; every load is bounded in time. Print ratios by hand from the p50s (RESULTS.md).
#
#   benches/servers/graphs-pg.sh
#   SCALE=10 DURATION=10 benches/servers/graphs-pg.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
SCALE="${SCALE:-1}"
THREADS="${THREADS:-2}"
DURATION="${DURATION:-10}"
DPORT="${DPORT:-28083}"
PGPORT="${PGPORT:-25433}"

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2"; }; }
need wrk wrk
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$pgbin" ]; then apt-get update -qq && apt-get install -y -qq postgresql; pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1); fi

cargo build --release -p servers --bin directory
cargo build --release -p benches --bin debian_graph
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

info=$("$target/debian_graph" "$SCALE" "$work/graph" --embedded)
embedded=$(echo "$info" | grep '^embedded' || true)
info=$(echo "$info" | grep -v '^embedded')
chmod -R a+rX "$work/graph"
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); graph: $info"
binaries=$(wc -l < "$work/graph/binaries.txt")

TOKIO_WORKER_THREADS="$THREADS" RUST_LOG=warn "$target/directory" --data-dir "$work/directory" \
    serve --dev --listen "127.0.0.1:$DPORT" --max-concurrency 100000 &
directory_pid=$!
for _ in $(seq 600); do curl -fsS "http://127.0.0.1:$DPORT/health" >/dev/null 2>&1 && break; sleep 0.1; done
D="http://127.0.0.1:$DPORT"
curl -fsS -X PUT -H 'Content-Type: application/json' -d '{"kind":"general"}' "$D/graphs/debian" >/dev/null
start=$(date +%s.%N)
curl -fsS --data-binary "@$work/graph/graph.tsv" "$D/import/graphs/debian" >/dev/null
echo "directory import (HTTP, index built, synced): $(python3 -c "print(round($(date +%s.%N) - $start, 2))") s"

mkdir -p "$work/pg" && chown postgres "$work/pg" && chmod 700 "$work/pg"
chmod 1777 "$work"
runuser -u postgres -- "$pgbin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
    -o "-p $PGPORT -c listen_addresses=127.0.0.1 -k $work -c shared_buffers=256MB -c fsync=off" start >/dev/null
psql() { runuser -u postgres -- "$pgbin/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qAt "$@"; }
tail -n +2 "$work/graph/graph.tsv" > "$work/graph/edges.tsv"
start=$(date +%s.%N)
psql -c "CREATE TABLE edges (src text NOT NULL, dst text NOT NULL, label text, PRIMARY KEY (src, dst))" \
     -c "\\copy edges FROM '$work/graph/edges.tsv' WITH (FORMAT text, NULL '')" \
     -c "CREATE INDEX ON edges (dst, src)" -c "VACUUM ANALYZE edges"
echo "PostgreSQL copy + indexes: $(python3 -c "print(round($(date +%s.%N) - $start, 2))") s"
psql -c "CREATE TABLE binaries (id serial PRIMARY KEY, name text NOT NULL)" \
     -c "\\copy binaries (name) FROM '$work/graph/binaries.txt'"

pgbench_p50() {
    local dir="$1"; shift
    (cd "$dir" && runuser -u postgres -- "$pgbin/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres -n -M prepared -l "$@" postgres) | grep -E "tps|latency average"
    cat "$dir"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "p50 %.3f ms, p99 %.3f ms over %d\n", a[int(NR/2)+1]/1000, a[int(NR*0.99)+1]/1000, NR}'
    rm -f "$dir"/pgbench_log.*
}
mkdir -p "$work/pgb" && chmod 777 "$work/pgb"

# Every side answers the same questions, drawn the same way, in three mixes: `hubs`, a random
# binary and a target among the first 64 binaries (the hubs first, so that many answers are
# true); `uniform`, two random binaries (mostly false: a walk must exhaust the source's reach
# to say no, but a binary reaches little); `largest`, from the largest set (section:libs, the
# question "does this section pull in X?") to a random binary.
largest=$(echo "$info" | tr ' ' '\n' | sed -n 's/^largest=//p')
# pgbench reads ":libs" as a variable even inside quotes: spell the colon as chr(58).
literal="'$(echo "$largest" | sed "s/:/' || chr(58) || '/g")'"
for mix in hubs uniform largest; do
targets=$([ "$mix" = hubs ] && echo 64 || echo "$binaries")
if [ "$mix" = largest ]; then
    lua_from="\"$largest\""
    sql_from="SELECT e.dst FROM edges e WHERE e.src = $literal"
else
    lua_from='names[math.random(#names)]:gsub("%+", "%%2B")'
    sql_from="SELECT e.dst FROM edges e JOIN binaries s ON e.src = s.name WHERE s.id = :a"
fi
cat > "$work/reach.lua" <<LUA
function init(args)
    names = {}
    for line in io.lines("$work/graph/binaries.txt") do names[#names + 1] = line end
    math.randomseed(os.time() + #names)
end
request = function()
    -- "+" (libstdc++6) means a space in a query string: escape it.
    local from = $lua_from
    local to = names[math.random(math.min($targets, #names))]:gsub("%+", "%%2B")
    return wrk.format("GET", "/graphs/debian/reachable?from=" .. from .. "&to=" .. to)
end
LUA
cat > "$work/pgb/reach.sql" <<SQL
\\set a random(1, $binaries)
\\set b random(1, $targets)
WITH RECURSIVE r(n) AS (
    $sql_from
    UNION SELECT e.dst FROM edges e JOIN r ON e.src = r.n)
SELECT EXISTS (SELECT 1 FROM r JOIN binaries t ON t.name = r.n WHERE t.id = :b);
SQL
echo "## reachability, $mix mix, one client, ${DURATION}s"
echo "### graphdb embedded (Graph::reachable by names, one thread, same mix)"
echo "$embedded" | grep "$mix mix"
echo "### directory"
wrk -t 1 -c 1 -d "${DURATION}s" --latency -s "$work/reach.lua" "$D" | grep -E "^ +(50|99)%|Requests/sec|Non-2xx"
echo "### PostgreSQL WITH RECURSIVE"
pgbench_p50 "$work/pgb" -c 1 -T "$DURATION" -f "$work/pgb/reach.sql"
done

count=$(curl -fsS "$D/graphs/debian/nodes/$largest/descendants?limit=10000000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["descendants"]))')
rows=$(psql -c "WITH RECURSIVE r(n) AS (SELECT dst FROM edges WHERE src = '$largest' UNION SELECT e.dst FROM edges e JOIN r ON e.src = r.n) SELECT count(*) FROM r")
echo "descendants of $largest: directory $count, PostgreSQL $rows"
[ "$count" = "$rows" ] || echo "WARNING: the two sides disagree"
echo "## the $count descendants of $largest, sorted, one client, ${DURATION}s"
echo "### directory (JSON names over HTTP)"
wrk -t 1 -c 1 -d "${DURATION}s" --latency "$D/graphs/debian/nodes/$largest/descendants?limit=10000000" \
    | grep -E "^ +(50|99)%|Requests/sec"
echo "### PostgreSQL WITH RECURSIVE ... ORDER BY (rows fetched by pgbench)"
cat > "$work/pgb/desc.sql" <<SQL
WITH RECURSIVE r(n) AS (SELECT dst FROM edges WHERE src = $literal
    UNION SELECT e.dst FROM edges e JOIN r ON e.src = r.n)
SELECT n FROM r ORDER BY n;
SQL
pgbench_p50 "$work/pgb" -c 1 -T "$DURATION" -f "$work/pgb/desc.sql"
