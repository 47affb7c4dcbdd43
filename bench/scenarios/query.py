"""Read paths of the query API: one 1M-point series, the runs table of 10k runs."""

from __future__ import annotations

import random
import time

import numpy as np
from runstream.v1 import events_pb2
from runstream_server.api.queries import Queries
from runstream_server.projector.processor import RowBatch, RunKey, fold_record
from runstream_server.store.client import connect
from runstream_server.store.migrate import apply_migrations
from runstream_server.store.writer import StoreWriter

from ..harness import Metric

ORDER = 40
TITLE = "Query API (`Queries.get_history`, `Queries.list_runs`)"
ABOUT = """\
`services/runstream_server/api/queries.py` `Queries` on chDB in-process, called directly
(no HTTP/gRPC; the time includes the result's conversion to the Python dicts the API
serves). Data, loaded once through `StoreWriter.write`: one run with **1,000,000 points
of one key** (`train/loss`, steps 0…999,999, written as 4 batches of 250k) and a project
of **10,000 runs** built by folding generated records (per run: `RunStart` with config
`lr`/`optimizer`/`batch_size`, three `Log` events of 5 keys, a `SummaryUpdate`, `Finish`)
written as 3 batches, so every run has 3 row versions in `runs` (30k rows). Cases:
`get_history(["train/loss"], buckets=1500)` (server-side min/max/last per bucket →
1,500 points), the same raw (`buckets=0` → 1M points), `list_runs` sorted by
`summary.val/loss` (limit 50, plus the `count()` the API also runs) and the same with a
config filter `optimizer = "adam"` (a quarter of the runs). Each is measured on the
tables **as inserted** (background merges stopped, so the part count stays as written)
and **after `OPTIMIZE … FINAL`** (one part per table; a copy of the same data). One
untimed call of each query first; then each repetition times each query once."""
METRICS = [
    Metric("ms", "ms", lower_is_better=True),
    Metric("rows", "points / runs returned"),
]
REPS = 5
SMOKE = {"history_points": 20_000, "runs": 400}   # 100 "adam" runs: a full first page
T0_US = 1_700_000_000_000_000
HISTORY_BATCH = 250_000
OPTIMIZERS = ("adam", "sgd", "adamw", "lion")


def params(quick: bool) -> dict:
    return {"history_points": 200_000 if quick else 1_000_000,
            "runs": 2_000 if quick else 10_000}


def _load_history(writer: StoreWriter, points: int) -> None:
    run = RunKey("bench", "bench", "hist-run")
    states: dict = {}
    rec = events_pb2.LogRecord(server_time_us=T0_US)
    ev = rec.events.add(run_id=run.run_id, project=run.project, entity=run.entity, seq=1,
                        client_time_us=T0_US)
    ev.run_start.name = "one long run"
    batch = RowBatch()
    fold_record(states, rec.SerializeToString(), 0, 0, batch)
    rnd = np.random.default_rng(1)
    for lo in range(0, points, HISTORY_BATCH):
        steps = range(lo, min(points, lo + HISTORY_BATCH))
        values = (1.0 / (1.0 + np.arange(steps.start, steps.stop) / 1e4)
                  + rnd.normal(0, 0.01, len(steps))).tolist()
        add = batch.numeric.add
        key = ["train/loss"]
        for step, v in zip(steps, values, strict=True):
            add(run, step, T0_US + step * 1000, step + 2, key, [v])
        writer.write(batch, f"hist:{lo}")
        batch = RowBatch()


def _run_records(n_runs: int, part: int, rnd: random.Random) -> list[bytes]:
    """Part 0: RunStart + 3 Logs; part 1: 3 more Logs; part 2: SummaryUpdate + Finish."""
    out = []
    for r in range(n_runs):
        run_id = f"run-{r:05d}"
        rec = events_pb2.LogRecord(server_time_us=T0_US + r * 1000 + part * 10**9)

        def event(seq: int, run_id=run_id, rec=rec, r=r):
            return rec.events.add(run_id=run_id, project="runs", entity="bench", seq=seq,
                                  client_time_us=T0_US + r * 1000 + seq)

        if part == 0:
            rs = event(1).run_start
            rs.name = f"sweep-{r}"
            rs.tags.extend(["bench", f"t{r % 7}"])
            rs.config["lr"].json = repr(10 ** -rnd.uniform(2, 5))
            rs.config["optimizer"].json = f'"{OPTIMIZERS[r % len(OPTIMIZERS)]}"'
            rs.config["batch_size"].json = str(2 ** (5 + r % 4))
        if part < 2:
            for i in range(3):
                step = part * 3 + i
                lg = event(2 + step).log
                lg.step = step
                loss = rnd.random()
                lg.numbers.update({"val/loss": loss, "train/loss": loss * 0.9,
                                   "acc": 1 - loss, "lr": 1e-3, "epoch": float(step)})
        else:
            event(8).summary_update.numbers["best/acc"] = rnd.random()
            event(9).finish.exit_code = 0 if r % 10 else 1
        out.append(rec.SerializeToString())
    return out


