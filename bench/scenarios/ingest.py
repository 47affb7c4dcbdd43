"""Server-side ingest (issue 5): sustained throughput end to end, and freshness at half load."""

from __future__ import annotations

import statistics
import threading
import time
import urllib.error

from ..harness import Metric
from . import _topology as topo_mod
from ._anchors import mlflow_anchor, versions, wandb_anchor
from ._topology import KafkaLag, LoadGen, Sampler, missing_points, wait_runs
from .anchors import MLFLOW_CASE, WANDB_CASE

ORDER = 50
TITLE = "Server ingest (issue 5): throughput end to end and freshness, embedded and Kafka"
ABOUT = """\
The system under test, started once per scenario (`bench/scenarios/_topology.py`):
**embedded** = one `runstream server --data-dir <tmp> --grpc-port 0 --http-port 0`
(local event log, `fsync=always`, chDB in-process); **kafka** = a single-node KRaft
Kafka broker (1 GiB heap) plus separate processes `runstream gateway`, `runstream server
--roles projector,api` (chDB) and `runstream reaper`, all on a fresh topic of 12
partitions. Both run for the whole scenario, the idle one included; each gets an
untimed warm-up first (100 runs × 10 metrics at full speed for 2 s, until queryable).

The load comes from a lean protocol-level generator, `bench/scenarios/_loadgen.py` (its
own process, not the client library): pre-encoded `Log` events (one `struct.pack` per
step), **one run per request** (the gateway forwards such a request as its bytes), runs
of a stream taking turns, at most `window` unacked requests per stream, `retry_after`
and stream failures obeyed. Each run sends `RunStart` in its first request and a
`Finish` at the end.

**Throughput** (cases "… max rate"): R runs × M metrics per step on `streams` gRPC
streams, each request holding `batch_points` points (`batch_points / M` steps of one
run), as fast as the acks allow, for `duration_s`; then every run's `Finish`.
**points/s end to end** = points acked ÷ (the generator's first send → the first poll of
`GET /api/v1/projects/<e>/<p>/runs?state=finished&limit=1` (every 0.1 s) that counts all
R runs finished). A run's `Finish` follows its last `Log` in its partition and the
projector writes history before run states, so at that moment every point is
queryable; this is then checked point by point (untimed): `GET …/history?runs=…&keys=…
&buckets=1` must give every (run, key) line `total_points` = the run's steps, or the
scenario fails. **acked points/s** = points acked ÷ (first send → last log ack): what the
gateway accepted. **ack → queryable s** = last log ack → all queryable (the projector's
backlog at the end, in seconds). **CPU cores** = each process's utime+stime (/proc) ÷
the case's wall time (start of the generator → all queryable); **RSS MiB** = the largest
VmRSS sampled every 0.5 s meanwhile; the generator's CPU is its own `getrusage` from its
first send to its exit. **Kafka lag** = the largest lag of the projector's
consumer group (end − committed offsets over the topic's partitions, records) sampled
every second.

**Freshness** (cases "… freshness"): the first throughput case's size, at a fixed
offered rate of `freshness_share` × that case's measured points/s end to end (same
repetition, same mode), for `freshness_s`: each run logs steps at an even rate (phases
spread), sending what came due every 50 ms (the client uploader's linger). For
`probe_runs` runs the generator records the ack time of each request; a poller thread
in the benchmark process reads `GET /api/v1/runs/<e>/<p>/<run>/history?keys=m0&buckets=1`
of the probes in turn (a probe every ~0.1 s) and notes each answer's last step and
arrival. Freshness of a request = the first answer with its last step or later
(arrival) − its ack; p50/p99/max over every probe request. The generator, the server
processes, the broker and the poller share the 2 cores.
**Anchors, same repetition**: before the cases of each repetition (the deployments idle)
the `anchors` scenario's two workloads run once each (`bench/scenarios/_anchors.py`, each
in a fresh child process under its own virtualenv): wandb offline, `anchor_wandb_calls` ×
`log()` of 10 metrics, and MLflow `log_batch` of 1,000 metrics against sqlite until
`anchor_mlflow_points`. Every throughput case then has **× wandb** and **× MLflow** =
its points/s end to end ÷ the anchor's points/s of the same repetition, and **server CPU
µs/point** = server-side CPU cores (all processes but the generator) ÷ points/s end to
end, next to the anchors' CPU µs/point (client process and helpers)."""
METRICS = [
    Metric("pts_s", "points/s end to end"),
    Metric("ack_pts_s", "acked points/s"),
    Metric("drain_s", "ack → queryable s", lower_is_better=True),
    Metric("p50_s", "freshness p50 s", lower_is_better=True),
    Metric("p99_s", "freshness p99 s", lower_is_better=True),
    Metric("cpu_servers", "server-side CPU cores (all)", lower_is_better=True),
    Metric("cpu_server", "embedded server CPU cores", lower_is_better=True),
    Metric("cpu_gateway", "gateway CPU cores", lower_is_better=True),
    Metric("cpu_projector", "projector+api CPU cores", lower_is_better=True),
    Metric("cpu_broker", "Kafka broker CPU cores", lower_is_better=True),
    Metric("cpu_generator", "generator CPU cores", lower_is_better=True),
    Metric("rss_server", "embedded server RSS MiB", lower_is_better=True),
    Metric("rss_gateway", "gateway RSS MiB", lower_is_better=True),
    Metric("rss_projector", "projector+api RSS MiB", lower_is_better=True),
    Metric("rss_broker", "broker RSS MiB", lower_is_better=True),
    Metric("lag_max", "Kafka lag max (records)", lower_is_better=True),
    Metric("cpu_us_pt", "server CPU µs/point (anchors: client)", lower_is_better=True),
    Metric("x_wandb", "× wandb points/s"),
    Metric("x_mlflow", "× MLflow points/s"),
    Metric("points_s", "anchor points/s"),
]
REPS = 3
ENTITY = "bench"
# Component names of _topology → metric key suffixes.
SLUGS = {"server": "server", "gateway": "gateway", "projector+api": "projector",
         "reaper": "reaper", "kafka broker": "broker", "generator": "generator"}
