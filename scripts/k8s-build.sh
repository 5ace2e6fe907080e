#!/bin/sh
# Build the binaries of a single-node Kubernetes test cluster from upstream Go modules (through the Go module proxy),
# cached by version: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl (from
# k8s.io/kubernetes at K8S_VERSION), etcd (from go.etcd.io/etcd/server/v3 at ETCD_VERSION) and a tiny static "pause"
# program for the sandbox image. Nothing here is committed but this script: the Go modules that drive the build are
# generated under the cache directory.
#
#   sh scripts/k8s-build.sh            # prints the bin directory on its last line; a second run returns at once
#
# Environment: GP_K8S_VERSION (default v1.34.4) and GP_K8S_ETCD_VERSION (default v3.6.16) pick the releases;
# GP_K8S_CACHE (default ~/.cache/gp-k8s) holds GOCACHE, GOMODCACHE, the generated modules and the binaries;
# GP_K8S_BUILD_JOBS (default 2) is passed to `go build -p`.
set -eu

K8S_VERSION=${GP_K8S_VERSION:-v1.34.4}
ETCD_VERSION=${GP_K8S_ETCD_VERSION:-v3.6.16}
CACHE=${GP_K8S_CACHE:-$HOME/.cache/gp-k8s}
JOBS=${GP_K8S_BUILD_JOBS:-2}

export GOCACHE="$CACHE/go-build" GOMODCACHE="$CACHE/gomod" GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOTOOLCHAIN=auto
export GOPROXY=${GOPROXY:-https://proxy.golang.org}
BIN="$CACHE/$K8S_VERSION-etcd$ETCD_VERSION/bin"
K8S_CMDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"

have_all() {
    for b in $K8S_CMDS etcd pause; do [ -x "$BIN/$b" ] || return 1; done
}
if have_all; then
    echo "$BIN"
    exit 0
fi
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"  # where the Go distribution installs itself
command -v go >/dev/null || { echo "k8s-build: Go is not installed (Go >= 1.21 on PATH; it fetches the toolchain the modules ask for)" >&2; exit 1; }
mkdir -p "$BIN"
start=$(date +%s)

# 1. etcd and pause: one small module of our own (etcd's server module at a release, plus a stdlib-only pause).
ESRC="$CACHE/$K8S_VERSION-etcd$ETCD_VERSION/src-etcd"
mkdir -p "$ESRC/etcd" "$ESRC/pause"
cat >"$ESRC/etcd/main.go" <<'EOF'
// etcd server, built from its Go module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
cat >"$ESRC/pause/main.go" <<'EOF'
// The pod sandbox's process: sleeps until SIGTERM/SIGINT and reaps any orphaned children meanwhile.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
EOF
if [ ! -f "$ESRC/go.mod" ]; then
    (cd "$ESRC" && go mod init gp-k8s-etcd >/dev/null 2>&1 && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" && go mod tidy)
fi
(cd "$ESRC" && nice -n 10 go build -p "$JOBS" -trimpath -ldflags '-s -w' -o "$BIN/" ./etcd ./pause)
echo "k8s-build: etcd and pause built after $(( $(date +%s) - start ))s" >&2

# 2. Kubernetes: a main module that requires k8s.io/kubernetes and replaces each staging module (required there at
#    v0.0.0 and replaced by ./staging paths that are not in the module zip) with its published v0.X.Y.
KSRC="$CACHE/$K8S_VERSION-etcd$ETCD_VERSION/src-k8s"
mkdir -p "$KSRC"
if [ ! -f "$KSRC/go.mod" ]; then
    kmod=$(cd "$KSRC" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
    [ -f "$kmod" ] || { echo "k8s-build: could not download k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
    staging_version="v0.${K8S_VERSION#v1.}"
    goline=$(sed -n 's/^go \(.*\)$/\1/p' "$kmod")
    {
        echo "module gp-k8s-build"
        echo
        echo "go $goline"
        echo
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo
        # every `k8s.io/<name> => ./staging/src/k8s.io/<name>` in kubernetes' go.mod
        sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9./-]*\) => ./staging/.*$#\1#p' "$kmod" | sort -u |
            while read -r m; do echo "replace $m => $m $staging_version"; done
    } >"$KSRC/go.mod.tmp"
    mv "$KSRC/go.mod.tmp" "$KSRC/go.mod"
    echo "package gpk8sbuild" >"$KSRC/doc.go"
fi
pkgs=""
for c in $K8S_CMDS; do pkgs="$pkgs k8s.io/kubernetes/cmd/$c"; done
major=${K8S_VERSION#v}; major=${major%%.*}
minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ldflags="$ldflags -X $p.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done
# shellcheck disable=SC2086
(cd "$KSRC" && nice -n 10 go build -mod=mod -p "$JOBS" -trimpath -ldflags "$ldflags" -o "$BIN/" $pkgs)
have_all || { echo "k8s-build: some binaries are missing in $BIN" >&2; exit 1; }
echo "k8s-build: built Kubernetes $K8S_VERSION and etcd $ETCD_VERSION in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
