"""Gateway beacons: the event log's record of when a gateway was up.

While a gateway runs it appends, every ``interval_s``, one record without events to
every partition of the event log (key ``~beacon/<n>``, never a run id; ``LogRecord``
with ``server_time_us``, ``gateway`` and ``beacon_interval_ms``). The reaper reads
them with the runs' events and counts a run's silence only while records kept coming
(``reaper/liveness.py``): when no gateway is up, or none can reach the log, no beacon
is appended, and the outage is not taken for the silence of every run it cut off.

A beacon that cannot be appended is not retried: the next one is due anyway, and the
gap it leaves is exactly what the reaper must see. The beacons are also the gateway's
view of whether it can write the log: ``on_reachable(False)`` when an append failed after
one that succeeded, ``on_reachable(True)`` on the next success (the server turns the
Ingest service's health NOT_SERVING meanwhile, so that readiness probes take the
gateway out of rotation).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from runstream.v1 import events_pb2

from ..common.clock import now_us
from ..common.errors import RetryableError
from ..common.partitioning import beacon_keys
from ..eventlog import EventLog

log = logging.getLogger(__name__)


def beacon_record(gateway: str, interval_s: float, server_time_us: int) -> bytes:
    return events_pb2.LogRecord(server_time_us=server_time_us, gateway=gateway,
                                beacon_interval_ms=round(interval_s * 1000)
                                ).SerializeToString()


class Beacon:
    """Appends this gateway's beacons until ``stop()``; ``run()`` never raises a log error."""

    def __init__(self, event_log: EventLog, gateway: str, interval_s: float,
                 on_reachable: Callable[[bool], Awaitable[None]] | None = None) -> None:
        self._log = event_log
        self._on_reachable = on_reachable
        self._gateway = gateway
        self._interval_s = interval_s
        self._keys = beacon_keys(event_log.partitions)
        self._stopping = asyncio.Event()
        self.sent = 0

    def stop(self) -> None:
        self._stopping.set()

    async def beat(self) -> None:
        """Append one beacon to every partition. Raises ``RetryableError``."""
        value = beacon_record(self._gateway, self._interval_s, now_us())
        await self._log.append([(k, value) for k in self._keys])
        self.sent += 1

    async def _tell(self, reachable: bool) -> None:
        if self._on_reachable is not None:
            try:
                await self._on_reachable(reachable)
            except Exception:
                log.exception("gateway beacon: on_reachable(%s) failed", reachable)

    async def run(self) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                await self.beat()
                if failing:
                    log.warning("gateway beacon: the event log is reachable again")
                    await self._tell(True)
                failing = False
            except RetryableError:
                if not failing:
                    log.warning("gateway beacon: the event log is unavailable; runs are "
                                "not judged silent until it is back")
                    await self._tell(False)
                failing = True
            try:
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
            except TimeoutError:
                pass
