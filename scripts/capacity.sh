#!/usr/bin/env bash
# The capacity-planning run (`make capacity`): measures the blob store, the team graph and the
# commit graph at several scales, both servers under wrk, and the peers (PostgreSQL, git,
# nginx, BLAKE3) on the same data in the same run, then writes docs/CAPACITY.md and the
# charts under docs/capacity/ from the rows of this run only.
#
#   scripts/capacity.sh                      # the full run (under 30 minutes on 2 cores)
#   BLOB_SCALES="10000" TEAM_SCALES="10000" COMMIT_SCALES="10000" GIT_SCALES=10000 \
#     WRK_SECONDS=2 PG_SECONDS=2 scripts/capacity.sh    # a quick smoke run
#   BLOB_SCALES= TEAM_SCALES= COMMIT_SCALES=10000000 GIT_SCALES=10000000 DOCS=/tmp/cap \
#     scripts/capacity.sh                    # one section: an empty list skips its section
#   SERVER_FILES=0 SERVER_COMMITS=0 ...      # without the servers' memory on the largest stores
#                                            # (default: the largest blob and commit scales)
#
# Peers are installed from Debian (apt-get, with sudo when not root), started on 127.0.0.1
# from a temporary directory, and stopped by PID (pg_ctl for PostgreSQL) on every exit.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s)

# A scale list set but empty skips its section (unset: the default list).
BLOB_SCALES="${BLOB_SCALES-10000 100000 1000000}"
TEAM_SCALES="${TEAM_SCALES-10000 100000 500000 1000000}"
COMMIT_SCALES="${COMMIT_SCALES-10000 100000 1000000}"
GIT_SCALES="${GIT_SCALES-100000 1000000}"
GIT_PAIRS="${GIT_PAIRS:-50}"
WRK_SECONDS="${WRK_SECONDS:-5}"
PG_SECONDS="${PG_SECONDS:-5}"
HTTP_FILES="${HTTP_FILES:-2000}"
# The team graph the peers and the directory server load (the production shape by default).
PEER_PERSONS="${PEER_PERSONS:-500000}"
DOCS="${DOCS:-$root/docs}"
# The servers' resident memory on stores of the largest scales (0: not measured).
largest() { printf '%s\n' $1 0 | sort -n | tail -n 1; }
SERVER_FILES="${SERVER_FILES:-$(largest "$BLOB_SCALES")}"
SERVER_COMMITS="${SERVER_COMMITS:-$(largest "$COMMIT_SCALES")}"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lpstore/target}"
export ROCKSDB_LIB_DIR="${ROCKSDB_LIB_DIR:-/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

say() { printf '\n== %s (%ss)\n' "$*" "$(($(date +%s) - started))"; }

# --- peers from Debian ---------------------------------------------------------------------
missing=""
for p in postgresql nginx wrk git curl librocksdb-dev clang libclang-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing Debian packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

say "building the release binaries"
cargo build --release -q -p servers --bins -p benches --bin capacity
bin="$CARGO_TARGET_DIR/release"
cap="$bin/capacity"

work=$(mktemp -d "${TMPDIR:-/tmp}/capacity.XXXXXX")
chmod 755 "$work"
results="$work/results.tsv"
: >"$results"

# Every process started here is recorded and stopped on exit, by PID.
pids=()
pgdata=""
as_pg=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$pgdata" ] && [ -f "$pgdata/postmaster.pid" ]; then
        "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 20000))
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}

