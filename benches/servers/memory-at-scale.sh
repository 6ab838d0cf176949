#!/usr/bin/env bash
# The servers' resident memory on stores of the librarian's and the directory's real size
# (issue 18, part 4): FILES tiny files in a librarian data directory and a COMMITS-commit
# repository in a directory data directory, each server started on its store and read from.
# Prints VmRSS right after the server answers /health (open), and VmRSS and VmHWM after
# DURATION seconds of random reads from 32 connections (the block cache and the hot-file cache
# warmed by reads spread over the whole store). Outside CI: 10^7 of each takes about half an
# hour on 2 cores and about 6 GB of disk under BENCH_DIR. Loopback only; every load is
# bounded in time; the servers are stopped by PID on exit.
#
#   benches/servers/memory-at-scale.sh                          # 10^7 files and commits
#   FILES=100000 COMMITS=100000 DURATION=3 benches/servers/memory-at-scale.sh   # a smoke run
#   FILES=0 benches/servers/memory-at-scale.sh                  # the directory only
#   MALLOC_ARENA_MAX=2 benches/servers/memory-at-scale.sh       # as `make run` starts them
#   RESULTS=results.tsv ...   # also appends capacity rows (scripts/capacity.sh does, for
#                             # docs/CAPACITY.md: `librarian-memory/`, `directory-memory/`)
set -euo pipefail

cd "$(dirname "$0")/../.."
FILES="${FILES:-10000000}"
COMMITS="${COMMITS:-10000000}"
BRANCHES="${BRANCHES:-1000}"
DURATION="${DURATION:-20}"
SAMPLE="${SAMPLE:-100000}"
RESULTS="${RESULTS:-}"
LPORT="${LPORT:-28291}"
DPORT="${DPORT:-28292}"
BENCH_DIR="${BENCH_DIR:-$HOME/.cache/lpstore/bench}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lpstore/target}"
export ROCKSDB_LIB_DIR="${ROCKSDB_LIB_DIR:-/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)}"
mkdir -p "$BENCH_DIR"
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }

cargo build --release -q -p servers --bin librarian --bin directory --example commit_graph \
    -p benches --bin capacity
bin="$CARGO_TARGET_DIR/release"
work="$(mktemp -d "$BENCH_DIR/memory.XXXXXX")"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

