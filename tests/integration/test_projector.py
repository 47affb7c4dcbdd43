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
