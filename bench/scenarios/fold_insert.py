"""Projector hot path: fold event-log records into rows, insert them into chDB."""

from __future__ import annotations

import random
import time

from runstream.v1 import events_pb2
from runstream_server.projector.processor import RowBatch, fold_record
from runstream_server.store.client import connect
from runstream_server.store.migrate import apply_migrations
from runstream_server.store.writer import StoreWriter

from ..harness import Metric

ORDER = 20
TITLE = "Projector fold + store insert (`fold_record` + `StoreWriter.write`)"
ABOUT = """\
The projector's work per batch without the event log: `projector/processor.py`
`fold_record` over serialized `LogRecord`s (protobuf decode included) into a `RowBatch`,
then `store/writer.py` `StoreWriter.write` (Arrow conversion + one `insert_arrow` per
table: `history_numeric`, then `runs`) into chDB in a fresh data directory
(`store/client.py` `connect("chdb:///…")`, `store/migrate.py` `apply_migrations`; a fresh
database per repetition and case). A batch is **100,000 points** of 10 runs: 10 keys per
`Log` event (10,000 events, 100 events per record) or 100 keys per event (1,000 events,
10 per record), i.e. ~1,000 points per record, as a client sending every 50 ms at a few
thousand `log()` calls/s would produce. Consecutive batches continue the same runs
(state carried over, as in the projector). Records are built before the timer; each
batch is written with a dedup token, as the projector does. fold / insert / both =
points ÷ time of that step summed over the batches."""
REPS = 5
SMOKE = {"batches_per_rep": 1}
METRICS = [
    Metric("fold_pts_s", "fold points/s"),
    Metric("insert_pts_s", "insert points/s"),
    Metric("both_pts_s", "fold+insert points/s"),
    Metric("insert_ms", "insert ms/batch", lower_is_better=True),
]
BATCH_POINTS = 100_000
RUNS = 10
T0_US = 1_700_000_000_000_000
SHAPES = ((10, 100), (100, 10))   # (keys per Log event, events per record)


def params(quick: bool) -> dict:
    return {"batch_points": BATCH_POINTS, "batches_per_rep": 2 if quick else 5,
            "runs_per_batch": RUNS}


def _records(keys: int, events_per_record: int, first_step: int,
             rnd: random.Random) -> list[bytes]:
    """One batch: BATCH_POINTS points over RUNS runs, as serialized LogRecords.

    Run r's RunStart is seq 1 (first batch only); the Log of step s is seq s + 2.
    """
    names = [f"train/metric_{k:03d}" for k in range(keys)]
    steps = BATCH_POINTS // (keys * RUNS)
    out = []
    for r in range(RUNS):
        run_id = f"run-{r:04d}"
        events = []
        if first_step == 0:
            ev = events_pb2.Event(run_id=run_id, project="bench", entity="bench", seq=1,
                                  client_time_us=T0_US)
            ev.run_start.name = f"bench run {r}"
            events.append(ev)
        for step in range(first_step, first_step + steps):
            ev = events_pb2.Event(run_id=run_id, project="bench", entity="bench", seq=step + 2,
                                  client_time_us=T0_US + step * 1000)
            ev.log.step = step
            ev.log.numbers.update({n: rnd.random() for n in names})
            events.append(ev)
            if len(events) >= events_per_record:
                out.append(events_pb2.LogRecord(events=events,
                                                server_time_us=T0_US + step * 1000 + 5)
                           .SerializeToString())
                events = []
        if events:
            out.append(events_pb2.LogRecord(events=events, server_time_us=T0_US)
                       .SerializeToString())
    return out


def setup(ctx):
    client = connect(f"chdb:///{ctx.tmp / 'chdb'}", "bench")
    # Untimed warm-up: the first insert of a process pays chDB's start-up.
    apply_migrations(client, "bench_warmup")
    batch, states = RowBatch(), {}
    for i, rec in enumerate(_records(10, 100, 0, random.Random(0))[:20]):
        fold_record(states, rec, 0, i, batch)
    StoreWriter(client, "bench_warmup").write(batch, None)
    client.command("DROP DATABASE bench_warmup SYNC")
    return {"client": client}


def teardown(ctx, state) -> None:
    state["client"].close()


def run_rep(ctx, state) -> dict:
    client = state["client"]
    out = {}
    for keys, per_record in SHAPES:
        db = f"bench_r{ctx.rep}_k{keys}"
        apply_migrations(client, db)
        writer = StoreWriter(client, db)
        rnd = random.Random(ctx.rep * 1000 + keys)
        states: dict = {}
        fold_s = insert_s = 0.0
        points = offset = 0
        steps = BATCH_POINTS // (keys * RUNS)
        batches = ctx.params["batches_per_rep"]
        for b in range(batches):
            records = _records(keys, per_record, b * steps, rnd)
            batch = RowBatch()
            t0 = time.perf_counter()
            for i, rec in enumerate(records):
                fold_record(states, rec, 0, offset + i, batch)
            t1 = time.perf_counter()
            writer.write(batch, f"p0:{offset}-{offset + len(records) - 1}")
            t2 = time.perf_counter()
            offset += len(records)
            points += len(batch.numeric)
            fold_s += t1 - t0
            insert_s += t2 - t1
        stored = client.query(f"SELECT count() FROM {db}.history_numeric").result_rows[0][0]
        if stored != points or points != BATCH_POINTS * batches:
            raise RuntimeError(f"{db}: folded {points} points, table holds {stored}")
        ctx.note("Each repetition checks that the table holds exactly the points folded.")
        out[f"{keys} keys/event ({per_record} events/record)"] = {
            "fold_pts_s": points / fold_s,
            "insert_pts_s": points / insert_s,
            "both_pts_s": points / (fold_s + insert_s),
            "insert_ms": insert_s / batches * 1e3,
        }
        client.command(f"DROP DATABASE {db} SYNC")
    return out
