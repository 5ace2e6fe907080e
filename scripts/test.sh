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
    # The real YARN (scripts/yarn-cluster.sh): javac compiles its launcher, Maven fetches Hadoop from Maven Central.
    command -v javac >/dev/null || missing="$missing default-jdk-headless"
    command -v mvn >/dev/null || missing="$missing maven"
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
"$VENV/bin/ruff" check src launchers tests benchmarks docs/examples noxfile.py
"$VENV/bin/ruff" format --check src launchers tests benchmarks docs/examples noxfile.py
# A real Hadoop YARN for the YARN tests (its jars cached in ~/.cache/gp-yarn; stopped, by pid, when this script
# ends). Without Java and Maven its tests skip, saying why; under CI=true a cluster that does not come up fails the run.
if command -v javac >/dev/null && command -v mvn >/dev/null; then
    echo "== starting a real YARN (scripts/yarn-cluster.sh up)"
    trap 'sh scripts/yarn-cluster.sh down >/dev/null 2>&1 || true' EXIT
    if ! sh scripts/yarn-cluster.sh up >/dev/null; then
        if [ "${CI:-}" = true ]; then
            echo "== the real YARN did not come up (see above)" >&2
            exit 1
        fi
        echo "== no real YARN: its tests will skip"
    fi
elif [ "${CI:-}" = true ]; then
    echo "== javac and mvn are needed for the real YARN under CI=true" >&2
    exit 1
fi
echo "== pytest"
# The tests import the installed wheel (src/ is not on the path), so the agent files shipped in it are what runs.
status=0
"$PY" -m pytest -p no:cacheprovider -ra "$@" || status=$?
exit $status
