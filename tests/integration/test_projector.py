"""The projector loop over a real local event log and the real ClickHouse engine (chDB)."""

from __future__ import annotations

import asyncio
import time

import pytest
from runstream.v1 import events_pb2
from runstream_server.api.queries import Queries
from runstream_server.api.store_access import StoreAccess
from runstream_server.common.errors import RetryableError
from runstream_server.config import ProjectorConfig
from runstream_server.eventlog.local import LocalEventLog
from runstream_server.projector.service import Projector
from runstream_server.store.client import connect
from runstream_server.store.migrate import apply_migrations

pytestmark = [pytest.mark.chdb]
DB = "projtest"
ENTITY, PROJECT = "ent", "proj"
# Small batches that stay open for a while, so a rebalance finds unwritten rows.
CFG = ProjectorConfig(batch_max_rows=5_000, batch_max_s=1.0, poll_max_records=50)


@pytest.fixture
def store(store_dsn):
    client = connect(store_dsn, DB)
    apply_migrations(client, DB)
    access = StoreAccess(client, DB)
    yield access
    access.close()
    client.close()


def record(run_id: str, seq: int, step: int) -> bytes:
    ev = events_pb2.Event(run_id=run_id, project=PROJECT, entity=ENTITY, seq=seq,
                          client_time_us=1_700_000_000_000_000 + seq)
    if seq == 1:
        ev.run_start.name = run_id
    else:
        ev.log.step = step
        ev.log.numbers["x"] = float(step)
    return events_pb2.LogRecord(events=[ev], server_time_us=time.time_ns() // 1000
                                ).SerializeToString()


async def append_steps(log: LocalEventLog, runs: list[str], seqs: range) -> None:
    for seq in seqs:
        await log.append([(r.encode(), record(r, seq, seq - 2)) for r in runs])


async def wait_projected(store: StoreAccess, runs: list[str], last_seq: int, timeout=30):
    q = Queries(store.client, DB)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows, total = await store.call(q.list_runs, ENTITY, PROJECT, {}, "name", False, 1000, 0)
        if total == len(runs) and all(r["last_seq"] == last_seq for r in rows):
            return q
        await asyncio.sleep(0.05)
    raise AssertionError(f"not projected up to seq {last_seq}")


async def assert_complete(store: StoreAccess, q: Queries, runs: list[str], steps: int,
                          no_raw_duplicates: bool = True):
    for r in runs:
        (series,) = await store.call(q.get_history, ENTITY, PROJECT, r, ["x"], 0, 0, 0)
        assert series["step"] == list(range(steps)), r
        assert series["value"] == [float(s) for s in range(steps)]
    if no_raw_duplicates:
        # Not a single duplicate row, even before merges (FINAL hides them from answers).
        dup = store.client.query(f"SELECT count() - uniqExact(run_id, key, step) "
                                 f"FROM {DB}.history_numeric").result_rows
        assert dup == [(0,)]


def _handover(log_factory, store, runs, no_raw_duplicates):
    async def main():
        log = log_factory()
        await log.start()
        a = Projector(log, store, CFG)
        b = Projector(log, store, CFG)
        ta = asyncio.create_task(a.run())
        await append_steps(log, runs, range(1, 41))
        await wait_projected(store, runs, 40)
        # B joins while events keep coming: a rebalance moves partitions from A to B
        # while A holds a batch it has not written yet.
        appending = asyncio.create_task(append_steps(log, runs, range(41, 201)))
        await asyncio.sleep(0.05)
        tb = asyncio.create_task(b.run())
        await appending
        q = await wait_projected(store, runs, 200, timeout=60)
        await assert_complete(store, q, runs, 199, no_raw_duplicates)
        assert a.records_applied > 0 and b.records_applied > 0   # both owned partitions
        a.stop()
        b.stop()
        await asyncio.gather(ta, tb)
        await log.close()

    asyncio.run(main())


def test_two_local_projectors_hand_partitions_over_without_loss(tmp_path, store):
    # In the local log a joining member starts at the group's committed offsets at once,
    # so records the old owner had not committed are folded twice: no loss, and no
    # duplicate in any answer (FINAL), but raw rows may repeat until merged.
    _handover(lambda: LocalEventLog(tmp_path / "log", partitions=4), store,
              [f"run-{i}" for i in range(8)], no_raw_duplicates=False)


@pytest.mark.kafka
def test_kafka_rebalance_commits_on_revoke_no_duplicate_rows(kafka_bootstrap, kafka_topic,
                                                              store):
    from runstream_server.eventlog.kafka import KafkaEventLog
    # The old owner writes and commits on revoke before the new owner starts (Kafka
    # orders them); either way the new owner skips records at or before the applied
    # positions stored with the run states: not one row is written twice.
    _handover(lambda: KafkaEventLog(bootstrap=kafka_bootstrap, topic=kafka_topic, partitions=4,
                                    consumer_options={"heartbeat_interval_ms": 200}),
              store, [f"run-{i}" for i in range(8)], no_raw_duplicates=True)


