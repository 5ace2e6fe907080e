#!/bin/sh
# Build the `helm` command from its Go module (helm.sh/helm/v3, through the Go module proxy), cached by version, for
# the chart's tests (`helm lint`, `helm template`, `helm install` on the real test cluster). Nothing is committed but
# this script; the binary and Go caches live under the cache directory.
#
#   sh scripts/helm-build.sh            # prints the helm binary's path on its last line; a second run returns at once
#
# Environment: GP_HELM_VERSION (default v3.19.0) picks the release; GP_HELM_CACHE (default ~/.cache/gp-helm) holds
# GOCACHE, GOMODCACHE and bin/<version>/helm.
set -eu

VERSION=${GP_HELM_VERSION:-v3.19.0}
CACHE=${GP_HELM_CACHE:-$HOME/.cache/gp-helm}
BIN="$CACHE/bin/$VERSION"

if [ -x "$BIN/helm" ]; then
    echo "$BIN/helm"
    exit 0
fi
export GOCACHE="$CACHE/go-build" GOMODCACHE="$CACHE/gomod" GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOTOOLCHAIN=auto
export GOPROXY=${GOPROXY:-https://proxy.golang.org}
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"  # where the Go distribution installs itself
command -v go >/dev/null || { echo "helm-build: Go is not installed (Go >= 1.21 on PATH)" >&2; exit 1; }
mkdir -p "$BIN"
start=$(date +%s)
# `go install module@version` builds the module as published (its own go.mod and go.sum), outside any main module.
# Stamped as helm's Makefile does: the version, and the Kubernetes version that `helm template` and `helm lint`
# assume (1.<minor of its k8s.io/client-go>; unstamped it would be 1.20, below the chart's kubeVersion).
DIR=$(go mod download -json "helm.sh/helm/v3@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
MINOR=$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$DIR/go.mod")
[ -n "$MINOR" ] || { echo "helm-build: no k8s.io/client-go version in $DIR/go.mod" >&2; exit 1; }
X="-X helm.sh/helm/v3/internal/version.version=$VERSION"
for pkg in lint/rules chartutil; do
    X="$X -X helm.sh/helm/v3/pkg/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/$pkg.k8sVersionMinor=$MINOR"
done
GOBIN="$BIN" nice go install -p "${GP_HELM_BUILD_JOBS:-2}" -ldflags "-s -w $X" "helm.sh/helm/v3/cmd/helm@$VERSION" >&2
echo "helm-build: helm $VERSION built in $(( $(date +%s) - start )) s" >&2
echo "$BIN/helm"
