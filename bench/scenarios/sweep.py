"""A sweep of many concurrent runs (issue 5): steady-state load, heartbeats, no false crashes."""

from __future__ import annotations

import time

from ..harness import Metric
from ._topology import LoadGenGroup, list_runs, missing_points, wait_runs
from .ingest import (
    ENTITY,
    _gen_usage,
    _Watch,
    start_topologies,
    teardown,  # noqa: F401  (this scenario's teardown: stop the deployments)
)

ORDER = 52
TITLE = "Sweep (issue 5): 10,000 concurrent runs, heartbeats, no false crashes"
ABOUT = """\
The same two deployments as `ingest` (`bench/scenarios/_topology.py`; started once per
scenario, both running throughout, each warmed up as there), but with the reaper's
`--heartbeat-timeout` at `heartbeat_timeout_s` (3 heartbeat intervals: a run silent
that long is marked crashed).
The protocol-level generator (`bench/scenarios/_loadgen.py`), as `generators` processes
each with its share of runs, streams and rate (one process saturated a core before
offering 100k points/s), drives R runs on `streams` gRPC streams (at most 1,000: 10 runs
a stream at full size; R trial processes would open R streams, but 10,000 streams from
one generator process failed); a stream that fails (`CANCELLED` included, counted) is
re-opened and its unacked requests re-sent, as the client's uploader does. Each run
logs M metrics `steps_per_s` times a second (phases spread evenly over the second;
what came due is sent every 50 ms, one run per request) and sends a `Heartbeat` every
`heartbeat_s` (in its next request), for `duration_s`. If the generator or the server
falls behind, due steps queue up in the generator and go out in bigger requests (as the
client's uploader batches): **acked points/s** (points acked ÷ first send → last log
acked) is what the machine sustained, next to the **offered** R×M×`steps_per_s`.

When every log is acked the generator holds (heartbeats only) while the benchmark
checks, untimed: it polls the runs list (`GET …/runs?limit=1000&offset=…`, every run)
until every run shows its last step (**ack → queryable s** = last log ack → that poll),
counts **false crashes** = runs whose state is not `running` or whose cause mentions a
crash (a crashed run that sent again is `running` with cause "… after crash"), and checks
**missing points** with `GET …/history?runs=…&keys=…&buckets=1` (`total_points` of every
run × key = its steps). Then every run finishes and must show `finished`. **CPU cores**
and **RSS** (largest VmRSS sampled every 0.5 s) per process cover the load phase (first
send → last log acked); the gateway of the embedded deployment is the whole server
process (all roles). **heartbeats/s** = heartbeats acked ÷ the load phase."""
METRICS = [
    Metric("offered_pts_s", "offered points/s"),
    Metric("ack_pts_s", "acked points/s"),
    Metric("hb_s", "heartbeats/s acked"),
    Metric("drain_s", "ack → queryable s", lower_is_better=True),
    Metric("false_crashes", "false crashes", lower_is_better=True),
    Metric("missing_points", "points not queryable", lower_is_better=True),
    Metric("gw_rss_mb", "gateway RSS MB (embedded: server)", lower_is_better=True),
    Metric("gw_cpu", "gateway CPU cores (embedded: server)", lower_is_better=True),
    Metric("cpu_projector", "projector+api CPU cores", lower_is_better=True),
    Metric("rss_projector", "projector+api RSS MiB", lower_is_better=True),
    Metric("cpu_broker", "Kafka broker CPU cores", lower_is_better=True),
    Metric("cpu_generator", "generator CPU cores", lower_is_better=True),
    Metric("lag_max", "Kafka lag max (records)", lower_is_better=True),
    Metric("cancelled", "streams CANCELLED (re-opened)", lower_is_better=True),
]
REPS = 3
# One repetition at full size takes 5-9 minutes (both modes, each loading 10,000 runs
# well beyond what the server acks per second, then checking every run): three need
# more than the harness's default 15 minutes.
TIMEOUT_S = 3_000
QUERYABLE_TIMEOUT_S = 600   # a projector far behind still catches up within this
LIST_POLL_S = 1.0           # the full runs list is ~10 pages: once a second is plenty
SMOKE = {"modes": ["embedded", "kafka"], "runs": 100, "streams": 100, "duration_s": 2.0,
         "generators": 2}


def _case_name(mode: str, runs: int) -> str:
    return f"{mode}: sweep of {runs:,} runs"


GOALS = [
    *({"label": f"sweep, 10,000 runs, {m}: gateway RSS", "case": _case_name(m, 10_000),
       "metric": "gw_rss_mb", "target": 1500, "higher_is_better": False}
      for m in ("embedded", "kafka")),
    *({"label": f"sweep, 10,000 runs, {m}: false crashes", "case": _case_name(m, 10_000),
       "metric": "false_crashes", "target": 0, "higher_is_better": False}
      for m in ("embedded", "kafka")),
    *({"label": f"sweep, 10,000 runs, {m}: points not queryable",
       "case": _case_name(m, 10_000), "metric": "missing_points", "target": 0,
       "higher_is_better": False} for m in ("embedded", "kafka")),
]