mib() { awk -v k="$1" 'BEGIN { printf "%.0f MiB", k / 1024 }'; }
# A capacity row (name scale value unit command) when RESULTS names a file.
result() {
    [ -z "$RESULTS" ] || printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" \
        "FILES=$FILES COMMITS=$COMMITS MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-} benches/servers/memory-at-scale.sh" >>"$RESULTS"
}
calc_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
status_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$server_pid/status"; }
wait_health() {
    for _ in $(seq 3000); do curl -fsS -o /dev/null "$1/health" 2>/dev/null && return 0; sleep 0.1; done
    echo "the server at $1 did not answer /health" >&2
    exit 1
}
# Starts "$@" in the background as the server, waits for /health at $1 (the URL, shifted off).
serve() {
    local url=$1
    shift
    started=$(date +%s.%N)
    RUST_LOG=warn "$@" 2>"$work/server.log" &
    server_pid=$!
    wait_health "$url"
    open_kb=$(status_kb VmRSS)
    echo "  open: $(python3 -c "print(round($(date +%s.%N) - $started, 2))") s to /health, VmRSS $(mib "$open_kb")"
}
# Random GETs of the paths in $2 against $1 for DURATION seconds, then the memory figures,
# printed and kept as rows under prefix $3 at scale $4 ($5 names what the GETs are).
read_randomly() {
    cat >"$work/random.lua" <<'LUA'
function init(args)
    paths = {}
    for line in io.lines(args[1]) do paths[#paths + 1] = line end
    math.randomseed(os.time() + #paths)
end
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
LUA
    wrk -t 2 -c 32 -d "${DURATION}s" -s "$work/random.lua" "$1" -- "$2" >"$work/wrk.out"
    local after_kb rate
    after_kb=$(status_kb VmRSS)
    rate=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out")
    echo "  after ${DURATION} s of random $5 ($rate req/s, $(awk '/Non-2xx/ {n = $NF} END {print n + 0}' "$work/wrk.out") non-2xx): VmRSS $(mib "$after_kb") (anonymous $(mib "$(status_kb RssAnon)"), files $(mib "$(status_kb RssFile)")), VmHWM $(mib "$(status_kb VmHWM)")"
    result "$3/resident at /health" "$4" "$(calc_mib "$open_kb")" MiB
    result "$3/resident after ${DURATION} s of random $5" "$4" "$(calc_mib "$after_kb")" MiB
    result "$3/random $5" "$4" "$rate" req/s
}
stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); main at $(git rev-parse --short HEAD)"

if [ "$FILES" -gt 0 ]; then
    echo "## librarian: $FILES tiny files (inline), then the server on them"
    started=$(date +%s)
    /usr/bin/time -f "%M" -o "$work/fill.peak" "$bin/capacity" fill --files "$FILES" \
        --dir "$work/librarian" --paths "$work/librarian.paths" --sample "$SAMPLE"
    echo "  filled in $(($(date +%s) - started)) s (peak RSS of the filler $(mib "$(cat "$work/fill.peak")")), engine directory $(du -sh "$work/librarian/meta" | cut -f1)"
    serve "http://127.0.0.1:$LPORT" "$bin/librarian" --data-dir "$work/librarian" serve --dev \
        --listen "127.0.0.1:$LPORT"
    read_randomly "http://127.0.0.1:$LPORT" "$work/librarian.paths" librarian-memory "$FILES" reads
    stop_server
    rm -rf "$work/librarian"
fi

if [ "$COMMITS" -gt 0 ]; then
    echo "## directory: a repository of $COMMITS commits and $BRANCHES branches, then the server on it"
    echo "  repository: $("$bin/examples/commit_graph" "$COMMITS" "$BRANCHES" "$work/repo")"
    started=$(date +%s)
    /usr/bin/time -f "%M" -o "$work/import.peak" "$bin/directory" --data-dir "$work/directory" \
        import repo bench "$work/repo/rev-list" --refs "$work/repo/refs" >/dev/null
    echo "  imported in $(($(date +%s) - started)) s (peak RSS of the import $(mib "$(cat "$work/import.peak")")), engine directory $(du -sh "$work/directory" | cut -f1)"
    # Random is-ancestor pairs among SAMPLE commits spread over the history, and random
    # is-merged branch pairs, half and half.
    python3 - "$work/repo" "$SAMPLE" "$work/directory.paths" <<'PY'
import random, sys
repo, sample, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(7)
picked = []
with open(f"{repo}/rev-list") as f:
    for n, line in enumerate(f):
        if len(picked) < sample:
            picked.append(line.split()[0])
        elif rng.random() < sample / (n + 1):
            picked[rng.randrange(sample)] = line.split()[0]
branches = open(f"{repo}/branches.txt").read().split()
with open(out, "w") as f:
    for _ in range(sample):
        a, b = rng.choice(picked), rng.choice(picked)
        f.write(f"/repos/bench/ancestry?ancestor={a}&descendant={b}\n")
        f.write(f"/repos/bench/branches/{rng.choice(branches)}/merged-into/{rng.choice(branches)}\n")
PY
    serve "http://127.0.0.1:$DPORT" "$bin/directory" --data-dir "$work/directory" serve --dev \
        --listen "127.0.0.1:$DPORT"
    # A repository's index is loaded by its first question (5.9 s at 10^7 commits on a 2-core
    # VM: longer than the random reads' 5 s, which then timed out unanswered): timed apart,
    # so that the random questions start on a loaded repository.
    started=$(date +%s.%N)
    branch=$(head -n 1 "$work/repo/branches.txt")
    curl -fsS -m 600 -o /dev/null "http://127.0.0.1:$DPORT/repos/bench/branches/$branch/merged-into/$branch"
    loaded=$(python3 -c "print(round($(date +%s.%N) - $started, 2))")
    echo "  first question (loads the repository's index): $loaded s, VmRSS $(mib "$(status_kb VmRSS)")"
    result "directory-memory/first question (loads the index)" "$COMMITS" "$loaded" s
    read_randomly "http://127.0.0.1:$DPORT" "$work/directory.paths" directory-memory "$COMMITS" \
        questions
    stop_server
fi
