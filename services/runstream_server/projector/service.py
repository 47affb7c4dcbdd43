"""The projector loop: consume → fold → batch → insert → commit.

Offsets are committed only after ClickHouse accepted the batch (invariant 7), so a
crash at any point re-delivers records that the fold then skips by position or seq
(invariant 2). Backpressure is structural: the consumer is not polled while a batch is
being written, so the log buffers the backlog (Kafka fetches stop at their buffer
limit) instead of this process.

A failed write (store down) keeps everything: the run-state cache is dropped, the
consumer rewinds to the committed offsets and the records are folded again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..common.errors import PermanentError, RetryableError
from ..config import ProjectorConfig
from ..eventlog import EventLog, LogConsumer
from ..store.writer import StoreWriter
from .processor import RowBatch, RunKey, RunState, fold_record

log = logging.getLogger(__name__)

# A store outage is retried forever; this caps the wait between attempts.
_MAX_RETRY_S = 5.0
# Longest stretch of folding before the loop gets a turn: short enough that a gateway
# sharing the loop (embedded server) acks within a few ms, long enough to cost nothing.
_TURN_S = 0.005
# While ``defer_to()`` says yes (the embedded server's gateway is busy), each turn of
# folding is followed by this long of letting the loop run other tasks: acks
# (durability, finish()) come first, projection catches up after the burst. The
# projector keeps _TURN_S / (_TURN_S + _DEFER_S), a third, of the loop even then.
_DEFER_S = 0.01


class Projector:
    def __init__(self, event_log: EventLog, store, config: ProjectorConfig,
                 defer_to: Callable[[], bool] | None = None) -> None:
        """``defer_to``: when given, a cheap check of whether a task sharing this event
        loop has urgent work (the embedded server passes its gateway's ``busy``); the
        projector then folds in short turns between the loop's other tasks."""
        self._log = event_log
        self._defer_to = defer_to
        self._store = store
        self._cfg = config
        self._writer = StoreWriter(store.client, store.database)
        self._states: dict[RunKey, RunState] = {}
        self._checked: set[str] = set()      # run ids whose state was looked up in the store
        self._stopping = asyncio.Event()
        self.records_applied = 0
        self.batches_written = 0
        self.last_stats = None
        self._consumer: LogConsumer | None = None
        self._work = asyncio.Lock()
        self._new_batch()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, *, from_beginning: bool = False, until_caught_up: bool = False) -> int:
        """Project until ``stop()``; returns the number of records folded.

        ``from_beginning`` re-reads every partition from offset 0 (replay);
        ``until_caught_up`` returns once the end of the log is projected and committed.
        """
        consumer = self._log.consumer(self._cfg.group, from_beginning_if_new=True,
                                      on_revoke=self._on_revoke)
        self._consumer = consumer
        await consumer.start()
        if from_beginning:
            for p in consumer.assignment():
                await consumer.seek(p, 0)
        try:
            await self._loop(consumer, until_caught_up)
        finally:
            await consumer.close()
        return self.records_applied

    def _new_batch(self) -> None:
        self._batch = RowBatch()
        self._first: dict[int, int] = {}     # per partition: first offset in the batch
        self._next: dict[int, int] = {}      # per partition: offset after the last one
        self._started = time.monotonic()

    async def _loop(self, consumer: LogConsumer, until_caught_up: bool) -> None:
        self._new_batch()
        retry_s = 0.1
        while True:
            if self._stopping.is_set():
                async with self._work:
                    await self._flush()
                return
            records = await consumer.poll(timeout_s=min(0.1, self._cfg.batch_max_s),
                                          max_records=self._cfg.poll_max_records)
            # Fold and flush under the work lock: a rebalance callback may run at any
            # await point (aiokafka calls it from its coordinator task) and must never
            # write or replace a batch that is being folded or written.
            async with self._work:
                owned = consumer.assignment()
                records = [r for r in records if r.partition in owned]
                if records:
                    if not self._next:
                        self._started = time.monotonic()
                    try:
                        await self._load_states({r.key.decode() for r in records})
                    except RetryableError:
                        log.warning("projector: store unavailable while loading run states")
                        await self._rewind(consumer)
                        await asyncio.sleep(retry_s)
                        retry_s = min(_MAX_RETRY_S, retry_s * 2)
                        continue
                    turn_ends = time.monotonic() + _TURN_S
                    for r in records:
                        fold_record(self._states, r.value, r.partition, r.offset, self._batch)
                        self._first.setdefault(r.partition, r.offset)
                        self._next[r.partition] = r.offset + 1
                        if time.monotonic() >= turn_ends:
                            await self._give_turn()
                            turn_ends = time.monotonic() + _TURN_S
                    self.records_applied += len(records)
                full = self._batch.total_rows() >= self._cfg.batch_max_rows
                due = self._next and time.monotonic() - self._started >= self._cfg.batch_max_s
                idle = self._next and not records
                if full or due or idle:
                    try:
                        await self._flush()
                        retry_s = 0.1
                    except RetryableError:
                        log.warning("projector: store write or commit failed; will re-fold "
                                    "from the last commit", exc_info=True)
                        await self._rewind(consumer)
                        await asyncio.sleep(retry_s)
                        retry_s = min(_MAX_RETRY_S, retry_s * 2)
            if until_caught_up and not records and not self._next:
                caught = await consumer.caught_up()
                if all(ok for ok, _ in caught.values()):
                    return

    async def _give_turn(self) -> None:
        """Folding is CPU work on the event loop: let the loop's other tasks run, and
        when ``defer_to`` says so, for _DEFER_S longer."""
        await asyncio.sleep(0)
        if self._defer_to is None:
            return
        if self._defer_to():
            await asyncio.sleep(_DEFER_S)

    async def _on_revoke(self, partitions: set[int]) -> None:
        """A rebalance takes ``partitions`` away: write and commit what was folded, and
        forget their runs (their new owner loads them from the store)."""
        async with self._work:
            try:
                await self._flush()
            except RetryableError:
                log.warning("projector: flush on revoke failed; the new owner re-folds",
                            exc_info=True)
                self._states.clear()
                self._checked.clear()
                self._new_batch()
                return
            for key in [k for k, st in self._states.items()
                        if st.applied_partition in partitions]:
                del self._states[key]
            self._checked.clear()

    async def _load_states(self, run_ids: set[str]) -> None:
        missing = [rid for rid in run_ids if rid not in self._checked]
        if not missing:
            return
        loaded = await self._store.call(self._writer.load_states, missing)
        self._states.update(loaded)
        self._checked.update(missing)

    async def _flush(self) -> None:
        """Write the batch, then commit the next offsets; start a new batch."""
        batch, first, nxt = self._batch, self._first, self._next
        if batch:
            ranges = ",".join(f"{p}:{first[p]}-{o}" for p, o in sorted(nxt.items()))
            # No insert deduplication token: the same records fold into different rows
            # under different run states (another owner, a reload), so a token derived
            # from the records could name different rows and drop real data. The store
            # still drops a retried identical block by its content hash.
            try:
                await self._store.call(self._writer.write, batch, None)
            except PermanentError:
                # Rows the store can never accept must not stop the pipeline forever.
                log.exception("projector: batch refused by the store; skipped (%s)", ranges)
            self.batches_written += 1
            self.last_stats = batch.stats
        if nxt:
            await self._consumer.commit(dict(nxt))
        self._new_batch()

    async def _rewind(self, consumer: LogConsumer) -> None:
        self._new_batch()
        self._states.clear()
        self._checked.clear()
        for p in consumer.assignment():
            committed = await consumer.committed(p)
            await consumer.seek(p, committed or 0)
