#!/bin/sh
# Install what the tests need (apt packages too, when root) into ./.venv and run lint, unit and integration tests.
. "$(dirname "$0")/venv.sh"
echo "== installing gateway-provisioners[test] into $VENV"
"$PY" -m pip install -q --upgrade pip >/dev/null
"$PY" -m pip install -q ".[test]"
echo "== ruff"
"$VENV/bin/ruff" check src launchers tests benchmarks docs/examples noxfile.py
"$VENV/bin/ruff" format --check src launchers tests benchmarks docs/examples noxfile.py
echo "== pytest"
# Run from a folder outside the checkout's src/, so the tests exercise the installed wheel (agent files included).
exec "$PY" -m pytest -p no:cacheprovider -ra "$@"
