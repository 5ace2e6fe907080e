#!/bin/bash
# The kubeflow Spark operator (github.com/kubeflow/spark-operator/v2), built from its Go module and run as a host
# process against the real test cluster (scripts/k8s-cluster.sh), for the spark-operator provisioner's tests.
#
#   scripts/spark-operator.sh build   build the pinned operator (cached) and copy its CRDs out; prints the binary path
#   scripts/spark-operator.sh up      apply the CRDs and start the controller out-of-cluster; prints the `env` lines
#   scripts/spark-operator.sh down    stop it (by pid), delete what SparkApplications are left, then the CRDs
#   scripts/spark-operator.sh env     GP_SPARK_OPERATOR=1 and the other values a test needs (exit 1 when down)
#
# Only the controller runs: no admission webhook (its mutating webhook applies spec.driver/executor fields such as
# volumes, securityContext and affinity to the pods; Spark's own pod templates, spec.*.template, do that without it).
# The controller watches $GP_SPARK_OPERATOR_NAMESPACES only, without leader election; its health endpoint listens on
# loopback. It runs `spark-submit` from SPARK_HOME, a pyspark of the version the test images carry (scripts/toree.sh
# caches it), against the cluster's apiserver with the admin kubeconfig (Spark's Kubernetes client reads KUBECONFIG).
#
# Environment: GP_SPARK_OPERATOR_VERSION (default v2.3.0), GP_SPARK_OPERATOR_CACHE (default ~/.cache/gp-spark-operator:
# GOCACHE, GOMODCACHE and <version>/{spark-operator,crds/}), GP_SPARK_OPERATOR_STATE (default /var/tmp/gp-spark-operator),
# GP_SPARK_OPERATOR_NAMESPACES (default kernels; comma-separated), GP_SPARK_OPERATOR_PORT (default 18081, health probe).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VERSION=${GP_SPARK_OPERATOR_VERSION:-v2.3.0}
MODULE=github.com/kubeflow/spark-operator/v2
CACHE=${GP_SPARK_OPERATOR_CACHE:-$HOME/.cache/gp-spark-operator}
OUT=$CACHE/$VERSION
STATE=${GP_SPARK_OPERATOR_STATE:-/var/tmp/gp-spark-operator}
NAMESPACES=${GP_SPARK_OPERATOR_NAMESPACES:-kernels}
PORT=${GP_SPARK_OPERATOR_PORT:-18081}

log() { echo "spark-operator: $*" >&2; }
die() { log "$*"; exit 1; }

