"""jupyter_server extension: remote kernels survive a server restart, clients see start-up progress, operators get
metrics. Enable with ``ServerApp.jpserver_extensions = {"gateway_provisioners.server": True}``; docs/server.md."""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import GatewayProvisionersServer  # jupyter_server is an optional dependency: imported when enabled

    return [{"module": "gateway_provisioners.server", "app": GatewayProvisionersServer}]
