"""Which host gets the next kernel: round-robin, least-connection, or an operator's own async selector."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from ...core.errors import ConfigurationError
from ...core.launch import LaunchSpec

HostSelector = Callable[[list[str], dict[str, int], LaunchSpec], Awaitable[list[str]]]


class RoundRobin:
    """Each launch starts at the host after the previous launch's first choice."""

    def __init__(self) -> None:
        self._next = 0

    async def __call__(self, hosts: list[str], load: dict[str, int], spec: LaunchSpec) -> list[str]:
        start = self._next % len(hosts)
        self._next += 1
        return hosts[start:] + hosts[:start]


async def least_connection(hosts: list[str], load: dict[str, int], spec: LaunchSpec) -> list[str]:
    """Fewest kernels (counting launches still starting) first; configured order breaks ties."""
    return sorted(hosts, key=lambda host: (load.get(host, 0), hosts.index(host)))


def load_selector(name: str) -> HostSelector:
    """``round-robin``, ``least-connection``, or ``module:callable`` naming an async :data:`HostSelector`."""
    if name == "round-robin":
        return RoundRobin()
    if name == "least-connection":
        return least_connection
    module, _, attribute = name.partition(":")
    if not module or not attribute:
        raise ConfigurationError(
            f"load_balancing_algorithm {name!r}: use round-robin, least-connection or module:function"
        )
    try:
        return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"load_balancing_algorithm {name!r} cannot be imported: {exc}") from None
