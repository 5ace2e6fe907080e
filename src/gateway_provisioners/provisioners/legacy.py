"""Kernel specs of the older shape (gateway_provisioners ≤ 0.5, Enterprise Gateway): recognised, never run.

Those specs start a launcher script (``launch_ipykernel.py`` & co.) that the server fills in with
``{response_address}``, ``{public_key}``, ``{port_range}`` and ``{kernel_id}``. This package's specs hold the kernel's
own command instead, and the agent starts it. Run unconverted, such a spec would fail late with "can't open file
…/launch_ipykernel.py"; it is refused before anything starts, with the command that converts it
(``jupyter-gp-migrate``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

from ..core.errors import ConfigurationError

#: Placeholders only the older server filled in (jupyter_client itself fills none of them).
LEGACY_PLACEHOLDERS = ("{response_address}", "{public_key}", "{port_range}", "{kernel_id}", "{transport_encryption}")
#: Launchers of the older package and of Enterprise Gateway that a kernel spec's argv ran.
LEGACY_LAUNCHERS = (
    "launch_ipykernel.py",
    "launch_IRkernel.R",
    "launch_kubernetes.py",
    "launch_docker.py",
    "launch_custom_resource.py",
    "bootstrap-kernel.sh",
)


def legacy_shape(argv: Iterable[str]) -> str | None:
    """What in ``argv`` marks the older shape ("runs launch_ipykernel.py", "passes {public_key}"), or None."""
    argv = [str(part) for part in argv]
    for part in argv:
        if PurePath(part).name in LEGACY_LAUNCHERS:
            return f"runs the older launcher {PurePath(part).name}"
    for part in argv:
        for placeholder in LEGACY_PLACEHOLDERS:
            if placeholder in part:
                return f"passes {placeholder}, which only the older server filled in"
        if part.startswith("--RemoteProcessProxy."):  # Enterprise Gateway's launcher arguments
            return f"passes {part.split('=')[0]} (Enterprise Gateway)"
    return None


def refuse_legacy_spec(spec: Any) -> None:
    """Raise a one-line :class:`ConfigurationError` naming ``jupyter-gp-migrate`` if kernel spec ``spec`` (a
    jupyter_client ``KernelSpec``, or None) is of the older shape."""
    why = legacy_shape(getattr(spec, "argv", None) or [])
    if why:
        where = getattr(spec, "resource_dir", "") or "<the kernel spec's folder>"
        raise ConfigurationError(
            f"kernel spec {getattr(spec, 'display_name', '')!r} is of the older gateway_provisioners/Enterprise "
            f"Gateway shape (its argv {why}): convert it with 'jupyter-gp-migrate {where}' (docs/migration.md)"
        )
