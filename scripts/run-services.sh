#!/usr/bin/env bash
# Builds the librarian and the directory and runs both on 127.0.0.1 in development mode (no
# credentials, loopback only), with data under ./data. Ctrl-C stops both gracefully.
#
#   scripts/run-services.sh            # release build
#   PROFILE=dev scripts/run-services.sh
#   LIBRARIAN_ADDR=127.0.0.1:9081 DIRECTORY_ADDR=127.0.0.1:9082 scripts/run-services.sh
set -euo pipefail

cd "$(dirname "$0")/.."
profile="${PROFILE:-release}"
librarian_addr="${LIBRARIAN_ADDR:-127.0.0.1:8081}"
directory_addr="${DIRECTORY_ADDR:-127.0.0.1:8082}"
data="${DATA_DIR:-./data}"

cargo build --profile "$profile" -p servers --bins
target="${CARGO_TARGET_DIR:-target}"
dir="$target/$([ "$profile" = dev ] && echo debug || echo "$profile")"

mkdir -p "$data/librarian" "$data/directory"
# RocksDB (Debian's library) allocates with glibc's malloc from every thread that reads, and
# glibc gives up to 8 arenas a core, each keeping freed blocks: two arenas cut the librarian's
# resident memory by 62-115 MiB after random reads of 10^6-10^7 files (docs/API.md).
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
"$dir/librarian" --data-dir "$data/librarian" serve --dev --listen "$librarian_addr" &
librarian_pid=$!
"$dir/directory" --data-dir "$data/directory" serve --dev --listen "$directory_addr" &
directory_pid=$!

stop() {
    kill -TERM "$librarian_pid" "$directory_pid" 2>/dev/null || true
    wait "$librarian_pid" "$directory_pid" 2>/dev/null || true
}
trap stop INT TERM EXIT

for addr in "$librarian_addr" "$directory_addr"; do
    for _ in $(seq 100); do
        curl -fsS "http://$addr/health" >/dev/null 2>&1 && break
        sleep 0.1
    done
done

cat <<MSG

librarian: http://$librarian_addr   (data: $data/librarian)
directory: http://$directory_addr   (data: $data/directory)

  curl --data-binary @docs/API.md -H "Content-Type: text/markdown" "http://$librarian_addr/buckets/docs/files?filename=API.md"
  curl "http://$librarian_addr/1/API.md"
  curl -X PUT -H 'Content-Type: application/json' -d '{"role":"member"}' http://$directory_addr/teams/ubuntu-dev/members/alice
  curl http://$directory_addr/teams/ubuntu-dev/members

The API: docs/API.md, and /openapi.json on each. Ctrl-C stops both.
MSG
wait "$librarian_pid" "$directory_pid"
