"""Query at scale (issue 5): a project of 100,000 runs — runs table, history, bands, recent."""

from __future__ import annotations

import json
import random
import time

import numpy as np
from runstream.v1 import events_pb2
from runstream_server.api.queries import Queries
from runstream_server.api.run_filter import RunFilter
from runstream_server.projector.processor import RowBatch, RunKey, fold_record
from runstream_server.store.client import connect
from runstream_server.store.migrate import apply_migrations
from runstream_server.store.writer import StoreWriter

from ..harness import Metric

ORDER = 47
TITLE = "Query at scale: a project of 100,000 runs (runs table, 1M-point history, bands)"
ENTITY, PROJECT = "bench", "scale"
T0_US = 1_700_000_000_000_000
STEP_US = 100_000                      # client time between two steps of a run
CHART_KEY = "train/loss"
ARCHS = ("resnet18", "resnet50", "resnet101", "vit-s16", "vit-b16", "vit-l16",
         "convnext-t", "convnext-b", "efficientnet-b0", "mlp-mixer")
OPTIMIZERS = ("adam", "adamw", "sgd", "lion")
FILTER_OPTIMIZER = "adam"
SORT_KEY = "val/loss"
SUMMARY_KEYS = (CHART_KEY, SORT_KEY, "val/acc", "train/acc", "lr", "epoch", "grad_norm",
                *(f"eval/metric_{j:02d}" for j in range(13)))
STATES = ("finished", "failed", "crashed", "running")
STATE_WEIGHTS = (70, 10, 5, 15)
HISTORY_BATCH = 250_000                # points per write of the long run's history
BAND_BATCH = 500_000                   # points per write of the band runs' history
BUCKETS = 1500
RECENT = 10
MERGEABLE = ("history_numeric", "history_series", "history_rollup", "history_other", "runs")

RUNS_CASE = "runs table: filter config.optimizer, sort summary.val/loss, first page of 50"
HISTORY_CASE = "history: 1 run × 1 key, downsampled to 1,500 buckets (get_history)"
BANDS_CASE = "bands: sweep runs × 1,000 steps, mean/std by config.arch (bands)"
RECENT_CASE = "10 most recent runs, full RunView (list_runs sort created_at desc)"
RECENT_GET_CASE = "10 most recent runs, one get_run each"
AS_INSERTED, OPTIMIZED = "as inserted", "optimized"

ABOUT = f"""\
The issue-5 read targets on a project of **100,000 runs** (`{ENTITY}/{PROJECT}`), as
server time: `api/queries.py` `Queries` on chDB in-process, called directly (no HTTP;
the time includes the conversion to the dicts the API serves). The store is loaded once
(untimed) by folding generated records with `projector/processor.py` `fold_record` and
writing the batches with `store/writer.py` `StoreWriter.write`, in 3 passes over every
run (so 3 row versions per run in `runs`), each pass written in batches of W runs:
(1) `RunStart`: name, tags, start time (a random order of the runs), 12 config keys
(`arch` of 10 values, `optimizer` of 4, `lr`, `batch_size`, …) and metadata (user, host,
git, Python, GPUs); (2) one `Log` of {len(SUMMARY_KEYS)} numeric keys at the run's last
step (→ {len(SUMMARY_KEYS)} summary keys and history points per run); (3) `Finish` (70 %
finished, 10 % failed), a reaper `Crashed` (5 %) or nothing (15 % running). History added
with `RowBatch.numeric.add`: run 0 holds **1,000,000 steps** of `{CHART_KEY}` (4 writes of
{HISTORY_BATCH:,}, float32-origin noisy curve), and **1,000 runs** tagged `sweep` hold
**1,000 steps** each (writes of {BAND_BATCH:,} points, each holding every sweep run).
Cases: **runs table** `list_runs(filter=RunFilter(config=[("optimizer", '"adam"')]),
sort_by="summary.{SORT_KEY}", limit=50)` (a quarter of the runs match; the page and the
`count() OVER ()` total in one query); **history** `get_history(run 0, ["{CHART_KEY}"],
buckets={BUCKETS})` (1M points → {BUCKETS:,} buckets of min/max/last); **bands**
`bands("{CHART_KEY}", group_by="arch", RunFilter(tags=["sweep"]), buckets={BUCKETS})`
(10 groups; 1,000 steps → one bucket per step: per group and step mean, std, min, max);
**recent** `list_runs(sort_by="created_at", descending=True, limit={RECENT})` (every RunView
field: config, summary, metadata, state…), and for reference {RECENT} × `get_run` of
those runs. Each on the tables **{AS_INSERTED}** (background merges stopped, parts as
written) and **{OPTIMIZED}** (a copy: `INSERT … SELECT` of `history_numeric`,
`history_other`, `runs` — the views rebuild `history_series` and `history_rollup` — then
`OPTIMIZE … FINAL` of every table). One untimed call of each first (it checks the answer:
counts, buckets, the recent run ids), then one timed call per repetition."""
METRICS = [
    Metric("ms", "server ms", lower_is_better=True),
    Metric("returned", "runs / points / groups returned"),
    Metric("matching", "runs matching / points read"),
]
REPS = 5
SMOKE = {"runs": 400, "runs_per_write": 200, "history_points": 20_000, "band_runs": 20,
         "band_steps": 100}
