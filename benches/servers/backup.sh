#!/usr/bin/env bash
# Backup and restore timings (docs/RELIABILITY.md, "Backup and restore"): a librarian holding
# FILES files (half of SMALL bytes, stored inline in the engine; half of LARGE bytes, blob
# files) and a directory holding EDGES team memberships, each backed up while it serves
# (`backup DIR --server URL`, the server writes DIR), then restored into a fresh data directory
# (`restore DIR`); prints the seconds of each step and the sizes. Both servers listen on
# 127.0.0.1 only, in development mode, and are stopped at the end.
#
#   benches/servers/backup.sh
#   FILES=20000 EDGES=200000 benches/servers/backup.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
FILES="${FILES:-10000}"
SMALL="${SMALL:-4096}"
LARGE="${LARGE:-65536}"
EDGES="${EDGES:-100000}"
LPORT="${LPORT:-28281}"
DPORT="${DPORT:-28282}"

cargo build --release -p servers --bin librarian --bin directory
target="${CARGO_TARGET_DIR:-target}/release"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
took() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
wait_up() { for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return; sleep 0.1; done; echo "port $1 never answered" >&2; exit 1; }

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
RUST_LOG=warn timeout 1200 "$target/librarian" --data-dir "$work/librarian" \
    serve --dev --listen "127.0.0.1:$LPORT" 2>"$work/librarian.log" &
pids+=($!)
wait_up "$LPORT"
# FILES distinct files over keep-alive connections, four at a time.
python3 - "$LPORT" "$FILES" "$SMALL" "$LARGE" <<'PY'
import http.client, sys, threading
port, files, small, large = (int(a) for a in sys.argv[1:])
def worker(first):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(first, files, 4):
        size = small if i % 2 == 0 else large
        body = (b"%012d" % i) * (size // 12) + b"x" * (size % 12)
        conn.request("POST", f"/buckets/bench/files?filename=f{i}", body)
        response = conn.getresponse()
        response.read()
        assert response.status == 201, response.status
threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
PY
echo "librarian: $FILES files uploaded ($((FILES / 2)) of $SMALL bytes inline, $((FILES / 2)) of $LARGE bytes as blob files), data directory $(du -sh "$work/librarian" | cut -f1)"
start=$(now)
"$target/librarian" backup "$work/librarian-backup" --server "http://127.0.0.1:$LPORT" >"$work/lb.json"
end=$(now)
echo "librarian backup while serving: $(took "$start" "$end") s, $(du -sh "$work/librarian-backup" | cut -f1): $(cat "$work/lb.json")"
start=$(now)
RUST_LOG=warn "$target/librarian" --data-dir "$work/librarian-restored" restore "$work/librarian-backup" >/dev/null
end=$(now)
echo "librarian restore (verified, opened, every blob hashed): $(took "$start" "$end") s"

teams="$work/teams.tsv"
python3 - "$EDGES" >"$teams" <<'PY'
import sys
edges = int(sys.argv[1])
print("team\tmember\trole\texpires")
for i in range(edges):
    print(f"team{i % 1000}\tperson{i}\tmember\t")
PY
RUST_LOG=warn "$target/directory" --data-dir "$work/directory" import teams "$teams" >/dev/null
RUST_LOG=warn timeout 1200 "$target/directory" --data-dir "$work/directory" \
    serve --dev --listen "127.0.0.1:$DPORT" 2>"$work/directory.log" &
pids+=($!)
wait_up "$DPORT"
start=$(now)
"$target/directory" backup "$work/directory-backup" --server "http://127.0.0.1:$DPORT" >"$work/db.json"
end=$(now)
echo "directory ($EDGES memberships) backup while serving: $(took "$start" "$end") s, $(du -sh "$work/directory-backup" | cut -f1): $(cat "$work/db.json")"
start=$(now)
RUST_LOG=warn "$target/directory" --data-dir "$work/directory-restored" restore "$work/directory-backup" >/dev/null
end=$(now)
echo "directory restore (verified, opened, indexes loaded): $(took "$start" "$end") s"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
