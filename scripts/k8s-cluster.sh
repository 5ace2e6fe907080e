#!/bin/bash
# A real single-node Kubernetes cluster on this machine, as plain processes, for the test suite.
#
#   scripts/k8s-cluster.sh up                 build (cached) and start everything; prints the `env` lines
#   scripts/k8s-cluster.sh down               stop every process it started (by pid) and remove what it made
#   scripts/k8s-cluster.sh env                KUBECONFIG=... and the other values a test needs (exit 1 when down)
#   scripts/k8s-cluster.sh load-image IMAGE   copy a local Docker image into the cluster's containerd
#   scripts/k8s-cluster.sh unload-image IMAGE remove it again (large images need not stay in the tmpfs)
#   scripts/k8s-cluster.sh stop|kill|start|restart COMPONENT  e.g. kube-apiserver (tests kill and restart it)
#   scripts/k8s-cluster.sh server-kubeconfig FILE          apply FILE (the RBAC manifest of docs/kubernetes.md) and
#                                             print the path of a kubeconfig for its ServiceAccount subject
#
# What runs (each recorded in $STATE/pids/<name>): etcd, kube-apiserver (RBAC and Node authorizers, service-account
# issuer), kube-controller-manager (all default controllers: garbage collector, namespace, service-account token...),
# kube-scheduler, a containerd of its own (own socket, root and state: Docker's containerd is never touched), kubelet
# (cgroupfs driver, cgroup v1 allowed) and kube-proxy (iptables). Pods get addresses on the bridge gpk8s0, which this
# script creates with the host at $NODE_IP; the pod sandbox image is a static Go "pause" built by k8s-build.sh and
# imported locally. No registry anywhere: images come from `docker save`.
#
# Needs root, Debian's containerd, runc, containernetworking-plugins, iptables, conntrack, openssl, Docker (for images),
# and Go for the first build (scripts/k8s-build.sh). Environment: GP_K8S_STATE (default /var/tmp/gp-k8s), GP_K8S_CACHE.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
STATE=${GP_K8S_STATE:-/var/tmp/gp-k8s}
BRIDGE=gpk8s0
NODE_IP=10.231.0.1          # the host on the pod bridge: apiserver, kubelet, and the address pods call back to
POD_CIDR=10.231.0.0/24      # pods (nothing else on the machine uses 10.231/16 or 10.232/16: checked with `ip -4 addr`)
SERVICE_CIDR=10.232.0.0/24
KUBERNETES_SVC_IP=10.232.0.1
NODE_NAME=gpk8s-node
API_PORT=16443
ETCD_PORT=23790
PAUSE_IMAGE=gp.local/pause:1
# host directories the node's programs create whatever they are told (the kubelet's container log links and device
# plugin socket folder, containerd's shim sockets, libcni's cache, iproute2's netns folder): the ones that did not
# exist before `up` are removed by `down`
HOST_DIRS="/var/log/containers /var/lib/kubelet /run/containerd /var/lib/cni /run/netns"
# host settings the kubelet changes (it sets kernel tunables it expects): saved on `up`, restored on `down`
SYSCTLS="vm.overcommit_memory kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes
net.ipv4.conf.all.route_localnet"
COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy"

log() { echo "k8s-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

bin_dir() { sh "$HERE/k8s-build.sh" | tail -n 1; }

# --- PKI and kubeconfigs --------------------------------------------------------------------------------------------

cert() {  # cert NAME SUBJECT [SAN]: a client/server certificate signed by the cluster CA
    local name=$1 subject=$2 san=${3:-}
    local pki=$STATE/pki
    [ -f "$pki/$name.crt" ] && return 0
    openssl genrsa -out "$pki/$name.key" 2048 2>/dev/null
    openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=clientAuth,serverAuth"
        [ -n "$san" ] && echo "subjectAltName=$san"
    } >"$pki/$name.ext"
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 30 \
        -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
    rm -f "$pki/$name.csr" "$pki/$name.ext"
}

