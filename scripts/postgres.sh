#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for tests: Debian's `postgresql` package (installed
# here when missing), `initdb` into DIR, one server on a free port of 127.0.0.1.
#
#   scripts/postgres.sh start DIR   installs what is missing, initdb, starts, waits until ready
#   scripts/postgres.sh stop DIR    stops what `start` started (pg_ctl, then the PID it recorded)
#
# Once started (printed, and written to DIR/env for `source`):
#   LPSTORE_TEST_POSTGRES   a libpq connection string, "host=127.0.0.1 port=P user=lpstore
#                           dbname=postgres" (trust authentication, loopback only)
#   PGHOST, PGPORT, PGUSER, PGDATABASE for psql
#
# The port is $POSTGRES_PORT when set, otherwise a free one. PostgreSQL refuses to run as root:
# when started by root, the cluster belongs to the `postgres` user (created when missing) and
# is run with runuser. Settings are for tests, not for keeping data: fsync and
# full_page_writes are off (a test never outlives the machine), synchronous_commit stays on so
# that the engine's synced and buffered commits still differ, and there is room for many
# connections because tests run in parallel, each with its own schema and connections.
# POSTGRES_DURABLE=1 keeps fsync and full_page_writes on, as in production: for benchmarks
# (benches/src/bin/engine_compare.rs) that compare synced commits with RocksDB's.
set -euo pipefail
# shellcheck source=scripts/ports.sh
source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

command=${1:?usage: postgres.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: postgres.sh start|stop DIR}")
data=$dir/data
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
as_owner=()
if [ "$(id -u)" = 0 ]; then
    as_owner=(runuser -u postgres --)
fi

pg_bin() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$bin" ] && [ -x "$bin/initdb" ] || return 1
    echo "$bin"
}

install() {
    if ! pg_bin >/dev/null; then
        echo "installing Debian packages: postgresql"
        $SUDO apt-get update -qq
        # The package's own cluster and service are not used: this script starts its own.
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home postgres
    fi
}

stop() {
    local bin
    if [ -f "$data/postmaster.pid" ] && bin=$(pg_bin); then
        "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    fi
    if [ -f "$dir/pid" ]; then
        local pid
        pid=$(cat "$dir/pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill -QUIT "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/pid"
    fi
}

start() {
    install
    stop
    local bin port attempt
    bin=$(pg_bin)
    mkdir -p "$data"
    if [ "$(id -u)" = 0 ]; then
        chmod 711 "$dir"
        chown postgres "$data"
    fi
    chmod 700 "$data"
    "${as_owner[@]}" "$bin/initdb" -D "$data" -A trust -U lpstore -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; return 1; }
    # A port chosen here can be taken between the check and the server's bind: then another.
    for attempt in 1 2 3 4 5; do
        if [ -n "${POSTGRES_PORT:-}" ]; then
            port=$POSTGRES_PORT
            check_ports_free POSTGRES_PORT "$port"
        else
            port=$(free_port)
        fi
        durability="-c fsync=off -c full_page_writes=off"
        if [ "${POSTGRES_DURABLE:-0}" = 1 ]; then
            durability="-c fsync=on -c full_page_writes=on"
        fi
        # No Unix socket (nothing to clean up, nothing shared): TCP on loopback only.
        if "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -w -t 60 -l "$data/server.log" -o "-p $port \
            -c listen_addresses=127.0.0.1 -c unix_socket_directories= \
            $durability -c synchronous_commit=on \
            -c max_connections=300 -c shared_buffers=32MB -c max_wal_size=256MB \
            -c log_min_messages=warning -c log_min_error_statement=panic" start >/dev/null; then
            break
        fi
        if [ -n "${POSTGRES_PORT:-}" ] || [ "$attempt" = 5 ]; then
            cat "$data/server.log" >&2
            return 1
        fi
    done
    head -n 1 "$data/postmaster.pid" >"$dir/pid"
    for _ in $(seq 1 100); do
        if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres -U lpstore; then
            cat >"$dir/env" <<ENV
export LPSTORE_TEST_POSTGRES='host=127.0.0.1 port=$port user=lpstore dbname=postgres'
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=lpstore PGDATABASE=postgres
ENV
            echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $data)"
            return 0
        fi
        sleep 0.1
    done
    echo "PostgreSQL did not accept connections on 127.0.0.1:$port; its log:" >&2
    cat "$data/server.log" >&2
    return 1
}

case "$command" in
start) start ;;
stop) stop ;;
*)
    echo "usage: postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
