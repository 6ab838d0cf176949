#!/usr/bin/env bash
# The failover test of issue 16: three instances of each service on PostgreSQL behind Debian's
# HAProxy, under a bounded loopback load, with their leaders SIGKILLed, a rolling restart, its
# synchronous standby promoted, and (long form) PostgreSQL restarted. scripts/ha_test.py
# does the work and the checks (docs/RELIABILITY.md, "Failover"); this script builds the
# servers, starts SeaweedFS for the librarian's blobs (scripts/with-seaweedfs.sh) and stops
# everything it started at the end, by PID.
#
#   scripts/ha-test.sh short    3 kills, one rolling restart and the standby promoted (make
#                               test), about a minute
#   scripts/ha-test.sh long     20 kills, the rolling restart, PostgreSQL restarted, the
#                               standby promoted (make ha)
#
# HA_KILLS overrides the number of kills; HA_PHASES chooses among kills,rolling,postgres,standby; HA_LEADER_ONLY=1 reads the final check from the
# leaders only; HA_KEEP=1 keeps the working directory (logs, requests.jsonl, report.json).
# A failed run keeps its logs, requests.jsonl and report.json in ~/.cache/lpstore/ha-failures/.
# PROFILE (default dev) chooses the servers' build profile.
set -euo pipefail

mode=${1:?usage: ha-test.sh short|long}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "${SEAWEEDFS_S3_ENDPOINT:-}" ]; then
    exec "$here/with-seaweedfs.sh" bash "$here/ha-test.sh" "$@"
fi
cd "$here/.."

profile=${PROFILE:-dev}
cargo build --quiet --profile "$profile" -p servers --bins --all-features
bin="${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")"

work=$(mktemp -d "${TMPDIR:-/tmp}/ha-test.XXXXXX")
# Whatever ha_test.py could not stop (it stops everything itself when it can): the PIDs it
# recorded, then the PostgreSQL clusters.
cleanup() {
    local pid
    # Interrupted: ha_test.py stops its servers, HAProxy and PostgreSQL itself on SIGTERM.
    if [ -n "${driver:-}" ] && kill -0 "$driver" 2>/dev/null; then
        kill -TERM "$driver" 2>/dev/null || true
        for _ in $(seq 1 600); do kill -0 "$driver" 2>/dev/null || break; sleep 0.1; done
    fi
    if [ -f "$work/pids" ]; then
        while read -r pid; do
            # Only if that PID is still ours (a server or HAProxy started with a file of $work),
            # not a process that got the number after ours exited.
            if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$work/"; then
                kill -9 "$pid" 2>/dev/null || true
            fi
        done <"$work/pids"
    fi
    if [ -d "$work/pg-standby" ]; then
        pg_ctl=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/pg_ctl
        if [ "$(id -u)" = 0 ]; then
            runuser -u postgres -- "$pg_ctl" -D "$work/pg-standby" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
        else
            "$pg_ctl" -D "$work/pg-standby" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
        fi
    fi
    bash "$here/postgres.sh" stop "$work/pg-primary" >/dev/null 2>&1 || true
    if [ "${HA_KEEP:-0}" = 1 ]; then
        echo "ha-test: kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Readable by the postgres user when run as root (PostgreSQL refuses to run as root).
chmod 711 "$work"
args=("$mode" --bin "$bin" --work "$work")
[ -n "${HA_KILLS:-}" ] && args+=(--kills "$HA_KILLS")
[ -n "${HA_PHASES:-}" ] && args+=(--phases "$HA_PHASES")
[ "${HA_LEADER_ONLY:-0}" = 1 ] && args+=(--leader-only)
status=0
# In the background, waited for: a SIGTERM to this script runs the trap at once.
python3 "$here/ha_test.py" "${args[@]}" &
driver=$!
wait "$driver" || status=$?
if [ "$status" != 0 ]; then
    echo "ha-test: the last lines of each log ($work/logs):" >&2
    for log in "$work"/logs/*.log; do
        echo "== $log" >&2
        tail -n 5 "$log" >&2
    done
    # A failure seen once in make test must be readable afterwards: the logs, every request
    # and the report (its counts) are kept beside the build cache (not the databases).
    kept="$HOME/.cache/lpstore/ha-failures/$(date -u +%Y%m%dT%H%M%SZ)"
    mkdir -p "$kept"
    cp -r "$work/logs" "$kept/" 2>/dev/null || true
    cp "$work/requests.jsonl" "$work/report.json" "$kept/" 2>/dev/null || true
    echo "ha-test: logs, requests.jsonl and report.json kept in $kept" >&2
fi
exit "$status"