kubeconfig() {  # kubeconfig NAME CERTNAME: a kubeconfig using the client certificate CERTNAME
    local name=$1 certname=$2 pki=$STATE/pki
    cat >"$STATE/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gpk8s
  cluster: {server: "https://$NODE_IP:$API_PORT", certificate-authority: "$pki/ca.crt"}
users:
- name: $name
  user: {client-certificate: "$pki/$certname.crt", client-key: "$pki/$certname.key"}
contexts:
- name: $name@gpk8s
  context: {cluster: gpk8s, user: $name}
current-context: $name@gpk8s
EOF
}

make_pki() {
    local pki=$STATE/pki
    mkdir -p "$pki"; chmod 700 "$pki"
    if [ ! -f "$pki/ca.crt" ]; then
        openssl genrsa -out "$pki/ca.key" 2048 2>/dev/null
        openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=gpk8s-ca" -days 30 -sha256 -out "$pki/ca.crt" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    fi
    [ -f "$pki/sa.key" ] || { openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null; openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null; }
    cert apiserver "/CN=kube-apiserver" \
        "IP:$NODE_IP,IP:$KUBERNETES_SVC_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    cert admin "/O=system:masters/CN=gpk8s-admin"
    cert controller-manager "/CN=system:kube-controller-manager"
    cert scheduler "/CN=system:kube-scheduler"
    cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME"
    cert kubelet-serving "/CN=$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
    cert kube-proxy "/CN=system:kube-proxy"
    kubeconfig admin admin
    kubeconfig controller-manager controller-manager
    kubeconfig scheduler scheduler
    kubeconfig kubelet kubelet-client
    kubeconfig kube-proxy kube-proxy
}

# --- configuration files --------------------------------------------------------------------------------------------

write_configs() {
    mkdir -p "$STATE/containerd/root" "$STATE/containerd/state" "$STATE/cni/net.d" "$STATE/cni/ipam" \
        "$STATE/kubelet" "$STATE/pod-logs" "$STATE/logs" "$STATE/pids" "$STATE/etcd"
    cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$STATE/containerd/containerd.sock"
[ttrpc]
  address = "$STATE/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  # root here may lack CAP_SYS_RESOURCE (it does in these CI VMs): runc then cannot set the kubelet's negative
  # oom_score_adj and every sandbox fails with "can't get final child's PID from pipe". Clamp to containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
    cat >"$STATE/cni/net.d/10-gpk8s.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "gpk8s", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "isDefaultGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam",
            "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]]}}
]}
EOF
    # The audit log records every request of the Jupyter server's ServiceAccounts (namespace "jupyter", as the RBAC
    # manifests bind): the tests and the benchmark count API requests per launch and per idle kernel with it.
    cat >"$STATE/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts:jupyter"]
  - level: None
EOF
    cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$STATE/pki/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$STATE/pki/kubelet-serving.crt"
tlsPrivateKeyFile: "$STATE/pki/kubelet-serving.key"
containerRuntimeEndpoint: "unix://$STATE/containerd/containerd.sock"
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
podLogsDir: "$STATE/pod-logs"
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# images are imported by hand and cannot be pulled again: never collect them, never evict for disk on a busy CI disk
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
maxPods: 110
EOF
    cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$STATE/kube-proxy.kubeconfig"}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: "127.0.0.1:20256"
metricsBindAddress: "127.0.0.1:20249"
# leave the host's conntrack and route_localnet sysctls alone
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
EOF
}

# --- processes ------------------------------------------------------------------------------------------------------

