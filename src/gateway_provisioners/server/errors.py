"""A failed start as the REST client should see it: the right HTTP status and the one-line reason.

jupyter_server answers ``500 {"message": "Unhandled error"}`` for any exception that is not a tornado ``HTTPError``;
the kernel manager raises this module's ``HTTPError`` instead, so the client gets the cause.
"""

from __future__ import annotations

from tornado.web import HTTPError
from traitlets import TraitError

from ..core.errors import (
    BackendUnavailable,
    ConfigurationError,
    GatewayProvisionersError,
    LaunchError,
    LaunchTimeout,
    NotAuthorized,
)

MAX_DETAILS = 400


def http_status(exc: BaseException) -> int | None:
    """The HTTP status for ``exc``, or ``None`` when it is not ours to translate (jupyter_server's 500 stays)."""
    if isinstance(exc, (ConfigurationError, TraitError)):
        return 400  # a bad setting or per-launch value: the request can be fixed
    if isinstance(exc, NotAuthorized):
        return 403
    if isinstance(exc, BackendUnavailable):
        return 503
    if isinstance(exc, LaunchTimeout):
        return 504
    if isinstance(exc, GatewayProvisionersError):
        return 500  # the kernel could not start (it exited, an image is missing): still say why
    return None


def failure_reason(exc: BaseException) -> str:
    """A short label for metrics: the error's class name (``LaunchTimeout``, ``NotAuthorized``, ...)."""
    return type(exc).__name__


def as_http_error(exc: BaseException) -> HTTPError | None:
    """``exc`` as a tornado ``HTTPError`` whose message is the error's one line, or ``None`` if not ours."""
    status = http_status(exc)
    if status is None:
        return None
    line = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever the error's text held
    if isinstance(exc, LaunchError) and exc.diagnostics:
        # The cause is often only there ("no remote host could start kernel ..." names the hosts' reasons there); the
        # client has no log to look at, so the first lines come along, kept to one line and a few hundred characters.
        details = "; ".join(" ".join(d.split()) for d in exc.diagnostics[:3])
        line = f"{line} [{details[:MAX_DETAILS]}{'...' if len(details) > MAX_DETAILS else ''}]"
    return HTTPError(status, line)  # jupyter_server's API handlers answer {"message": log_message}