build() {
    if [ -x "$OUT/spark-operator" ] && [ -f "$OUT/crds/sparkoperator.k8s.io_sparkapplications.yaml" ]; then
        echo "$OUT/spark-operator"
        return 0
    fi
    export GOCACHE="$CACHE/go-build" GOMODCACHE="$CACHE/gomod" GOFLAGS="-buildvcs=false -mod=readonly" CGO_ENABLED=0
    export GOTOOLCHAIN=auto GOPROXY=${GOPROXY:-https://proxy.golang.org}
    command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"  # where the Go distribution installs itself
    command -v go >/dev/null || die "Go is not installed (Go >= 1.24 on PATH)"
    local start dir
    start=$(date +%s)
    # Not `go install module@version`: the module's go.mod has replace directives (k8s.io/* pinned), which that refuses.
    # Built inside the downloaded module instead, with its own go.mod and go.sum (the module cache is read-only: fine
    # for a build that writes only to GOCACHE and -o).
    dir=$(go mod download -json "$MODULE@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$dir" ] || die "go mod download $MODULE@$VERSION gave no directory"
    mkdir -p "$OUT/crds"
    (cd "$dir" && nice go build -p "${GP_SPARK_OPERATOR_BUILD_JOBS:-2}" -o "$OUT/spark-operator.tmp" \
        -ldflags "-s -w -X $MODULE.version=$VERSION" ./cmd/operator) >&2
    cp "$dir"/config/crd/bases/*.yaml "$OUT/crds/"
    chmod -R u+w "$OUT/crds"
    mv "$OUT/spark-operator.tmp" "$OUT/spark-operator"
    log "$VERSION built in $(( $(date +%s) - start )) s"
    echo "$OUT/spark-operator"
}

kube() {  # kubectl with the cluster's admin kubeconfig
    "$GP_K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG" "$@"
}

cluster_env() {  # the k8s-cluster.sh env lines, exported (fails when the cluster is down)
    local lines
    lines=$(bash "$HERE/k8s-cluster.sh" env) || die "the Kubernetes test cluster is not up (scripts/k8s-cluster.sh up)"
    eval "$(echo "$lines" | sed -n 's/^\([A-Z0-9_]*\)=\(.*\)$/export \1="\2"/p')"
}

spark_home() {  # SPARK_HOME for the operator's spark-submit: the pyspark of the tests' Python (the images' version)
    if [ -n "${GP_SPARK_OPERATOR_SPARK_HOME:-}" ]; then echo "$GP_SPARK_OPERATOR_SPARK_HOME"; return; fi
    local py=${GP_SPARK_OPERATOR_PYTHON:-$HERE/../.venv/bin/python}
    "$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null \
        || die "no pyspark for $py: set GP_SPARK_OPERATOR_PYTHON (a Python with pyspark) or GP_SPARK_OPERATOR_SPARK_HOME"
}

running() { [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; }

print_env() {
    echo "GP_SPARK_OPERATOR=1"
    echo "GP_SPARK_OPERATOR_STATE=$STATE"
    echo "GP_SPARK_OPERATOR_NAMESPACES=$(cat "$STATE/namespaces")"
    echo "GP_SPARK_OPERATOR_SPARK_HOME=$(cat "$STATE/spark-home")"
    echo "GP_SPARK_OPERATOR_LOG=$STATE/operator.log"
    echo "GP_SPARK_OPERATOR_HEALTH=http://127.0.0.1:$(cat "$STATE/port")/readyz"
}

up() {
    cluster_env
    if running; then
        log "already running (pid $(cat "$STATE/pid"))"
        print_env
        return 0
    fi
    local binary sparkhome crds start pid
    binary=$(build | tail -n 1)
    sparkhome=$(spark_home)
    [ -x "$sparkhome/bin/spark-submit" ] || die "$sparkhome/bin/spark-submit is missing"
    command -v java >/dev/null || die "spark-submit needs Java on PATH"
    crds=$(dirname "$binary")/crds
    mkdir -p "$STATE"
    # Server-side apply: the CRDs are larger than the last-applied annotation a client-side apply writes.
    kube apply --server-side --force-conflicts -f "$crds" >&2
    kube wait --for=condition=Established --timeout=60s -f "$crds" >&2
    echo "$NAMESPACES" >"$STATE/namespaces"
    echo "$sparkhome" >"$STATE/spark-home"
    echo "$PORT" >"$STATE/port"
    start=$(date +%s)
    # Out of the cluster: the controller reads KUBECONFIG; its spark-submit takes the master URL from
    # KUBERNETES_SERVICE_HOST/PORT (the operator's own code) and its credentials from KUBECONFIG (Spark's Kubernetes
    # client). Metrics and pprof stay off; the probes listen on loopback only. setsid: a process group of its own, so
    # that `down` ends it and the spark-submit JVMs it may be running, and nothing else.
    KUBECONFIG=$KUBECONFIG KUBERNETES_SERVICE_HOST=$GP_K8S_NODE_IP KUBERNETES_SERVICE_PORT=16443 \
        SPARK_HOME=$sparkhome setsid "$binary" controller start \
        --namespaces="$NAMESPACES" --leader-election=false --enable-metrics=false --metrics-bind-address=0 \
        --health-probe-bind-address="127.0.0.1:$PORT" --zap-log-level=info \
        </dev/null >"$STATE/operator.log" 2>&1 &
    pid=$!
    echo "$pid" >"$STATE/pid"
    until curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 \
            && grep -q 'Starting workers.*spark-application-controller\|Starting workers.*sparkapplication' "$STATE/operator.log"; do
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$STATE/operator.log" >&2; rm -f "$STATE/pid"; die "the operator exited"; }
        [ $(( $(date +%s) - start )) -lt 60 ] || { tail -n 20 "$STATE/operator.log" >&2; die "not ready within 60 s"; }
        sleep 0.5
    done
    log "controller ready in $(( $(date +%s) - start )) s (pid $pid, log $STATE/operator.log)"
    print_env
}

down() {
    local pid
    if running; then
        pid=$(cat "$STATE/pid")
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/pid"
    if bash "$HERE/k8s-cluster.sh" env >/dev/null 2>&1; then
        cluster_env
        # What SparkApplications are left go first (their driver pods are owned by them), then the CRDs.
        if kube get crd sparkapplications.sparkoperator.k8s.io >/dev/null 2>&1; then
            kube delete sparkapplications.sparkoperator.k8s.io --all --all-namespaces --wait=false >&2 || true
        fi
        kube delete -f "$OUT/crds" --ignore-not-found --wait=true --timeout=60s >&2 || true
    fi
    log "down"
}

case ${1:-} in
    build) build ;;
    up) up ;;
    down) down ;;
    env) running || exit 1; print_env ;;
    *) die "usage: $0 build|up|down|env" ;;
esac
