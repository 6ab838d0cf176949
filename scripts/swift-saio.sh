#!/usr/bin/env bash
# A real single-node OpenStack Swift on loopback ("Swift all in one"), from Debian's packages:
# account, container and object servers and a proxy with tempauth and the s3api middleware, so
# one cluster serves both the native Swift API and S3.
#
#   scripts/swift-saio.sh start DIR   installs what is missing, starts, waits until it answers
#   scripts/swift-saio.sh stop DIR    stops what `start` started (by the PIDs it recorded)
#
# Endpoints once started (printed, and written to DIR/env for `source`):
#   Swift: http://127.0.0.1:$SWIFT_PORT/auth/v1.0 with user test:tester, key testing
#   S3:    http://127.0.0.1:$SWIFT_PORT with access key test:tester, secret testing, region us-east-1
#
# TLS: with SWIFT_TLS_CERT and SWIFT_TLS_KEY (PEM files: the server's certificate chain and
# key) the proxy itself serves https (Swift's `cert_file`/`key_file`), and the endpoints are
# https; SWIFT_TLS_CA names the CA that the readiness check trusts (default: the cert itself).
set -euo pipefail
# shellcheck source=scripts/ports.sh
source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

command=${1:?usage: swift-saio.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: swift-saio.sh start|stop DIR}")
proxy_port=${SWIFT_PORT:-18080}
object_port=$((proxy_port + 10))
container_port=$((proxy_port + 11))
account_port=$((proxy_port + 12))
memcache_port=$((proxy_port + 13))
tls_cert=${SWIFT_TLS_CERT:-}
tls_key=${SWIFT_TLS_KEY:-}
tls_ca=${SWIFT_TLS_CA:-$tls_cert}
scheme=http
curl_tls=()
if [ -n "$tls_cert" ]; then
    [ -n "$tls_key" ] || { echo "SWIFT_TLS_CERT needs SWIFT_TLS_KEY" >&2; exit 2; }
    scheme=https
    curl_tls=(--cacert "$tls_ca")
fi
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

stop() {
    if [ -f "$dir/pids" ]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$dir/pids"
        sleep 1
        while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$dir/pids"
        rm -f "$dir/pids"
    fi
}

install() {
    local missing=""
    for package in swift swift-proxy swift-account swift-container swift-object python3-swiftclient memcached; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
    done
    if [ -n "$missing" ]; then
        echo "installing Debian packages:$missing"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
}

write_configs() {
    mkdir -p "$dir/srv/d1" "$dir/run" "$dir/log" "$dir/cache"
    local user
    user=$(id -un)
    cat > "$dir/common.conf" <<CONF
[DEFAULT]
swift_dir = $dir
devices = $dir/srv
mount_check = false
bind_ip = 127.0.0.1
user = $user
workers = 1
log_name = swift
log_facility = LOG_LOCAL0
log_address = /nonexistent
disable_fallocate = true
# Swift's defaults (0.5 s to connect to a backend server, 3-10 s for its answer) are set for
# dedicated hosts; this cluster shares 2 cores with the build and the tests, where a busy
# eventlet worker takes longer to accept, and the proxy would answer 503 for a healthy cluster.
conn_timeout = 5
node_timeout = 30
CONF
    for kind in object container account; do
        local port_var="${kind}_port"
        {
            sed "s/^workers = 1/workers = 1\nbind_port = ${!port_var}/" "$dir/common.conf"
            cat <<CONF

[pipeline:main]
pipeline = healthcheck $kind-server

[app:$kind-server]
use = egg:swift#$kind

[filter:healthcheck]
use = egg:swift#healthcheck

[$kind-replicator]
[$kind-updater]
[$kind-auditor]
CONF
        } > "$dir/$kind-server.conf"
    done
    {
        sed "s/^workers = 1/workers = 1\nbind_port = $proxy_port/" "$dir/common.conf"
        if [ -n "$tls_cert" ]; then
            printf 'cert_file = %s\nkey_file = %s\n' "$tls_cert" "$tls_key"
        fi
        cat <<CONF

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
allow_account_management = true
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
storage_url_scheme = default

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
s3_acl = false

[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:bulk]
use = egg:swift#bulk
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$memcache_port
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
CONF
    } > "$dir/proxy-server.conf"
    # One replica, one device: the smallest ring that works.
    (
        cd "$dir"
        for ring in object container account; do
            local port_var="${ring}_port"
            rm -f "$ring.builder" "$ring.ring.gz"
            swift-ring-builder "$ring.builder" create 10 1 1 >/dev/null
            swift-ring-builder "$ring.builder" add "r1z1-127.0.0.1:${!port_var}/d1" 1 >/dev/null
            swift-ring-builder "$ring.builder" rebalance >/dev/null
        done
    )
}

start() {
    install
    stop
    check_ports_free SWIFT_PORT "$proxy_port" "$object_port" "$container_port" "$account_port" "$memcache_port"
    write_configs
    # swift.conf must be at /etc/swift (the servers look nowhere else); keep Debian's policy.
    if ! grep -q "swift_hash_path_suffix = lpstore" /etc/swift/swift.conf 2>/dev/null; then
        $SUDO mkdir -p /etc/swift
        printf '[swift-hash]\nswift_hash_path_suffix = lpstore\nswift_hash_path_prefix = lpstore\n[storage-policy:0]\nname = Policy-0\ndefault = yes\n' | $SUDO tee /etc/swift/swift.conf >/dev/null
    fi
    : > "$dir/pids"
    memcached -l 127.0.0.1 -p "$memcache_port" -U 0 -u "$(id -un)" -m 32 >"$dir/log/memcached.log" 2>&1 &
    echo $! >> "$dir/pids"
    for server in object container account proxy; do
        "swift-$server-server" "$dir/$server-server.conf" >"$dir/log/$server.log" 2>&1 &
        echo $! >> "$dir/pids"
    done
    for _ in $(seq 1 100); do
        if curl -fsS "${curl_tls[@]}" -o /dev/null "$scheme://127.0.0.1:$proxy_port/healthcheck" 2>/dev/null \
            && curl -fsS "${curl_tls[@]}" -o /dev/null -H "X-Auth-User: test:tester" -H "X-Auth-Key: testing" \
                "$scheme://127.0.0.1:$proxy_port/auth/v1.0" 2>/dev/null; then
            cat > "$dir/env" <<ENV
export SWIFT_AUTH_URL=$scheme://127.0.0.1:$proxy_port/auth/v1.0
export SWIFT_USER=test:tester
export SWIFT_KEY=testing
export S3_ENDPOINT=$scheme://127.0.0.1:$proxy_port
export S3_ACCESS_KEY=test:tester
export S3_SECRET_KEY=testing
export S3_REGION=us-east-1
ENV
            echo "swift running on $scheme://127.0.0.1:$proxy_port (auth /auth/v1.0, user test:tester, key testing; S3 on the same port); source $dir/env"
            return 0
        fi
        sleep 0.2
    done
    echo "swift did not come up; logs in $dir/log" >&2
    tail -n 20 "$dir"/log/*.log >&2 || true
    stop
    return 1
}

case "$command" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: swift-saio.sh start|stop DIR" >&2; exit 2 ;;
esac