GOALS = [
    {"label": f"runs table, 100k runs ({label})", "case": f"{RUNS_CASE} ({label})",
     "metric": "ms", "target": 50, "higher_is_better": False}
    for label in (AS_INSERTED, OPTIMIZED)
] + [
    {"label": f"1M-point history → 1,500 buckets ({label})",
     "case": f"{HISTORY_CASE} ({label})", "metric": "ms", "target": 40,
     "higher_is_better": False}
    for label in (AS_INSERTED, OPTIMIZED)
] + [
    {"label": f"group band, 1,000 runs × 1,000 steps ({label})",
     "case": f"{BANDS_CASE} ({label})", "metric": "ms", "target": 150,
     "higher_is_better": False}
    for label in (AS_INSERTED, OPTIMIZED)
]


def params(quick: bool) -> dict:
    return {"runs": 10_000 if quick else 100_000,
            "runs_per_write": 10_000 if quick else 50_000,
            "history_points": 200_000 if quick else 1_000_000,
            "band_runs": 200 if quick else 1_000,
            "band_steps": 1_000}


# --- the runs -------------------------------------------------------------------------------

def _plan_runs(p: dict) -> list[dict]:
    """One dict per run: id, kind (long / band / other), config, tags, state, start, last."""
    rnd = random.Random(11)
    n = p["runs"]
    order = list(range(n))
    rnd.shuffle(order)                   # start times in a random order of the runs
    runs = []
    for i in range(n):
        kind = "long" if i == 0 else "band" if i <= p["band_runs"] else "other"
        last = (p["history_points"] - 1 if kind == "long" else
                p["band_steps"] - 1 if kind == "band" else rnd.randrange(100, 20_000))
        runs.append({
            "i": i, "id": f"run-{i:06d}", "kind": kind, "last": last,
            "start_us": T0_US + order[i] * 60_000_000,
            "arch": rnd.randrange(len(ARCHS)), "optimizer": OPTIMIZERS[i % len(OPTIMIZERS)],
            "tags": ["bench", f"t{i % 7}"] + (["sweep"] if kind == "band" else []),
            "state": rnd.choices(STATES, STATE_WEIGHTS)[0],
            "lr": 10 ** -rnd.uniform(2, 5), "seed": rnd.randrange(10_000)})
    return runs


def _config(r: dict) -> dict[str, object]:
    return {"arch": ARCHS[r["arch"]], "optimizer": r["optimizer"], "lr": r["lr"],
            "batch_size": 2 ** (5 + r["i"] % 4), "seed": r["seed"], "epochs": 90,
            "dataset": "imagenet-1k", "weight_decay": 0.05, "warmup_steps": 500,
            "precision": "bf16", "grad_clip": 1.0, "label_smoothing": 0.1}


def _metadata(md: events_pb2.RunMetadata, r: dict) -> None:
    md.hostname = f"gpu-node-{r['i'] % 64:02d}"
    md.os = "Linux-6.8.0-x86_64-with-glibc2.39"
    md.python_version = "3.11.9"
    md.python_executable = "/opt/conda/bin/python"
    md.args.extend(["train.py", "--config", f"configs/{ARCHS[r['arch']]}.yaml"])
    md.git_commit = f"{r['i'] * 2654435761 % 2**40:010x}"
    md.git_remote = "git@example.com:team/trainer.git"
    md.git_branch = "main"
    md.cpu_count = 32
    md.memory_bytes = 256 << 30
    md.gpus.extend(["NVIDIA A100-SXM4-80GB"] * 8)
    md.client_version = "0.1.0"
    md.username = f"user{r['i'] % 25:02d}"
    md.program = "train.py"
    md.cwd = "/home/user/trainer"


