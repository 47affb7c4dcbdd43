"""Local event log: append throughput and latency per fsync policy."""

from __future__ import annotations

import asyncio
import os
import shutil
import time

from runstream_server.eventlog.local import LocalEventLog

from ..harness import Metric

ORDER = 10
TITLE = "Local event log append (`LocalEventLog`)"
ABOUT = """\
`services/runstream_server/eventlog/local.py` `LocalEventLog` (8 partitions, 64 MiB
segments, `fsync_interval_s` 0.05) in a fresh temporary directory per case, on the VM's
disk. Records are 2,048 random bytes keyed by one of 200 run ids (so appends spread over
all partitions). Two shapes: **50 concurrent tasks appending one record each** (like 50
gateway streams with small requests; group commit shares the fsyncs) and **8 concurrent
tasks appending 50 records per call**. The timer covers the appends only (log opened
before, closed after). Latency is one `await log.append(...)`, p50/p99 within a
repetition. `always` = durable on return; `interval`/`never` = in the page cache on
return (see the module docstring for what each policy can lose)."""
REPS = 5
SMOKE = {"records_single": 500, "records_batched": 2_000}
METRICS = [
    Metric("records_s", "records/s"),
    Metric("mb_s", "MB/s"),
    Metric("lat_p50_ms", "append p50 ms", lower_is_better=True),
    Metric("lat_p99_ms", "append p99 ms", lower_is_better=True),
]
RECORD_BYTES = 2048
RUN_IDS = 200
PARTITIONS = 8
POLICIES = ("always", "interval", "never")
SHAPES = (("50 × 1-record appends", 50, 1), ("8 × 50-record appends", 8, 50))


def params(quick: bool) -> dict:
    return {
        "record_bytes": RECORD_BYTES,
        "records_single": 10_000 if quick else 60_000,
        "records_batched": 20_000 if quick else 160_000,
        "partitions": PARTITIONS,
        "policies": "/".join(POLICIES),
    }


async def _case(directory, policy: str, tasks: int, per_call: int, total: int) -> dict:
    log = LocalEventLog(directory, partitions=PARTITIONS, fsync=policy)
    await log.start()
    value = os.urandom(RECORD_BYTES)
    keys = [f"run-{i:06d}".encode() for i in range(RUN_IDS)]
    calls_per_task = total // (tasks * per_call)
    latencies: list[float] = []

    async def worker(w: int) -> None:
        lat = latencies.append
        clock = time.perf_counter
        for i in range(calls_per_task):
            batch = [(keys[(w * 7 + i * per_call + j) % RUN_IDS], value) for j in range(per_call)]
            t = clock()
            await log.append(batch)
            lat(clock() - t)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(tasks)))
        dt = time.perf_counter() - t0
    finally:
        await log.close()
    n = calls_per_task * tasks * per_call
    latencies.sort()
    return {
        "records_s": n / dt,
        "mb_s": n * RECORD_BYTES / dt / 1e6,
        "lat_p50_ms": latencies[len(latencies) // 2] * 1e3,
        "lat_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
    }


def run_rep(ctx, state) -> dict:
    out = {}
    for policy in POLICIES:
        for label, tasks, per_call in SHAPES:
            total = ctx.params["records_single" if per_call == 1 else "records_batched"]
            directory = ctx.tmp / f"log-{ctx.rep}-{policy}-{tasks}x{per_call}"
            out[f"fsync={policy}, {label}"] = asyncio.run(
                _case(directory, policy, tasks, per_call, total))
            shutil.rmtree(directory, ignore_errors=True)
    return out
