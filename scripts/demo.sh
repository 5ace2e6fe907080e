#!/bin/sh
# Install gateway-provisioners into ./.venv and launch a real kernel through it, printing each phase with its time.
. "$(dirname "$0")/venv.sh"
echo "== installing gateway-provisioners and ipykernel into $VENV"
"$PY" -m pip install -q --upgrade pip >/dev/null
"$PY" -m pip install -q . ipykernel
echo "== demo"
# The demo refuses to run kernels as root (root is refused by default), so it runs them as an ordinary user name.
exec "$VENV/bin/gateway-provisioners-demo" "$@"
