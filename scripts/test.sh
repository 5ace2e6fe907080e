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
    # R kernels (IRkernel) for the language tests; Apache Toree comes from PyPI (scripts/toree.sh, cached).
    [ -d /usr/lib/R/site-library/IRkernel ] || missing="$missing r-cran-irkernel"
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"  # the server-store tests
    # the real Kubernetes cluster's node (scripts/k8s-cluster.sh); Kubernetes itself is built from Go modules
    command -v containerd >/dev/null || missing="$missing containerd"
    command -v runc >/dev/null || missing="$missing runc"
    [ -x /usr/lib/cni/bridge ] || missing="$missing containernetworking-plugins"
    command -v iptables >/dev/null || missing="$missing iptables"
    command -v conntrack >/dev/null || missing="$missing conntrack"
    command -v openssl >/dev/null || missing="$missing openssl"
    command -v curl >/dev/null || missing="$missing curl"
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
# helm for the Helm chart's tests (deploy/helm), built from its Go module by scripts/helm-build.sh (cached in
# ~/.cache/gp-helm). Without Go its tests skip, saying why; under CI=true a failed build fails the run.
if sh scripts/helm-build.sh >/tmp/gp-helm-build.log 2>&1; then
    echo "== helm: $(tail -n 1 /tmp/gp-helm-build.log)"
elif [ "${CI:-}" = true ]; then
    tail -n 20 /tmp/gp-helm-build.log
    echo "== helm could not be built (CI=true: failing)" >&2
    exit 1
else
    tail -n 3 /tmp/gp-helm-build.log
    echo "== no helm: the Helm chart's tests will skip"
fi
# The kubeflow Spark operator for the spark-operator provisioner's tests, built from its Go module by
# scripts/spark-operator.sh (cached in ~/.cache/gp-spark-operator); started below once the Kubernetes cluster is up.
# Without Go those tests skip, saying why; under CI=true a failed build fails the run.
if bash scripts/spark-operator.sh build >/tmp/gp-spark-operator-build.log 2>&1; then
    echo "== spark-operator: $(tail -n 1 /tmp/gp-spark-operator-build.log)"
    spark_operator_built=1
elif [ "${CI:-}" = true ]; then
    tail -n 20 /tmp/gp-spark-operator-build.log
    echo "== the Spark operator could not be built (CI=true: failing)" >&2
    exit 1
else
    tail -n 3 /tmp/gp-spark-operator-build.log
    echo "== no Spark operator: its tests will skip"
fi
echo "== ruff"
"$VENV/bin/ruff" check src launchers tests benchmarks scripts docs/examples noxfile.py
"$VENV/bin/ruff" format --check src launchers tests benchmarks scripts docs/examples noxfile.py
echo "== mypy (strict on the core)"
"$VENV/bin/mypy" src
"$VENV/bin/mypy" --strict src/gateway_provisioners/core
# Test clusters started here are stopped when this script ends, also on failure or interruption.
cleanup=""
spark_operator_down() { bash scripts/spark-operator.sh down >/tmp/gp-spark-operator-down.log 2>&1 || echo "== spark-operator.sh down failed: /tmp/gp-spark-operator-down.log"; }
k8s_down() { bash scripts/k8s-cluster.sh down >/tmp/gp-k8s-down.log 2>&1 || echo "== k8s-cluster.sh down failed: /tmp/gp-k8s-down.log"; }
trap 'eval "$cleanup"' EXIT
trap 'exit 130' INT TERM
# A real single-node Kubernetes cluster for tests/integration/kubernetes/real (root only): the first run builds it from
# the Kubernetes Go modules (cached in ~/.cache/gp-k8s, see docs/kubernetes.md); it is removed again when the tests
# end, also on failure. One that is already up is used and left up. GP_K8S_CLUSTER=0 (or --co) skips it; then, or
# when it cannot start outside CI, those tests skip and say why. Under CI=true a cluster that does not start fails.
case " $* " in *" --co "*|*" --collect-only "*) GP_K8S_CLUSTER=${GP_K8S_CLUSTER:-0} ;; esac
if [ "$(id -u)" = 0 ] && [ "${GP_K8S_CLUSTER:-1}" != 0 ] && [ "$(uname -s)" = Linux ]; then
    if bash scripts/k8s-cluster.sh env >/dev/null 2>&1; then
        echo "== using the Kubernetes test cluster that is already up"
        export GP_K8S_REAL_CLUSTER=1
    else
        echo "== starting a Kubernetes test cluster (scripts/k8s-cluster.sh up; log: /tmp/gp-k8s-up.log)"
        cleanup="$cleanup k8s_down;"
        if bash scripts/k8s-cluster.sh up >/tmp/gp-k8s-up.log 2>&1; then
            export GP_K8S_REAL_CLUSTER=1
        elif [ "${CI:-}" = true ]; then
            tail -n 20 /tmp/gp-k8s-up.log
            echo "== the Kubernetes test cluster did not start (CI=true: failing)"
            exit 1
        else
            tail -n 5 /tmp/gp-k8s-up.log
            echo "== no Kubernetes test cluster: the real-cluster tests will skip"
        fi
    fi
fi
# The Spark operator's controller, as a host process against that cluster (its CRDs applied; stopped and removed
# when this script ends, before the cluster). GP_SPARK_OPERATOR=1 tells its tests it is up.
if [ "${GP_K8S_REAL_CLUSTER:-}" = 1 ] && [ -n "${spark_operator_built:-}" ]; then
    echo "== starting the Spark operator (scripts/spark-operator.sh up; log: /tmp/gp-spark-operator-up.log)"
    cleanup="spark_operator_down; $cleanup"
    if GP_SPARK_OPERATOR_PYTHON="$PY" bash scripts/spark-operator.sh up >/tmp/gp-spark-operator-up.log 2>&1; then
        export GP_SPARK_OPERATOR=1
    elif [ "${CI:-}" = true ]; then
        tail -n 20 /tmp/gp-spark-operator-up.log
        echo "== the Spark operator did not start (CI=true: failing)"
        exit 1
    else
        tail -n 5 /tmp/gp-spark-operator-up.log
        echo "== no Spark operator: its tests will skip"
    fi
fi
# A real Hadoop YARN for the YARN tests (its jars cached in ~/.cache/gp-yarn; stopped, by pid, when this script
# ends). Without Java and Maven its tests skip, saying why; under CI=true a cluster that does not come up fails the run.
yarn_down() { sh scripts/yarn-cluster.sh down >/dev/null 2>&1 || true; }
if command -v javac >/dev/null && command -v mvn >/dev/null; then
    echo "== starting a real YARN (scripts/yarn-cluster.sh up)"
    cleanup="$cleanup yarn_down;"
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
# --durations: the 30 slowest steps close the log, to see where the suite's time goes.
"$PY" -m pytest -p no:cacheprovider -ra --durations=30 "$@"