def _records(runs: list[dict], part: int) -> list[bytes]:
    """Part 0: RunStart; 1: Log of every summary key at the last step; 2: the end."""
    out = []
    rnd = random.Random(100 + part)
    for r in runs:
        rec = events_pb2.LogRecord(server_time_us=r["start_us"] + part * 3_600_000_000)

        def event(seq: int, r=r, rec=rec):
            return rec.events.add(run_id=r["id"], project=PROJECT, entity=ENTITY, seq=seq,
                                  client_time_us=rec.server_time_us - 500)

        if part == 0:
            rs = event(1).run_start
            rs.name = f"{ARCHS[r['arch']]}-{r['i']}"
            rs.tags.extend(r["tags"])
            rs.start_time_us = r["start_us"]
            for k, v in _config(r).items():
                rs.config[k].json = json.dumps(v)
            _metadata(rs.metadata, r)
        elif part == 1:
            lg = event(2).log
            lg.step = r["last"]
            numbers = {k: rnd.random() for k in SUMMARY_KEYS}
            numbers[CHART_KEY] = float(_curve(r, np.array([r["last"]]))[0])
            lg.numbers.update(numbers)
        elif r["state"] in ("finished", "failed"):
            event(3).finish.exit_code = 0 if r["state"] == "finished" else 1
        elif r["state"] == "crashed":
            c = event(0).crashed
            c.detector, c.reason, c.after_seq = "bench", "no heartbeat for 300 s", 2
            c.last_seen_us = rec.server_time_us - 300_000_000
        else:
            continue
        out.append(rec.SerializeToString())
    return out


def _curve(r: dict, steps: np.ndarray) -> np.ndarray:
    """``train/loss`` of run r at ``steps``: a float32 noisy decreasing curve, as float64."""
    rng = np.random.default_rng(r["i"])
    s = steps.astype(np.float32)
    scale = np.float32(1e4 if r["kind"] == "long" else 100.0)
    base = np.float32(0.5 + 0.15 * r["arch"] + rng.random())
    noise = rng.normal(0, 0.01, len(s)).astype(np.float32)
    return (base / (np.float32(1) + s / scale) + noise).astype(np.float64)


# --- loading -------------------------------------------------------------------------------

