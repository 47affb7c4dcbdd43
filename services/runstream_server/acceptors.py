"""Several gRPC servers on one port: new client streams are taken in parallel.

grpc.aio's server takes new calls from gRPC core one at a time, and each is a round
trip through the event loop (core completes the request for a call, the loop runs the
accepting task, which then asks for the next one). On a busy loop that is a few hundred
new streams a second. After a gateway restart every client reconnects within the few
seconds its backoff spreads them over, and the streams queue there before the gateway
reads their first request (tests/faults/test_reconnect_storm.py, 2,000 streams on one
gateway: the first acknowledgement on a new connection came p99 4.4-14 s after
connecting with one server, 2.6-4.1 s with four).

``AcceptorGroup`` is ``n`` servers with the same handlers listening on the same port
(``SO_REUSEPORT``: the kernel spreads new connections over the sockets), each with its
own accepting task. It has the part of ``grpc.aio.Server``'s interface that the
service registration functions and ``Server`` use. Where a further server cannot bind
the port (a system without ``SO_REUSEPORT``), the group goes on with the servers that
could, at least the first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc

log = logging.getLogger(__name__)


class AcceptorGroup:
    def __init__(self, n: int, options: Sequence[tuple[str, Any]] = ()) -> None:
        if n < 1:
            raise ValueError("an acceptor group needs at least one server")
        opts = [*options, ("grpc.so_reuseport", 1)]
        self.servers: list[grpc.aio.Server] = [grpc.aio.server(options=opts)
                                               for _ in range(n)]

    def add_generic_rpc_handlers(self, handlers) -> None:
        for s in self.servers:
            s.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers) -> None:
        for s in self.servers:
            s.add_registered_method_handlers(service_name, handlers)

    def add_insecure_port(self, address: str) -> int:
        """Listen on ``address`` (port 0: a free port) with every server that can; the
        port. Fails as ``grpc.aio.Server`` does when the first server cannot listen."""
        return self._bind(address, lambda s, a: s.add_insecure_port(a))

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        """As ``add_insecure_port``, with TLS."""
        return self._bind(address, lambda s, a: s.add_secure_port(a, credentials))

    def _bind(self, address: str, add: Callable[[grpc.aio.Server, str], int]) -> int:
        port = add(self.servers[0], address)
        if port == 0:
            return 0
        same = f"{address.rsplit(':', 1)[0]}:{port}"
        bound = self.servers[:1]
        for s in self.servers[1:]:
            try:
                ok = add(s, same) == port
            except RuntimeError:       # grpc raises when it cannot bind
                ok = False
            if ok:
                bound.append(s)
        if len(bound) < len(self.servers):
            log.warning("gRPC: %d of %d servers could listen on %s (SO_REUSEPORT); new "
                        "streams are accepted by those", len(bound), len(self.servers), same)
        self.servers = bound
        return port

    async def start(self) -> None:
        for s in self.servers:
            await s.start()

    async def stop(self, grace: float | None) -> None:
        await asyncio.gather(*(s.stop(grace) for s in self.servers))
