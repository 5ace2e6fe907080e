"""A failed start as the REST client should see it: the right HTTP status and the one-line reason.

jupyter_server answers ``500 {"message": "Unhandled error"}`` for any exception that is not a tornado ``HTTPError``;
the kernel manager raises this module's ``HTTPError`` instead, so the client gets the cause.
"""

from __future__ import annotations

from tornado.web import HTTPError
from traitlets import TraitError

from ..core.errors import BackendUnavailable, ConfigurationError, GatewayProvisionersError, LaunchTimeout, NotAuthorized


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
    return HTTPError(status, line)  # jupyter_server's API handlers answer {"message": log_message}
