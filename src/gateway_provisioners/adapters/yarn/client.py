"""The ResourceManager client: yarn-api-client behind a bounded thread pool, with HA failover and per-user auth.

yarn-api-client is synchronous (``requests``), so every call runs in a small thread pool of this client's own and
the event loop never waits on HTTP. The client picks the active ResourceManager among ``endpoints`` the way
yarn-api-client does (the first whose ``/cluster`` answers 200 after redirects; a standby that redirects is followed
transparently); when a call later fails because that RM went away or turned standby, the client probes the endpoints
again and retries the call once on the new active RM.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ...core.errors import BackendUnavailable, ConfigurationError

log = logging.getLogger("gateway_provisioners.yarn")

T = TypeVar("T")
_STANDBY = re.compile(r"status: (307|503)\b")


def _sdk() -> Any:
    try:
        import yarn_api_client
        from yarn_api_client import auth, errors
    except ImportError:  # pragma: no cover - depends on the installation
        raise ConfigurationError(
            "the YARN provisioner needs yarn-api-client: pip install 'gateway_provisioners[yarn]'"
        ) from None
    return yarn_api_client, auth, errors


def endpoints_from_yarn_site(environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """The RM web addresses in ``yarn-site.xml`` of ``$YARN_CONF_DIR`` / ``$HADOOP_CONF_DIR`` (the HA list if any).

    Read here, when the client is made: yarn-api-client reads the folder's name once, when it is first imported.
    """
    folder = environ.get("YARN_CONF_DIR") or environ.get("HADOOP_CONF_DIR") or "/etc/hadoop/conf"
    try:
        root = ET.parse(os.path.join(folder, "yarn-site.xml")).getroot()
    except (OSError, ET.ParseError):
        return []
    conf = {p.findtext("name", "").strip(): p.findtext("value", "").strip() for p in root.iter("property")}
    https = conf.get("yarn.http.policy", "HTTP_ONLY").upper() == "HTTPS_ONLY"
    key, scheme, port = ("webapp.https.address", "https", 8090) if https else ("webapp.address", "http", 8088)

    def address(suffix: str) -> str:
        given = conf.get(f"yarn.resourcemanager.{key}{suffix}")
        host = conf.get(f"yarn.resourcemanager.hostname{suffix}")
        return f"{scheme}://{given or (f'{host}:{port}' if host else '')}" if (given or host) else ""

    ids = [i.strip() for i in conf.get("yarn.resourcemanager.ha.rm-ids", "").split(",") if i.strip()]
    found = [address(f".{i}") for i in ids] if ids else [address("")]
    return [a for a in found if a]


class ResourceManagerClient:
    """Talk to the active ResourceManager of ``endpoints`` as one of several users.

    Parameters
    ----------
    endpoints:
        RM web addresses (``http(s)://host:port``), in order of preference. Empty: those of ``yarn-site.xml`` in
        ``$YARN_CONF_DIR`` / ``$HADOOP_CONF_DIR`` (including the HA list), read when the client is made.
    verify:
        TLS verification: ``True``, ``False`` or the path of a CA bundle (``GP_YARN_CERT_BUNDLE``).
    kerberos:
        Authenticate with SPNEGO (``requests-kerberos``) instead of Hadoop's simple auth.
    service_user:
        Simple-auth user of the shared poller's queries (kernel submissions and kills use the kernel's user).
    timeout:
        Seconds per HTTP request.
    """

    def __init__(
        self,
        endpoints: Sequence[str] = (),
        *,
        verify: bool | str = True,
        kerberos: bool = False,
        service_user: str = "yarn",
        timeout: float = 10.0,
        max_threads: int = 4,
    ) -> None:
        self.endpoints = [e for e in endpoints if e] or endpoints_from_yarn_site()
        self.verify = verify
        self.kerberos = kerberos
        self.service_user = service_user
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="gp-yarn")
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._generation = 0
        self.active_endpoint: str | None = None
        self.failovers = 0

    # --- plumbing ---------------------------------------------------------------------------------------------------

    def _auth(self, user: str) -> Any:
        if self.kerberos:
            try:
                from requests_kerberos import OPTIONAL, HTTPKerberosAuth
            except ImportError:
                raise ConfigurationError(
                    "GP_YARN_ENDPOINT_SECURITY_ENABLED needs requests-kerberos: "
                    "pip install 'gateway_provisioners[yarn-kerberos]'"
                ) from None
            return HTTPKerberosAuth(mutual_authentication=OPTIONAL)
        return _simple_auth(user, self.verify, self.timeout)

    def _client(self, user: str) -> Any:
        with self._lock:
            client = self._clients.get(user)
            if client is None:
                yarn_api_client = _sdk()[0]
                try:
                    client = yarn_api_client.ResourceManager(
                        service_endpoints=self.endpoints or None,
                        timeout=self.timeout,
                        auth=self._auth(user),
                        verify=self.verify,
                    )
                except ConfigurationError:
                    raise
                except Exception as exc:
                    self._raise_if_untrusted()
                    where = ", ".join(self.endpoints) or "the endpoints in yarn-site.xml"
                    raise BackendUnavailable(
                        f"no active YARN ResourceManager at {where}: {_one_line(exc)}",
                        hint="Check GP_YARN_ENDPOINT / GP_ALT_YARN_ENDPOINT and that the RM is up",
                    ) from None
                active = client.get_active_endpoint()
                if self.active_endpoint not in (None, active):
                    self.failovers += 1
                    log.warning("YARN ResourceManager failover: now using %s", active)
                self.active_endpoint = active
                self._clients[user] = client
            return client

    def _raise_if_untrusted(self) -> None:
        """Name a TLS verification failure: yarn-api-client logs it and reports only "No active RMs found"."""
        requests = __import__("requests")
        for endpoint in self.endpoints:
            if not endpoint.lower().startswith("https:"):
                continue
            try:
                requests.get(f"{endpoint.rstrip('/')}/cluster", timeout=self.timeout, verify=self.verify)
            except requests.exceptions.SSLError as exc:
                raise BackendUnavailable(
                    f"the TLS certificate of the YARN ResourceManager {endpoint} could not be verified "
                    f"({_ssl_reason(exc)})",
                    hint="Set GP_YARN_CERT_BUNDLE (yarn_cert_bundle) to the CA bundle file that signed it",
                ) from None
            except requests.RequestException:
                continue  # down or refusing: not a certificate problem; the caller reports it

    def _forget_clients(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation:  # only the first of several failing threads re-probes
                self._clients.clear()
                self._generation += 1

    def _call_sync(self, user: str, fn: Callable[[Any], T]) -> T:
        requests = __import__("requests")
        api_error = _sdk()[2].APIError
        for attempt in (0, 1):
            generation = self._generation
            client = self._client(user)
            try:
                return fn(client)
            except (requests.ConnectionError, requests.Timeout) as exc:
                failure: Exception = exc
            except api_error as exc:
                if not _STANDBY.search(str(exc)):
                    raise
                failure = exc  # the RM we used is standby now
            if attempt == 0:
                log.info("YARN ResourceManager %s failed (%s); probing %s", self.active_endpoint,
                         _one_line(failure), ", ".join(self.endpoints) or "yarn-site.xml")  # fmt: skip
                self._forget_clients(generation)
        raise BackendUnavailable(f"YARN ResourceManager unavailable: {_one_line(failure)}")

    async def call(self, fn: Callable[[Any], T], user: str | None = None) -> T:
        """Run ``fn(resource_manager)`` in the pool as ``user`` (default: the service user), with failover."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call_sync, user or self.service_user, fn)

    # --- the calls the backend makes ---------------------------------------------------------------------------------

    async def applications(self, tags: Sequence[str], started_after_ms: int | None = None) -> list[dict[str, Any]]:
        """Every application carrying any of ``tags`` (one request). Accepts Hadoop's ``{"apps": null}``."""
        begin = str(started_after_ms) if started_after_ms else None
        data = await self.call(
            lambda rm: rm.cluster_applications(application_tags=list(tags), started_time_begin=begin).data
        )
        return list(((data or {}).get("apps") or {}).get("app") or [])

    async def application(self, app_id: str) -> dict[str, Any] | None:
        """One application, or ``None`` if the RM does not know it."""
        api_error = _sdk()[2].APIError
        try:
            data = await self.call(lambda rm: rm.cluster_application(app_id).data)
        except api_error as exc:
            if "status: 404" in str(exc):
                return None
            raise
        return (data or {}).get("app")

    async def kill(self, app_id: str, user: str | None = None) -> tuple[bool, str]:
        """Ask the RM to kill ``app_id``; returns (the kill is complete, the state the RM reported)."""
        api_error = _sdk()[2].APIError

        def put(rm: Any) -> tuple[bool, str]:
            response = rm.session.request(
                "PUT", rm.service_uri.to_url(f"/ws/v1/cluster/apps/{app_id}/state"),
                json={"state": "KILLED"}, timeout=rm.timeout,
            )  # fmt: skip
            # 202: kill in progress (body = current state); 200: final (killed, or already over).
            if response.status_code in (200, 202):
                return response.status_code == 200, str((response.json() or {}).get("state", ""))
            if response.status_code == 404:
                return True, "UNKNOWN"
            raise api_error(f"Response finished with status: {response.status_code}. Details: {response.text}")

        return await self.call(put, user)

    async def new_application(self, user: str) -> dict[str, Any]:
        return dict((await self.call(lambda rm: rm.cluster_new_application().data, user)) or {})

    async def submit_application(self, body: dict[str, Any], user: str) -> None:
        await self.call(lambda rm: rm.cluster_submit_application(body), user)

    async def container_log(self, url: str, name: str, max_bytes: int = 8192) -> list[str]:
        """The tail of one container log file from the NodeManager's web UI (``amContainerLogs``)."""

        def fetch(rm: Any) -> list[str]:
            response = rm.session.get(f"{url.rstrip('/')}/{name}/?start=-{max_bytes}", timeout=rm.timeout)
            if response.status_code != 200:
                return []
            text = response.text
            match = re.search(r"<pre>(.*?)</pre>", text, re.S)  # the NodeManager wraps the file in a page
            text = html.unescape(match.group(1) if match else text)
            return [line for line in text.splitlines() if line.strip()]

        return await self.call(fetch)

    async def probe(self) -> str:
        """Connect to the active RM now (raises :class:`BackendUnavailable`); returns its address."""
        await self.call(lambda rm: None)
        return self.active_endpoint or ""

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _simple_auth(user: str, verify: bool | str, timeout: float) -> Any:
    """Hadoop's simple auth (``user.name`` once, then the ``hadoop.auth`` cookie the RM hands out).

    yarn-api-client's ``SimpleAuth`` fetches that cookie with a fresh ``requests`` session that ignores the client's
    ``verify`` (and has no timeout), so against an HTTPS RM signed by a private CA it always failed certificate
    verification even with ``GP_YARN_CERT_BUNDLE`` set. This one uses the same verification and timeout.
    """
    requests = __import__("requests")

    class SimpleAuth(requests.auth.AuthBase):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self.token: str | None = None
            self.lock = threading.Lock()

        def __call__(self, request: Any) -> Any:
            with self.lock:
                if self.token is None:
                    with requests.Session() as session:
                        response = session.get(request.url, params={"user.name": user}, verify=verify, timeout=timeout)
                        response.raise_for_status()
                        self.token = session.cookies.get_dict().get("hadoop.auth", "")
            if self.token:
                cookie = f"hadoop.auth={self.token}"
                old = request.headers.get("Cookie")
                request.headers["Cookie"] = f"{old}; {cookie}" if old else cookie
            return request

    return SimpleAuth()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def _ssl_reason(exc: BaseException) -> str:
    """The OpenSSL reason of a requests SSLError (e.g. "certificate verify failed: self-signed certificate")."""
    text = _one_line(exc)
    match = re.search(r"\[SSL: [A-Z_]+\] ([^(]+?)(?: \(_ssl\.c:\d+\))", text)
    return match.group(1).strip() if match else text
