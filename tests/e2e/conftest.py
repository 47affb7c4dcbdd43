"""Fixtures that start real runstream processes."""

from __future__ import annotations

import pytest

from .procs import QueryClient, ServerProcess

ENTITY = "e2e"


def embedded_args(data_dir, *extra: str) -> list[str]:
    return ["server", "--data-dir", str(data_dir), "--grpc-port", "0", "--http-port", "0",
            *extra]


@pytest.fixture
def embedded(tmp_path):
    """A started embedded server (every role, local log, chDB) and a query client."""
    data = tmp_path / "data"
    srv = ServerProcess(embedded_args(data, "--heartbeat-timeout", "3", "--reaper-tick", "0.2"),
                        log_path=tmp_path / "server.log").start()
    q = QueryClient(srv.grpc, srv.http, ENTITY)
    srv.data_dir = data
    try:
        yield srv, q
    finally:
        q.close()
        srv.stop()
