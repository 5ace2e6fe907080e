"""The YARN backend: each kernel is a YARN application whose application master is the agent.

Submission goes through the ResourceManager's REST API (new-application + submit, no Spark needed) or through the
kernel spec's own submit command (``spark-submit --master yarn --deploy-mode cluster``, or ``dask-yarn submit``).
Observation is shared: one
:class:`ApplicationPoller` per ResourceManager and server process follows every kernel with one query per interval.
The agent always calls back (callback mode): a YARN container's ports are the node's, chosen on the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections import deque
from typing import Any, ClassVar

from ...core.backend import Backend, BackendHandle, Observation, PlatformState
from ...core.errors import ConfigurationError, LaunchError
from ...core.launch import ConnectionMode, LaunchSpec
from ...per_loop import PerLoop
from .client import ResourceManagerClient
from .observe import LIBRARY_TAG, app_sort_key, app_tags, is_final, kernel_tag, launch_tag, observe
from .poller import ApplicationPoller, Followed
from .submit import (
    AM_AGENT,
    AM_JAVA,
    DASK_SCRIPT,
    DEFAULT_AM_CLASSPATH,
    Application,
    dask_script,
    dask_yarn_argv,
    is_dask_yarn,
    memory_mb,
    rest_body,
    spark_submit_argv,
)

log = logging.getLogger("gateway_provisioners.yarn")

#: Server environment a submit command (spark-submit, dask-yarn) needs; never passed to the kernel.
SUBMIT_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "JAVA_HOME", "SPARK_HOME", "SPARK_CONF_DIR",
    "HADOOP_HOME", "HADOOP_CONF_DIR", "YARN_CONF_DIR", "KRB5CCNAME", "KRB5_CONFIG", "PYSPARK_PYTHON",
    "DASK_CONFIG", "SKEIN_CONFIG",
)  # fmt: skip


#: Seconds a submit command may run before it is stopped as hung.
SUBMIT_COMMAND_TIMEOUT = 300.0


async def _stop_when_hung(proc: asyncio.subprocess.Process, timeout: float) -> None:
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


async def kill_application(
    client: ResourceManagerClient, app_id: str, user: str | None, timeout: float = 15.0
) -> str | None:
    """Kill ``app_id`` and wait for its final state (the RM answers 202 while the kill runs, 200 once it is over).

    Returns the final state, or ``None`` if it was not reached within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        done, state = await client.kill(app_id, user)
        if done:
            return state
        if time.monotonic() + delay > deadline:
            log.warning("YARN application %s still %s %.0f s after the kill request", app_id, state, timeout)
            return None
        await asyncio.sleep(delay)  # the RM offers no way to wait for a kill but to ask again
        delay = min(1.0, delay * 2)


class YarnShared:
    """The per-process, per-ResourceManager part: one client and one poller, whatever the number of kernel specs."""

    _instances: ClassVar[PerLoop[YarnShared]] = PerLoop()

    def __init__(self, client: ResourceManagerClient, interval: float, startup_interval: float) -> None:
        self.client = client
        self.poller = ApplicationPoller(
            client,
            interval=interval,
            startup_interval=startup_interval,
            kill=lambda app_id, user: kill_application(client, app_id, user),
        )

    @classmethod
    def get(
        cls,
        endpoints: tuple[str, ...],
        *,
        verify: bool | str = True,
        kerberos: bool = False,
        service_user: str = "yarn",
        interval: float = 15.0,
        startup_interval: float = 1.0,
    ) -> YarnShared:
        def make() -> YarnShared:
            client = ResourceManagerClient(endpoints, verify=verify, kerberos=kerberos, service_user=service_user)
            return cls(client, interval, startup_interval)

        return cls._instances.get((endpoints, verify, kerberos, service_user), make)

    @classmethod
    async def close_all(cls) -> None:
        """Close the running loop's clients and pollers (a server's shutdown, the end of a test)."""
        for shared in cls._instances.pop_running():
            await shared.poller.close()
            shared.client.close()


