"""The one error → status translation used by every edge."""

import grpc
import pytest
from runstream_server.common.errors import (
    ConflictError,
    NotFoundError,
    PermanentError,
    QuotaError,
    RetryableError,
    RunstreamError,
)
from runstream_server.common.status import TRANSLATED, translate


@pytest.mark.parametrize(("exc", "code", "http"), [
    (NotFoundError("x"), grpc.StatusCode.NOT_FOUND, 404),
    (ConflictError("x"), grpc.StatusCode.FAILED_PRECONDITION, 409),
    (QuotaError("x", retry_after_s=1.0), grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (PermanentError("x"), grpc.StatusCode.INVALID_ARGUMENT, 400),
    (RetryableError("x"), grpc.StatusCode.UNAVAILABLE, 503),
    (RunstreamError("x"), grpc.StatusCode.INTERNAL, 500),
])
def test_translate(exc, code, http):
    assert translate(exc) == (code, http)


def test_every_classified_error_is_caught_by_the_edges():
    assert all(issubclass(cls, RunstreamError) for cls in TRANSLATED)
    assert isinstance(QuotaError("x", 1.0), TRANSLATED)
