"""Errors raised by the public read/write API (``runstream.Api``).

Logging (``init``/``log``/``finish``) never raises network errors into user code; only
``Api`` calls do, with these types (the gRPC status code they come from in brackets).
"""

from __future__ import annotations


class RunstreamError(Exception):
    """Base of every error runstream raises on purpose."""


class NotFound(RunstreamError, LookupError):
    """No such run (or project), or it was deleted [NOT_FOUND]."""


class InvalidInput(RunstreamError, ValueError):
    """The server refused the request's input; retrying it cannot help [INVALID_ARGUMENT]."""


class Conflict(RunstreamError):
    """The request does not fit the run's state, e.g. stopping a finished run
    [FAILED_PRECONDITION]."""


class PermissionDenied(RunstreamError):
    """The API key is missing, unknown or not allowed to do this
    [UNAUTHENTICATED, PERMISSION_DENIED]."""


class Unavailable(RunstreamError, ConnectionError):
    """The server (or what it depends on) is unreachable or timed out; retry later
    [UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED]."""


__all__ = ["RunstreamError", "NotFound", "InvalidInput", "Conflict", "PermissionDenied",
           "Unavailable"]
