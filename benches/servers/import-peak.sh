#!/usr/bin/env bash
# The directory's memory around a team import (issue 18, part 5): the resident peak of
# `directory import teams` into an empty store (GNU time's maximum RSS, and VmRSS sampled
# every 100 ms into a trace), then the resident size of a server started on the imported
# store (VmRSS 3 s after its /health answers), and their ratio; ROUNDS imports, each into a
# new store. The graph is the Launchpad-shaped one of `servers/examples/team_graph.rs` (SCALE
# 1, or x10 for ten times the persons and teams), generated into $GRAPH_DIR when missing.
# Listens on 127.0.0.1 only; every import and server is bounded in time.
#
#   benches/servers/import-peak.sh
#   DIRECTORY=/path/to/an/older/directory ROUNDS=5 benches/servers/import-peak.sh
#   SCALE=x10 ROUNDS=1 benches/servers/import-peak.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
ROUNDS="${ROUNDS:-3}"
SCALE="${SCALE:-1}"
PORT="${PORT:-18934}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lpstore/target}"
GRAPH_DIR="${GRAPH_DIR:-$CARGO_TARGET_DIR/bench-graphs/teams-$SCALE}"
command -v curl >/dev/null || { sudo -n true 2>/dev/null && SUDO=sudo; ${SUDO:-} apt-get install -y curl; }
[ -x /usr/bin/time ] || { sudo -n true 2>/dev/null && SUDO=sudo; ${SUDO:-} apt-get install -y time; }

if [ -z "${DIRECTORY:-}" ]; then
    cargo build --release -p servers --bin directory
    DIRECTORY="$CARGO_TARGET_DIR/release/directory"
fi
if [ ! -f "$GRAPH_DIR/teams.tsv" ]; then
    # A fixed "now", so that the same expiries are drawn each time.
    cargo run --release -p servers --example team_graph -- "$SCALE" "$GRAPH_DIR" 1796555541
fi

work=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

for round in $(seq "$ROUNDS"); do
    store="$work/store-$round"
    trace="$work/trace-$round.txt"
    mkdir "$store"
    timeout 1800 /usr/bin/time -f "%M %e" -o "$work/time-$round" \
        "$DIRECTORY" --data-dir "$store" import teams "$GRAPH_DIR/teams.tsv" >/dev/null 2>"$work/import-$round.err" &
    timer=$!
    : > "$trace"
    while kill -0 "$timer" 2>/dev/null; do
        pid=$(pgrep -n -f -- "--data-dir $store import" || true)
        [ -n "$pid" ] && awk -v t="$(date +%s.%N)" '/VmRSS/ {print t, $2}' "/proc/$pid/status" >> "$trace" 2>/dev/null || true
        sleep 0.1
    done
    wait "$timer" || { cat "$work/import-$round.err"; exit 1; }
    read -r peak_kb seconds < "$work/time-$round"

    "$DIRECTORY" --data-dir "$store" serve --listen "127.0.0.1:$PORT" --dev >"$work/serve.log" 2>&1 &
    server=$!
    for _ in $(seq 600); do
        curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && break
        sleep 0.5
    done
    sleep 3
    steady_kb=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
    kill "$server"; wait "$server" 2>/dev/null || true
    server=
    awk -v p="$peak_kb" -v s="$steady_kb" -v t="$seconds" -v r="$round" 'BEGIN {
        printf "round %d: import peak %.1f MB in %.2f s; server on the store %.1f MB; peak/steady %.2fx\n",
            r, p / 1024, t, s / 1024, p / s }'
    rm -rf "$store"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
