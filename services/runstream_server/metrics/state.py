"""Metric state the services keep themselves: plain Python, no locks, no Prometheus.

Everything here is updated and read on one asyncio event loop (the server's), so a
counter is an ``int`` and a histogram a list of ints; the collectors (``collectors.py``)
turn them into Prometheus families when ``/metrics`` is scraped.
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")

# Seconds. An append to the local log is a write (+ fsync) of the batch, one to Kafka a
# produce acknowledged by the in-sync replicas: from a fraction of a millisecond to seconds.
APPEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                  2.5, 5.0, 10.0)
# Seconds. A store read of the api, from a point lookup to a wide chart over many runs.
QUERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                 10.0, 30.0)


class Histogram:
    """Counts of observations per bucket (``value <= bound``), and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(float(b) for b in bounds))
        if not self.bounds:
            raise ValueError("a histogram needs at least one bucket bound")
        self.counts = [0] * (len(self.bounds) + 1)     # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, count of observations <= le)`` per bound, then ``(inf, count)``."""
        out, total = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            total += n
            out.append((bound, total))
        out.append((math.inf, total + self.counts[-1]))
        return out


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ApiStats:
    """The api role's own metrics: HTTP requests by (route, method, status), and the
    duration of the store reads its HTTP and gRPC services make."""

    def __init__(self) -> None:
        self.http_requests: dict[tuple[str, str, str], int] = {}
        self.query_seconds = {"http": Histogram(QUERY_BUCKETS),
                              "grpc": Histogram(QUERY_BUCKETS)}

    def count_request(self, route: str, method: str, status: int) -> None:
        key = (route, method if method in _METHODS else "other", str(status))
        self.http_requests[key] = self.http_requests.get(key, 0) + 1

    def middleware(self):
        """An aiohttp middleware counting every request by its route's pattern (never the
        raw path, so the labels stay few); add it first, outside the error translation."""

        @web.middleware
        async def count_requests(request: web.Request, handler):
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            try:
                response = await handler(request)
            except web.HTTPException as e:
                self.count_request(route, request.method, e.status)
                raise
            except asyncio.CancelledError:
                raise                    # the client went away: no answer to count
            except Exception:
                self.count_request(route, request.method, 500)
                raise
            self.count_request(route, request.method, response.status)
            return response

        return count_requests


class TimedStore:
    """A ``StoreAccess`` as one api service sees it: every ``call`` is timed into
    ``histogram`` (the wait for the store thread included: what the caller waits).
    The shared store is never closed through it."""

    def __init__(self, store: Any, histogram: Histogram) -> None:
        self._store = store
        self._histogram = histogram
        self.client = store.client
        self.database = store.database

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        t0 = time.monotonic()
        try:
            return await self._store.call(fn, *args)
        finally:
            self._histogram.observe(time.monotonic() - t0)
