"""Replay (issue 5): rebuild every projection from the local event log — points/s."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import subprocess
import time
from pathlib import Path

import numpy as np
from runstream.v1 import events_pb2
from runstream_server.api.store_access import StoreAccess
from runstream_server.config import EventLogConfig, ProjectorConfig
from runstream_server.eventlog.local import LocalEventLog
from runstream_server.projector.service import Projector
from runstream_server.store.client import connect
from runstream_server.store.migrate import apply_migrations

from ..harness import Metric
from .client_log import RUNSTREAM

ORDER = 50
TITLE = "Replay: rebuild all projections from the event log (`runstream replay`)"
PARTITIONS = EventLogConfig.partitions        # the server's default, as `runstream server`
KEY_COUNTS = (10, 25, 50, 100)                # metrics per Log event, run r: [r % 4]
BATCHED_POINTS = 1000                         # ~points per record of a batching client
T0_US = 1_700_000_000_000_000
STEP_US = 200_000                             # client time between two steps of a run
APPEND_RECORDS = 2000                         # records per append while writing the log
CLI_TIMEOUT_S = 600
ENTITY, PROJECT = "bench", "replay"
BATCHED = "in-process Projector.run, ~1,000 points/record"
PER_CALL = "in-process Projector.run, 1 Log event/record (10–100 points)"
CLI = "`runstream replay` CLI, whole process, ~1,000 points/record"
ABOUT = f"""\
How fast `runstream replay` rebuilds the store from the event log. **The log**, written
once per scenario (untimed) with `eventlog/local.py` `LocalEventLog` ({PARTITIONS}
partitions, the server's default; records keyed by run id as the gateway appends them):
R runs, run r logging {"/".join(map(str, KEY_COUNTS))} metrics per `Log` event (by r mod 4)
until it holds P ÷ R points; per run a `RunStart` (name, tags, 4 config keys), the `Log`
events (one per step, steps 0, 1, …; values are float32-origin noisy decreasing curves)
and a `Finish`, each event with its seq and client time. Runs log concurrently: records
of the runs are interleaved round-robin. Two logs of the same events: **batched**, a
client's upload of ~{BATCHED_POINTS:,} points per record (⌊{BATCHED_POINTS} ÷ keys⌋ `Log`
events per record, RunStart and Finish in the first and last), and **per call**, one
`Log` event per record (as a client sending each `log()` on its own). Cases: (1, 2)
in-process, what `cli.py` `_replay` does: a fresh database (`apply_migrations`, untimed),
the log opened (untimed), then the timer covers `Projector(log, StoreAccess(chDB),
ProjectorConfig()).run(from_beginning=True, until_caught_up=True)` (poll → fold →
Arrow insert of up to {ProjectorConfig.batch_max_rows:,}-row batches → commit, until the
end of the log is written and committed; background merges run as usual). **CPU** is the
whole benchmark process (Python and chDB's threads) over the timer. Afterwards the
tables must hold every point (`count()` of `history_numeric`) and every run (`runs`
FINAL). (3) the real command, `runstream replay --data-dir <dir>` (drops the tables,
migrates, opens the log, projects) on the batched log, as a child process: wall time
from spawn to exit (Python start-up and chDB's included) and the child's CPU; it must
report every record replayed. points/s = points ÷ time; records/s likewise."""
METRICS = [
    Metric("points_s", "points/s"),
    Metric("records_s", "records/s"),
    Metric("seconds", "s", lower_is_better=True),
    Metric("cpu_cores", "CPU cores"),
    Metric("cpu_us_pt", "CPU µs/point", lower_is_better=True),
]
REPS = 3
SMOKE = {"points": 40_000, "runs": 8}
GOALS = [
    {"label": "replay", "case": BATCHED, "metric": "points_s", "target": 1_000_000,
     "higher_is_better": True},
]


def params(quick: bool) -> dict:
    return {"points": 400_000 if quick else 4_000_000, "runs": 40 if quick else 200,
            "partitions": PARTITIONS}


# --- the event log ------------------------------------------------------------------------

def _curves(r: int, n_keys: int, steps: int) -> list[list[float]]:
    """Per step, the values of run r's keys: float32 noisy decreasing curves as float64."""
    rng = np.random.default_rng(r)
    s = np.arange(steps, dtype=np.float32)[:, None]
    scale = rng.uniform(0.5, 3.0, n_keys).astype(np.float32)
    rate = rng.uniform(50, 500, n_keys).astype(np.float32)
    noise = rng.normal(0, 0.02, (steps, n_keys)).astype(np.float32)
    v = scale / (np.float32(1) + s / rate) + noise * scale
    return v.astype(np.float64).tolist()


def _run_records(r: int, points: int, events_per_record: int | None) -> list[bytes]:
    """Run r's records; ``events_per_record`` None = ~BATCHED_POINTS points per record."""
    run_id = f"run-{r:05d}"
    n_keys = KEY_COUNTS[r % len(KEY_COUNTS)]
    names = [f"train/metric_{k:03d}" for k in range(n_keys)]
    steps = max(1, points // n_keys)
    per = events_per_record or max(1, BATCHED_POINTS // n_keys)
    values = _curves(r, n_keys, steps)
    out = []
    rec = events_pb2.LogRecord()

    def event(seq: int, t_us: int) -> events_pb2.Event:
        return rec.events.add(run_id=run_id, project=PROJECT, entity=ENTITY, seq=seq,
                              client_time_us=t_us)

    def seal(t_us: int) -> None:
        nonlocal rec
        rec.server_time_us = t_us + 1000
        rec.gateway = "bench"
        out.append(rec.SerializeToString())
        rec = events_pb2.LogRecord()

    base = T0_US + r * 1000
    rs = event(1, base).run_start
    rs.name = f"replay-{r}"
    rs.tags.extend(["bench", f"k{n_keys}"])
    for k, v in (("lr", "0.001"), ("optimizer", '"adam"'), ("batch_size", "64"),
                 ("keys", str(n_keys))):
        rs.config[k].json = v
    for step, row in enumerate(values):
        t_us = base + (step + 1) * STEP_US
        lg = event(step + 2, t_us).log
        lg.step = step
        lg.numbers.update(zip(names, row, strict=True))
        if step == steps - 1:
            event(steps + 2, t_us + 1).finish.exit_code = 0
        if len(rec.events) >= per or step == steps - 1:
            seal(t_us)
    return out


def _interleave(per_run: list[list[bytes]]) -> list[tuple[bytes, bytes]]:
    """(key, value) records, one record of each run in turn (runs log concurrently)."""
    out = []
    longest = max(len(recs) for recs in per_run)
    for i in range(longest):
        for r, recs in enumerate(per_run):
            if i < len(recs):
                out.append((f"run-{r:05d}".encode(), recs[i]))
    return out


async def _append(log_dir: Path, records: list[tuple[bytes, bytes]], partitions: int) -> None:
    log = LocalEventLog(log_dir, partitions=partitions, fsync="never")
    await log.start()
    try:
        for i in range(0, len(records), APPEND_RECORDS):
            await log.append(records[i:i + APPEND_RECORDS])
    finally:
        await log.close()


def _write_log(data_dir: Path, p: dict, events_per_record: int | None) -> dict:
    """Write one log under ``data_dir/eventlog``; its size in runs, records, points, bytes."""
    per_run = [_run_records(r, p["points"] // p["runs"], events_per_record)
               for r in range(p["runs"])]
    records = _interleave(per_run)
    asyncio.run(_append(data_dir / "eventlog", records, p["partitions"]))
    points = sum((p["points"] // p["runs"]) // KEY_COUNTS[r % len(KEY_COUNTS)]
                 * KEY_COUNTS[r % len(KEY_COUNTS)] for r in range(p["runs"]))
    return {"dir": data_dir, "records": len(records), "points": points, "runs": p["runs"],
            "bytes": sum(len(v) for _, v in records)}


# --- the replays ------------------------------------------------------------------------------

def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _project(log_dir: Path, client, db: str, partitions: int) -> dict:
    """One replay of the log into ``db`` (migrated, empty): records, seconds, CPU s."""
    store = StoreAccess(client, db)
    log = LocalEventLog(log_dir, partitions=partitions)
    await log.start()
    try:
        projector = Projector(log, store, ProjectorConfig())
        c0, t0 = _cpu_s(), time.perf_counter()
        n = await projector.run(from_beginning=True, until_caught_up=True)
        seconds = time.perf_counter() - t0
        cpu = _cpu_s() - c0
    finally:
        await log.close()
        store.close()
    return {"records": n, "seconds": seconds, "cpu_s": cpu,
            "batches": projector.batches_written}


def _in_process(ctx, client, log: dict, tag: str) -> dict:
    db = f"replay_r{ctx.rep}_{tag}"
    apply_migrations(client, db)
    try:
        res = asyncio.run(_project(log["dir"] / "eventlog", client, db,
                                   ctx.params["partitions"]))
        stored = client.query(f"SELECT count() FROM {db}.history_numeric").result_rows[0][0]
        runs = client.query(f"SELECT count() FROM {db}.runs FINAL").result_rows[0][0]
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db} SYNC")
    if (res["records"], stored, runs) != (log["records"], log["points"], log["runs"]):
        raise RuntimeError(f"{tag}: replayed {res['records']} of {log['records']} records; "
                           f"history_numeric holds {stored} of {log['points']} points, runs "
                           f"{runs} of {log['runs']}")
    return _rates(log, res["seconds"], res["cpu_s"], batches=res["batches"])


def _cli(ctx, log: dict) -> dict:
    """``runstream replay`` as a child process; wall from spawn to exit, the child's CPU."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(RUNSTREAM), "replay", "--data-dir", str(log["dir"]),
                             "--partitions", str(ctx.params["partitions"])],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        out, _ = proc.communicate(timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"runstream replay: no exit after {CLI_TIMEOUT_S} s") from None
    seconds = time.perf_counter() - t0
    # the child was reaped by communicate(): its CPU is in this process's RUSAGE_CHILDREN
    text = out.decode(errors="replace")
    m = re.search(r"replayed (\d+) records", text)
    if proc.returncode != 0 or not m or int(m.group(1)) != log["records"]:
        raise RuntimeError(f"runstream replay exited {proc.returncode}, expected "
                           f"{log['records']} records replayed:\n{text[-3000:]}")
    return _rates(log, seconds, None)


def _rates(log: dict, seconds: float, cpu_s: float | None, **extra) -> dict:
    out = {"points_s": log["points"] / seconds, "records_s": log["records"] / seconds,
           "seconds": seconds, **extra}
    if cpu_s is not None:
        out["cpu_cores"] = cpu_s / seconds
        out["cpu_us_pt"] = cpu_s / log["points"] * 1e6
    return out


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --- scenario ---------------------------------------------------------------------------------

def setup(ctx):
    p = ctx.params
    t = time.perf_counter()
    logs = {"batched": _write_log(ctx.tmp / "batched", p, None),
            "per_call": _write_log(ctx.tmp / "per-call", p, 1)}
    for name, log in logs.items():
        ctx.note(f"The {name.replace('_', ' ')} log: {log['records']:,} records, "
                 f"{log['points']:,} points of {log['runs']} runs, "
                 f"{log['bytes'] / log['points']:.1f} B/point of record payload.")
    ctx.log(f"wrote the logs in {time.perf_counter() - t:.1f} s")
    client = connect(f"chdb:///{ctx.tmp / 'chdb'}", "bench")
    return {"client": client, "logs": logs}


def teardown(ctx, state) -> None:
    state["client"].close()


def run_rep(ctx, state) -> dict:
    client, logs = state["client"], state["logs"]
    out = {BATCHED: _in_process(ctx, client, logs["batched"], "batched"),
           PER_CALL: _in_process(ctx, client, logs["per_call"], "per_call")}
    c0 = _children_cpu_s()
    cli = _cli(ctx, logs["batched"])
    cpu = _children_cpu_s() - c0
    cli["cpu_cores"] = cpu / cli["seconds"]
    cli["cpu_us_pt"] = cpu / logs["batched"]["points"] * 1e6
    out[CLI] = cli
    ctx.log(", ".join(f"{case.split(',')[0]} {r['points_s']:,.0f} points/s"
                      for case, r in out.items()))
    return out
