"""Port negotiation: parse ``port_range`` once, allocate ports by binding and holding them.

Older tools picked a port by binding to it, closing the socket and binding again later, so two kernels starting at
once could pick the same port (seen here as "Address already in use" with 16 concurrent starts). Here a port is
allocated by binding a socket and *keeping it bound* until the caller hands the port over, so no other allocation in
any process can get it meanwhile. The five kernel ports and the control port come from one allocation, so they are
distinct.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass

from .errors import PortRangeError

KERNEL_PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
MIN_RANGE_SIZE = 6  # enough for the five kernel ports plus the agent's control port
DEFAULT_RETRIES = 5


@dataclass(frozen=True)
class PortRange:
    """An inclusive range of TCP ports; ``PortRange(0, 0)`` means any port the OS gives."""

    lower: int = 0
    upper: int = 0

    @property
    def is_any(self) -> bool:
        return self.lower == 0 and self.upper == 0

    def __contains__(self, port: int) -> bool:
        return self.is_any or self.lower <= port <= self.upper

    def __str__(self) -> str:
        return f"{self.lower}..{self.upper}"

    @classmethod
    def parse(cls, text: str | None, min_size: int = MIN_RANGE_SIZE) -> PortRange:
        """Parse ``"lower..upper"``; ``""``, ``None`` and ``"0..0"`` mean any port."""
        if text is None or not str(text).strip():
            return cls()
        parts = str(text).strip().split("..")
        if len(parts) != 2:
            raise PortRangeError(
                f"port_range {text!r} is not of the form 'lower..upper' (e.g. '40000..40999', or '0..0' for any)"
            )
        try:
            lower, upper = int(parts[0]), int(parts[1])
        except ValueError:
            raise PortRangeError(f"port_range {text!r}: both bounds must be whole numbers") from None
        if lower == 0 and upper == 0:
            return cls()
        if not (1024 <= lower <= 65535 and 1024 <= upper <= 65535):
            raise PortRangeError(f"port_range {text!r}: bounds must lie in 1024..65535 (or use '0..0' for any)")
        if upper < lower:
            raise PortRangeError(f"port_range {text!r}: the lower bound is above the upper bound")
        if upper - lower + 1 < min_size:
            raise PortRangeError(
                f"port_range {text!r} holds {upper - lower + 1} ports; a kernel needs at least {min_size}"
            )
        return cls(lower, upper)


class HeldPorts:
    """Ports bound and held by this process until :meth:`release` (or the ``with`` block ends)."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self._sockets = sockets
        self.ports = [s.getsockname()[1] for s in sockets]

    def release(self) -> list[int]:
        """Close the sockets so their new owner can bind the ports; returns the ports."""
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        return self.ports

    def __enter__(self) -> HeldPorts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _bind(ip: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((ip, port))
    except OSError:
        sock.close()
        raise
    return sock


def hold_ports(count: int, port_range: PortRange, ip: str = "127.0.0.1", retries: int = DEFAULT_RETRIES) -> HeldPorts:
    """Bind ``count`` distinct ports on ``ip`` inside ``port_range`` and hold them.

    Inside a range, distinct candidate ports are tried in random order, so a range exactly as large as ``count``
    works when its ports are free; up to ``retries`` taken ports per wanted port are tolerated before
    :class:`PortRangeError` is raised. A port is never tried twice.
    """
    held: list[socket.socket] = []
    try:
        if port_range.is_any:
            held = [_bind(ip, 0) for _ in range(count)]
            return HeldPorts(held)
        size = port_range.upper - port_range.lower + 1
        candidates = random.sample(range(port_range.lower, port_range.upper + 1), min(size, count * (retries + 1)))
        failures = 0
        for port in candidates:
            if len(held) == count or failures >= count * retries:
                break
            try:
                held.append(_bind(ip, port))
            except OSError:
                failures += 1
        if len(held) < count:
            raise PortRangeError(
                f"no free port on {ip} in {port_range}: {count} needed, {len(held)} found, {failures} taken"
            )
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return HeldPorts(held)
