"""The control log: how a stop request reaches the gateway holding the run's stream.

A client stream lands on any gateway, so the api cannot know which one to tell. The api
appends each ``StopRequested`` (as a ``LogRecord``, key = run id) to a small second
event log, the *control log* (local: ``<data_dir>/controllog``, one partition, no fsync;
Kafka: topic ``<topic>.control``, one partition, one day of retention). Every gateway
tails it from the end — its own consumer group (``runstream-control-<instance>-<random>``),
never committing — and pushes ``Control.stop_run`` to the streams that carry the run
(``IngestService.push_control``); gateways without such a stream ignore the record.

A control record is a notification, not state: the ``StopRequested`` in the event log
is what the projector folds, and a gateway that starts later does not replay old
records. A client that is not connected when the stop is requested does not get it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from runstream.v1 import events_pb2, ingest_pb2

from ..common.errors import RetryableError
from ..eventlog import EventLog, LogConsumer
from .service import IngestService

log = logging.getLogger(__name__)

POLL_S = 1.0
RETRY_S = 1.0


def stop_controls(value: bytes) -> list[tuple[str, ingest_pb2.Control]]:
    """(run id, Control) for each StopRequested in a control-log record (bad bytes: none)."""
    try:
        rec = events_pb2.LogRecord.FromString(value)
    except Exception:   # noqa: BLE001 - a foreign record is skipped, never fatal
        return []
    out = []
    for ev in rec.events:
        if ev.WhichOneof("body") == "stop_requested" and ev.run_id:
            out.append((ev.run_id, ingest_pb2.Control(stop_run=ingest_pb2.StopRun(
                run_id=ev.run_id, requested_by=ev.stop_requested.requested_by))))
    return out


class ControlTail:
    """Tails the control log and pushes what it reads to this gateway's streams."""

    def __init__(self, control_log: EventLog, ingest: IngestService, instance: str) -> None:
        self._log = control_log
        self._ingest = ingest
        safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in instance)[:100]
        self.group = f"runstream-control-{safe}-{uuid.uuid4().hex[:8]}"
        self._consumer: LogConsumer | None = None
        self._stopping = asyncio.Event()
        self.delivered = 0

    async def start(self) -> None:
        """Join at the end of the control log: records appended from now on are seen."""
        consumer = self._log.consumer(self.group, from_beginning_if_new=False)
        await consumer.start()
        self._consumer = consumer

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                if self._consumer is None:
                    try:
                        await self.start()
                    except RetryableError as e:
                        log.warning("control log: cannot join (%s); retrying", e)
                        await self._sleep(RETRY_S)
                        continue
                try:
                    records = await self._consumer.poll(POLL_S, 500)
                except RetryableError as e:
                    log.warning("control log: poll failed (%s); retrying", e)
                    await self._sleep(RETRY_S)
                    continue
                for r in records:
                    for run_id, control in stop_controls(r.value):
                        n = await self._ingest.push_control(run_id, control)
                        self.delivered += n
                        if n:
                            log.info("control: stop of run %s pushed to %d stream(s)", run_id, n)
        finally:
            if self._consumer is not None:
                await self._consumer.close()
                self._consumer = None

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass
