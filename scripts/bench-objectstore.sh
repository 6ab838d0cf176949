#!/usr/bin/env bash
# Upload and download throughput through the blob store over Swift against the plain Swift
# client (`swift upload` / `swift download` from python3-swiftclient), same files, same
# cluster, same parallelism (10 objects at a time, swiftclient's default), in one run.
#
# Every timed phase starts from a settled machine (`sync`, then a second's pause), so that no
# phase pays for the disk writeback of the one before it, and the order alternates (odd rounds
# run the swift client's upload first, even rounds the store's), so that neither side always
# follows the other. The ratio is store / swift: above 1, the store is faster.
#
# The store is timed inside a process that has opened the backend and authenticated already;
# the swift client is a new process per phase that starts Python, imports swiftclient and
# authenticates before its first byte. That fixed cost is measured (the median of 3 runs of
# `swift stat`: start-up, authentication and one HEAD of the account) and subtracted from
# every swift phase, so that both sides are timed from their first request. Subtracting the
# HEAD as well errs in the client's favour by one small request. The raw seconds and the cost
# subtracted are printed beside each row.
#
#   cargo build --release -p objectstore --example bench
#   scripts/with-swift.sh scripts/bench-objectstore.sh [ROUNDS] [LARGE_COUNT LARGE_MIB] [SMALL_COUNT SMALL_KIB]
#
# Defaults: 2 rounds; 8 files of 64 MiB; 400 files of 64 KiB. BENCH_PROTOCOL=s3 runs the
# store over the S3 API instead (the reference stays the Swift client). BENCH_BIN overrides
# the path of the bench binary.
set -euo pipefail
: "${SWIFT_AUTH_URL:?no Swift in the environment: run under scripts/with-swift.sh}"
rounds=${1:-2}
large_count=${2:-8}
large_mib=${3:-64}
small_count=${4:-400}
small_kib=${5:-64}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${BENCH_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/examples/bench}
[ -x "$bin" ] || { echo "build it first: cargo build --release -p objectstore --example bench" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-objectstore.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/large" "$work/small"
for i in $(seq 1 "$large_count"); do head -c $((large_mib << 20)) /dev/urandom > "$work/large/l$i"; done
for i in $(seq 1 "$small_count"); do head -c $((small_kib << 10)) /dev/urandom > "$work/small/s$i"; done

swift_cmd() { swift -q -A "$SWIFT_AUTH_URL" -U "$SWIFT_USER" -K "$SWIFT_KEY" "$@"; }
now() { date +%s.%N; }

# The swift client's fixed cost per run (see above): the median of 3 `swift stat`.
startup=$(for _ in 1 2 3; do
    t0=$(now); swift_cmd stat >/dev/null; t1=$(now); python3 -c "print($t1 - $t0)"
done | sort -n | sed -n 2p)
# MB/s of the swift client: its elapsed time less the start-up, never below a millisecond.
swift_mbps() { python3 -c "print(f'{$1 / max($3 - $2 - $startup, 0.001) / 1e6:.1f}')"; }
echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); protocol ${BENCH_PROTOCOL:-swift}; MB/s (10^6 bytes/s)"
echo "# sets: large = $large_count x $large_mib MiB, small = $small_count x $small_kib KiB; 10 objects at a time"
echo "# the swift client's start-up and authentication, subtracted from each of its phases: $(python3 -c "print(f'{$startup:.3f}')") s (median of 3 'swift stat')"
settle() { sync; sleep 1; }
printf '%-6s %-6s %-9s %10s %10s %7s  %s\n' round set direction swift store ratio \
    "swift raw seconds; store: hashed and spooled after" | tee "$work/table"
for round in $(seq 1 "$rounds"); do
    for set in large small; do
        bytes=$(du -sb "$work/$set" | cut -f1)
        container="plain-$set-$round-$RANDOM"
        swift_upload() {
            settle
            t0=$(now); (cd "$work/$set" && swift_cmd upload --object-threads 10 "$container" .); t1=$(now)
            swift_up=$(swift_mbps "$bytes" "$t0" "$t1")
            swift_up_raw=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
        }
        store_both() {
            rm -rf "$work/out"
            settle
            out=$("$bin" "$work/$set" "$work/out" 10)
            store_up=$(echo "$out" | awk '$2 == "upload" {print $5}')
            store_down=$(echo "$out" | awk '$2 == "download" {print $5}')
            store_spooled=$(echo "$out" | awk '$2 == "spooled" {print $3 " of " $4 " s"}')
            cmp -s "$work/$set/$(ls "$work/$set" | head -1)" "$work/out/downloaded/$(ls "$work/$set" | head -1)" \
                || { echo "store download differs" >&2; exit 1; }
            rm -rf "$work/out"
        }
        if [ $((round % 2)) = 1 ]; then swift_upload; store_both; else store_both; swift_upload; fi
        rm -rf "$work/swift-out"; mkdir -p "$work/swift-out"
        settle
        t0=$(now); swift_cmd download --object-threads 10 -D "$work/swift-out" "$container"; t1=$(now)
        swift_down=$(swift_mbps "$bytes" "$t0" "$t1")
        swift_down_raw=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
        rm -rf "$work/swift-out"
        for dir in upload download; do
            if [ $dir = upload ]; then a=$swift_up; b=$store_up; raw=$swift_up_raw; else a=$swift_down; b=$store_down; raw=$swift_down_raw; fi
            note="${raw} s"; [ $dir = upload ] && [ $set = large ] && note="$note; $store_spooled"
            printf '%-6s %-6s %-9s %10s %10s %7s  %s\n' "$round" "$set" "$dir" "$a" "$b" \
                "$(python3 -c "print(f'{$b / $a:.2f}')")" "$note" | tee -a "$work/table"
        done
    done
done
echo "# median ratio over the rounds (store / swift):"
for set in large small; do
    for dir in upload download; do
        awk -v s=$set -v d=$dir '$2 == s && $3 == d {print $6}' "$work/table" | sort -n \
            | awk -v s=$set -v d=$dir '{r[NR] = $1} END {m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2; printf "#   %-6s %-9s %.2f\n", s, d, m}'
    done
done