POLL_GAP_S = 0.03           # between two probe polls: 3 probes → each every ~0.1 s
QUERYABLE_TIMEOUT_S = 600   # a projector far behind still finishes within this
WARM_UP_S = 2.0            # of load before the first repetition (see warm_up)
FULL_CASES = ["100x10", "1000x10", "1000x100"]
# An even tinier run (the harness's --smoke), merged over params(True).
SMOKE = {"modes": ["embedded", "kafka"], "cases": ["20x10"], "duration_s": 0.5, "freshness_s": 1.5,
         "probe_runs": 2, "anchor_wandb_calls": 500, "anchor_mlflow_points": 2_000}
# The ratios to one client of each anchor, for the embedded deployment.
TARGET_X_WANDB = 20
TARGET_X_MLFLOW = 75


def _case_name(mode: str, runs: int, metrics: int) -> str:
    return f"{mode}: {runs:,} runs × {metrics} metrics, max rate"


def _fresh_name(mode: str, runs: int, metrics: int, share: float) -> str:
    return f"{mode}: {runs:,} runs × {metrics} metrics, freshness at {share:.0%} of max"


GOALS = [
    *({"label": f"throughput, {label}, {c.replace('x', ' runs × ')} metrics",
       "case": _case_name(mode, *map(int, c.split("x"))), "metric": "pts_s",
       "target": target, "higher_is_better": True,
       "anchor": {"case": WANDB_CASE, "metric": "points_s", "label": "wandb"}}
      for mode, label, target in (("embedded", "embedded", 500_000),
                                  ("kafka", "Kafka", 300_000))
      for c in FULL_CASES),
    *({"label": f"freshness at 50 % load, {m}", "case": _fresh_name(m, 100, 10, 0.5),
       "metric": "p99_s", "target": 2.0, "higher_is_better": False}
      for m in ("embedded", "kafka")),
    *({"label": f"throughput, embedded, {c.replace('x', ' runs × ')} metrics ≥ "
                f"{target}× {name} (per-repetition ratio)",
       "case": _case_name("embedded", *map(int, c.split("x"))), "metric": metric,
       "target": target, "higher_is_better": True}
      for c in FULL_CASES
      for name, metric, target in (("wandb", "x_wandb", TARGET_X_WANDB),
                                   ("MLflow log_batch", "x_mlflow", TARGET_X_MLFLOW))),
]


