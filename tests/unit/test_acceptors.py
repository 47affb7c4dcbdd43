"""Several gRPC servers on one port (services/runstream_server/acceptors.py): every
server listens on the port, every stream over any connection is served by the same
handlers, and ``stop`` stops them all."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import pytest
from runstream_server.acceptors import AcceptorGroup


def _listeners(port: int) -> int:
    """Listening TCP sockets on ``port``, from /proc/net/tcp and tcp6 (state 0A; gRPC
    listens on 127.0.0.1 with an IPv6 socket)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


async def _echo(requests, context):
    async for raw in requests:
        await context.write(raw)


def _group(n: int) -> AcceptorGroup:
    g = AcceptorGroup(n)
    method = grpc.stream_stream_rpc_method_handler(_echo)
    g.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Echo",
                                                                     {"Stream": method}),))
    return g


async def _streams(port: int, n: int) -> list[bytes]:
    """One stream over each of ``n`` connections of their own; what each echoed."""
    chans = [grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                       options=[("grpc.use_local_subchannel_pool", 1)])
             for _ in range(n)]
    try:
        calls = [c.stream_stream("/t.Echo/Stream")() for c in chans]
        for i, call in enumerate(calls):
            await call.write(b"%d" % i)
        out = [await asyncio.wait_for(call.read(), 10) for call in calls]
        for call in calls:
            call.cancel()
        return out
    finally:
        for c in chans:
            await c.close()


def test_every_server_listens_on_the_port_and_serves_the_same_handlers():
    async def main():
        g = _group(3)
        port = g.add_insecure_port("127.0.0.1:0")
        assert port and len(g.servers) == 3
        await g.start()
        try:
            assert _listeners(port) == 3
            assert await _streams(port, 40) == [b"%d" % i for i in range(40)]
        finally:
            await g.stop(None)
        assert _listeners(port) == 0
        with pytest.raises(grpc.aio.AioRpcError):
            await _streams(port, 1)
    asyncio.run(main())


def test_a_port_taken_by_a_socket_without_reuse_is_refused_as_by_one_server():
    async def main():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            taken = s.getsockname()[1]
            with pytest.raises(RuntimeError):
                _group(2).add_insecure_port(f"127.0.0.1:{taken}")
            with pytest.raises(RuntimeError):
                grpc.aio.server().add_insecure_port(f"127.0.0.1:{taken}")
    asyncio.run(main())


def test_servers_that_cannot_share_the_port_are_left_out(caplog):
    """As on a system without SO_REUSEPORT: the group serves with the first server."""
    async def main():
        g = _group(3)
        g.servers[1] = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        port = g.add_insecure_port("127.0.0.1:0")
        assert port and len(g.servers) == 2
        await g.start()
        try:
            assert _listeners(port) == 2
            assert await _streams(port, 10) == [b"%d" % i for i in range(10)]
        finally:
            await g.stop(None)
    asyncio.run(main())
    assert "2 of 3 servers could listen" in caplog.text
