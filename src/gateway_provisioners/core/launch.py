"""What a launch asks for: the :class:`LaunchSpec`, built once and validated before any backend sees it.

Per-request ``KERNEL_*`` values come from the client and are untrusted: they are checked against a schema of
:class:`Param` (type, bounds, allowed values, pattern) here, in one place, and adapters only ever see the checked
values. The kernel's environment is built from an explicit list: ``KERNEL_*`` values, the kernel spec's own ``env``
and an operator's allowlist — never the server's whole environment.
"""

from __future__ import annotations

import enum
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError, NotAuthorized
from .handshake import PROTOCOL_VERSION, encode_token, new_token
from .port_range import KERNEL_PORT_NAMES, PortRange, hold_ports


class ConnectionMode(str, enum.Enum):
    """How the server learns the kernel's connection info (see ARCHITECTURE.md, "three modes")."""

    CALLBACK = "callback"  # the agent connects to the server's response listener
    STDOUT = "stdout"  # the agent prints the sealed payload on the channel that started it
    ASSIGNED = "assigned"  # the server chooses ports and key; the platform reports the ip

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Param:
    """One per-launch value a client may send, with its rules."""

    name: str
    kind: type = str  # str, int, float or bool
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    help: str = ""

    def parse(self, raw: str) -> Any:
        """Convert and check ``raw``; raises :class:`ConfigurationError` naming the variable and the rule."""
        where = f"{self.name}={raw!r}"
        if self.kind is bool:
            return parse_bool(raw, self.name)
        if self.kind in (int, float):
            try:
                value: Any = self.kind(raw)
            except ValueError:
                raise ConfigurationError(f"{where} is not a {'whole ' if self.kind is int else ''}number") from None
            if not math.isfinite(value):
                raise ConfigurationError(f"{where} is not a finite number")
            if self.minimum is not None and value < self.minimum:
                raise ConfigurationError(f"{where} is below the minimum {self.minimum:g}")
            if self.maximum is not None and value > self.maximum:
                raise ConfigurationError(f"{where} is above the maximum {self.maximum:g}")
            return value
        if self.choices and raw not in self.choices:
            raise ConfigurationError(f"{where} is not one of {', '.join(self.choices)}")
        if self.pattern and not re.fullmatch(self.pattern, raw):
            raise ConfigurationError(f"{where} is not allowed here ({self.help or 'must match ' + self.pattern})")
        return raw


USERNAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}"

# The values every provisioner understands. Adapters extend this with their own (KERNEL_CPUS, KERNEL_IMAGE, ...).
COMMON_PARAMS: tuple[Param, ...] = (
    Param("KERNEL_USERNAME", pattern=USERNAME_PATTERN, help="letters, digits and _ . @ -, up to 64"),
    Param("KERNEL_LAUNCH_TIMEOUT", kind=float, minimum=1, maximum=3600),
    Param("KERNEL_WORKING_DIR", pattern=r"/[^\0\n]*", help="an absolute path"),
)

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def parse_bool(raw: str | bool, name: str = "value") -> bool:
    """Parse an environment-style boolean; ``"false"`` is False (older tools treated any non-empty string as True)."""
    if isinstance(raw, bool):
        return raw
    lowered = str(raw).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean (use true or false)")


def split_list(value: str | Iterable[str] | None) -> list[str]:
    """``"a, b"`` or ``["a", "b,c"]`` → ``["a", "b", "c"]``, in order, without blanks or repeats.

    Settings that take lists also take comma-separated strings (from the environment or a kernel spec); older tools
    made one item of the whole string.
    """
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [part for v in value for part in str(v).split(",")]
    return list(dict.fromkeys(item.strip() for item in items if item.strip()))


def parse_user_list(value: str | Iterable[str] | None) -> set[str]:
    """``"bob, alice"`` or ``["bob", "alice"]`` → ``{"bob", "alice"}``."""
    return set(split_list(value))


def check_user(username: str, authorized: Iterable[str], unauthorized: Iterable[str], kernel_name: str = "") -> None:
    """Raise :class:`NotAuthorized` unless ``username`` may start a kernel. Denials win over allowances."""
    denied, allowed = parse_user_list(unauthorized), parse_user_list(authorized)
    target = f" kernel '{kernel_name}'" if kernel_name else " kernels"
    if username in denied:
        raise NotAuthorized(
            f"user '{username}' is not allowed to start{target}: set KERNEL_USERNAME to another user, "
            "or change unauthorized_users (GP_UNAUTHORIZED_USERS)"
        )
    if allowed and username not in allowed:
        raise NotAuthorized(f"user '{username}' is not in authorized_users for{target} (GP_AUTHORIZED_USERS)")


ROOT_SETTING = "allow_root_kernels (GP_ALLOW_ROOT_KERNELS)"


