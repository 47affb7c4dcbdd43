"""The one error vocabulary of the server.

Errors are classified where they arise and translated once, at the edge, into gRPC
status codes or HTTP statuses (see ``gateway/status.py`` and ``api/http.py``).
"""


class RunstreamError(Exception):
    """Base of every error the server raises on purpose."""


class PermanentError(RunstreamError):
    """The input can never be accepted; retrying it is pointless (→ INVALID_ARGUMENT / 400)."""


class RetryableError(RunstreamError):
    """A transient failure (a dependency is down or slow); retry later (→ UNAVAILABLE / 503)."""


class QuotaError(RetryableError):
    """Too much, too fast; retry after ``retry_after_s`` (→ RESOURCE_EXHAUSTED / 429)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotFoundError(RunstreamError):
    """The thing asked for does not exist (→ NOT_FOUND / 404)."""


class UnauthenticatedError(RunstreamError):
    """No API key, or one that is unknown or revoked (→ UNAUTHENTICATED / 401). The
    message never repeats the key."""


class PermissionDeniedError(RunstreamError):
    """The caller is known but may not do this, e.g. write another user's entity
    (→ PERMISSION_DENIED / 403). Reading something not visible is NotFoundError
    instead, so that "not yours" and "does not exist" look the same."""


class ConflictError(RunstreamError):
    """The request does not fit the current state, e.g. stopping a finished run
    (→ FAILED_PRECONDITION / 409)."""


class ConfigError(RunstreamError):
    """A process configuration is invalid; raised at start, before serving."""
