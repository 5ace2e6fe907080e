"""``POST /api/kernels`` with the request's ``env``: per-request ``KERNEL_*`` values, as Enterprise Gateway and Kernel
Gateway clients send them (``{"name": ..., "env": {"KERNEL_USERNAME": "alice", ...}}``).

jupyter_server's own handler drops ``env``. This one is registered by the extension for the same path (an extension's
handlers are matched before the server's) and differs only in passing ``env`` on. Only ``KERNEL_*`` names are taken;
the provisioner then checks each value against its ``param_schema`` (unknown names, bad numbers, NUL bytes and
oversized values are refused with a 400 naming the value), exactly as for values from the server's environment.
"""

from __future__ import annotations

import json
import os
from typing import Any

from jupyter_client.jsonutil import json_default
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from jupyter_server.services.kernels.handlers import MainKernelHandler
from jupyter_server.utils import url_escape, url_path_join
from tornado import web


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
