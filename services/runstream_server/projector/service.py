"""The projector loop: consume → fold → batch → insert → commit.

Offsets are committed only after ClickHouse accepted the batch (invariant 7), so a
crash at any point re-delivers records that the fold then skips by position or seq
(invariant 2).

Folding overlaps writing. A sealed batch is written by the store thread (one *in-flight
write*) while the loop polls and folds the next one; the store engine releases the GIL
while it inserts, so the two use separate cores. At most one write is in flight:

    idle ──seal──▶ in flight ──write ok──▶ written ──commit──▶ idle
                       │                                 (its offsets, in log order)
                       └──RetryableError──▶ rewind: the batch being folded is dropped
                                            with every run state, the consumer seeks
                                            back to the committed offsets, re-fold

A batch is sealed when it is full, old (``batch_max_s``) or the log went idle; sealing
first waits for the write in flight and commits it (backpressure: memory holds at most
the batch being written and the batch being folded, and the consumer is not polled
while the loop waits, so the log buffers the backlog instead of this process). The batch
being folded was folded over run states that include the in-flight batch, so it is only
ever written after that write succeeded; when it failed both are folded again from the
stored states. A rebalance (revoke) and ``stop()`` wait for the write in flight, then
write and commit the batch being folded (arroyo's forced commit).

The run states a sealed batch writes are copied at sealing: the fold of the next batch
keeps changing the live ones while the store thread converts the sealed batch.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from collections.abc import Callable

from ..common.errors import PermanentError, RetryableError
from ..common.partitioning import BEACON_KEY_PREFIX
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


def _snapshot(st: RunState) -> RunState:
    """A copy of ``st`` that later folds cannot change (its lists and maps copied; the
    values in them are immutable)."""
    snap = copy.copy(st)
    for f in dataclasses.fields(st):
        value = getattr(st, f.name)
        if isinstance(value, (list, dict, set)):
            setattr(snap, f.name, copy.copy(value))
    return snap


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
        # For the metrics (read at scrape time; updated per batch): rows inserted per
        # table, failed inserts by kind, and per owned partition the offset last committed.
        self.rows_written: dict[str, int] = dict.fromkeys(RowBatch().rows(), 0)
        self.insert_errors = {"retryable": 0, "permanent": 0}
        self.committed: dict[int, int] = {}
        self._consumer: LogConsumer | None = None
        # Held while folding, sealing, settling and rewinding: a rebalance callback may
        # run at any await point (aiokafka calls it from its coordinator task) and must
        # never see a batch half folded or a write half settled.
        self._work = asyncio.Lock()
        # The write in flight: its task (store thread) and the offsets to commit after it.
        self._inflight: asyncio.Task | None = None
        self._inflight_next: dict[int, int] = {}
        # Set when a write failed inside a rebalance callback: the loop rewinds the
        # partitions it kept before folding anything else.
        self._rewind_pending = False
        self._new_batch()

    def stop(self) -> None:
        """Ask ``run()`` to finish: it waits for the write in flight, writes and commits
        the batch being folded, and returns."""
        self._stopping.set()

    async def run(self, *, from_beginning: bool = False, until_caught_up: bool = False) -> int:
        """Project until ``stop()``; returns the number of records folded (re-folds included).

        ``from_beginning`` re-reads every partition from offset 0 (replay);
        ``until_caught_up`` returns once the end of the log is projected and committed.
        Store outages are retried forever (re-folding from the committed offsets). At
        ``stop()`` a write that fails is not retried: its records stay uncommitted and
        are folded again by the next run. Errors other than ``RetryableError`` /
        ``PermanentError`` of the store propagate, after the write in flight ended.
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
            await self._abandon()
            await consumer.close()
        return self.records_applied

    def partitions(self) -> set[int]:
        """The partitions this projector owns now."""
        return self._consumer.assignment() if self._consumer is not None else set()

    def consumed_offsets(self) -> dict[int, int]:
        """Per owned partition, the offset committed last by this projector, or before
        its first commit there the consumer's position (where it started): the end
        offset minus this is the partition's lag."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out = {}
        for p in consumer.assignment():
            offset = self.committed.get(p)
            if offset is None:
                try:
                    offset = consumer.position(p)
                except (RetryableError, ValueError):
                    continue          # not known yet, or revoked meanwhile
            out[p] = offset
        return out

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
                    await self._finish()
                return
            if self._inflight is not None and self._inflight.done():
                # Commit a finished write now rather than at the next seal.
                async with self._work:
                    if not await self._settle_or_rewind(consumer):
                        await asyncio.sleep(retry_s)
                        retry_s = min(_MAX_RETRY_S, retry_s * 2)
                        continue
            records = await consumer.poll(timeout_s=min(0.1, self._cfg.batch_max_s),
                                          max_records=self._cfg.poll_max_records)
            async with self._work:
                if self._rewind_pending:
                    # A write failed during a rebalance: these records may come after
                    # unwritten ones; read again from the committed offsets.
                    await self._rewind(consumer)
                    continue
                owned = consumer.assignment()
                records = [r for r in records if r.partition in owned]
                if records:
                    if not self._next:
                        self._started = time.monotonic()
                    try:
                        await self._load_states({r.key.decode() for r in records
                                                 if not r.key.startswith(BEACON_KEY_PREFIX)})
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
                    # At most one write in flight: wait for it (backpressure), then seal.
                    if await self._settle_or_rewind(consumer):
                        self._seal()
                        retry_s = 0.1
                    else:
                        await asyncio.sleep(retry_s)
                        retry_s = min(_MAX_RETRY_S, retry_s * 2)
                elif not records and self._inflight is not None:
                    # Nothing to fold: wait for the write instead of polling again.
                    if not await self._settle_or_rewind(consumer):
                        await asyncio.sleep(retry_s)
                        retry_s = min(_MAX_RETRY_S, retry_s * 2)
            if (until_caught_up and not records and not self._next
                    and self._inflight is None):
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
        """A rebalance takes ``partitions`` away: wait for the write in flight, write and
        commit what was folded, and forget their runs (their new owner loads them from
        the store). Never raises a store error: when a write fails, nothing after the
        committed offsets is kept, and the loop rewinds the partitions it keeps."""
        async with self._work:
            try:
                await self._settle()
                self._seal()
                await self._settle()
            except RetryableError:
                log.warning("projector: write on revoke failed; the new owner re-folds the "
                            "revoked partitions, this one the rest", exc_info=True)
                self._discard()
                self._rewind_pending = True
                return
            for key in [k for k, st in self._states.items()
                        if st.applied_partition in partitions]:
                del self._states[key]
            self._checked.clear()
            for p in partitions:
                self.committed.pop(p, None)

    async def _load_states(self, run_ids: set[str]) -> None:
        missing = [rid for rid in run_ids if rid not in self._checked]
        if not missing:
            return
        # Runs not checked yet are in no batch (neither folded nor in flight), so this
        # read, queued behind a write in flight on the store thread, misses nothing.
        loaded = await self._store.call(self._writer.load_states, missing)
        self._states.update(loaded)
        self._checked.update(missing)

    def _seal(self) -> None:
        """Hand the batch being folded to the store thread and start a new one.

        Only with no write in flight (the caller settled it). A batch without rows but
        with offsets (every record skipped) still goes through, so its offsets are
        committed in order.
        """
        assert self._inflight is None, "a write is already in flight"
        batch, first, nxt = self._batch, self._first, self._next
        self._new_batch()
        if not nxt:
            return
        batch.runs = {k: _snapshot(st) for k, st in batch.runs.items()}
        ranges = ",".join(f"{p}:{first[p]}-{o}" for p, o in sorted(nxt.items()))
        self._inflight = asyncio.create_task(self._write(batch, ranges),
                                             name="projector-write")
        self._inflight_next = dict(nxt)

    async def _write(self, batch: RowBatch, ranges: str) -> None:
        """The in-flight write (a task): one insert per table on the store thread.

        Raises ``RetryableError`` (store unavailable); a ``PermanentError`` is logged and
        the batch skipped: rows the store can never accept must not stop the pipeline.
        """
        if not batch:
            return
        # No insert deduplication token: the same records fold into different rows
        # under different run states (another owner, a reload), so a token derived
        # from the records could name different rows and drop real data. The store
        # still drops a retried identical block by its content hash.
        try:
            await self._store.call(self._writer.write, batch, None)
        except PermanentError:
            self.insert_errors["permanent"] += 1
            log.exception("projector: batch refused by the store; skipped (%s)", ranges)
        except RetryableError:
            self.insert_errors["retryable"] += 1
            raise
        else:
            for table, n in batch.rows().items():
                self.rows_written[table] = self.rows_written.get(table, 0) + n
        self.batches_written += 1
        self.last_stats = batch.stats

    async def _settle(self) -> None:
        """Wait for the write in flight (if any), then commit its offsets.

        Raises ``RetryableError`` when the write or the commit failed; the write is no
        longer in flight either way. Offsets of partitions this consumer no longer owns
        (a rebalance took them while the batch was written) are not committed: their
        new owner folds those records again, skipping what the written run states say
        was applied.
        """
        task = self._inflight
        if task is None:
            return
        nxt = self._inflight_next
        try:
            await task
        finally:
            self._inflight = None
            self._inflight_next = {}
        owned = self._consumer.assignment()
        offsets = {p: o for p, o in nxt.items() if p in owned}
        if offsets:
            await self._consumer.commit(offsets)
            self.committed.update(offsets)

    async def _settle_or_rewind(self, consumer: LogConsumer) -> bool:
        """``_settle``; on a ``RetryableError`` rewind and return False (caller backs off)."""
        try:
            await self._settle()
            return True
        except RetryableError:
            log.warning("projector: store write or commit failed; will re-fold from the "
                        "last commit", exc_info=True)
            await self._rewind(consumer)
            return False

    async def _finish(self) -> None:
        """At stop: settle the write in flight, then write and commit the batch being
        folded. A failure is logged, not raised: the records stay uncommitted."""
        try:
            await self._settle()
            self._seal()
            await self._settle()
        except RetryableError:
            log.warning("projector: final write or commit failed; the uncommitted records "
                        "are folded again at the next start", exc_info=True)
            self._discard()

    async def _abandon(self) -> None:
        """Wait for a write still in flight when ``run()`` ends abnormally; no commit."""
        task, self._inflight = self._inflight, None
        self._inflight_next = {}
        if task is not None:
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                log.warning("projector: write in flight at exit failed (not committed)",
                            exc_info=task.exception())

    def _discard(self) -> None:
        """Forget everything past the committed offsets: the batch being folded and every
        run state (they may include records of a batch that was never written)."""
        self._new_batch()
        self._states.clear()
        self._checked.clear()

    async def _rewind(self, consumer: LogConsumer) -> None:
        """Drop all uncommitted work and read again from the committed offsets."""
        try:
            await self._settle()      # a write still in flight must end before re-reading
        except RetryableError:
            pass
        self._rewind_pending = False
        self._discard()
        for p in consumer.assignment():
            committed = await consumer.committed(p)
            await consumer.seek(p, committed or 0)
            if committed is not None:
                self.committed[p] = committed