def _load_runs(writer: StoreWriter, n_runs: int) -> None:
    states: dict = {}
    rnd = random.Random(2)
    offset = 0
    for part in range(3):
        batch = RowBatch()
        records = _run_records(n_runs, part, rnd)
        for i, rec in enumerate(records):
            fold_record(states, rec, 1, offset + i, batch)
        writer.write(batch, f"runs:{offset}")
        offset += len(records)


def _cases(q: Queries, n_points: int) -> dict:
    runs_filter = {"config": [("optimizer", '"adam"')]}
    return {
        f"get_history 1 key × {n_points:,} points, buckets=1500":
            lambda: q.get_history("bench", "bench", "hist-run", ["train/loss"], 1500, 0, 0),
        f"get_history 1 key × {n_points:,} points, raw":
            lambda: q.get_history("bench", "bench", "hist-run", ["train/loss"], 0, 0, 0),
        "list_runs sort=summary.val/loss, limit 50":
            lambda: q.list_runs("bench", "runs", None, "summary.val/loss", False, 50, 0),
        "list_runs sort=summary.val/loss + config filter":
            lambda: q.list_runs("bench", "runs", runs_filter, "summary.val/loss", False, 50, 0),
    }


def _returned(result) -> int:
    if isinstance(result, tuple):        # list_runs: (page, total)
        return len(result[0])
    return len(result[0]["step"])        # get_history: one series


def _parts(client, db: str) -> str:
    rows = client.query(
        "SELECT table, count() FROM system.parts WHERE database = {db:String} AND active "
        "AND table IN ('history_numeric', 'runs') GROUP BY table ORDER BY table",
        parameters={"db": db}).result_rows
    return ", ".join(f"{t} {n}" for t, n in rows)


def setup(ctx):
    client = connect(f"chdb:///{ctx.tmp / 'chdb'}", "bench")
    db, merged = "bench_parts", "bench_merged"
    apply_migrations(client, db)
    writer = StoreWriter(client, db)
    for table in ("history_numeric", "runs"):
        client.command(f"SYSTEM STOP MERGES {db}.{table}")
    t = time.perf_counter()
    _load_history(writer, ctx.params["history_points"])
    hist_s = time.perf_counter() - t
    t = time.perf_counter()
    _load_runs(writer, ctx.params["runs"])
    runs_s = time.perf_counter() - t
    ctx.log(f"loaded {ctx.params['history_points']:,} points in {hist_s:.1f} s, "
            f"{ctx.params['runs']:,} runs in {runs_s:.1f} s")
    apply_migrations(client, merged)
    for table in ("history_numeric", "history_other", "runs"):
        client.command(f"INSERT INTO {merged}.{table} SELECT * FROM {db}.{table}")
        client.command(f"OPTIMIZE TABLE {merged}.{table} FINAL")
    ctx.note(f"Active parts as inserted: {_parts(client, db)}; after OPTIMIZE: "
             f"{_parts(client, merged)}.")
    n = ctx.params["history_points"]
    cases = {}
    for label, d in (("as inserted", db), ("optimized", merged)):
        for name, fn in _cases(Queries(client, d), n).items():
            result = fn()        # untimed first call; also checks the answer
            rows = _returned(result)
            if name.startswith("get_history") and "raw" in name and rows != n:
                raise RuntimeError(f"{d}: raw history returned {rows} points, expected {n}")
            if name.startswith("list_runs") and rows != 50:
                raise RuntimeError(f"{d}: list_runs returned {rows} runs, expected 50")
            cases[f"{name} ({label})"] = fn
    return {"client": client, "cases": cases}


def teardown(ctx, state) -> None:
    state["client"].close()


def run_rep(ctx, state) -> dict:
    out = {}
    for name, fn in state["cases"].items():
        t = time.perf_counter()
        result = fn()
        ms = (time.perf_counter() - t) * 1e3
        out[name] = {"ms": ms, "rows": _returned(result)}
    return out