def check_kernel_uid(uid: int | None, allow_root: bool, where: str = "") -> None:
    """Raise :class:`NotAuthorized` if the kernel would really run as uid 0 and the operator did not allow it.

    ``uid`` is the id the kernel will run as where the server decides it (None where only the agent on the target can
    tell; the agent checks there). A name a client claims (``KERNEL_USERNAME``) never stands in for it.
    """
    if uid == 0 and not allow_root:
        raise NotAuthorized(
            f"the kernel would run as root (uid 0){where}, whatever KERNEL_USERNAME says: run the server "
            f"(or the backend's kernels) as another user, or set {ROOT_SETTING} to allow it"
        )


def validate_kernel_values(env: Mapping[str, str], schema: Iterable[Param]) -> dict[str, Any]:
    """Check every ``KERNEL_*`` value that the schema knows; returns the parsed values by name."""
    checked: dict[str, Any] = {}
    for param in schema:
        if param.name in env and env[param.name] is not None:
            checked[param.name] = param.parse(str(env[param.name]))
    return checked


def build_kernel_env(
    request_env: Mapping[str, str], spec_env: Mapping[str, str], allowlist: Iterable[str] = ()
) -> dict[str, str]:
    """The kernel's environment: ``KERNEL_*`` values, allowlisted names, then the kernel spec's ``env``."""
    allowed = set(allowlist)
    env = {k: str(v) for k, v in request_env.items() if k.startswith("KERNEL_") or k in allowed}
    env.update({k: str(v) for k, v in spec_env.items()})
    return env


@dataclass
class LaunchSpec:
    """Everything a backend needs to start one kernel.

    ``argv`` is the kernel spec's own command with ``{connection_file}`` left for the agent to fill in on the
    target. ``token`` is the per-launch secret; it reaches the agent only through :meth:`agent_params`, as does the
    CurveZMQ secret key when ``curve_keys`` is set.
    """

    kernel_id: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    username: str = ""
    kernel_name: str = ""
    language: str = ""
    mode: ConnectionMode = ConnectionMode.STDOUT
    port_range: PortRange = field(default_factory=PortRange)
    launch_timeout: float = 30.0
    response_address: str | None = None  # "host:port", callback mode
    kernel_ip: str = "0.0.0.0"  # where the kernel binds on its host
    cwd: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # validated KERNEL_* values
    assigned: dict[str, Any] | None = field(default=None, repr=False)  # server-assigned ports and key
    token: bytes = field(default_factory=new_token, repr=False)
    # CurveZMQ: the kernel's server key pair (Z85 public, secret) for encrypted kernel channels; None for plain ZMQ.
    curve_keys: tuple[str, str] | None = field(default=None, repr=False)
    allow_root: bool = False  # the operator allows kernels that really run as uid 0 (checked here and by the agent)
    agent_watchdog: float = 60.0  # the agent ends itself and its kernel after so long without a server; 0 = never
    # Launched for a warm pool: no client has it yet, and once claimed it keeps this launch's id (its ``launch_id``),
    # which the server's kernel list does not show. Platforms mark its resources so that clean-up tools spare them
    # while they run (the agent's watchdog ends them when their server is gone).
    pooled: bool = False
    # The backend's own checked request (a pod's or a container's choices), decided from the per-launch values before
    # the backend sees the launch, so that policy is checked in one place and the backend only builds.
    request: Any = None

    def __post_init__(self) -> None:
        if not self.argv:
            raise ConfigurationError("the kernel spec's argv is empty: it must be the kernel's own command")

    def assign_connection(self) -> dict[str, Any]:
        """Server-assigned mode: choose the kernel's five ports, the agent's port and the HMAC key (once).

        The kernel runs in a network namespace of its own (pod, bridge-network container), so any ports inside
        ``port_range`` do; they are taken from ports free on this machine, which also suits tests that run the agent
        here.
        """
        if self.assigned is None:
            ports = hold_ports(6, self.port_range).release()
            self.assigned = dict(zip(KERNEL_PORT_NAMES, ports[1:], strict=True))
            self.assigned.update(agent_port=ports[0], key=str(uuid.uuid4()))
        return self.assigned

    def agent_params(self, **extra: Any) -> dict[str, Any]:
        """The agent's launch parameters (contain the token: send them only through the launch channel)."""
        params: dict[str, Any] = {
            "gp": PROTOCOL_VERSION,
            "kernel_id": self.kernel_id,
            "token": encode_token(self.token),
            "mode": self.mode.value,
            "argv": list(self.argv),
            "env": dict(self.env),
            "kernel_ip": self.kernel_ip,
            "port_range": str(self.port_range),
            "kernel_name": self.kernel_name,
            "allow_root": self.allow_root,
            "watchdog": self.agent_watchdog,
            "ready_timeout": self.launch_timeout,  # how long the kernel may take to listen: the launch's own deadline
        }
        if self.response_address:
            params["response_address"] = self.response_address
        if self.mode is ConnectionMode.ASSIGNED:
            assigned = self.assign_connection()
            params["connection"] = {k: v for k, v in assigned.items() if k != "agent_port"}
            params["agent_port"] = assigned["agent_port"]
        if self.cwd:
            params["cwd"] = self.cwd
        if self.curve_keys:
            params["curve"] = {"publickey": self.curve_keys[0], "secretkey": self.curve_keys[1]}
        params.update(extra)
        return params
