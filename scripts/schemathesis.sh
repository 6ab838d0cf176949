#!/usr/bin/env bash
# The OpenAPI documents as a contract: validates servers/openapi/{librarian,directory}.json
# with openapi-spec-validator, then runs schemathesis (all checks) against both servers,
# built and started here on free loopback ports with credentials configured (so that the
# documents' Basic security scheme is real) and data in a temporary directory.
#
# schemathesis 4.32.5 and openapi-spec-validator 0.9.0 (PyPI), pinned by version and hash in
# scripts/schemathesis-requirements.txt, go into a virtualenv under the user's cache directory
# the first time, like scripts/tuspy.sh.
#
#   scripts/schemathesis.sh                      # make test: a few examples per operation
#   MAX_EXAMPLES=15 scripts/schemathesis.sh      # as issue 17 ran it
#   PROFILE=release scripts/schemathesis.sh
#   SERVICES="librarian" scripts/schemathesis.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."
# shellcheck source=scripts/ports.sh
source "$here/ports.sh"
requirements=$here/schemathesis-requirements.txt
venv=${XDG_CACHE_HOME:-$HOME/.cache}/lpstore/schemathesis-4.32.5
profile=${PROFILE:-dev}
max_examples=${MAX_EXAMPLES:-3}
services=${SERVICES:-librarian directory}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

install() {
    # The lock file's hash marks a complete install: a changed pin reinstalls.
    local stamp=$venv/requirements.sha256 want
    want=$(sha256sum "$requirements" | cut -d' ' -f1)
    if [ -x "$venv/bin/schemathesis" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        echo "installing Debian packages: python3 python3-venv" >&2
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
    fi
    echo "installing schemathesis 4.32.5 and openapi-spec-validator 0.9.0 (PyPI) into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
        --require-hashes -r "$requirements" >&2
    echo "$want" > "$stamp"
}

if [ "${1:-}" = install ]; then
    install
    exit 0
fi
install

echo "openapi-spec-validator: servers/openapi/*.json" >&2
for service in librarian directory; do
    "$venv/bin/openapi-spec-validator" "servers/openapi/$service.json"
done

cargo build --profile "$profile" -p servers --bin librarian --bin directory
target=${CARGO_TARGET_DIR:-target}
bin=$target/$([ "$profile" = dev ] && echo debug || echo "$profile")

work=$(mktemp -d)
pids=()
stop() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap stop EXIT

user=contract
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
hash=$(printf '%s\n' "$password" | "$bin/librarian" hash-password)
failed=0
for service in $services; do
    port=$(free_port)
    mkdir -p "$work/$service"
    cat > "$work/$service.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
allowed_cidrs = ["127.0.0.0/8"]
[[server.credentials]]
user = "$user"
hash = "$hash"
[store]
data_dir = "$work/$service"
TOML
    "$bin/$service" --config "$work/$service.toml" serve > "$work/$service.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do
        curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        sleep 0.1
    done
    echo "schemathesis: $service on 127.0.0.1:$port, $max_examples examples per operation" >&2
    # Bounded: each operation gets max_examples generated requests, no stateful phase.
    # POST /admin/backup is left out: it writes a backup into any absolute directory the
    # client names on the server's machine (tests/it/backup.rs covers its contract).
    # Run from the temporary directory: schemathesis keeps a cache (.schemathesis/) in the
    # current directory, which must not land in the work tree.
    if ! (cd "$work" && SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=$here timeout 300 \
        "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "http://127.0.0.1:$port/openapi.json" \
        --checks all --max-examples "$max_examples" --auth "$user:$password" \
        --exclude-path /admin/backup \
        --phases examples,coverage,fuzzing --no-color --seed 17 \
        --generation-database none --request-timeout 30); then
        echo "schemathesis: $service FAILED; the end of its log:" >&2
        tail -20 "$work/$service.log" >&2
        failed=1
    fi
done
exit "$failed"
