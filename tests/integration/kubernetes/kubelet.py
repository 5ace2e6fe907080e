"""The test's kubelet: it runs the pods the provisioner creates in the emulator, on this machine.

For each new kernel pod it does what a node would: report scheduling (or not), wait for the launch Secret to exist
(a real kubelet cannot mount it before), pull the "image", then start the container's command — the real agent with
the pod's environment and the Secret's token as a file — and report the pod Running at 127.0.0.1. When the agent
exits the pod becomes Succeeded or Failed with the exit code; when the pod is deleted the agent is stopped.

The pod's image picks a scenario, so a test can ask for a failure: ``...:pull-fail``, ``...:crash``, ``...:fail``,
``...:unschedulable``, ``...:park`` (stays Pending), ``...:run-no-agent`` (Running, but nothing started).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

from .emulator import KubeEmulator

BASE_ENV = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV") if k in os.environ}
BASE_ENV["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"


class Kubelet:
    def __init__(self, kube: KubeEmulator, workdir: Path, node: str = "node-1", pod_ip: str = "127.0.0.1") -> None:
        self.kube, self.workdir, self.node, self.pod_ip = kube, workdir, node, pod_ip
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.started: dict[str, asyncio.Event] = {}
        self._stoppers: set[asyncio.Task[None]] = set()
        # Pods share this machine's network: with distinct_ips each "pod" gets its own loopback address (127.0.0.N)
        # and its agent binds that one, as each real pod has its own network namespace. Without it, many kernels
        # started at once could be assigned the same free port on the one shared loopback address.
        self.distinct_ips = False
        self._next_ip = 1
        self._secrets: dict[str, asyncio.Event] = {}
        kube.listeners.append(self._on_change)

    def _on_change(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = f"{meta.get('namespace')}/{meta['name']}"
        if resource == "secrets" and kind == "ADDED":
            self._secrets.setdefault(key, asyncio.Event()).set()
        elif resource == "secrets" and kind == "DELETED":
            self._secrets.pop(key, None)
        if resource != "pods":
            return
        if kind == "ADDED":
            self.started[key] = asyncio.Event()
            self.tasks[key] = asyncio.ensure_future(self._run_pod(meta["namespace"], meta["name"], obj))
        elif kind == "DELETED":
            task = self.tasks.pop(key, None)
            if task is not None:
                task.cancel()
            stopper = asyncio.ensure_future(self._stop(key))
            self._stoppers.add(stopper)
            stopper.add_done_callback(self._stoppers.discard)

    async def _stop(self, key: str) -> None:
        proc = self.procs.pop(key, None)
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def close(self) -> None:
        self.kube.listeners.remove(self._on_change)
        for task in list(self.tasks.values()):
            task.cancel()
        for key in list(self.procs):
            await self._stop(key)

    # --- one pod ----------------------------------------------------------------------------------------------------

    async def _run_pod(self, ns: str, name: str, pod: dict[str, Any]) -> None:
        container = pod["spec"]["containers"][0]
        image = container["image"]
        scenario = image.rsplit(":", 1)[-1] if ":" in image else "ok"
        await asyncio.sleep(0)
        if scenario == "park":
            return
        if scenario == "unschedulable":
            self.kube.patch_status(ns, name, {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient cpu."}]})  # fmt: skip
            self.kube.add_event(ns, name, "FailedScheduling", "0/3 nodes are available: 3 Insufficient cpu.", "Warning")
            return
        self.kube.patch_status(ns, name, {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "kernel", "image": image, "ready": False, "restartCount": 0,
                                   "state": {"waiting": {"reason": "ContainerCreating"}}}]})  # fmt: skip
        self.kube.add_event(ns, name, "Scheduled", f"Successfully assigned {ns}/{name} to {self.node}")
        self.kube.add_event(ns, name, "Pulling", f'Pulling image "{image}"')
        if scenario == "pull-fail":
            message = f'rpc error: failed to pull and unpack image "{image}": not found'
            self.kube.add_event(ns, name, "Failed", f'Failed to pull image "{image}": {message}', "Warning")
            self.kube.patch_status(ns, name, {"containerStatuses": [{"name": "kernel", "image": image, "ready": False,
                "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull", "message": message}}}]})  # fmt: skip
            return
        self.kube.add_event(ns, name, "Pulled", f'Successfully pulled image "{image}"')
        secret = {} if scenario == "run-no-agent" else await self._secret(ns, f"{name}-launch")
        if scenario == "crash":
            self.kube.logs[(ns, name)] = [
                "Traceback (most recent call last):",
                "ModuleNotFoundError: No module named 'x'",
            ]
            self.kube.patch_status(ns, name, {"phase": "Running", "podIP": self.pod_ip, "containerStatuses": [
                {"name": "kernel", "image": image, "ready": False, "restartCount": 3,
                 "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                 "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]})  # fmt: skip
            self.kube.add_event(ns, name, "BackOff", "Back-off restarting failed container", "Warning")
            return
        if scenario == "fail":
            self.kube.logs[(ns, name)] = ["gp-agent: cannot start the kernel: no such file python9"]
            self._terminated(ns, name, image, 2)
            return
        pod_ip = self.pod_ip
        if self.distinct_ips:
            self._next_ip = self._next_ip % 250 + 1
            pod_ip = f"127.0.0.{self._next_ip + 1}"
        self.kube.patch_status(ns, name, {"phase": "Running", "podIP": pod_ip, "containerStatuses": [
            {"name": "kernel", "image": image, "ready": True, "restartCount": 0,
             "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]})  # fmt: skip
        self.kube.add_event(ns, name, "Started", "Started container kernel")
        if scenario == "run-no-agent":
            self.started[f"{ns}/{name}"].set()
            return
        await self._start_agent(ns, name, container, secret, pod_ip)

    async def _secret(self, ns: str, name: str) -> dict[str, Any]:
        event = self._secrets.setdefault(f"{ns}/{name}", asyncio.Event())
        if self.kube.get("secrets", ns, name) is None:
            await asyncio.wait_for(event.wait(), 30)
        secret = self.kube.get("secrets", ns, name)
        assert secret is not None
        return secret

    def _terminated(self, ns: str, name: str, image: str, code: int) -> None:
        why = "Completed" if code == 0 else "Error"
        self.kube.patch_status(ns, name, {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
            {"name": "kernel", "image": image, "ready": False, "restartCount": 0,
             "state": {"terminated": {"exitCode": code, "reason": why}}}]})  # fmt: skip

    async def _start_agent(
        self, ns: str, name: str, container: dict[str, Any], secret: dict[str, Any], pod_ip: str
    ) -> None:
        key = f"{ns}/{name}"
        mount = next(m for m in container["volumeMounts"] if m["name"] == "gp-launch")["mountPath"]
        folder = Path(tempfile.mkdtemp(prefix="pod-", dir=self.workdir))
        for item, value in secret["data"].items():  # the Secret volume, as files
            path = folder / item
            path.write_bytes(base64.b64decode(value))
            path.chmod(0o400)
        command = [arg.replace(mount, str(folder)) for arg in container["command"]]
        env = dict(BASE_ENV)
        env.update({e["name"]: e["value"].replace(mount, str(folder)) for e in container.get("env") or []})
        if self.distinct_ips and (folder / "params.json").exists():  # "0.0.0.0 in the pod" is the pod's own address
            params = json.loads((folder / "params.json").read_text())
            params["kernel_ip"] = pod_ip
            (folder / "params.json").chmod(0o600)
            (folder / "params.json").write_text(json.dumps(params))
        log_path = folder / "container.log"
        with open(log_path, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *command, env=env, stdout=out, stderr=out, start_new_session=True
            )
        self.procs[key] = proc
        self.started[key].set()
        code = await proc.wait()
        with contextlib.suppress(OSError):
            self.kube.logs[(ns, name)] = log_path.read_text().splitlines()
        if self.kube.get("pods", ns, name) is not None:
            self._terminated(ns, name, container["image"], code)