def test_failed_store_write_is_refolded_not_lost(tmp_path, store):
    runs = ["flaky-1", "flaky-2"]

    async def main():
        log = LocalEventLog(tmp_path / "log", partitions=2)
        await log.start()
        p = Projector(log, store, CFG)
        real_write = p._writer.write
        failures = {"left": 3}

        def flaky_write(batch, token):
            if failures["left"]:
                failures["left"] -= 1
                raise RetryableError("store down (test)")
            return real_write(batch, token)

        p._writer.write = flaky_write
        task = asyncio.create_task(p.run())
        await append_steps(log, runs, range(1, 61))
        q = await wait_projected(store, runs, 60)
        await assert_complete(store, q, runs, 59)
        assert failures["left"] == 0
        p.stop()
        await task
        await log.close()

    asyncio.run(main())


def test_projector_sharing_the_loop_steps_aside_but_still_projects(tmp_path, store, monkeypatch):
    # Embedded server: while the gateway is busy the projector folds in short turns and
    # lets the loop run between them, but a deferral is bounded: it never stops.
    from runstream_server.projector import service
    monkeypatch.setattr(service, "_TURN_S", 0.0)        # a turn after every record
    runs = ["busy-1", "busy-2"]
    asked = []

    def gateway_busy() -> bool:
        asked.append(time.monotonic())
        return True                                     # always busy

    async def main():
        log = LocalEventLog(tmp_path / "log", partitions=2)
        await log.start()
        p = Projector(log, store, CFG, defer_to=gateway_busy)
        await append_steps(log, runs, range(1, 31))
        task = asyncio.create_task(p.run())
        ticks = 0
        q = None
        while q is None:
            ticks += 1       # this task runs while the projector folds (it yields to it)
            try:
                q = await wait_projected(store, runs, 30, timeout=0.01)
            except AssertionError:
                await asyncio.sleep(0.001)
        await assert_complete(store, q, runs, 29, no_raw_duplicates=False)
        p.stop()
        await task
        await log.close()
        return ticks

    ticks = asyncio.run(main())
    assert len(asked) > 10 and ticks > 1


# --- the write in flight (folding overlaps writing) --------------------------------------

# Batches of a few dozen rows, so a short log makes many of them.
SMALL = ProjectorConfig(batch_max_rows=40, batch_max_s=1.0, poll_max_records=10)


class _Watched:
    """Checks invariant 7 for one projector: every commit names offsets at or before the
    end of a batch whose write succeeded, and commits of a partition never go back.

    Wraps the projector's in-flight write (``Projector._write``, whose ``ranges`` names
    ``partition:first-next`` per partition) and its consumer's ``commit``.
    """

    def __init__(self, p: Projector, log: LocalEventLog) -> None:
        self.written: dict[int, int] = {}     # partition → next offset after written batches
        self.committed: dict[int, int] = {}
        self.violations: list[str] = []
        real_write = p._write

        async def write(batch, ranges):
            await real_write(batch, ranges)   # raises when the store refused the batch
            for part in ranges.split(","):
                pid, span = part.split(":")
                nxt = int(span.split("-")[1])
                self.written[int(pid)] = max(self.written.get(int(pid), 0), nxt)

        p._write = write
        real_consumer = log.consumer

        def consumer(*args, **kwargs):
            c = real_consumer(*args, **kwargs)
            real_commit = c.commit

            async def commit(offsets):
                for part, o in offsets.items():
                    if o > self.written.get(part, 0):
                        self.violations.append(f"commit {part}:{o} past written "
                                               f"{self.written.get(part)}")
                    if o < self.committed.get(part, 0):
                        self.violations.append(f"commit {part}:{o} went back")
                    self.committed[part] = o
                await real_commit(offsets)

            c.commit = commit
            return c

        p._log = type("WatchedLog", (), {"consumer": staticmethod(consumer)})()