def params(quick: bool) -> dict:
    return {"modes": ["embedded", "kafka"],
            # runs x metrics per step; the first one also sizes the freshness case.
            # Full: 3 of the 2×2 grid (100 runs × 100 metrics left out: the per-request
            # work of 100 runs × 10 and of 1,000 runs × 100 brackets it).
            "cases": ["100x10"] if quick else FULL_CASES,
            # full: 6 s of load + the projector's catch-up per case; 3 repetitions of 2
            # modes × (3 cases + freshness) must fit the harness's 15 minutes
            "duration_s": 1.5 if quick else 6.0,
            # 2,000 points a request: ~40 KB, what one busy client sends per 50 ms linger
            "batch_points": 2000,
            "streams": 8,
            "window": 4,
            "freshness_share": 0.5,
            "freshness_s": 4.0 if quick else 15.0,
            "probe_runs": 3,
            # the anchors scenario's sizes (a wandb run of 100k calls is ~20 s)
            "anchor_wandb_calls": 5_000 if quick else 100_000,
            "anchor_mlflow_points": 10_000 if quick else 100_000}


def _cases(p: dict) -> list[tuple[int, int]]:
    return [tuple(map(int, c.split("x"))) for c in p["cases"]]


def setup(ctx):
    ctx.note("Anchors: " + versions(ctx))      # installs their venvs if needed (untimed)
    return start_topologies(ctx)


def start_topologies(ctx, heartbeat_timeout_s: float = 60.0) -> dict:
    """``{"topos": {mode: Topology}}``: every deployment of ``ctx.params["modes"]``
    started (the reaper's ``heartbeat_timeout_s``) and warmed up; when one fails,
    everything started is stopped again and the error raised."""
    state: dict = {"topos": {}}
    try:
        for mode in ctx.params["modes"]:
            t = topo_mod.make(mode, ctx.tmp / mode, heartbeat_timeout_s)
            state["topos"][mode] = t
            ctx.log(f"{mode} up in {t.start_s:.1f} s: gRPC {t.grpc}, HTTP {t.http}")
            ctx.note(f"{mode}: start (processes up and ready) {t.start_s:.1f} s.")
            warm_up(ctx, t)
    except BaseException:
        teardown(ctx, state)
        raise
    return state


def warm_up(ctx, topo) -> None:
    """Untimed: 100 runs × 10 metrics as fast as allowed for a moment, until queryable
    (the first load on a fresh deployment pays for topic leadership, JIT, first parts)."""
    project = "warm-up"
    cfg = {"target": topo.grpc, "entity": ENTITY, "project": project, "run_prefix": "w",
           "runs": 100, "metrics": 10, "rate": "max", "duration_s": WARM_UP_S}
    gen = LoadGen(cfg, ctx.tmp / f"loadgen-warm-up-{topo.mode}.log")
    try:
        gen.wait("started", 120)
        done = gen.wait("done", QUERYABLE_TIMEOUT_S)
        gen.finish(done)
    except BaseException:
        gen.kill()
        raise
    wait_runs(topo.http, ENTITY, project, "finished", cfg["runs"], QUERYABLE_TIMEOUT_S)


def teardown(ctx, state) -> None:
    problems = []
    for t in state["topos"].values():
        problems += t.stop()
    if problems:
        raise RuntimeError("; ".join(problems))


def run_rep(ctx, state) -> dict:
    p = ctx.params
    out = _anchors(ctx)
    wb, ml = out[WANDB_CASE], out[MLFLOW_CASE]
    for mode, topo in state["topos"].items():
        first = None
        for runs, metrics in _cases(p):
            r = _throughput(ctx, topo, runs, metrics)
            r["cpu_us_pt"] = r["cpu_servers"] / r["pts_s"] * 1e6
            r["x_wandb"] = r["pts_s"] / wb["points_s"]
            r["x_mlflow"] = r["pts_s"] / ml["points_s"]
            out[_case_name(mode, runs, metrics)] = r
            first = first or (runs, metrics, r["pts_s"])
            ctx.log(f"{mode} {runs}×{metrics}: {r['pts_s']:,.0f} points/s end to end "
                    f"({r['x_wandb']:.1f}× wandb, {r['x_mlflow']:.0f}× MLflow), "
                    f"{r['ack_pts_s']:,.0f} acked, drain {r['drain_s']:.1f} s")
        runs, metrics, max_pts = first
        f = _freshness(ctx, topo, runs, metrics, p["freshness_share"] * max_pts)
        out[_fresh_name(mode, runs, metrics, p["freshness_share"])] = f
        ctx.log(f"{mode} freshness at {f['offered_pts_s']:,.0f} points/s: p50 {f['p50_s']:.2f} "
                f"s, p99 {f['p99_s']:.2f} s ({f['samples']} samples)")
    return out


