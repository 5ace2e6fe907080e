"""An in-process Hadoop YARN ResourceManager (and NodeManager) REST emulator for the integration tests.

It follows the shapes of Hadoop's ResourceManagerRest documentation and RMWebServices (see
/work/shared/reference/test-infra.md §2): ``{"apps": null}`` when nothing matches, 404 ``RemoteException`` bodies,
kills answered 202 (with the current state) while in progress and 200 once final, a standby RM answering 307 with a
``Location`` on the active RM (or without one when it does not know it), and Hadoop's simple auth (``user.name`` →
a ``hadoop.auth`` cookie naming the user). Two servers over one :class:`RMState` are an HA pair.

"Running" an application is real: the emulator's NodeManager localizes the application's files, runs its AM command
with ``bash -c`` (``<LOG_DIR>`` expanded, the environment entries exported) on this machine, and serves the container's
log files. An AM of application type SPARK or skein registers (state RUNNING); any other AM never does, like a
process that does not speak the AMRM protocol, so its application stays ACCEPTED with an AM host, as on a real
cluster.

Test knobs: ``state.policy`` ("run", "hold" = queue full, "fail" = AM container fails), :meth:`RMState.release` to
start a held application, ``server.role`` ("ACTIVE", "STANDBY"), :meth:`RMServer.stop` (RM down), request counting.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections import Counter
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

FINAL = ("FINISHED", "FAILED", "KILLED")
HOLD_DIAGNOSTICS = (
    "[Tue Jan 07 10:00:00 +0000 2025] Application is added to the scheduler and is not yet activated. "
    "Queue's AM resource limit exceeded.  Details : AM Partition = <DEFAULT_PARTITION>; "
    "AM Resource Request = <memory:1024, vCores:1>; Queue Resource Limit for AM = <memory:0, vCores:0>"
)


class RMState:
    """Applications and containers shared by the RMs of an HA pair."""

    def __init__(self, workdir: Path, nm_host: str = "127.0.0.1") -> None:
        self.cluster_ts = int(time.time() * 1000)
        self.seq = 0
        self.apps: dict[str, dict[str, Any]] = {}
        self.specs: dict[str, dict[str, Any]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.lock = threading.RLock()
        self.workdir = workdir
        self.nm_host = nm_host
        self.nm_url = ""  # set by the first server (its NodeManager web address)
        self.policy = "run"  # "run" | "hold" | "fail"
        self.requests: Counter[tuple[str, str]] = Counter()
        self.changed = threading.Condition(self.lock)

    # --- test helpers -----------------------------------------------------------------------------------------------

    def count(self, method: str = "GET", path: str = "/ws/v1/cluster/apps") -> int:
        return self.requests[(method, path)]

    def total_requests(self) -> int:
        return sum(self.requests.values())

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
            return True

    def app_by_tag(self, tag: str) -> dict[str, Any] | None:
        with self.lock:
            found = [a for a in self.apps.values() if tag in a["applicationTags"].split(",")]
            return found[-1] if found else None

    def add_running(self, name: str, tags: list[str], user: str = "gp-tester") -> str:
        """An application whose AM already runs (no process behind it): for counting the poller's requests."""
        app_id = self.new_id()
        self.submit({"application-id": app_id, "application-name": name, "application-tags": {"tag": tags},
                     "application-type": "SPARK"}, user, launch=False)  # fmt: skip
        self._set(app_id, state="RUNNING", amHostHttpAddress=f"{self.nm_host}:8042", runningContainers=1)
        return app_id

    def release(self, app_id: str) -> None:
        """Give a held (queued) application its AM container now."""
        threading.Thread(target=self._launch, args=(app_id,), daemon=True).start()

    def shutdown(self) -> None:
        for _app_id, proc in list(self.procs.items()):
            if proc.poll() is None:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    # --- scheduler and node manager -----------------------------------------------------------------------------------

    def new_id(self) -> str:
        with self.lock:
            self.seq += 1
            return f"application_{self.cluster_ts}_{self.seq:04d}"

    def submit(self, body: dict[str, Any], user: str, launch: bool = True) -> None:
        app_id = body["application-id"]
        raw_tags = (body.get("application-tags") or {}).get("tag") or []
        tags = [raw_tags] if isinstance(raw_tags, str) else list(raw_tags)
        now = int(time.time() * 1000)
        with self.lock:
            self.apps[app_id] = {
                "id": app_id, "user": user, "name": body.get("application-name", ""),
                "queue": body.get("queue") or "default", "state": "SUBMITTED", "finalStatus": "UNDEFINED",
                "progress": 0.0, "trackingUI": "UNASSIGNED", "diagnostics": "", "clusterId": self.cluster_ts,
                "applicationType": body.get("application-type", "YARN"),
                "applicationTags": ",".join(t.lower() for t in tags), "priority": 0, "startedTime": now,
                "launchTime": 0, "finishedTime": 0, "elapsedTime": 0, "allocatedMB": -1, "allocatedVCores": -1,
                "runningContainers": 0, "memorySeconds": 0, "vcoreSeconds": 0, "unmanagedApplication": False,
            }  # fmt: skip
            self.specs[app_id] = body
            self._set(app_id, state="ACCEPTED", diagnostics="[waiting for AM container to be allocated]")
            policy = self.policy if launch else "none"
        if policy == "none":
            return
        if policy == "hold":
            self._set(app_id, diagnostics=HOLD_DIAGNOSTICS)
        elif policy == "fail":
            self._set(
                app_id, state="FAILED", finalStatus="FAILED", finishedTime=int(time.time() * 1000),
                diagnostics=f"Application {app_id} failed 1 times (global limit =2; local limit is =1) due to "
                f"AM Container for {app_id.replace('application', 'appattempt')}_000001 exited with  exitCode: 1\n"
                "Failing this attempt. Failing the application.",
            )  # fmt: skip
        else:
            threading.Thread(target=self._launch, args=(app_id,), daemon=True).start()

    def _set(self, app_id: str, **fields: Any) -> None:
        with self.changed:
            self.apps[app_id].update(fields)
            self.changed.notify_all()

    def _launch(self, app_id: str) -> None:
        with self.lock:
            app, body = self.apps[app_id], self.specs[app_id]
            if app["state"] in FINAL or app_id in self.procs:
                return
        container = f"container_{self.cluster_ts}_{int(app_id.rsplit('_', 1)[1]):04d}_01_000001"
        cdir = self.workdir / "nm" / container
        logdir = self.workdir / "logs" / container
        cdir.mkdir(parents=True)
        logdir.mkdir(parents=True)
        spec = body.get("am-container-spec") or {}
        for entry in (spec.get("local-resources") or {}).get("entry") or []:
            src = urlparse(entry["value"]["resource"]).path
            shutil.copy(src, cdir / entry["key"])
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH")}
        env.update({e["key"]: e["value"] for e in (spec.get("environment") or {}).get("entry") or []})
        env.update(CONTAINER_ID=container, LOG_DIRS=str(logdir), USER=app["user"], PWD=str(cdir))
        command = spec["commands"]["command"].replace("<LOG_DIR>", str(logdir))
        proc = subprocess.Popen(["/bin/bash", "-c", command], cwd=cdir, env=env, start_new_session=True)
        with self.lock:
            self.procs[app_id] = proc
        registered = app["applicationType"].upper() in ("SPARK", "SKEIN")  # Spark's and skein's AMs register
        self._set(
            app_id, state="RUNNING" if registered else "ACCEPTED",
            diagnostics="" if registered else "AM container is launched, waiting for AM container to Register with RM",
            amHostHttpAddress=f"{self.nm_host}:{self.nm_port}", launchTime=int(time.time() * 1000),
            amContainerLogs=f"{self.nm_url}/node/containerlogs/{container}/{app['user']}",
            trackingUI="ApplicationMaster", runningContainers=1,
        )  # fmt: skip
        code = proc.wait()
        with self.lock:
            killing = self.apps[app_id].get("_killing")
        if killing:
            fields = {"state": "KILLED", "finalStatus": "KILLED", "diagnostics": "Application killed by user."}
        elif code == 0:
            fields = {"state": "FINISHED", "finalStatus": "SUCCEEDED"}
        else:
            fields = {
                "state": "FAILED", "finalStatus": "FAILED",
                "diagnostics": f"AM Container {container} exited with exitCode: {code}. Failing the application.",
            }  # fmt: skip
        self._set(app_id, finishedTime=int(time.time() * 1000), runningContainers=0, **fields)

    @property
    def nm_port(self) -> int:
        return int(self.nm_url.rsplit(":", 1)[1]) if self.nm_url else 8042

    def kill(self, app_id: str) -> tuple[int, str]:
        """202 with the current state while the AM container stops; 200 once the application is over."""
        with self.lock:
            app = self.apps[app_id]
            if app["state"] in FINAL:
                return 200, app["state"]
            current = app["state"]
            proc = self.procs.get(app_id)
            app["_killing"] = True
        if proc is None or proc.poll() is not None:
            self._set(app_id, state="KILLED", finalStatus="KILLED", diagnostics="Application killed by user.",
                      finishedTime=int(time.time() * 1000))  # fmt: skip
        else:
            _killpg(proc.pid, signal.SIGTERM)
            threading.Timer(3.0, _killpg, (proc.pid, signal.SIGKILL)).start()
        return 202, current


