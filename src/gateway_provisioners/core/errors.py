"""Typed errors of the kernel lifecycle.

Every launch failure is a :class:`LaunchError` carrying three things an operator needs: the *reason* (one line, what
went wrong), the platform's own *diagnostics* (events, exit code, last lines of the kernel log) and a *hint* (what to
change). ``str(error)`` is a single line made of the reason and the hint, so it can be shown to a notebook user as is.
Reasons and diagnostics often quote the agent, the kernel or the platform: both are escaped to one line each
(:mod:`.logsafe`), so they cannot forge lines in a log.
"""

from __future__ import annotations

from collections.abc import Sequence

from .logsafe import printable

MAX_REASON_CHARS = 2000


class GatewayProvisionersError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigurationError(GatewayProvisionersError, ValueError):
    """A setting or a per-launch value is invalid. Raised before anything is started."""


class PortRangeError(ConfigurationError):
    """``port_range`` is malformed, or no free ports could be found inside it."""


class NotAuthorized(GatewayProvisionersError, PermissionError):
    """The requesting user may not start this kernel (``authorized_users`` / ``unauthorized_users``)."""


class ProtocolError(GatewayProvisionersError):
    """A peer spoke the handshake or control protocol wrongly (bad framing, failed authentication, replay)."""


class ProtocolVersionMismatch(ProtocolError):
    """The agent and the server do not share a protocol version."""


class LaunchError(GatewayProvisionersError, RuntimeError):
    """A kernel could not be started.

    Parameters
    ----------
    reason:
        One line saying what went wrong.
    diagnostics:
        What the platform said: events, exit codes, the last lines of the kernel's log. Never secrets.
    hint:
        What the operator or user can do about it.
    phase:
        The lifecycle phase the launch was in when it failed (filled in by the lifecycle).
    """

    default_hint = ""

    def __init__(
        self,
        reason: str,
        *,
        diagnostics: Sequence[str] = (),
        hint: str | None = None,
        phase: str | None = None,
    ) -> None:
        self.reason = reason
        self.diagnostics = list(diagnostics)
        self.hint = self.default_hint if hint is None else hint
        self.phase = phase
        super().__init__(reason)

    def __str__(self) -> str:
        text = self.reason
        if self.phase:
            text = f"{text} (during {self.phase})"
        if self.hint:
            text = f"{text}. {self.hint}"
        return printable(text, MAX_REASON_CHARS)

    def details(self) -> str:
        """The reason, the hint and every diagnostic line (each escaped to one line), for logs and error pages."""
        lines = [str(self)]
        lines.extend(f"  | {printable(line, MAX_REASON_CHARS)}" for line in self.diagnostics)
        return "\n".join(lines)


class KernelExited(LaunchError):
    """The kernel process ended while it was starting."""

    default_hint = "Check the kernel spec's argv and the kernel's log lines above"

    def __init__(self, reason: str, *, exit_code: int | None = None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.exit_code = exit_code
        super().__init__(reason, **kwargs)


class LaunchTimeout(LaunchError):
    """The end-to-end ``launch_timeout`` passed before the kernel was ready."""

    default_hint = "Raise launch_timeout (KERNEL_LAUNCH_TIMEOUT) if the platform is slow, or see the diagnostics"


class HandshakeRejected(LaunchError):
    """The agent's connection payload was refused by the server, or the agent refused the server."""


class ImagePullError(LaunchError):
    """The platform cannot get the kernel's image."""

    default_hint = "Check the image name and that the cluster can pull it"


class Unschedulable(LaunchError):
    """The platform has nowhere to run the kernel (no node fits, quota exceeded)."""


class QueueFull(LaunchError):
    """The platform's queue has no room for the kernel before the deadline."""


class BackendUnavailable(LaunchError):
    """The platform cannot be reached (API server, engine, SSH host)."""
