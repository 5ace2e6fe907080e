# Sourced by demo.sh and test.sh: make ./.venv with a working pip, on a fresh Debian machine too.
# Debian's python3 has no venv module until python3-venv is installed; as root we install it, else we say how.
set -eu
cd "$(dirname "$0")/.."
VENV=${GP_VENV:-.venv}
if [ ! -x "$VENV/bin/pip" ]; then
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "== installing python3-venv (apt)"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$VENV"
        else
            echo "python3 cannot create a virtual environment: install python3-venv (sudo apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
fi
PY="$VENV/bin/python"