alive() { local f=$STATE/pids/$1; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

cmdline() {  # the command line of COMPONENT
    local bin pki=$STATE/pki
    bin=$(cat "$STATE/bin-dir")
    case $1 in
    etcd) echo "$bin/etcd --name gpk8s --data-dir $STATE/etcd --listen-client-urls http://127.0.0.1:$ETCD_PORT
        --advertise-client-urls http://127.0.0.1:$ETCD_PORT --listen-peer-urls http://127.0.0.1:$((ETCD_PORT + 10))
        --initial-advertise-peer-urls http://127.0.0.1:$((ETCD_PORT + 10))
        --initial-cluster gpk8s=http://127.0.0.1:$((ETCD_PORT + 10)) --log-level error
        --unsafe-no-fsync" ;;  # a throw-away test cluster: no fsync (etcd is slow on a busy 2-core VM otherwise)
    kube-apiserver) echo "$bin/kube-apiserver --etcd-servers http://127.0.0.1:$ETCD_PORT
        --bind-address $NODE_IP --advertise-address $NODE_IP --secure-port $API_PORT
        --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged=false
        --client-ca-file $pki/ca.crt --tls-cert-file $pki/apiserver.crt --tls-private-key-file $pki/apiserver.key
        --kubelet-client-certificate $pki/apiserver-kubelet-client.crt
        --kubelet-client-key $pki/apiserver-kubelet-client.key --kubelet-certificate-authority $pki/ca.crt
        --kubelet-preferred-address-types InternalIP
        --service-account-issuer https://kubernetes.default.svc.cluster.local
        --service-account-key-file $pki/sa.pub --service-account-signing-key-file $pki/sa.key
        --service-cluster-ip-range $SERVICE_CIDR --profiling=false --v 1
        --audit-policy-file $STATE/audit-policy.yaml --audit-log-path $STATE/logs/audit.log --audit-log-mode blocking" ;;
    kube-controller-manager) echo "$bin/kube-controller-manager --kubeconfig $STATE/controller-manager.kubeconfig
        --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false --use-service-account-credentials
        --service-account-private-key-file $pki/sa.key --root-ca-file $pki/ca.crt
        --cluster-signing-cert-file $pki/ca.crt --cluster-signing-key-file $pki/ca.key
        --service-cluster-ip-range $SERVICE_CIDR --profiling=false --v 1" ;;
    kube-scheduler) echo "$bin/kube-scheduler --kubeconfig $STATE/scheduler.kubeconfig
        --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false --profiling=false --v 1" ;;
    containerd) echo "containerd --config $STATE/containerd/config.toml --log-level warn" ;;
    kubelet) echo "$bin/kubelet --config $STATE/kubelet.yaml --kubeconfig $STATE/kubelet.kubeconfig
        --root-dir $STATE/kubelet --hostname-override $NODE_NAME --node-ip $NODE_IP --v 1" ;;
    kube-proxy) echo "$bin/kube-proxy --config $STATE/kube-proxy.yaml --v 1" ;;
    *) die "unknown component $1 (one of: $COMPONENTS)" ;;
    esac
}

start() {
    local name=$1
    alive "$name" && return 0
    set -f  # no globbing of the command line
    # shellcheck disable=SC2046
    setsid $(cmdline "$name") >>"$STATE/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/pids/$name"
    set +f
}

stop() {  # stop COMPONENT: SIGTERM by pid, then SIGKILL after 10 s
    local name=$1 f=$STATE/pids/$1 pid i
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$f"
}