def _anchors(ctx) -> dict:
    """One wandb and one MLflow anchor run (the anchors scenario's cases and metrics)."""
    p = ctx.params
    wb = wandb_anchor(ctx, p["anchor_wandb_calls"])
    ml = mlflow_anchor(ctx, p["anchor_mlflow_points"])
    ctx.log(f"anchors: wandb {wb['points_s']:,.0f} points/s, MLflow {ml['points_s']:,.0f}")
    return {WANDB_CASE: {"points_s": wb["points_s"], "cpu_us_pt": wb["cpu_us_pt"]},
            MLFLOW_CASE: {"points_s": ml["points_s"], "cpu_us_pt": ml["cpu_us_pt"]}}


def _gen_cfg(ctx, topo, project: str, runs: int, metrics: int, **kw) -> dict:
    p = ctx.params
    return {"target": topo.grpc, "entity": ENTITY, "project": project, "run_prefix": "r",
            "runs": runs, "metrics": metrics, "streams": p["streams"], "window": p["window"],
            "batch_points": p["batch_points"], "seed": ctx.rep + 1, **kw}


def _usage(sampled: dict[str, dict[str, float]]) -> dict[str, float]:
    out = {}
    for name, u in sampled.items():
        slug = SLUGS.get(name, name)
        out[f"cpu_{slug}"] = u["cpu_cores"]
        out[f"rss_{slug}"] = u["rss_mib"]
        out[f"hwm_{slug}"] = u["hwm_mib"]
    out["cpu_servers"] = sum(u["cpu_cores"] for n, u in sampled.items() if n != "generator")
    return out


class _Watch:
    """CPU/RSS sampling of the topology and the generator, and Kafka lag if any."""

    def __init__(self, topo, gen: LoadGen) -> None:
        self.topo = topo
        self.sampler = Sampler(topo.pids)
        self.lag = (KafkaLag(topo.broker.bootstrap, topo.topic, topo.partitions)
                    if topo.mode == "kafka" else None)

    def stop(self, ctx) -> dict[str, float]:
        out = _usage(self.sampler.stop())
        if self.lag is not None:
            lag_max, lag_last = self.lag.stop()
            if self.lag.error:
                ctx.note(f"Kafka lag not sampled: {self.lag.error}")
            else:
                out["lag_max"], out["lag_end"] = lag_max, lag_last
        return out


def _run_gen(ctx, topo, cfg: dict, name: str, timeout_s: float) -> tuple[dict, dict, dict]:
    """Run the generator to its end under a _Watch; (started, done, usage). The usage
    covers the generator's run only; the caller measures what comes after."""
    gen = LoadGen(cfg, ctx.tmp / f"loadgen-{name}.log")
    watch = None
    try:
        watch = _Watch(topo, gen)
        started = gen.wait("started", 120)
        done = gen.wait("done", timeout_s)
        gen.finish(done)
    except BaseException:
        gen.kill()
        if watch is not None:
            watch.stop(ctx)
        raise
    return started, done, watch


def _gen_usage(started: dict, done: dict, t_end: float) -> dict[str, float]:
    """The generator's CPU (its own report: it has exited by now) over the case's wall
    time, and its peak RSS."""
    return {"cpu_generator": (done["cpu_s"] - started["cpu_s"]) / (t_end - started["t"]),
            "rss_generator": done["maxrss_mib"]}


def _throughput(ctx, topo, runs: int, metrics: int) -> dict:
    p = ctx.params
    project = f"tp-r{ctx.rep}-{runs}x{metrics}"
    cfg = _gen_cfg(ctx, topo, project, runs, metrics, rate="max", duration_s=p["duration_s"])
    started, done, watch = _run_gen(ctx, topo, cfg, project,
                                    p["duration_s"] + QUERYABLE_TIMEOUT_S)
    try:
        t_q = wait_runs(topo.http, ENTITY, project, "finished", runs, QUERYABLE_TIMEOUT_S)
    finally:
        usage = watch.stop(ctx)
    topo.check_alive()
    _check_points(topo, project, done, metrics)
    t0, pts = started["t"], done["points_acked"]
    return {"pts_s": pts / (t_q - t0), "ack_pts_s": pts / (done["t_logs_acked"] - t0),
            "drain_s": t_q - done["t_logs_acked"], "points": pts,
            "requests": done["requests_acked"], "reconnects": done["reconnects"],
            "retry_after_pauses": done["retry_after_pauses"], **usage,
            **_gen_usage(started, done, t_q)}


