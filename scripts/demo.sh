#!/bin/sh
# Install gateway-provisioners into ./.venv and launch a real kernel through it, printing each phase with its time.
. "$(dirname "$0")/venv.sh"
echo "== installing gateway-provisioners and ipykernel into $VENV"
"$PY" -m pip install -q --upgrade pip >/dev/null
"$PY" -m pip install -q . ipykernel
echo "== demo"
# Kernels that would really run as root are refused by default; run as root, the demo has to allow it explicitly.
if [ "$(id -u)" = 0 ]; then
    echo "== running as root: the demo's kernel runs as root too (--allow-root)"
    set -- --allow-root "$@"
fi
exec "$VENV/bin/gateway-provisioners-demo" "$@"
