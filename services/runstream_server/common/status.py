"""The one translation of server errors into gRPC status codes and HTTP statuses.

Errors are classified where they arise (``common.errors``); the edges (gRPC services,
the HTTP API) translate them here and nowhere else.
"""

from __future__ import annotations

import grpc

from .errors import (
    ConflictError,
    NotFoundError,
    PermanentError,
    PermissionDeniedError,
    QuotaError,
    RetryableError,
    RunstreamError,
    UnauthenticatedError,
)

# Most specific first: QuotaError is a RetryableError.
_TABLE: tuple[tuple[type[RunstreamError], grpc.StatusCode, int], ...] = (
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED, 401),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED, 403),
    (NotFoundError, grpc.StatusCode.NOT_FOUND, 404),
    (ConflictError, grpc.StatusCode.FAILED_PRECONDITION, 409),
    (QuotaError, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (PermanentError, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (RetryableError, grpc.StatusCode.UNAVAILABLE, 503),
)
TRANSLATED = tuple(cls for cls, _, _ in _TABLE)


def translate(exc: RunstreamError) -> tuple[grpc.StatusCode, int]:
    """(gRPC status code, HTTP status) of a server error; INTERNAL / 500 if unclassified."""
    for cls, code, http in _TABLE:
        if isinstance(exc, cls):
            return code, http
    return grpc.StatusCode.INTERNAL, 500


async def abort(context: grpc.aio.ServicerContext, exc: RunstreamError) -> None:
    """End the call with the status of ``exc`` (raises, as ``context.abort`` does)."""
    code, _ = translate(exc)
    await context.abort(code, str(exc))