wait_http() {
    for _ in $(seq 300); do
        curl -fsS "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

# A row in the results: name scale value unit command.
row() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$results"; echo "$1 @ $2: $3 $4"; }

# Arithmetic on one line of text.
calc() { awk "BEGIN { print $(cat) }"; }

# Microseconds since the epoch.
now_us() { echo $(($(date +%s%N) / 1000)); }

{
    echo "date:        $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit:      $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "cpu:         $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "nproc:       $(nproc)"
    echo "kernel:      $(uname -r)"
    echo "memory:      $(free -h | awk '/^Mem:/ {print $2 " total, " $7 " available"}')"
    echo "disk:        $(df -h "$work" | awk 'NR==2 {print $2 " " $1 ", " $4 " free"}')"
    echo "rocksdb:     $(dpkg-query -W -f='${Version}' librocksdb-dev 2>/dev/null)"
    echo "postgresql:  $("$pgbin/postgres" --version | awk '{print $3}'), nginx: $(nginx -v 2>&1 | cut -d/ -f2), git: $(git --version | awk '{print $3}')"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$work/machine.txt"
cat "$work/machine.txt"

# --- in-process measurements, one process per scale ----------------------------------------
for n in $BLOB_SCALES; do
    say "blob store, $n files"
    "$cap" blobs --files "$n" --dir "$work" --results "$results"
done
say "blob store, by size; BLAKE3"
"$cap" sizes --dir "$work" --results "$results"

full_exported=""
for p in $TEAM_SCALES; do
    say "team graph, $p persons"
    if [ "$p" = "$PEER_PERSONS" ]; then
        "$cap" teams --persons "$p" --dir "$work" --results "$results" --export "$work/teams"
        full_exported=1
    else
        "$cap" teams --persons "$p" --dir "$work" --results "$results"
    fi
done
if [ -z "$full_exported" ]; then
    # The peers need the production shape even when a smaller set of scales was asked for.
    "$cap" teams --persons "$PEER_PERSONS" --dir "$work" --results "$work/discard.tsv" --export "$work/teams"
fi

in_list() { case " $2 " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
for n in $COMMIT_SCALES; do
    say "commit graph, $n commits"
    if in_list "$n" "$GIT_SCALES"; then
        "$cap" commits --commits "$n" --dir "$work" --results "$results" --export "$work/git-$n" --pairs "$GIT_PAIRS"
    else
        "$cap" commits --commits "$n" --dir "$work" --results "$results"
    fi
done

# --- git -----------------------------------------------------------------------------------
for n in $GIT_SCALES; do
    g="$work/git-$n"
    if [ ! -f "$g/stream.fi" ]; then
        "$cap" commits --commits "$n" --dir "$work" --results "$work/discard.tsv" --export "$g" --pairs "$GIT_PAIRS"
    fi
    say "git: fast-import of $n commits, merge-base --is-ancestor on $GIT_PAIRS pairs"
    repo="$g/repo.git"
    git init -q --bare "$repo"
    git -C "$repo" config gc.auto 0
    git -C "$repo" config core.commitGraph true
    cmd="git fast-import < stream.fi; git merge-base --is-ancestor A B (x$GIT_PAIRS); git commit-graph write --reachable; again"
    t0=$(now_us)
    git -C "$repo" fast-import --quiet --export-marks="$g/marks" <"$g/stream.fi"
    row "git/fast-import" "$n" "$(echo "($(now_us) - $t0) / 1000000" | calc)" s "$cmd"
    awk 'NR == FNR { sha[$1] = $2; next } { print sha[$1], sha[$2] }' "$g/marks" "$g/pairs.marks" >"$g/pairs.sha"
    ancestry() {
        local t0 a b
        t0=$(now_us)
        while read -r a b; do
            git -C "$repo" merge-base --is-ancestor "$a" "$b" && true
        done <"$g/pairs.sha"
        echo "($(now_us) - $t0) / $GIT_PAIRS" | calc
    }
    t0=$(now_us)
    for _ in $(seq "$GIT_PAIRS"); do git -C "$repo" rev-parse HEAD >/dev/null; done
    row "git/process start mean" "$n" "$(echo "($(now_us) - $t0) / $GIT_PAIRS" | calc)" µs "$cmd"
    row "git/is-ancestor without commit-graph mean" "$n" "$(ancestry)" µs "$cmd"
    t0=$(now_us)
    git -C "$repo" commit-graph write --reachable --no-progress
    row "git/commit-graph write" "$n" "$(echo "($(now_us) - $t0) / 1000000" | calc)" s "$cmd"
    row "git/commit-graph bytes per commit" "$n" "$(echo "$(stat -c %s "$repo/objects/info/commit-graph") / $n" | calc)" B "$cmd"
    row "git/is-ancestor with commit-graph mean" "$n" "$(ancestry)" µs "$cmd"
    rm -rf "$g"
done

# --- PostgreSQL ----------------------------------------------------------------------------
say "PostgreSQL: TeamParticipation closure of the full generated graph"
# shellcheck disable=SC1091
. "$work/teams/peer.env"
pgdata="$work/pg"
mkdir -p "$pgdata"
if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root.
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$pgdata"
    chmod -R a+rX "$work/teams"
    as_pg=(runuser -u postgres --)
fi
pgport=$(free_port)
"${as_pg[@]}" "$pgbin/initdb" -D "$pgdata" -A trust -U capacity --no-sync >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdata" -w -l "$pgdata/log" \
    -o "-p $pgport -k $pgdata -c listen_addresses=127.0.0.1" start >/dev/null
psql_() { "${as_pg[@]}" "$pgbin/psql" -X -q -h 127.0.0.1 -p "$pgport" -U capacity -d postgres -v ON_ERROR_STOP=1 "$@"; }
t0=$(now_us)
psql_ -c "CREATE TABLE teamparticipation (id serial PRIMARY KEY, team integer NOT NULL, person integer NOT NULL)"
psql_ -c "COPY teamparticipation (team, person) FROM STDIN" <"$work/teams/tp.copy"
psql_ -c "ALTER TABLE teamparticipation ADD CONSTRAINT teamparticipation_team_person_key UNIQUE (team, person)"
psql_ -c "CREATE INDEX teamparticipation_person_idx ON teamparticipation (person)"
psql_ -c "VACUUM ANALYZE teamparticipation"
pgcmd="pgbench -n -M prepared -c 1 -j 1 -T $PG_SECONDS -f QUERY.sql (TeamParticipation of Shape::full)"
loadcmd="psql: CREATE TABLE teamparticipation; COPY FROM STDIN; ADD UNIQUE (team, person); CREATE INDEX ON (person); VACUUM ANALYZE"
row "pg/load (COPY + indexes + analyze)" "$PEER_PERSONS" "$(echo "($(now_us) - $t0) / 1000000" | calc)" s "$loadcmd"
row "pg/TeamParticipation rows" "$PEER_PERSONS" "$TP_ROWS" rows "$loadcmd"
bytes=$(psql_ -At -c "SELECT pg_total_relation_size('teamparticipation')")
row "pg/bytes per row (table + indexes)" "$PEER_PERSONS" "$(echo "$bytes / $TP_ROWS" | calc)" B "SELECT pg_total_relation_size('teamparticipation')"
cat >"$work/pg-is-member.sql" <<SQL
\set p random(1, $PERSONS)
\set t random($((PERSONS + 1)), $((PERSONS + TEAMS)))
SELECT EXISTS (SELECT 1 FROM teamparticipation WHERE team = :t AND person = :p);
SQL
cat >"$work/pg-members.sql" <<SQL
SELECT person FROM teamparticipation WHERE team = $BIG_TEAM_ID AND person <= $PERSONS ORDER BY person;
SQL
cat >"$work/pg-teams.sql" <<SQL
SELECT team FROM teamparticipation WHERE person = $HEAVY_PERSON_ID AND team <> person ORDER BY team;
SQL
chmod a+r "$work"/pg-*.sql
pgbench_() {
    local out
    out=$("${as_pg[@]}" "$pgbin/pgbench" -n -M prepared -c 1 -j 1 -T "$PG_SECONDS" -f "$work/pg-$2.sql" \
        -h 127.0.0.1 -p "$pgport" -U capacity postgres 2>&1)
    row "pg/$1" "$PEER_PERSONS" "$(echo "$out" | awk '/latency average/ {print $4 * 1000}')" µs \
        "${pgcmd/QUERY/pg-$2}: $(tr '\n' ' ' <"$work/pg-$2.sql")"
}
pgbench_ "is-member" is-member
pgbench_ "members of the largest team" members
pgbench_ "teams of the busiest person" teams
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null
rm -rf "$pgdata"
pgdata=""

# --- servers and nginx under wrk -----------------------------------------------------------
cat >"$work/paths.lua" <<'LUA'
local paths = {}
for line in io.lines(os.getenv("PATHS_FILE")) do paths[#paths + 1] = line end
math.randomseed(42)
request = function()
    return wrk.format("GET", paths[math.random(#paths)])
end
LUA
# Seconds to milliseconds for wrk's latency units.
wrk_ms() { awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } print v }'; }
load() {
    local route=$1 url=$2 paths=$3 c out threads
    for c in 1 8 64; do
        threads=$((c < 2 ? 1 : 2))
        out=$(PATHS_FILE="$paths" wrk -t "$threads" -c "$c" -d "${WRK_SECONDS}s" --latency -s "$work/paths.lua" "$url")
        local cmd="wrk -t $threads -c $c -d ${WRK_SECONDS}s --latency -s paths.lua ($route)"
        row "http/$route req/s" "$c" "$(echo "$out" | awk '/^Requests\/sec/ {print $2}')" req/s "$cmd"
        row "http/$route p50" "$c" "$(echo "$out" | awk '$1 == "50%" {print $2}' | wrk_ms)" ms "$cmd"
        row "http/$route p99" "$c" "$(echo "$out" | awk '$1 == "99%" {print $2}' | wrk_ms)" ms "$cmd"
        errors=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
        [ -z "$errors" ] || echo "warning: $route at $c connections: $errors non-2xx answers" >&2
    done
}

say "librarian and nginx: $HTTP_FILES files of 4 KiB"
mkdir -p "$work/files" "$work/www" "$work/librarian"
head -c $((HTTP_FILES * 4096)) /dev/urandom | split -b 4096 -a 5 -d - "$work/files/f"
lport=$(free_port)
"$bin/librarian" --data-dir "$work/librarian" serve --dev --listen "127.0.0.1:$lport" 2>"$work/librarian.log" &
pids+=($!)
wait_http "http://127.0.0.1:$lport/health"
first=1
for f in "$work"/files/f*; do
    name=$(basename "$f")
    [ -n "$first" ] || echo next
    first=""
    printf 'url = "http://127.0.0.1:%s/buckets/capacity/files?filename=%s.bin"\ndata-binary = "@%s"\nheader = "Content-Type: application/octet-stream"\nwrite-out = "\\n"\n' \
        "$lport" "$name" "$f"
done >"$work/upload.curl"
curl -sS -f -K "$work/upload.curl" >"$work/uploaded.json"
grep -o '"id":[0-9]*' "$work/uploaded.json" | cut -d: -f2 >"$work/ids"
[ "$(wc -l <"$work/ids")" = "$HTTP_FILES" ] || { echo "upload failed: $(head -c 300 "$work/uploaded.json")" >&2; exit 1; }
paste -d' ' "$work/ids" <(ls "$work/files") | while read -r id name; do
    mkdir -p "$work/www/$id"
    cp "$work/files/$name" "$work/www/$id/$name.bin"
    echo "/$id/$name.bin"
done >"$work/file.paths"
chmod -R a+rX "$work/www"
load "librarian small file" "http://127.0.0.1:$lport" "$work/file.paths"
kill -TERM "${pids[-1]}" && wait "${pids[-1]}" || true
unset 'pids[-1]'

nport=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes $(nproc);
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$nport;
        root $work/www;
    }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
pids+=($!)
wait_http "http://127.0.0.1:$nport$(head -n 1 "$work/file.paths")"
load "nginx small file" "http://127.0.0.1:$nport" "$work/file.paths"
kill -TERM "${pids[-1]}" && wait "${pids[-1]}" || true
unset 'pids[-1]'

say "directory: the full generated graph"
"$bin/directory" --data-dir "$work/directory" import teams "$work/teams/teams.tsv" 2>/dev/null
dport=$(free_port)
"$bin/directory" --data-dir "$work/directory" serve --dev --listen "127.0.0.1:$dport" 2>"$work/directory.log" &
pids+=($!)
wait_http "http://127.0.0.1:$dport/health"
echo "/teams/$BIG_TEAM/members?transitive=true&type=person" >"$work/members.paths"
echo "/persons/$HEAVY_PERSON/teams?transitive=true" >"$work/teams.paths"
load "directory is-member" "http://127.0.0.1:$dport" "$work/teams/is-member.paths"
load "directory members of the largest team" "http://127.0.0.1:$dport" "$work/members.paths"
load "directory teams of the busiest person" "http://127.0.0.1:$dport" "$work/teams.paths"
kill -TERM "${pids[-1]}" && wait "${pids[-1]}" || true
unset 'pids[-1]'

# --- the servers on the largest stores ------------------------------------------------------
# Each server started on a store of the largest blob and commit scale (a fill and an import of
# their own: the in-process runs above leave no store behind), its resident memory read at
# /health and after random reads; 0 skips one.
if [ "$SERVER_FILES" != 0 ] || [ "$SERVER_COMMITS" != 0 ]; then
    say "the servers' resident memory: $SERVER_FILES files, $SERVER_COMMITS commits"
    FILES="$SERVER_FILES" COMMITS="$SERVER_COMMITS" DURATION="$WRK_SECONDS" RESULTS="$results" \
        MALLOC_ARENA_MAX=2 BENCH_DIR="$work" bash benches/servers/memory-at-scale.sh
fi

# --- the report ----------------------------------------------------------------------------
took=$(($(date +%s) - started))
{
    echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "run took:    $((took / 60)) min $((took % 60)) s (build included)"
    echo "scales:      files $BLOB_SCALES; persons $TEAM_SCALES; commits $COMMIT_SCALES; git $GIT_SCALES commits, $GIT_PAIRS pairs"
} >>"$work/machine.txt"
say "writing $DOCS/CAPACITY.md"
"$cap" report --results "$results" --machine "$work/machine.txt" --out "$DOCS"
cp "$results" "$DOCS/capacity/results.tsv"
cp "$work/machine.txt" "$DOCS/capacity/machine.txt"
echo "done in $((took / 60)) min $((took % 60)) s"
