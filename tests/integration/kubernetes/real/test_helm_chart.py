"""The Helm chart on the real cluster: `helm install` into a fresh namespace, a kernel started, run and deleted through
the deployed Jupyter Server's REST API and WebSocket, then `helm uninstall` (with another kernel still running) leaving
nothing behind.

The images are built here without a registry and loaded into the cluster's containerd: the kernel image by the
documented recipe under the provisioner's default name (`jupyter-image-bootstrap build --tag
gateway-provisioners/kernel-py:latest`, from the tests' Debian base), the server image from
deploy/server-image/Dockerfile with this checkout's wheel. The test reaches the server at its Service's cluster IP
(kube-proxy on this host routes it onto the cluster's bridge). The policies the chart installs are accepted by the
apiserver; the cluster's bridge CNI does not enforce them (docs/kubernetes.md), so what they say is tested in
tests/integration/kubernetes/test_helm_chart_render.py.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from ....support.helm import CHART, helm, helm_binary
from ....support.images import build_kernel_image
from ....support.server_image import build_server_image
from .conftest import Cluster, _unavailable

pytestmark = pytest.mark.integration
SERVER_IMAGE = "gp-test-server:helm"
DEFAULT_KERNEL_IMAGE = "gateway-provisioners/kernel-py:latest"  # the provisioner's and the chart's default (tested)
RELEASE = "gp"
FULLNAME = "gp-gateway-provisioners"
# What a namespace holds without any release: its own defaults.
NAMESPACE_DEFAULTS = {("configmaps", "kube-root-ca.crt"), ("serviceaccounts", "default")}
PORT_KEYS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
NAMESPACED = ("pods", "services", "endpoints", "secrets", "configmaps", "serviceaccounts", "roles", "rolebindings",
              "networkpolicies", "deployments", "replicasets")  # fmt: skip


@pytest.fixture(scope="module")
def chart_images(cluster: Cluster) -> dict[str, str]:
    """The kernel image by the documented recipe, the server image by its Dockerfile; both in the cluster."""
    helm_binary()  # skip (or fail under CI=true) before building anything when helm cannot be built
    started = time.monotonic()
    build_kernel_image(DEFAULT_KERNEL_IMAGE, _unavailable)
    built = build_server_image(SERVER_IMAGE, _unavailable)
    for image in (DEFAULT_KERNEL_IMAGE, SERVER_IMAGE):
        cluster.script("load-image", image, timeout=300)
    print(f"\nchart images in the cluster after {time.monotonic() - started:.1f} s (server image build {built:.1f} s)",
          file=sys.stderr)  # fmt: skip
    return {"kernel": DEFAULT_KERNEL_IMAGE, "server": SERVER_IMAGE}


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace; whatever the test leaves is uninstalled and deleted afterwards."""
    name = f"gp-helm-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    try:
        helm("uninstall", RELEASE, "--namespace", name, "--wait", "--timeout", "120s",
             kubeconfig=cluster.env["KUBECONFIG"], timeout=180)  # fmt: skip
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def leftovers(cluster: Cluster, namespace: str) -> list[str]:
    """Objects in the namespace beyond its defaults, and the release's cluster-wide objects."""
    left = []
    out = cluster.kubectl("get", ",".join(NAMESPACED), "-n", namespace, "-o", "json").stdout
    for item in json.loads(out)["items"]:
        kind = {"Endpoints": "endpoints"}.get(item["kind"], item["kind"].lower() + "s")
        kind = {"networkpolicys": "networkpolicies"}.get(kind, kind)
        if (kind, item["metadata"]["name"]) not in NAMESPACE_DEFAULTS:
            left.append(f"{kind}/{item['metadata']['name']}")
    out = cluster.kubectl("get", "clusterroles,clusterrolebindings", "-o", "json").stdout
    for item in json.loads(out)["items"]:
        labels = item["metadata"].get("labels") or {}
        if labels.get("app.kubernetes.io/instance") == RELEASE or namespace in item["metadata"]["name"]:
            left.append(f"{item['kind']}/{item['metadata']['name']}")
    return left


def selected(cluster: Cluster, namespace: str, labels: dict[str, str]) -> list[str]:
    """Names of the running pods of ``namespace`` that ``labels`` select, as a NetworkPolicy's podSelector would."""
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "--field-selector=status.phase=Running",
                          "-o", "jsonpath={.items[*].metadata.name}").stdout  # fmt: skip
    return sorted(out.split())


