#!/usr/bin/env bash
# The tus project's Python client (PyPI `tuspy`), pinned by version and hash in
# scripts/tuspy-requirements.txt, installed into a virtualenv under the user's cache
# directory the first time, for the librarian's tus tests (servers/tests/it/tus_clients.rs).
#
#   scripts/tuspy.sh python          installs what is missing, prints the venv's interpreter
#   scripts/tuspy.sh run ARGS...     runs scripts/tus_client.py ARGS... with it
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
requirements=$here/tuspy-requirements.txt
venv=${XDG_CACHE_HOME:-$HOME/.cache}/lpstore/tuspy-1.1.0
python=$venv/bin/python
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

install() {
    # The lock file's hash marks a complete install: a changed pin reinstalls.
    local stamp=$venv/requirements.sha256
    local want
    want=$(sha256sum "$requirements" | cut -d' ' -f1)
    if [ -x "$python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        echo "installing Debian packages: python3 python3-venv" >&2
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
    fi
    echo "installing tuspy 1.1.0 (PyPI) into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
        --require-hashes -r "$requirements" >&2
    "$python" -c 'import tusclient.client' || { echo "tuspy does not import" >&2; return 1; }
    echo "$want" > "$stamp"
}

case ${1:?usage: tuspy.sh python|run ARGS...} in
    python) install; echo "$python" ;;
    run) shift; install; exec "$python" "$here/tus_client.py" "$@" ;;
    *) echo "usage: tuspy.sh python|run ARGS..." >&2; exit 2 ;;
esac