def _wait_until(cond, timeout_s: float = 10.0) -> bool:
    """Poll ``cond`` from a non-loop thread (the store thread) until true or timeout."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


async def _runs_table(store: StoreAccess) -> dict[str, tuple[int, int, int]]:
    rows = await store.call(lambda: store.client.query(
        f"SELECT run_id, last_seq, version, seq_gaps FROM {DB}.runs FINAL").result_rows)
    return {r[0]: tuple(r[1:]) for r in rows}


def test_write_failing_while_next_batch_is_folded_refolds_both(tmp_path, store):
    # Batch N's write fails after the loop folded part of batch N+1 over the run states
    # N left in memory: N+1 must be dropped with those states and both folded again, and
    # no offset may be committed past N before it is written.
    runs = [f"ovl-{i}" for i in range(4)]
    seen = {"calls": 0, "folding_next": None}

    async def main():
        log = LocalEventLog(tmp_path / "log", partitions=2)
        await log.start()
        await append_steps(log, runs, range(1, 101))
        p = Projector(log, store, SMALL)
        watched = _Watched(p, log)
        real_write = p._writer.write

        def failing_second_write(batch, token):
            seen["calls"] += 1
            if seen["calls"] == 2:
                # Runs on the store thread while the loop goes on folding.
                seen["folding_next"] = _wait_until(lambda: bool(p._next))
                raise RetryableError("store down (test)")
            return real_write(batch, token)

        p._writer.write = failing_second_write
        task = asyncio.create_task(p.run())
        q = await wait_projected(store, runs, 100)
        await assert_complete(store, q, runs, 99, no_raw_duplicates=True)
        # Every event applied exactly once: version = events applied, no gap seen.
        assert await _runs_table(store) == {r: (100, 100, 0) for r in runs}
        p.stop()
        await task
        assert watched.violations == []
        # Everything was committed, each offset only after its batch was written.
        ends = {part: o for part, o in (await log.end_offsets()).items() if o}
        assert watched.committed == ends
        await log.close()

    asyncio.run(main())
    assert seen["folding_next"] is True and seen["calls"] > 2


def test_stop_with_a_write_in_flight_writes_and_commits_everything_folded(tmp_path, store):
    runs = [f"stop-{i}" for i in range(4)]

    async def main():
        log = LocalEventLog(tmp_path / "log", partitions=2)
        await log.start()
        await append_steps(log, runs, range(1, 101))
        p = Projector(log, store, SMALL)
        watched = _Watched(p, log)
        real_write = p._writer.write
        state = {"calls": 0, "blocked_until_stop": None}

        def slow_first_write(batch, token):
            state["calls"] += 1
            if state["calls"] == 1:
                # Held until stop() was asked while the next batch is being folded.
                state["blocked_until_stop"] = _wait_until(
                    lambda: p._stopping.is_set() and bool(p._next))
            return real_write(batch, token)

        p._writer.write = slow_first_write
        task = asyncio.create_task(p.run())
        while p._inflight is None or not p._next:
            await asyncio.sleep(0.001)
        p.stop()
        await task
        assert state["blocked_until_stop"] is True
        assert p._inflight is None
        assert watched.violations == []
        # Everything folded was written and committed: a second run starts after it and
        # writes the rest, not one row twice.
        folded = dict(watched.committed)
        assert folded and folded == watched.written
        p2 = Projector(log, store, SMALL)
        await p2.run(until_caught_up=True)
        q = await wait_projected(store, runs, 100)
        await assert_complete(store, q, runs, 99, no_raw_duplicates=True)
        assert await _runs_table(store) == {r: (100, 100, 0) for r in runs}
        await log.close()

    asyncio.run(main())


def test_revoke_with_a_write_in_flight_waits_for_it_then_commits(tmp_path, store):
    # A second projector joins while the first one's write is in flight: the revoke waits
    # for that write, writes and commits the batch being folded, and nothing is lost.
    runs = [f"rev-{i}" for i in range(8)]

    async def main():
        log = LocalEventLog(tmp_path / "log", partitions=4)
        await log.start()
        await append_steps(log, runs, range(1, 101))
        # Batches of a few hundred rows folded 10 records per poll: the first projector
        # polls (and so meets the rebalance) many times while its first write is held.
        a = Projector(log, store, ProjectorConfig(batch_max_rows=300, batch_max_s=5.0,
                                                  poll_max_records=10))
        watched = _Watched(a, log)
        real_write = a._writer.write
        state = {"calls": 0, "revoked": False, "in_flight_at_revoke": None}
        real_revoke = a._on_revoke

        async def on_revoke(partitions):
            state["in_flight_at_revoke"] = (a._inflight is not None
                                            and not a._inflight.done())
            state["revoked"] = True
            await real_revoke(partitions)

        a._on_revoke = on_revoke

        def held_first_write(batch, token):
            state["calls"] += 1
            if state["calls"] == 1:
                _wait_until(lambda: state["revoked"])
                time.sleep(0.05)          # the revoke callback is waiting for this write
            return real_write(batch, token)

        a._writer.write = held_first_write
        ta = asyncio.create_task(a.run())
        while a._inflight is None:
            await asyncio.sleep(0.001)
        b = Projector(log, store, SMALL)
        tb = asyncio.create_task(b.run())
        q = await wait_projected(store, runs, 100, timeout=60)
        await assert_complete(store, q, runs, 99, no_raw_duplicates=False)
        assert await _runs_table(store) == {r: (100, 100, 0) for r in runs}
        assert b.records_applied > 0
        a.stop()
        b.stop()
        await asyncio.gather(ta, tb)
        assert state["in_flight_at_revoke"] is True
        assert watched.violations == []
        await log.close()

    asyncio.run(main())
