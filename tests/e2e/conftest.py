"""Fixtures that start real runstream processes."""

from __future__ import annotations

import pytest

from .procs import QueryClient, ServerProcess

ENTITY = "e2e"


def embedded_args(data_dir, *extra: str) -> list[str]:
    return ["server", "--data-dir", str(data_dir), "--grpc-port", "0", "--http-port", "0",
            *extra]


def start_embedded(tmp_path, heartbeat_timeout: float = 3):
    """An embedded server (every role, local log, chDB) and a query client for it."""
    data = tmp_path / "data"
    srv = ServerProcess(embedded_args(data, "--heartbeat-timeout", str(heartbeat_timeout),
                                      "--reaper-tick", "0.2"),
                        log_path=tmp_path / "server.log").start()
    srv.data_dir = data
    return srv, QueryClient(srv.grpc, srv.http, ENTITY)


@pytest.fixture
def embedded(tmp_path):
    """A started embedded server (heartbeat timeout 3 s) and a query client."""
    srv, q = start_embedded(tmp_path)
    try:
        yield srv, q
    finally:
        q.close()
        srv.stop()