def _killpg(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class RMServer:
    """One ResourceManager web endpoint (and its NodeManager log pages) over a shared :class:`RMState`."""

    def __init__(
        self, state: RMState, role: str = "ACTIVE", require_auth: bool = True, tls: ssl.SSLContext | None = None
    ) -> None:
        self.state = state
        self.role = role
        self.active_url: str | None = None  # where a standby redirects (None: 307 without Location)
        self.require_auth = require_auth
        self.requests: Counter[tuple[str, str]] = Counter()
        self.connections: set[Any] = set()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.tls_failures = 0  # connections whose TLS handshake failed (e.g. the client rejected the certificate)
        if tls is not None:
            # The handshake runs in the connection's own thread (on its first read), not in the accept loop.
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        if not state.nm_url:
            state.nm_url = self.url
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The RM goes away: its port closes and so do the clients' open (keep-alive) connections."""
        self.httpd.shutdown()
        self.httpd.server_close()
        for sock in list(self.connections):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _handler(server: RMServer) -> type[BaseHTTPRequestHandler]:
    state = server.state

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            server.connections.add(self.connection)

        def handle(self) -> None:
            try:
                super().handle()
            except ssl.SSLError:
                server.tls_failures += 1  # a client that does not trust our certificate hangs up mid-handshake

        def finish(self) -> None:
            server.connections.discard(self.connection)
            super().finish()

        def _send(
            self,
            code: int,
            body: Any = None,
            headers: tuple[tuple[str, str], ...] = (),
            raw: bytes | None = None,
            ctype: str = "application/json",
        ) -> None:
            data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers:
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _err(self, code: int, exc: str, msg: str) -> None:
            java_class = f"org.apache.hadoop.yarn.webapp.{exc}"
            self._send(code, {"RemoteException": {"exception": exc, "message": msg, "javaClassName": java_class}})

        def _user(self, query: dict[str, str]) -> str | None:
            if "user.name" in query:
                return query["user.name"]
            match = re.search(r'hadoop\.auth="?u=([^&"]+)', self.headers.get("Cookie", ""))
            return unquote(match.group(1)) if match else None

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}") if length else {}

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            path = url.path.rstrip("/") or "/"
            body = self._body() if method in ("PUT", "POST") else {}
            server.requests[(method, path)] += 1
            with state.changed:  # waiters may wait for a request as well as for a state change
                state.requests[(method, path)] += 1
                state.changed.notify_all()
            if path.startswith("/node/containerlogs/"):
                return self._logs(path)
            if server.role == "STANDBY" and path not in ("/ws/v1/cluster/info", "/isActive"):
                if server.active_url:
                    return self._send(
                        307,
                        raw=f"This is standby RM. The redirect url is: {server.active_url}".encode(),
                        headers=(("Location", server.active_url + self.path),),
                        ctype="text/plain",
                    )
                return self._send(307, raw=b"This is standby RM.", headers=(("Refresh", "3"),), ctype="text/plain")
            user = self._user(query)
            headers: tuple[tuple[str, str], ...] = ()
            if "user.name" in query:  # Hadoop's simple auth filter hands out a signed token cookie
                cookie = f'hadoop.auth="u={user}&p={user}&t=simple&e=9999999999999&s=emulated"; Path=/; HttpOnly'
                headers = (("Set-Cookie", cookie),)
            if path == "/cluster":
                return self._send(200, raw=b"<html>cluster</html>", headers=headers, ctype="text/html")
            if server.require_auth and path.startswith("/ws/") and not user:
                return self._send(401, raw=b"Authentication required", headers=headers, ctype="text/plain")
            if path in ("/ws/v1/cluster", "/ws/v1/cluster/info"):
                return self._send(200, {"clusterInfo": {"id": state.cluster_ts, "startedOn": state.cluster_ts,
                    "state": "STARTED", "haState": server.role, "resourceManagerVersion": "3.3.6",
                    "hadoopVersion": "3.3.6"}}, headers)  # fmt: skip
            if path == "/ws/v1/cluster/apps/new-application" and method == "POST":
                return self._send(200, {"application-id": state.new_id(),
                    "maximum-resource-capability": {"memory": 8192, "vCores": 8}}, headers)  # fmt: skip
            if path == "/ws/v1/cluster/apps" and method == "POST":
                if body.get("application-id") is None:
                    return self._err(400, "BadRequestException", "application-id is missing")
                state.submit(body, user or "dr.who")
                loc = f"{server.url}/ws/v1/cluster/apps/{body['application-id']}"
                return self._send(202, None, (*headers, ("Location", loc)))
            if path == "/ws/v1/cluster/apps" and method == "GET":
                with state.lock:
                    apps = [{k: v for k, v in a.items() if not k.startswith("_")} for a in state.apps.values()]
                if "states" in query:
                    apps = [a for a in apps if a["state"] in query["states"].upper().split(",")]
                if "startedTimeBegin" in query:
                    apps = [a for a in apps if a["startedTime"] >= int(query["startedTimeBegin"])]
                if "applicationTags" in query:
                    want = {t.strip().lower() for t in query["applicationTags"].split(",")}
                    apps = [a for a in apps if want & set(a["applicationTags"].split(","))]
                if "name" in query:
                    apps = [a for a in apps if a["name"] == query["name"]]
                return self._send(200, {"apps": {"app": apps} if apps else None}, headers)
            match = re.fullmatch(r"/ws/v1/cluster/apps/([^/]+)(/state)?", path)
            if match:
                app_id = match.group(1)
                if not re.fullmatch(r"application_\d+_\d+", app_id):
                    return self._err(
                        400,
                        "BadRequestException",
                        f"java.lang.IllegalArgumentException: Invalid ApplicationId: {app_id}",
                    )
                with state.lock:
                    app = state.apps.get(app_id)
                    app = None if app is None else {k: v for k, v in app.items() if not k.startswith("_")}
                if app is None:
                    return self._err(404, "NotFoundException", f"java.lang.Exception: app with id: {app_id} not found")
                if not match.group(2):
                    return self._send(200, {"app": app}, headers)
                if method == "GET":
                    return self._send(200, {"state": app["state"]}, headers)
                if body.get("state") != "KILLED":
                    return self._err(
                        400, "BadRequestException", "java.lang.Exception: Only 'KILLED' is allowed as a target state."
                    )
                code, current = state.kill(app_id)
                extra = (("Location", f"{server.url}/ws/v1/cluster/apps/{app_id}"),) if code == 202 else ()
                return self._send(code, {"state": current}, (*headers, *extra))
            return self._err(404, "NotFoundException", f"java.lang.Exception: no resource {path}")

        def _logs(self, path: str) -> None:
            parts = path.split("/")  # /node/containerlogs/<container>/<user>/<file>
            if len(parts) < 6:
                return self._send(404, raw=b"no such log", ctype="text/plain")
            file = state.workdir / "logs" / parts[3] / parts[5]
            text = file.read_text(errors="replace")[-8192:] if file.exists() else ""
            page = f"<html><body><pre>{escape(text)}</pre></body></html>".encode()
            return self._send(200, raw=page, ctype="text/html")

        def do_GET(self) -> None:
            self._route("GET")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_POST(self) -> None:
            self._route("POST")

    return Handler


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="gp-fake-yarn-"))
