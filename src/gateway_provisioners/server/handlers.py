"""jupyter_server's REST handlers, each changed in one respect; the extension registers them for the same paths (an
extension's handlers are matched before the server's).

- ``POST /api/kernels`` takes the request's ``env``: per-request ``KERNEL_*`` values, as Enterprise Gateway and Kernel
  Gateway clients send them (``{"name": ..., "env": {"KERNEL_USERNAME": "alice", ...}}``). jupyter_server's own handler
  drops ``env``. Only ``KERNEL_*`` names are taken; the provisioner then checks each value against its
  ``param_schema`` (unknown names, bad numbers, NUL bytes and oversized values are refused with a 400 naming the
  value), exactly as for values from the server's environment.
- ``POST /api/kernels/<id>/restart`` and ``POST /api/sessions`` answer a failed start with its status and reason.
  jupyter_server's handlers turn any error of a start into ``500`` ("Exception restarting kernel", or the error's
  text); the kernel manager has already made ours an ``HTTPError`` with the right status (``server/errors.py``), and
  these handlers pass that on instead.
"""

from __future__ import annotations

import json
import os
from typing import Any

from jupyter_client.jsonutil import json_default
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from jupyter_server.services.kernels.handlers import KernelActionHandler, MainKernelHandler
from jupyter_server.services.sessions.handlers import SessionRootHandler
from jupyter_server.utils import url_escape, url_path_join
from tornado import web

from .errors import as_http_error

KERNEL_ACTION_PATH = r"/api/kernels/(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)/(?P<action>restart|interrupt)"  # as the server's


def request_env(model: dict[str, Any]) -> dict[str, str] | None:
    """The ``KERNEL_*`` values of the request body's ``env``; a 400 for anything else in it."""
    env = model.get("env")
    if env is None:
        return None
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise web.HTTPError(400, 'env must be an object of strings, e.g. {"KERNEL_USERNAME": "alice"}')
    others = sorted(k for k in env if not k.startswith("KERNEL_"))
    if others:
        raise web.HTTPError(400, f"env may only hold KERNEL_* values, not {', '.join(others)}")
    return dict(env)


class KernelsWithEnvHandler(MainKernelHandler):
    """jupyter_server's ``/api/kernels`` handler, passing the body's ``KERNEL_*`` values to the kernel's launch."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        km = self.kernel_manager
        model = self.get_json_body() or {}
        model.setdefault("name", km.default_kernel_name)
        env = request_env(model)
        kwargs: dict[str, Any] = {"kernel_name": model["name"], "path": model.get("path"),
                                  "kernel_id": model.get("kernel_id")}  # fmt: skip
        if env is not None:
            # As without a body's env, the launch starts from the server's environment (which the provisioners never
            # copy into kernels beyond their allowlist); the request's values take precedence.
            kwargs["env"] = {**os.environ, **env}
        kernel_id: str = await km.start_kernel(**kwargs)
        model = await ensure_async(km.kernel_model(kernel_id))
        location = url_path_join(self.base_url, "api", "kernels", url_escape(kernel_id))
        self.set_header("Location", location)
        self.set_status(201)
        self.finish(json.dumps(model, default=json_default))


def with_reason(error: web.HTTPError) -> web.HTTPError:
    """The error a client should get for jupyter_server's ``500`` around a failed start: the start's own ``HTTPError``
    (the kernel manager's translation of our errors, or the server's own 404), else ``error`` unchanged."""
    cause = error.__cause__
    if error.status_code != 500 or cause is None:
        return error
    if isinstance(cause, web.HTTPError):
        return cause
    return as_http_error(cause) or error


class KernelActionWithReasonHandler(KernelActionHandler):
    """jupyter_server's ``/api/kernels/<id>/(restart|interrupt)``; a failed restart answers with its status and
    reason."""

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str, action: str) -> None:
        try:
            await ensure_async(super().post(kernel_id, action))
        except web.HTTPError as exc:
            raise with_reason(exc) from exc.__cause__


class SessionsWithReasonHandler(SessionRootHandler):
    """jupyter_server's ``/api/sessions``; a session whose kernel fails to start answers with its status and reason."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        try:
            await ensure_async(super().post())
        except web.HTTPError as exc:
            raise with_reason(exc) from exc.__cause__


#: The extension's handlers, for jupyter_server's paths of the same name.
HANDLERS = [
    (r"/api/kernels", KernelsWithEnvHandler),
    (KERNEL_ACTION_PATH, KernelActionWithReasonHandler),
    (r"/api/sessions", SessionsWithReasonHandler),
]