def execute_request(code: str) -> dict[str, Any]:
    msg_id = uuid.uuid4().hex
    return {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                   "date": datetime.now(timezone.utc).isoformat(), "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }  # fmt: skip


async def run_over_websocket(url: str, token: str, code: str, timeout: float = 60) -> str:
    """Send ``code`` on the kernel's WebSocket; the text/plain of its execute_result."""
    ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}, connect_timeout=30))
    try:
        request = execute_request(code)
        await ws.write_message(json.dumps(request))
        deadline = time.monotonic() + timeout
        result = None
        while time.monotonic() < deadline:
            raw = await ws.read_message()
            assert raw is not None, "the WebSocket closed before the kernel answered"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:
                continue
            if msg["msg_type"] == "execute_result":
                result = msg["content"]["data"]["text/plain"]
            if msg["msg_type"] == "error":
                pytest.fail(f"{code!r} raised {msg['content']['ename']}: {msg['content']['evalue']}")
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle" and result is not None:
                return str(result)
        pytest.fail(f"no result for {code!r} within {timeout:.0f} s")
    finally:
        ws.close()


@pytest.mark.parametrize("mode", ["assigned", "callback"])
async def test_install_serve_a_kernel_and_uninstall_leaves_nothing(
    cluster: Cluster, chart_images: dict[str, str], namespace: str, mode: str
) -> None:
    kubeconfig = cluster.env["KUBECONFIG"]
    started = time.monotonic()
    installed = helm(
        "install", RELEASE, str(CHART), "--namespace", namespace, "--wait", "--timeout", "300s",
        "--set", f"server.image={chart_images['server']}", "--set", "server.imagePullPolicy=Never",
        "--set", "kernels.imagePullPolicy=Never", "--set", f"kernels.connectionMode={mode}",
        kubeconfig=kubeconfig, timeout=360,
    )  # fmt: skip
    install_seconds = time.monotonic() - started
    assert installed.returncode == 0, installed.stderr[-3000:]
    secret = cluster.get("secret", FULLNAME, namespace)
    assert secret is not None
    token = base64.b64decode(secret["data"]["token"]).decode()
    service = cluster.get("service", FULLNAME, namespace)
    assert service is not None
    base = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    auth = {"Authorization": f"token {token}"}
    http = AsyncHTTPClient()

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            payload = json.dumps(body if body is not None else {}) if method == "POST" else None
            response = await http.fetch(f"{base}{path}", method=method, headers=auth, body=payload, request_timeout=120)
        except HTTPClientError as err:
            assert err.response is not None, str(err)
            response = err.response
        text = response.body.decode() if response.body else ""
        return response.code, json.loads(text) if text.startswith(("{", "[")) else text

    code, _ = await call("GET", "/api/kernels")
    assert code == 200
    assert (await call("GET", "/api/status"))[0] == 200
    unauthenticated = await http.fetch(f"{base}/api/kernels", raise_error=False, request_timeout=30)
    assert unauthenticated.code == 403  # the generated token is required
    code, specs = await call("GET", "/api/kernelspecs")
    assert code == 200 and sorted(specs["kernelspecs"]) == ["python-k8s"]  # the chart's specs only, no local kernel
    assert (await call("POST", "/api/terminals"))[0] == 404  # no shell in the pod that holds the server's token

    # A client's image is refused by default (allowed_images closed), in one line, and nothing is created.
    code, refused = await call("POST", "/api/kernels", {"name": "python-k8s", "env": {"KERNEL_IMAGE": "busybox:1"}})
    assert code == 403, refused
    assert "KERNEL_IMAGE='busybox:1' is not allowed here" in json.dumps(refused)
    kernel_pods = ["pods", "-n", namespace, "-l", "app.kubernetes.io/component=kernel", "-o", "name"]
    assert cluster.kubectl("get", *kernel_pods).stdout.strip() == ""

    started = time.monotonic()
    code, kernel = await call("POST", "/api/kernels", {"name": "python-k8s"})
    launch_seconds = time.monotonic() - started
    assert code == 201, kernel
    kernel_id = kernel["id"]
    pod = cluster.get("pod", f"kernel-{kernel_id}", namespace)
    assert pod is not None, "the kernel's pod is not in the release's namespace"
    assert pod["metadata"]["labels"]["gateway-provisioners.io/server"] == FULLNAME  # what its NetworkPolicy selects
    assert pod["spec"]["containers"][0]["image"] == DEFAULT_KERNEL_IMAGE
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000
    # What the agent was told (its launch Secret): the ports the kernels' NetworkPolicy opens, and in callback mode the
    # server pod's IP and the one response port the server's policy opens.
    launch = cluster.get("secret", f"kernel-{kernel_id}-launch", namespace)
    assert launch is not None
    params = json.loads(base64.b64decode(launch["data"]["params.json"]))
    assert params["mode"] == mode and params["port_range"] == "50000..50999"
    if mode == "assigned":
        ports = [*(params["connection"][k] for k in PORT_KEYS), params["agent_port"]]
        assert all(50000 <= port <= 50999 for port in ports), ports
    else:
        server_ip = cluster.kubectl("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=server",
                                    "-o", "jsonpath={.items[0].status.podIP}").stdout  # fmt: skip
        assert params["response_address"] == f"{server_ip}:8877"

    ws_url = base.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
    assert await run_over_websocket(ws_url, token, "1+1") == "2"
    assert await run_over_websocket(ws_url, token, "import os; os.getuid()") == "1000"

    code, _ = await call("DELETE", f"/api/kernels/{kernel_id}")
    assert code == 204
    cluster.wait_until("the kernel's pod gone", lambda: cluster.get("pod", f"kernel-{kernel_id}", namespace) is None)
    assert (await call("GET", "/api/kernels"))[1] == []

    # A kernel still running at `helm uninstall`: the server shuts it down as it stops (keepKernelsOnShutdown false).
    code, running = await call("POST", "/api/kernels", {"name": "python-k8s"})
    assert code == 201, running
    assert cluster.get("pod", f"kernel-{running['id']}", namespace) is not None
    # In callback mode the kernel can answer before the kubelet has reported its pod Running to the API (seen under
    # load): the selectors below are checked against running pods, so wait for the API to say so.
    cluster.wait_until(
        "the running kernel's pod reported Running",
        lambda: (
            ((cluster.get("pod", f"kernel-{running['id']}", namespace) or {}).get("status") or {}).get("phase")
            == "Running"
        ),
    )

    policies = json.loads(cluster.kubectl("get", "networkpolicies", "-n", namespace, "-o", "json").stdout)["items"]
    assert sorted(p["metadata"]["name"] for p in policies) == [f"{FULLNAME}-kernels", f"{FULLNAME}-server"]
    # The cluster does not enforce them, but it can say whom they select: each selector picks exactly the pods meant.
    by_name = {p["metadata"]["name"]: p["spec"] for p in policies}
    server_pod = selected(cluster, namespace, {"app.kubernetes.io/component": "server"})
    assert len(server_pod) == 1
    kernels = by_name[f"{FULLNAME}-kernels"]
    assert selected(cluster, namespace, kernels["podSelector"]["matchLabels"]) == [f"kernel-{running['id']}"]
    assert selected(cluster, namespace, kernels["ingress"][0]["from"][0]["podSelector"]["matchLabels"]) == server_pod
    server = by_name[f"{FULLNAME}-server"]
    assert selected(cluster, namespace, server["podSelector"]["matchLabels"]) == server_pod
    if mode == "callback":
        response_from = server["ingress"][1]["from"][0]["podSelector"]["matchLabels"]
        assert selected(cluster, namespace, response_from) == [f"kernel-{running['id']}"]
    else:
        assert len(server["ingress"]) == 1  # no kernel may open a connection to the server

    started = time.monotonic()
    removed = helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s",
                   kubeconfig=kubeconfig, timeout=180)  # fmt: skip
    uninstall_seconds = time.monotonic() - started
    assert removed.returncode == 0, removed.stderr[-3000:]
    # pods end after their grace period and endpoints go with their service: wait, then nothing may be left
    deadline = time.monotonic() + 120
    while (left := leftovers(cluster, namespace)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], f"left after helm uninstall: {left}"
    print(f"\n[{mode}] helm install --wait {install_seconds:.1f} s, kernel start {launch_seconds:.1f} s, "
          f"helm uninstall --wait {uninstall_seconds:.1f} s", file=sys.stderr)  # fmt: skip
