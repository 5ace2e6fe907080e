#!/bin/sh
# Install what the tests need (Debian packages too, when root) into ./.venv and run lint, unit and integration tests.
. "$(dirname "$0")/venv.sh"
# Real backends the integration tests use; a test whose backend is missing skips and says why.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=""
    [ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
    command -v ssh-keygen >/dev/null || missing="$missing openssh-client"
    command -v ip >/dev/null || missing="$missing iproute2"
    command -v dockerd >/dev/null || missing="$missing docker.io"
    command -v mmdebstrap >/dev/null || missing="$missing mmdebstrap"
    command -v java >/dev/null || missing="$missing default-jre-headless"
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"  # the server-store tests
    if [ -n "$missing" ]; then
        echo "== installing Debian packages:$missing"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
fi
# A Docker engine for the Docker and Swarm tests (they skip, saying why, when there is none).
sh scripts/docker-engine.sh || echo "== no Docker engine: the Docker tests will skip"
echo "== installing gateway-provisioners[test] into $VENV"
"$PY" -m pip install -q --upgrade pip >/dev/null
if command -v java >/dev/null; then extras="test,test-spark"; else extras="test"; fi
"$PY" -m pip install -q ".[$extras]"
echo "== ruff"
"$VENV/bin/ruff" check src launchers tests benchmarks scripts docs/examples noxfile.py
"$VENV/bin/ruff" format --check src launchers tests benchmarks scripts docs/examples noxfile.py
echo "== mypy (strict on the core)"
"$VENV/bin/mypy" src
"$VENV/bin/mypy" --strict src/gateway_provisioners/core
echo "== pytest"
# The tests import the installed wheel (src/ is not on the path), so the agent files shipped in it are what runs.
exec "$PY" -m pytest -p no:cacheprovider -ra "$@"