class YarnBackend(Backend):
    """Kernels as YARN applications.

    Parameters
    ----------
    shared:
        The client and poller of the ResourceManager (see :meth:`YarnShared.get`).
    submit_command:
        ``None`` or empty: submit through the REST API. Otherwise the command that submits (``["spark-submit"]``
        plus options); the backend adds the master, deploy mode, name, tags, queue, files and the bootstrap.
    queue:
        Queue used when a launch gives no ``KERNEL_QUEUE``.
    python:
        Interpreter on the cluster's nodes that runs the agent (and a kernel argv starting with ``python``).
    impersonation:
        Run the application as the kernel's user: ``--proxy-user`` for spark-submit; for REST submission the kernel's
        user is the submitting user (simple auth) — with Kerberos, submit as the server's principal instead.
    memory:
        AM container memory for REST submission when the launch gives no ``KERNEL_DRIVER_MEMORY``.
    shutdown_wait:
        Seconds to wait for a killed application to reach its final state.
    application_master:
        REST submission: ``"java"`` (``GpYarnAm.java`` registers with the RM, heartbeats and runs the agent) or
        ``"agent"`` (the agent is the AM container's process; the RM expires it after its AM liveness interval).
    am_classpath:
        Where the Java AM finds Hadoop's jars on the nodes (the cluster's ``yarn.application.classpath``).
    """

    name: ClassVar[str] = "yarn"
    kernel_ends_with_resource: ClassVar[bool] = True  # the application's AM container holds the agent
    modes: ClassVar[tuple[ConnectionMode, ...]] = (ConnectionMode.CALLBACK,)

    def __init__(
        self,
        shared: YarnShared,
        *,
        submit_command: list[str] | None = None,
        extra_submit_options: list[str] | None = None,
        queue: str = "default",
        python: str = "python3",
        impersonation: bool = False,
        memory: str = "1g",
        shutdown_wait: float = 15.0,
        submit_env: tuple[str, ...] = SUBMIT_ENV,
        application_master: str = AM_JAVA,
        am_classpath: str = DEFAULT_AM_CLASSPATH,
    ) -> None:
        if application_master not in (AM_JAVA, AM_AGENT):
            raise ConfigurationError(
                f"application_master (GP_YARN_APPLICATION_MASTER) is {application_master!r}; "
                f"use {AM_JAVA!r} (a registered AM, the default) or {AM_AGENT!r}"
            )
        self.shared = shared
        self.client = shared.client
        self.poller = shared.poller
        self.submit_command = list(submit_command or [])
        self.extra_submit_options = list(extra_submit_options or [])
        self.queue = queue
        self.python = python
        self.impersonation = impersonation
        self.memory = memory
        self.shutdown_wait = shutdown_wait
        self.submit_env = submit_env
        self.application_master = application_master
        self.am_classpath = am_classpath or DEFAULT_AM_CLASSPATH
        self._submitters: dict[str, asyncio.subprocess.Process] = {}
        self._outputs: dict[str, deque[str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- submit -----------------------------------------------------------------------------------------------------

    async def submit(self, spec: LaunchSpec) -> BackendHandle:
        if spec.mode is not ConnectionMode.CALLBACK:
            raise ConfigurationError(f"YARN kernels call back (connection_mode 'callback'), not {spec.mode}")
        started = time.monotonic()
        launch_id = secrets.token_hex(8)
        tag = launch_tag(launch_id)
        user = spec.username or None
        values = spec.values
        app = Application(
            kernel_id=spec.kernel_id,
            name=spec.kernel_id,
            tags=[LIBRARY_TAG, kernel_tag(spec.kernel_id), tag],
            queue=values.get("KERNEL_QUEUE") or self.queue,
            user=spec.username,
            memory_mb=memory_mb(values.get("KERNEL_DRIVER_MEMORY") or self.memory),
            vcores=int(values.get("KERNEL_DRIVER_CORES") or 1),
            python=self.python,
            params=spec.agent_params(python=self.python),
        )
        handle = BackendHandle(
            spec.kernel_id,
            observation=Observation(PlatformState.PENDING, reason=f"submitting to YARN queue {app.queue}"),
            data={
                "kernel_id": spec.kernel_id, "launch_tag": tag, "user": user, "queue": app.queue,
                "submitted_ms": int(time.time() * 1000), "callback": spec.response_address,
                "path": "submit-command" if self.submit_command else "rest",
            },
        )  # fmt: skip
        # Fail with the application's own reason a little before the core's deadline, so a full queue is QueueFull.
        margin = min(2.0, max(0.25, 0.1 * spec.launch_timeout))
        followed = Followed(
            handle, tag, handle.data["submitted_ms"], started + spec.launch_timeout - margin, spec.response_address
        )
        try:
            if self.submit_command:
                await self._submit_command(spec, app, handle, followed)
            else:
                await self._submit_rest(app, handle, followed)
        except asyncio.CancelledError:
            self.poller.abandon(tag, user)  # whatever got as far as the RM is killed when it shows up
            raise
        log.info("kernel %s submitted to YARN (%s, queue %s, tag %s)", spec.kernel_id, handle.data["path"],
                 app.queue, tag)  # fmt: skip
        return handle

    async def _submit_rest(self, app: Application, handle: BackendHandle, followed: Followed) -> None:
        user = app.user or None
        new = await self.client.new_application(user or self.client.service_user)
        app_id = str(new.get("application-id") or "")
        if not app_id:
            raise LaunchError(f"the ResourceManager gave no application id: {json.dumps(new)[:200]}")
        handle.data["app_id"] = app_id
        if self.application_master == AM_AGENT:
            log.warning(
                "kernel %s: REST submission without an ApplicationMaster (application_master 'agent'): the "
                "ResourceManager expires it after yarn.am.liveness-monitor.expiry-interval-ms (10 minutes by "
                "default); use 'java' for long-lived kernels",
                app.kernel_id,
            )
        body = rest_body(app, app_id, application_master=self.application_master, am_classpath=self.am_classpath)
        await self.client.submit_application(body, user or self.client.service_user)
        self.poller.follow(followed)

    async def _submit_command(
        self, spec: LaunchSpec, app: Application, handle: BackendHandle, followed: Followed
    ) -> None:
        folder = tempfile.mkdtemp(prefix="gp-yarn-submit-")  # 0700: the parameters file holds the token
        env = {k: os.environ[k] for k in self.submit_env if k in os.environ}
        proxy_user = app.user if self.impersonation and app.user else None
        if is_dask_yarn(self.submit_command):
            script = os.path.join(folder, DASK_SCRIPT)
            fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(dask_script(app))
            argv = dask_yarn_argv(app, self.submit_command, script, extra_options=self.extra_submit_options)
            if proxy_user:
                env["DASK_YARN__USER"] = proxy_user  # dask's yarn.user: skein submits on behalf of that user
        else:
            params_file = os.path.join(folder, "gp-launch.json")
            fd = os.open(params_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(app.params, out)
            values = spec.values
            argv = spark_submit_argv(
                app, self.submit_command, params_file,
                proxy_user=proxy_user,
                extra_options=self.extra_submit_options,
                driver_memory=values.get("KERNEL_DRIVER_MEMORY"),
                executor_memory=values.get("KERNEL_EXECUTOR_MEMORY"),
                driver_cores=values.get("KERNEL_DRIVER_CORES"),
            )  # fmt: skip
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise ConfigurationError(
                f"cannot run the submit command {argv[0]!r}: {exc.strerror or exc}; set submit_command "
                "(GP_YARN_SUBMIT_COMMAND) or SPARK_HOME/PATH (spark-submit, dask-yarn) on the server"
            ) from None
        self._submitters[spec.kernel_id] = proc
        output = self._outputs[spec.kernel_id] = deque(maxlen=50)
        self.poller.follow(followed)
        self._spawn(self._watch_submitter(proc, handle, output, folder))

    async def _watch_submitter(
        self, proc: asyncio.subprocess.Process, handle: BackendHandle, output: deque[str], folder: str
    ) -> None:
        assert proc.stdout is not None
        try:
            while line := await proc.stdout.readline():
                output.append(line.decode("utf-8", "replace").rstrip())
            code = await proc.wait()
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # uploaded to the application's staging folder by now
            self._submitters.pop(handle.kernel_id, None)
        if code != 0 and handle.observation.state is PlatformState.PENDING and not handle.data.get("app_id"):
            reason = f"the submit command failed with exit code {code} before YARN had the application"
            handle.update(
                Observation(
                    PlatformState.FAILED, exit_code=code, reason=reason, diagnostics=list(output),
                    error=LaunchError(reason, diagnostics=list(output)[-20:],
                                      hint="See the submit command's output above (spark-submit, dask-yarn)"),
                )
            )  # fmt: skip
            self.poller.forget(handle.data["launch_tag"])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the running application --------------------------------------------------------------------------------------

    async def terminate(self, handle: BackendHandle, grace: float = 0.0) -> None:
        """Kill the application and wait for its final state. An application not registered yet is killed when it
        appears (the poller looks for its launch tag for ten minutes)."""
        tag, user = handle.data.get("launch_tag", ""), handle.data.get("user")
        proc = self._submitters.pop(handle.kernel_id, None)
        if proc is not None and proc.returncode is None:
            # Killing a submit command half-way may still leave an application behind; let it finish (the poller
            # kills what it registers) and stop it only if it hangs.
            self._spawn(_stop_when_hung(proc, SUBMIT_COMMAND_TIMEOUT))
        app_id = handle.data.get("app_id")
        if not app_id and tag:
            apps = await self.client.applications([tag])
            apps = [a for a in apps if tag in app_tags(a)]
            if apps:
                app_id = handle.data["app_id"] = max((str(a["id"]) for a in apps), key=app_sort_key)
        self.poller.forget(tag)
        if not app_id:
            self.poller.abandon(tag, user)
            handle.update(Observation(PlatformState.GONE, reason="no YARN application yet; killed when it appears"))
            return
        state = await kill_application(self.client, str(app_id), user, timeout=grace + self.shutdown_wait)
        if state is None:
            self.poller.abandon(tag, user)
            return
        log.info("kernel %s: YARN application %s %s", handle.kernel_id, app_id, state.lower())
        handle.update(Observation(PlatformState.EXITED, reason=f"application {app_id} {state.lower()}"))
        self._outputs.pop(handle.kernel_id, None)

    async def signal(self, handle: BackendHandle, signum: int) -> None:
        """Without the agent, YARN can only kill the whole application: SIGTERM and SIGKILL do that."""
        if signum in (signal.SIGTERM, signal.SIGKILL):
            await self.terminate(handle)
        else:
            log.warning("kernel %s: signal %d needs the agent, which does not answer", handle.kernel_id, signum)

    async def log_tail(self, handle: BackendHandle, lines: int = 20) -> list[str]:
        """The agent's and kernel's log lines from the NodeManager (``stderr``, ``kernel.log``), or the submit
        command's output while YARN does not have the application yet."""
        out: list[str] = []
        callback = handle.data.get("callback")
        app_id = handle.data.get("app_id")
        app = await self.client.application(str(app_id)) if app_id else None
        logs_url = (app or {}).get("amContainerLogs")
        if logs_url:
            if callback:
                out.append(f"the agent was told to call back to {callback}")
            for name in ("stderr", "kernel.log"):
                with contextlib.suppress(Exception):
                    out.extend(
                        f"[{name}] {line}" for line in (await self.client.container_log(logs_url, name))[-lines:]
                    )
        elif self._outputs.get(handle.kernel_id):
            out.extend(f"[submit] {line}" for line in list(self._outputs[handle.kernel_id])[-lines:])
        return out

    def serialize(self, handle: BackendHandle) -> dict[str, Any]:
        keys = ("kernel_id", "app_id", "launch_tag", "user", "queue", "submitted_ms", "callback")
        return {k: handle.data[k] for k in keys if handle.data.get(k) is not None}

    async def restore(self, data: dict[str, Any]) -> BackendHandle:
        handle = BackendHandle(str(data.get("kernel_id", "")), data=dict(data))
        app_id = data.get("app_id")
        app = await self.client.application(str(app_id)) if app_id else None
        if app is None:
            handle.update(Observation(PlatformState.GONE, reason=f"YARN does not know application {app_id}"))
            return handle
        handle.update(observe(app))
        if not is_final(app):
            submitted = int(data.get("submitted_ms") or app.get("startedTime") or time.time() * 1000)
            self.poller.follow(Followed(handle, str(data.get("launch_tag", "")), submitted, None, data.get("callback")))
        return handle

    async def list_owned(self) -> list[dict[str, Any]]:
        apps = await self.client.applications([LIBRARY_TAG])
        owned = []
        for app in apps:
            if is_final(app):
                continue
            tags = app_tags(app)
            launch = next((t for t in tags if t.startswith("gp-launch-")), None)
            kernel = next((t[len("gp-kernel-") :] for t in tags if t.startswith("gp-kernel-")), app.get("name"))
            owned.append({"kernel_id": kernel, "app_id": app.get("id"), "launch_tag": launch, "user": app.get("user")})
        return owned

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