def _write_history(writer: StoreWriter, runs: list[dict], n_steps: int, batch_points: int,
                   tag: str) -> int:
    """Steps 0 … n_steps - 2 of ``CHART_KEY`` of ``runs`` (the last is in their Log),
    ``batch_points`` per write, each write holding every run of ``runs``."""
    key = [CHART_KEY]
    per_write = max(1, batch_points // len(runs))
    written = 0
    for lo in range(0, n_steps - 1, per_write):
        hi = min(n_steps - 1, lo + per_write)
        steps = np.arange(lo, hi)
        batch = RowBatch()
        add = batch.numeric.add
        for r in runs:
            run = RunKey(ENTITY, PROJECT, r["id"])
            base_ts = r["start_us"]
            for step, v in zip(steps.tolist(), _curve(r, steps).tolist(), strict=True):
                add(run, step, base_ts + step * STEP_US, step + 10, key, [v])
        writer.write(batch, f"{tag}:{lo}")
        written += len(batch.numeric)
    return written


def _load(ctx, client, db: str) -> list[dict]:
    p = ctx.params
    apply_migrations(client, db)
    for table in MERGEABLE:
        client.command(f"SYSTEM STOP MERGES {db}.{table}")
    writer = StoreWriter(client, db)
    runs = _plan_runs(p)
    states: dict = {}
    offset = 0

    def fold_write(part: int) -> None:
        nonlocal offset
        w = p["runs_per_write"]
        for lo in range(0, len(runs), w):
            batch = RowBatch()
            for rec in _records(runs[lo:lo + w], part):
                fold_record(states, rec, 0, offset, batch)
                offset += 1
            writer.write(batch, f"runs:{part}:{lo}")

    t = time.perf_counter()
    fold_write(0)
    t_runs = time.perf_counter() - t
    n = _write_history(writer, [r for r in runs if r["kind"] == "long"], p["history_points"],
                       HISTORY_BATCH, "long")
    n += _write_history(writer, [r for r in runs if r["kind"] == "band"], p["band_steps"],
                        BAND_BATCH, "band")
    t_hist = time.perf_counter() - t - t_runs
    fold_write(1)
    fold_write(2)
    ctx.log(f"loaded {len(runs):,} runs ({time.perf_counter() - t - t_hist:.1f} s) and "
            f"{n + len(runs) * len(SUMMARY_KEYS):,} history points ({t_hist:.1f} s)")
    return runs


def _optimized_copy(client, src: str, dst: str) -> None:
    apply_migrations(client, dst)
    for table in ("history_numeric", "history_other", "runs"):
        client.command(f"INSERT INTO {dst}.{table} SELECT * FROM {src}.{table}")
    for table in (*MERGEABLE, "workspaces"):
        client.command(f"OPTIMIZE TABLE {dst}.{table} FINAL")


def _parts(client, db: str) -> str:
    rows = client.query(
        "SELECT table, count(), sum(rows) FROM system.parts WHERE database = {db:String} "
        "AND active AND table IN {t:Array(String)} GROUP BY table ORDER BY table",
        parameters={"db": db, "t": list(MERGEABLE)}).result_rows
    return ", ".join(f"{t} {n} parts ({rows:,} rows)" for t, n, rows in rows)


# --- cases ---------------------------------------------------------------------------------

def _expected(p: dict, runs: list[dict]) -> dict:
    recent = sorted(runs, key=lambda r: r["start_us"], reverse=True)[:RECENT]
    return {"adam": sum(1 for r in runs if r["optimizer"] == FILTER_OPTIMIZER),
            "recent": [r["id"] for r in recent],
            "band_groups": len({r["arch"] for r in runs if r["kind"] == "band"}),
            "long_id": runs[0]["id"]}


def _cases(q: Queries, p: dict, want: dict) -> dict:
    """case name → (check, call). ``check(result)`` returns (returned, matching) or raises."""
    flt = RunFilter(config=[("optimizer", json.dumps(FILTER_OPTIMIZER))])
    sweep = RunFilter(tags=["sweep"])

    def runs_check(res):
        page, total = res
        if total != want["adam"] or len(page) != min(50, want["adam"]):
            raise RuntimeError(f"runs table: {len(page)} runs of {total}, expected "
                               f"{min(50, want['adam'])} of {want['adam']}")
        return len(page), total

    def history_check(res):
        (s,) = res
        if s["total_points"] != p["history_points"] or not 0 < len(s["step"]) <= BUCKETS:
            raise RuntimeError(f"history: {len(s['step'])} buckets of {s['total_points']} "
                               f"points, expected ≤ {BUCKETS} of {p['history_points']}")
        return len(s["step"]), s["total_points"]

    def bands_check(res):
        groups = res["groups"]
        n_runs = sum(g["count"] for g in groups)
        steps = min(p["band_steps"], BUCKETS)
        if (n_runs != p["band_runs"] or len(groups) != want["band_groups"]
                or res["buckets"] != steps):
            raise RuntimeError(f"bands: {len(groups)} groups of {n_runs} runs, "
                               f"{res['buckets']} buckets; expected {want['band_groups']} "
                               f"of {p['band_runs']}, {steps}")
        return len(groups), n_runs

    def recent_check(res):
        page = res[0] if isinstance(res, tuple) else res
        ids = [r["run_id"] for r in page]
        if ids != want["recent"] or not all(r["config"] and r["metadata_json"] for r in page):
            raise RuntimeError(f"recent runs: {ids}, expected {want['recent']}")
        return len(page), res[1] if isinstance(res, tuple) else len(page)

    return {
        RUNS_CASE: (runs_check, lambda: q.list_runs(
            ENTITY, PROJECT, flt, f"summary.{SORT_KEY}", False, 50, 0)),
        HISTORY_CASE: (history_check, lambda: q.get_history(
            ENTITY, PROJECT, want["long_id"], [CHART_KEY], BUCKETS, 0, 0)),
        BANDS_CASE: (bands_check, lambda: q.bands(
            ENTITY, PROJECT, CHART_KEY, "arch", sweep, BUCKETS)),
        RECENT_CASE: (recent_check, lambda: q.list_runs(
            ENTITY, PROJECT, None, "created_at", True, RECENT, 0)),
        RECENT_GET_CASE: (recent_check, lambda: [
            q.get_run(ENTITY, PROJECT, rid) for rid in want["recent"]]),
    }


# --- scenario ------------------------------------------------------------------------------

def setup(ctx):
    p = ctx.params
    client = connect(f"chdb:///{ctx.tmp / 'chdb'}", "bench")
    db, merged = "scale_parts", "scale_merged"
    runs = _load(ctx, client, db)
    t = time.perf_counter()
    _optimized_copy(client, db, merged)
    ctx.log(f"optimized copy in {time.perf_counter() - t:.1f} s")
    ctx.note(f"As inserted: {_parts(client, db)}. After OPTIMIZE FINAL: "
             f"{_parts(client, merged)}.")
    want = _expected(p, runs)
    ctx.note(f"The runs table filter matches {want['adam']:,} of {p['runs']:,} runs; the band "
             f"covers {p['band_runs']:,} runs in {want['band_groups']} groups.")
    cases = {}
    for label, d in ((AS_INSERTED, db), (OPTIMIZED, merged)):
        for name, (check, fn) in _cases(Queries(client, d), p, want).items():
            check(fn())                   # untimed first call; checks the answer
            cases[f"{name} ({label})"] = (check, fn)
    return {"client": client, "cases": cases}


def teardown(ctx, state) -> None:
    state["client"].close()


def run_rep(ctx, state) -> dict:
    out = {}
    for name, (check, fn) in state["cases"].items():
        t = time.perf_counter()
        result = fn()
        ms = (time.perf_counter() - t) * 1e3
        returned, matching = check(result)
        out[name] = {"ms": ms, "returned": returned, "matching": matching}
    return out