def params(quick: bool) -> dict:
    runs = 1_000 if quick else 10_000
    # At most 1,000 streams (10 runs each at full size): 10,000 streams from the one
    # generator process ended in thousands of CANCELLED streams and reconnects.
    return {"modes": ["embedded", "kafka"], "runs": runs, "streams": min(runs, 1_000),
            "metrics": 10,
            "steps_per_s": 1.0, "heartbeat_s": 10.0,
            "heartbeat_timeout_s": 30.0,
            # 30 s at full size: three heartbeats of every run (a slow server stretches
            # the schedule: see TIMEOUT_S).
            "duration_s": 5.0 if quick else 30.0,
            "window": 4,
            # Two generator processes (each its share of runs, streams and rate): one
            # process saturated a core before offering the full size's 100k points/s.
            "generators": 2}


def setup(ctx):
    return start_topologies(ctx, ctx.params["heartbeat_timeout_s"])


def run_rep(ctx, state) -> dict:
    out = {}
    for mode, topo in state["topos"].items():
        r = _sweep(ctx, topo)
        out[_case_name(mode, ctx.params["runs"])] = r
        ctx.log(f"{mode}: {r['ack_pts_s']:,.0f} of {r['offered_pts_s']:,.0f} points/s acked; "
                f"drain {r['drain_s']:.1f} s; gateway RSS {r['gw_rss_mb']:,.0f} MB, "
                f"{r['gw_cpu']:.2f} cores; false crashes {r['false_crashes']}")
    return out


def _states(http: str, project: str, steps: dict[str, int]) -> tuple[int, int, list[str]]:
    """(runs not yet showing their last step, false crashes, examples of the latter)."""
    behind, crashed, examples = 0, 0, []
    rows = {r["run_id"]: r for r in list_runs(http, ENTITY, project)}
    for run_id, n in steps.items():
        row = rows.get(run_id)
        if row is None or row["last_step"] is None or row["last_step"] < n - 1:
            behind += 1
        if row is not None and (row["state"] != "running" or "crash" in row["state_cause"]):
            crashed += 1
            if len(examples) < 5:
                examples.append(f"{run_id}: {row['state']} ({row['state_cause']})")
    return behind, crashed, examples


def _wait_queryable(ctx, topo, project: str, steps: dict[str, int]) -> tuple[float, int]:
    """Poll the runs list until every run shows its last step; (that moment, false
    crashes seen then)."""
    deadline = time.monotonic() + QUERYABLE_TIMEOUT_S
    while True:
        behind, crashed, examples = _states(topo.http, project, steps)
        t = time.monotonic()
        if not behind:
            if examples:
                ctx.note(f"{topo.mode} rep {ctx.rep}: false crashes, e.g. {examples}")
            return t, crashed
        if t > deadline:
            raise RuntimeError(f"{topo.mode} {project}: {behind} runs not caught up after "
                               f"{QUERYABLE_TIMEOUT_S} s")
        time.sleep(LIST_POLL_S)


def _sweep(ctx, topo) -> dict:
    p = ctx.params
    project = f"sweep-r{ctx.rep}"
    offered = p["runs"] * p["metrics"] * p["steps_per_s"]
    cfg = {"target": topo.grpc, "entity": ENTITY, "project": project, "run_prefix": "t",
           "runs": p["runs"], "metrics": p["metrics"], "streams": p["streams"],
           "window": p["window"], "rate": offered, "duration_s": p["duration_s"],
           "heartbeat_s": p["heartbeat_s"], "linger_s": 0.05, "hold": True, "finish": True,
           "seed": ctx.rep + 1, "progress_s": 10.0}
    gen = LoadGenGroup(cfg, p["generators"], ctx.tmp / f"loadgen-{project}-{topo.mode}.log")
    watch = None
    try:
        watch = _Watch(topo, gen)
        started = gen.wait("started", 300)       # 10,000 streams take a while to open
        loaded = gen.wait("loaded", p["duration_s"] + QUERYABLE_TIMEOUT_S)
        usage, watch = watch.stop(ctx), None
        t_q, crashed = _wait_queryable(ctx, topo, project, loaded["steps"])
        missing, examples = missing_points(topo.http, ENTITY, project, loaded["steps"],
                                           p["metrics"])
        _, crashed_after, _ = _states(topo.http, project, loaded["steps"])
        gen.release()
        done = gen.wait("done", QUERYABLE_TIMEOUT_S)
        gen.finish(done)
    except BaseException:
        gen.kill()
        if watch is not None:
            watch.stop(ctx)
        raise
    wait_runs(topo.http, ENTITY, project, "finished", p["runs"], QUERYABLE_TIMEOUT_S)
    topo.check_alive()
    if missing:
        raise RuntimeError(f"{topo.mode} {project}: {missing} acked points not returned by "
                           f"the query API, e.g. {examples}")
    load_s = loaded["t_logs_acked"] - started["t"]
    gw = "server" if topo.mode == "embedded" else "gateway"
    return {"offered_pts_s": offered,
            "ack_pts_s": loaded["points_acked"] / (loaded["t_logs_acked"] - started["t"]),
            "hb_s": loaded["heartbeats_acked"] / load_s,
            "drain_s": t_q - loaded["t_logs_acked"],
            "false_crashes": max(crashed, crashed_after), "missing_points": missing,
            "gw_rss_mb": usage[f"rss_{gw}"] * 2**20 / 1e6, "gw_cpu": usage[f"cpu_{gw}"],
            "requests": loaded["requests_acked"], "reconnects": loaded["reconnects"],
            "cancelled": loaded["cancelled"],
            **usage, **_gen_usage(started, loaded, loaded["t_logs_acked"])}