kill_now() {  # kill COMPONENT: SIGKILL by pid, as a crash would end it
    local f=$STATE/pids/$1 pid i
    [ -f "$f" ] || die "$1 is not running"
    pid=$(cat "$f")
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$f"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll COMMAND until it succeeds
    local seconds=$1 what=$2 i
    shift 2
    for i in $(seq $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up within ${seconds}s; see $STATE/logs/"
}

kubectl_admin() { "$(cat "$STATE/bin-dir")/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }
ctr_k8s() { ctr --address "$STATE/containerd/containerd.sock" -n k8s.io "$@"; }

api_ready() { kubectl_admin get --raw /readyz; }
node_ready() {
    kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}
default_sa() { kubectl_admin -n default get serviceaccount default; }

load_image() {  # copy a Docker image into the cluster's containerd
    local image=$1
    local id record
    id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null) || die "no Docker image $image (build it first)"
    record="$STATE/images/$(echo "$image" | tr '/:' '__')"
    [ -f "$record" ] && [ "$(cat "$record")" = "$id" ] && return 0  # this very image is there already
    mkdir -p "$STATE/images"
    docker save "$image" | ctr_k8s images import - >/dev/null
    echo "$id" >"$record"
}

unload_image() {  # remove an image load_image copied, and its record (or the next load_image would skip it)
    local image=$1 ref
    case $image in
        */*) case ${image%%/*} in *.*|*:*|localhost) ref=$image ;; *) ref=docker.io/$image ;; esac ;;
        *) ref=docker.io/library/$image ;;
    esac
    rm -f "$STATE/images/$(echo "$image" | tr '/:' '__')"
    ctr_k8s images rm "$ref" >/dev/null 2>&1 || true
}

pause_image() {
    ctr_k8s images ls -q | grep -qx "$PAUSE_IMAGE" && return 0
    local tmp
    tmp=$(mktemp -d)
    cp "$(cat "$STATE/bin-dir")/pause" "$tmp/pause"
    tar -C "$tmp" -cf "$tmp/rootfs.tar" pause
    docker import -c 'ENTRYPOINT ["/pause"]' "$tmp/rootfs.tar" "$PAUSE_IMAGE" >/dev/null
    rm -rf "$tmp"
    load_image "$PAUSE_IMAGE"
    docker rmi "$PAUSE_IMAGE" >/dev/null
}

# Pod-to-pod traffic crosses the bridge, and with br_netfilter on (Docker turns it on) bridged packets go through the
# FORWARD chain, whose policy Docker sets to DROP: without this rule a pod cannot reach another pod (a Jupyter server
# in a pod could not reach its kernels, a Spark driver its executors), while the host reaches them all. The comment
# holds "CNI-" so that `down` removes the rule with the others. Idempotent.
pod_forwarding() {
    local rule="-i $BRIDGE -o $BRIDGE -m comment --comment CNI-gpk8s-pod-to-pod -j ACCEPT"
    # shellcheck disable=SC2086
    iptables -C FORWARD $rule 2>/dev/null || iptables -I FORWARD 1 $rule
}

up() {
    [ "$(id -u)" = 0 ] || die "needs root (it runs containerd and the kubelet)"
    for tool in containerd runc ctr iptables openssl docker; do
        command -v $tool >/dev/null || die "$tool is not installed (apt-get install containerd runc iptables openssl docker.io containernetworking-plugins conntrack)"
    done
    [ -x /usr/lib/cni/bridge ] || die "no CNI plugins in /usr/lib/cni (apt-get install containernetworking-plugins)"
    local t0 bin
    t0=$(date +%s)
    bin=$(bin_dir) || die "the build failed (see above)"
    mkdir -p "$STATE"
    # Everything lives on a tmpfs of its own: images unpack faster, and `down` removes it all with one umount
    # (deleting an unpacked kernel image from a busy disk took half a minute). A tmpfs holds only what is stored in
    # it; the suite's images (Spark and Scala ones are 1.2-1.5 GB, kept twice: as imported and unpacked) fill 8 GiB.
    mountpoint -q "$STATE" || mount -t tmpfs -o "size=${GP_K8S_STATE_SIZE:-16g},mode=0755" gpk8s-state "$STATE"
    echo "$bin" >"$STATE/bin-dir"
    if [ ! -f "$STATE/host-before" ]; then
        for key in $SYSCTLS; do echo "$key=$(sysctl -n "$key")"; done >"$STATE/host-before.tmp"
        ip netns list | awk '{print $1}' >"$STATE/netns-before"
        for dir in $HOST_DIRS; do [ -e "$dir" ] || echo "$dir"; done >"$STATE/dirs-created"
        mv "$STATE/host-before.tmp" "$STATE/host-before"
    fi
    make_pki
    write_configs
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$NODE_IP/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    fi
    pod_forwarding
    start etcd
    wait_for 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"
    start kube-apiserver
    wait_for 90 kube-apiserver api_ready
    start kube-controller-manager
    start kube-scheduler
    start containerd
    wait_for 30 containerd ctr_k8s version
    pause_image
    start kubelet
    start kube-proxy
    wait_for 120 "the node (kubelet)" node_ready
    wait_for 60 "the default ServiceAccount (controller-manager)" default_sa
    log "up in $(( $(date +%s) - t0 ))s ($("$bin/kube-apiserver" --version))"
    env_lines
}

down() {
    local name host_before="" netns_before="" dirs_created=""
    [ -f "$STATE/host-before" ] && host_before=$(cat "$STATE/host-before")
    [ -f "$STATE/netns-before" ] && netns_before=$(cat "$STATE/netns-before")
    [ -f "$STATE/dirs-created" ] && dirs_created=$(cat "$STATE/dirs-created")
    for name in kube-proxy kubelet; do stop "$name"; done
    # The pods' containers and sandboxes: their shims outlive containerd, so end them through containerd first.
    if alive containerd; then
        for task in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true; done
        for task in $(ctr_k8s tasks ls -q 2>/dev/null); do
            for _ in $(seq 50); do ctr_k8s tasks delete "$task" >/dev/null 2>&1 && break; sleep 0.1; done
        done
    fi
    for name in containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$name"; done
    # shims (containerd-shim-runc-v2) of our containerd that are still there: those whose -address is our socket
    for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $STATE/containerd/containerd.sock" || true); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    # kube-proxy's iptables rules, then any KUBE-/CNI- chain left (the kubelet's canaries)
    if [ -f "$STATE/bin-dir" ] && [ -x "$(cat "$STATE/bin-dir")/kube-proxy" ]; then
        "$(cat "$STATE/bin-dir")/kube-proxy" --cleanup >/dev/null 2>&1 || true
    fi
    for ipt in iptables ip6tables; do
        for table in filter nat mangle; do
            { $ipt -t $table -S 2>/dev/null | grep -E '^-A .*(KUBE-|CNI-)' || true; } | sed 's/^-A/-D/' | while read -r rule; do
                eval "$ipt -t $table $rule" 2>/dev/null || true
            done
            for chain in $($ipt -t $table -S 2>/dev/null | sed -n 's/^-N \(\(KUBE\|CNI\)-[^ ]*\)$/\1/p'); do
                $ipt -t $table -F "$chain" 2>/dev/null || true
            done
            for chain in $($ipt -t $table -S 2>/dev/null | sed -n 's/^-N \(\(KUBE\|CNI\)-[^ ]*\)$/\1/p'); do
                $ipt -t $table -X "$chain" 2>/dev/null || true
            done
        done
    done
    # mounts under the state dir (secret tmpfs, overlay rootfs, shm), deepest first
    if [ -d "$STATE" ]; then
        awk -v s="$STATE" '$2 ~ "^"s {print $2}' /proc/self/mounts | sort -r | while read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
    fi
    # the pods' network namespaces (named cni-*), their veths go with them; then the bridge
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' || true); do
        echo "$netns_before" | grep -qx "$ns" || ip netns delete "$ns" 2>/dev/null || true
    done
    rm -rf /var/lib/cni/results/gpk8s-* /var/lib/cni/results/cni-loopback-* 2>/dev/null || true  # libcni cache
    # the kubelet's links to our pods' logs, then the host folders that only exist because of this cluster
    find /var/log/containers -maxdepth 1 -type l -lname "$STATE/*" -delete 2>/dev/null || true
    for dir in $dirs_created; do
        case $dir in
        /var/log/containers|/run/netns) rmdir "$dir" 2>/dev/null || true ;;  # only if empty: others may use them
        *) rm -rf "$dir" ;;
        esac
    done
    for link in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
        ip link delete "$link" 2>/dev/null || true
    done
    ip link delete "$BRIDGE" 2>/dev/null || true
    # the kubelet's cgroups (cgroupfs driver): leaves first
    for hierarchy in /sys/fs/cgroup/*/; do
        [ -d "$hierarchy/kubepods" ] && find "$hierarchy/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        [ -d "$hierarchy/kubepods.slice" ] && find "$hierarchy/kubepods.slice" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    if [ -n "$host_before" ]; then
        echo "$host_before" | while IFS== read -r key value; do sysctl -q -w "$key=$value" >/dev/null 2>&1 || true; done
    fi
    rm -rf "$STATE"
    log "down: nothing of the cluster is left"
}

env_lines() {
    [ -f "$STATE/admin.kubeconfig" ] && alive kube-apiserver || { log "the cluster is not up (scripts/k8s-cluster.sh up)"; return 1; }
    echo "KUBECONFIG=$STATE/admin.kubeconfig"
    echo "GP_K8S_STATE=$STATE"
    echo "GP_K8S_NODE_IP=$NODE_IP"
    echo "GP_K8S_POD_CIDR=$POD_CIDR"
    echo "GP_K8S_BIN=$(cat "$STATE/bin-dir")"
    echo "GP_K8S_CONTAINERD=$STATE/containerd/containerd.sock"
    echo "GP_K8S_AUDIT_LOG=$STATE/logs/audit.log"
}

server_kubeconfig() {  # apply an RBAC manifest and write a kubeconfig for the ServiceAccount it binds
    local manifest=$1 ns sa token out
    [ -f "$manifest" ] || die "no manifest $manifest"
    ns=$(sed -n 's/.*subjects:.*kind: ServiceAccount, name: \([a-z0-9-]*\), namespace: \([a-z0-9-]*\).*/\2/p' "$manifest" | head -n 1)
    sa=$(sed -n 's/.*subjects:.*kind: ServiceAccount, name: \([a-z0-9-]*\), namespace: \([a-z0-9-]*\).*/\1/p' "$manifest" | head -n 1)
    [ -n "$ns" ] && [ -n "$sa" ] || die "$manifest binds no ServiceAccount (subjects: [{kind: ServiceAccount, ...}])"
    kubectl_admin get namespace "$ns" >/dev/null 2>&1 || kubectl_admin create namespace "$ns" >/dev/null
    kubectl_admin -n "$ns" get serviceaccount "$sa" >/dev/null 2>&1 || kubectl_admin -n "$ns" create serviceaccount "$sa" >/dev/null
    kubectl_admin apply -f "$manifest" >/dev/null
    token=$(kubectl_admin -n "$ns" create token "$sa" --duration 24h)
    out=$STATE/server-$sa.kubeconfig
    cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gpk8s
  cluster: {server: "https://$NODE_IP:$API_PORT", certificate-authority: "$STATE/pki/ca.crt"}
users:
- name: $sa
  user: {token: "$token"}
contexts:
- name: $sa@gpk8s
  context: {cluster: gpk8s, user: $sa, namespace: "$ns"}
current-context: $sa@gpk8s
EOF
    chmod 600 "$out"
    echo "$out"
}

case ${1:-} in
up) up ;;
down) down ;;
env) env_lines ;;
load-image) [ -n "${2:-}" ] || die "usage: load-image IMAGE"; load_image "$2" ;;
unload-image) [ -n "${2:-}" ] || die "usage: unload-image IMAGE"; unload_image "$2" ;;
stop) stop "${2:?component}" ;;
kill) kill_now "${2:?component}" ;;
start) start "${2:?component}" ;;
restart) stop "${2:?component}"; start "$2" ;;
server-kubeconfig) server_kubeconfig "${2:?manifest file}" ;;
build) bin_dir ;;
*) echo "usage: $0 up|down|env|load-image IMAGE|unload-image IMAGE|stop|kill|start|restart COMPONENT|server-kubeconfig MANIFEST" >&2; exit 2 ;;
esac
