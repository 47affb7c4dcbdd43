"""The reaper loop: consume the log, track liveness, append ``Crashed`` events."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from runstream.v1 import events_pb2

from ..common.clock import now_us
from ..common.errors import RetryableError
from ..config import ReaperConfig
from ..eventlog import EventLog
from .liveness import Liveness, LivenessTable

log = logging.getLogger(__name__)
# Longest stretch of reading before the event loop gets a turn (see the projector).
_TURN_S = 0.005


def crashed_record(lv: Liveness, detector: str, timeout_s: float, now: int) -> bytes:
    last = dt.datetime.fromtimestamp(lv.last_seen_us / 1e6, dt.UTC).isoformat(
        timespec="milliseconds")
    ev = events_pb2.Event(run_id=lv.run_id, project=lv.project, entity=lv.entity, seq=0,
                          server_time_us=now)
    ev.crashed.detector = detector
    # The fold appends ", detected by <detector>" to the reason.
    ev.crashed.reason = (f"no heartbeat or other event for more than {timeout_s:g} s "
                         f"(last at {last})")
    ev.crashed.last_seen_us = lv.last_seen_us
    ev.crashed.after_seq = lv.last_seq
    return events_pb2.LogRecord(events=[ev], server_time_us=now).SerializeToString()


class Reaper:
    """Owns a consumer in the reaper group: each instance judges the runs of its partitions.

    It never commits offsets: at start it re-reads its partitions from the beginning of
    the retained log to rebuild liveness (cheap next to the projection work).
    """

    def __init__(self, event_log: EventLog, config: ReaperConfig, detector: str) -> None:
        self._log = event_log
        self._cfg = config
        self._detector = detector
        self.table = LivenessTable()
        self.crashes_emitted = 0
        # Judgements not made (metrics): a partition behind at a tick (backlog), a tick
        # lost to an event-log error.
        self.skipped = {"backlog": 0, "log_unavailable": 0}
        self._consumer = None
        self._stopping = asyncio.Event()

    def partitions(self) -> set[int]:
        """The partitions this reaper judges now."""
        return self._consumer.assignment() if self._consumer is not None else set()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        consumer = self._log.consumer(self._cfg.group, from_beginning_if_new=True,
                                      on_revoke=self._on_revoke)
        await consumer.start()
        self._consumer = consumer
        timeout_us = int(self._cfg.heartbeat_timeout_s * 1e6)
        next_tick = time.monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    records = await consumer.poll(timeout_s=self._cfg.tick_s / 2,
                                                  max_records=5_000)
                    turn_ends = time.monotonic() + _TURN_S
                    for r in records:
                        self.table.observe(r.value, r.partition, r.timestamp_ms)
                        if time.monotonic() >= turn_ends:
                            await asyncio.sleep(0)     # let the loop's other tasks run
                            turn_ends = time.monotonic() + _TURN_S
                    if records and time.monotonic() < next_tick:
                        continue   # drain first; judge when caught up or on the tick
                    next_tick = time.monotonic() + self._cfg.tick_s
                    caught = await consumer.caught_up()
                    clocks = {p: int(as_of * 1e6) for p, (ok, as_of) in caught.items() if ok}
                    self.skipped["backlog"] += len(caught) - len(clocks)
                    due = self.table.due(clocks, timeout_us)
                    if due:
                        await self._emit(due, timeout_us)
                except RetryableError:
                    self.skipped["log_unavailable"] += 1
                    log.warning("reaper: event log unavailable; retrying", exc_info=True)
                    await asyncio.sleep(self._cfg.tick_s)
        finally:
            self._consumer = None
            await consumer.close()

    async def _on_revoke(self, partitions: set[int]) -> None:
        # Another reaper judges these runs now; it re-reads the partitions from the start.
        self.table.forget_partitions(partitions)

    async def _emit(self, due: list[Liveness], timeout_us: int) -> None:
        now = now_us()
        records = [(lv.run_id.encode(),
                    crashed_record(lv, self._detector, timeout_us / 1e6, now)) for lv in due]
        try:
            await self._log.append(records)
        except RetryableError:
            self.table.retry(due)
            raise
        self.crashes_emitted += len(due)
        for lv in due:
            log.info("reaper: run %s/%s/%s crashed (silent since seq %d)", lv.entity,
                     lv.project, lv.run_id, lv.last_seq)
