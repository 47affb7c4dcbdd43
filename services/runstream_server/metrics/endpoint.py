"""``ServerMetrics``: one Prometheus registry per ``Server``, served at ``/metrics``.

The registry is the server's own (never ``prometheus_client.REGISTRY``), so several
servers in one process (tests) keep their metrics apart. It holds the role collectors
(``collectors.py``) and the process's CPU, memory, file-descriptor, GC and platform
collectors. The endpoint is a small aiohttp server on the server's event loop: a scrape
first runs the collectors' ``refresh()`` (awaits, e.g. the event log's end offsets), then
renders the registry (text format, or OpenMetrics when the scraper asks for it) without
any lock, since the services update their counters on the same loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import (
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from .collectors import (
    ApiCollector,
    GatewayCollector,
    ProjectorCollector,
    ReaperCollector,
    RolesCollector,
)

PATH = "/metrics"


class ServerMetrics:
    """The metrics of the roles held by ``owner`` (a ``Server``): ``start(host, port)``
    serves them (port 0: a free port) and returns the endpoint's URL."""

    def __init__(self, owner: Any, roles: tuple[str, ...]) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(RolesCollector(roles))
        self._refreshing: list[Any] = []
        per_role = {"gateway": GatewayCollector, "projector": ProjectorCollector,
                    "reaper": ReaperCollector, "api": ApiCollector}
        for role in roles:
            collector = per_role[role](owner)
            self.registry.register(collector)
            if hasattr(collector, "refresh"):
                self._refreshing.append(collector)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def refresh(self) -> None:
        """Let the collectors that need awaits read their state (before rendering)."""
        if self._refreshing:
            await asyncio.gather(*(c.refresh() for c in self._refreshing))

    async def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (text format, or OpenMetrics if ``accept`` asks) and its type."""
        await self.refresh()
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    async def _handle(self, request: web.Request) -> web.Response:
        body, content_type = await self.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def start(self, host: str, port: int) -> str:
        app = web.Application()
        app.router.add_get(PATH, self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as e:
            await runner.cleanup()
            raise OSError(e.errno, f"metrics: cannot listen on {host}:{port}: "
                                   f"{e.strerror or e}") from e
        self._runner = runner
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{runner.addresses[0][1]}{PATH}"
        return self.url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