def _check_points(topo, project: str, done: dict, metrics: int) -> None:
    missing, examples = missing_points(topo.http, ENTITY, project, done["steps"], metrics)
    if missing:
        raise RuntimeError(f"{topo.mode} {project}: {missing} points logged and acked are "
                           f"not returned by the query API, e.g. {examples}")


class _Poller:
    """Reads the probe runs' last step of ``m0`` in turn until stopped:
    ``seen[run] = [(arrival monotonic, last step or -1), …]``."""

    def __init__(self, http: str, project: str, run_ids: list[str]) -> None:
        self.urls = {r: f"{http}/api/v1/runs/{ENTITY}/{project}/{r}/history?keys=m0&buckets=1"
                     for r in run_ids}
        self.seen: dict[str, list[tuple[float, int]]] = {r: [] for r in run_ids}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="poller")
        self._thread.start()

    def _last_step(self, url: str) -> int:
        try:
            series = topo_mod.http_json(url)["series"]
        except urllib.error.HTTPError as e:
            if e.code == 404:      # the projector has not created the run yet
                return -1
            raise
        return max(series[0]["step"]) if series and series[0]["step"] else -1

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                for run, url in self.urls.items():
                    last = self._last_step(url)
                    self.seen[run].append((time.monotonic(), last))
                    if self._stop.wait(POLL_GAP_S):
                        return
        except BaseException as e:   # re-raised by the scenario
            self.error = e

    def last(self, run: str) -> int:
        return self.seen[run][-1][1] if self.seen[run] else -1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _latencies(acks: list, seen: list[tuple[float, int]]) -> list[float]:
    """Per acked request: first answer at or after its ack showing its last step − ack."""
    out, i = [], 0
    for step, t_ack in sorted(acks, key=lambda a: a[1]):
        while i < len(seen) and seen[i][0] < t_ack:
            i += 1
        j = i
        while j < len(seen) and seen[j][1] < step:
            j += 1
        if j == len(seen):
            raise RuntimeError(f"step {step} (acked) was never returned by the query API")
        out.append(seen[j][0] - t_ack)
    return out


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _freshness(ctx, topo, runs: int, metrics: int, rate: float) -> dict:
    p = ctx.params
    project = f"fr-r{ctx.rep}-{runs}x{metrics}"
    cfg = _gen_cfg(ctx, topo, project, runs, metrics, rate=rate, duration_s=p["freshness_s"],
                   probe_runs=p["probe_runs"], linger_s=0.05)
    probes = [f"r-{i:05d}" for i in range(p["probe_runs"])]
    poller = _Poller(topo.http, project, probes)
    try:
        started, done, watch = _run_gen(ctx, topo, cfg, project,
                                        p["freshness_s"] + QUERYABLE_TIMEOUT_S)
        usage = watch.stop(ctx)
        deadline = time.monotonic() + 60      # the last probe step shows within a minute
        while any(poller.last(r) < done["steps"][r] - 1 for r in probes):
            if poller.error is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{topo.mode} freshness: probes not caught up "
                                   f"({poller.error!r})")
            time.sleep(0.1)
    finally:
        poller.stop()
    wait_runs(topo.http, ENTITY, project, "finished", runs, QUERYABLE_TIMEOUT_S)
    topo.check_alive()
    _check_points(topo, project, done, metrics)
    lat = [x for r in probes for x in _latencies(done["probe_acks"][r], poller.seen[r])]
    if not lat:
        raise RuntimeError(f"{topo.mode} freshness: no samples")
    t0 = started["t"]
    return {"p50_s": statistics.median(lat), "p99_s": _pct(lat, 0.99), "max_s": max(lat),
            "samples": len(lat), "offered_pts_s": rate,
            "ack_pts_s": done["points_acked"] / (done["t_logs_acked"] - t0),
            "polls": sum(len(v) for v in poller.seen.values()), **usage,
            **_gen_usage(started, done, done["t_logs_acked"])}
