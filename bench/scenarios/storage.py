"""Storage (issue 5): bytes per point after merges for float32-origin training curves."""

from __future__ import annotations

import time

import numpy as np
from runstream_server.projector.processor import RowBatch, RunKey
from runstream_server.store.client import connect
from runstream_server.store.migrate import apply_migrations
from runstream_server.store.writer import StoreWriter

from ..harness import Metric

ORDER = 55
TITLE = "Storage: bytes per point after merges, float32-origin training curves"
HISTORY = ("history_numeric", "history_rollup", "history_series")
ID_COLUMNS = ("entity", "project", "run_id", "key")
SHOWN_COLUMNS = ("value", "ts", "step", "seq")
KEYS = 10                     # metrics per Log event (one event per run and step)
BATCH_POINTS = 500_000        # points per write, as the projector's big batches
STEP_US = 250_000             # client time between steps (a training step of ~0.25 s) …
JITTER_US = 20_000            # … ± this much (real step times vary)
T0_US = 1_700_000_000_000_000
ENTITY, PROJECT = "bench", "storage"
NOISY = "noisy loss-like curves (every key)"
TYPICAL = "typical run keys (loss, acc, lr schedule, epoch, grad norm, …)"
ABOUT = f"""\
Bytes on disk per stored point of numeric history, for values that come from float32
(what `loss.item()` of a float32 tensor gives: generated with numpy in float32, then
stored as float64 as the client sends them). Data: R runs × {KEYS} keys × S steps, one
`Log` event per run and step (all keys, one client time: step × {STEP_US // 1000} ms ±
{JITTER_US // 1000} ms, seq = step + 2), added with `RowBatch.numeric.add` and written with
`StoreWriter.write` (Arrow insert into `history_numeric`; its materialized views fill
`history_rollup` and `history_series`) in batches of ~{BATCH_POINTS:,} points holding every
run (as a projector writes them), background merges stopped, every part Wide
(`min_bytes_for_wide_part = 0`, as a real table's parts are). Two value sets: **{NOISY}**
(decreasing curves with float32 Gaussian noise: the pessimistic case) and **{TYPICAL}**
(train/val loss and accuracy curves, a warm-up + cosine learning rate, epoch, grad norm,
throughput, GPU memory in whole MB, loss scale). Per repetition and case a fresh
database; bytes are read from `system.parts` (`bytes_on_disk` of the active parts: column
files, marks, primary index, the `step` min-max index, checksums) **as inserted**, then
after `OPTIMIZE TABLE … FINAL` of each history table (one part per table). **history_numeric
B/point** = its bytes ÷ points; **all history tables** adds `history_rollup` (one row per
16-step block of a series) and `history_series` (one row per series), both kept by
materialized views. Column figures are `system.parts_columns.column_bytes_on_disk` (data +
marks) of `history_numeric` after the merge ÷ points; ids = entity + project + run_id +
key; rest = the other columns (`rewrite`) plus the part's primary index, the `step`
min-max index and checksums."""
METRICS = [
    Metric("b_pt", "history_numeric B/point", lower_is_better=True),
    Metric("b_pt_all", "all history tables B/point", lower_is_better=True),
    Metric("b_pt_inserted", "history_numeric as inserted B/point", lower_is_better=True),
    Metric("value_b_pt", "value B/pt", lower_is_better=True),
    Metric("ts_b_pt", "ts B/pt", lower_is_better=True),
    Metric("step_b_pt", "step B/pt", lower_is_better=True),
    Metric("seq_b_pt", "seq B/pt", lower_is_better=True),
    Metric("ids_b_pt", "ids B/pt", lower_is_better=True),
    Metric("rest_b_pt", "rest B/pt", lower_is_better=True),
]
REPS = 3
SMOKE = {"runs": 4, "steps": 500}
GOALS = [
    {"label": "storage, float32-origin curves", "case": NOISY, "metric": "b_pt",
     "target": 6, "higher_is_better": False},
]


def params(quick: bool) -> dict:
    return {"runs": 20 if quick else 50, "keys": KEYS, "steps": 2_000 if quick else 10_000}


# --- values -------------------------------------------------------------------------------

def _noisy(rng: np.random.Generator, s: np.ndarray) -> np.ndarray:
    """(steps, KEYS) float32: decreasing curves, each with its own scale, rate and noise."""
    scale = rng.uniform(0.5, 5.0, KEYS).astype(np.float32)
    rate = rng.uniform(100, 3000, KEYS).astype(np.float32)
    noise = rng.normal(0, 0.03, (len(s), KEYS)).astype(np.float32)
    return scale / (np.float32(1) + s[:, None] / rate) * (np.float32(1) + noise)


def _typical(rng: np.random.Generator, s: np.ndarray) -> np.ndarray:
    """(steps, KEYS) float32: the keys of a typical training run, in float32."""
    n = len(s)
    f = np.float32
    last = f(max(1, n - 1))
    warm = f(max(1, n // 20))
    noise = lambda sd: rng.normal(0, sd, n).astype(f)           # noqa: E731
    loss = f(2.5) / (f(1) + s / f(500)) + f(0.1)
    train_loss = loss * (f(1) + noise(0.05))
    val_loss = loss * f(1.05) * (f(1) + noise(0.02))
    train_acc = np.clip(f(1) - loss / f(2.6) + noise(0.02), 0, 1)
    val_acc = np.clip(f(0.98) - loss / f(2.6) + noise(0.01), 0, 1)
    lr = np.where(s < warm, f(3e-4) * s / warm,
                  f(1.5e-4) * (f(1) + np.cos(np.float32(np.pi) * (s - warm) / (last - warm))))
    epoch = s / f(390)                                   # 390 steps an epoch (CIFAR, bs 128)
    grad_norm = np.exp(rng.normal(0, 0.3, n)).astype(f) * loss
    samples_s = f(1800) * (f(1) + noise(0.03))
    gpu_mem_mb = np.round(f(10_240) + np.cumsum(rng.integers(0, 2, n)).astype(f))
    loss_scale = np.where(s < n // 3, f(65_536), f(32_768))
    return np.stack([train_loss, val_loss, train_acc, val_acc, lr, epoch, grad_norm,
                     samples_s, gpu_mem_mb, loss_scale], axis=1).astype(f)


_NAMES = {NOISY: [f"train/loss_{k}" for k in range(KEYS)],
          TYPICAL: ["train/loss", "val/loss", "train/acc", "val/acc", "lr", "epoch",
                    "grad_norm", "samples_per_s", "gpu/mem_mb", "loss_scale"]}
_VALUES = {NOISY: _noisy, TYPICAL: _typical}


# --- load and measure ------------------------------------------------------------------------

def _write(writer: StoreWriter, case: str, p: dict) -> int:
    """Every run's points, ``BATCH_POINTS`` per write; returns the points written."""
    runs, steps = p["runs"], p["steps"]
    names = _NAMES[case]
    s = np.arange(steps, dtype=np.float32)
    values, times = [], []
    for r in range(runs):
        rng = np.random.default_rng(r)
        values.append(_VALUES[case](rng, s).astype(np.float64).tolist())
        jitter = rng.integers(-JITTER_US, JITTER_US, steps)
        times.append((T0_US + r * 1_000_000 + np.arange(steps) * STEP_US + jitter).tolist())
    keys = [RunKey(ENTITY, PROJECT, f"run-{r:04d}") for r in range(runs)]
    per_write = max(1, BATCH_POINTS // (runs * KEYS))
    written = 0
    for lo in range(0, steps, per_write):
        batch = RowBatch()
        add = batch.numeric.add
        for r in range(runs):
            vals, ts = values[r], times[r]
            for step in range(lo, min(steps, lo + per_write)):
                add(keys[r], step, ts[step], step + 2, names, vals[step])
        writer.write(batch, None)
        written += len(batch.numeric)
    return written


def _table_bytes(client, db: str) -> dict[str, tuple[int, int, int]]:
    """table → (rows, bytes on disk, active parts) of the history tables."""
    rows = client.query(
        "SELECT table, sum(rows), sum(bytes_on_disk), count() FROM system.parts "
        "WHERE database = {db:String} AND active AND table IN {t:Array(String)} "
        "GROUP BY table", parameters={"db": db, "t": list(HISTORY)}).result_rows
    return {t: (int(n), int(b), int(c)) for t, n, b, c in rows}


def _column_bytes(client, db: str) -> dict[str, int] | None:
    """column → bytes on disk (data + marks) in the active parts of ``history_numeric``;
    None when a part is not Wide (a small part keeps every column in one file)."""
    types = client.query(
        "SELECT DISTINCT part_type FROM system.parts WHERE database = {db:String} "
        "AND table = 'history_numeric' AND active", parameters={"db": db}).result_rows
    if [t for (t,) in types] != ["Wide"]:
        return None
    rows = client.query(
        "SELECT column, sum(column_bytes_on_disk) FROM system.parts_columns "
        "WHERE database = {db:String} AND table = 'history_numeric' AND active "
        "GROUP BY column", parameters={"db": db}).result_rows
    return {c: int(b) for c, b in rows}


def _measure(client, db: str, case: str, p: dict) -> dict:
    apply_migrations(client, db)
    # Every part Wide (one file per column), as the parts of a real history table are: a
    # small run's parts would otherwise be Compact and their columns not measurable.
    client.command(f"ALTER TABLE {db}.history_numeric MODIFY SETTING "
                   "min_bytes_for_wide_part = 0, min_rows_for_wide_part = 0")
    for t in HISTORY:
        client.command(f"SYSTEM STOP MERGES {db}.{t}")
    t0 = time.perf_counter()
    points = _write(StoreWriter(client, db), case, p)
    write_s = time.perf_counter() - t0
    inserted = _table_bytes(client, db)
    t0 = time.perf_counter()
    for t in HISTORY:
        client.command(f"SYSTEM START MERGES {db}.{t}")
        client.command(f"OPTIMIZE TABLE {db}.{t} FINAL")
    optimize_s = time.perf_counter() - t0
    merged = _table_bytes(client, db)
    cols = _column_bytes(client, db)
    stored = client.query(f"SELECT count() FROM {db}.history_numeric").result_rows[0][0]
    want = p["runs"] * p["keys"] * p["steps"]
    if not points == stored == merged["history_numeric"][0] == want:
        raise RuntimeError(f"{db}: wrote {points} points, table holds {stored} "
                           f"(active parts {merged['history_numeric'][0]}), expected {want}")
    if any(merged[t][2] != 1 for t in HISTORY):
        raise RuntimeError(f"{db}: OPTIMIZE FINAL left {merged} parts")
    total = merged["history_numeric"][1]
    out = {"b_pt": total / points,
           "b_pt_all": sum(merged[t][1] for t in HISTORY) / points,
           "b_pt_inserted": inserted["history_numeric"][1] / points,
           "rollup_b_pt": merged["history_rollup"][1] / points,
           "series_b_pt": merged["history_series"][1] / points,
           "parts_inserted": inserted["history_numeric"][2],
           "write_pts_s": points / write_s, "optimize_s": optimize_s}
    if cols is not None:
        shown = {c: cols.get(c, 0) for c in SHOWN_COLUMNS}
        ids = sum(cols.get(c, 0) for c in ID_COLUMNS)
        out.update({f"{c}_b_pt": b / points for c, b in shown.items()})
        out["ids_b_pt"] = ids / points
        out["rest_b_pt"] = (total - sum(shown.values()) - ids) / points
    return out


# --- scenario ------------------------------------------------------------------------------

def setup(ctx):
    return {"client": connect(f"chdb:///{ctx.tmp / 'chdb'}", "bench")}


def teardown(ctx, state) -> None:
    state["client"].close()


def run_rep(ctx, state) -> dict:
    client = state["client"]
    out = {}
    for i, case in enumerate((NOISY, TYPICAL)):
        db = f"storage_r{ctx.rep}_c{i}"
        try:
            out[case] = _measure(client, db, case, ctx.params)
        finally:
            client.command(f"DROP DATABASE IF EXISTS {db} SYNC")
    if "value_b_pt" not in out[NOISY]:
        ctx.note("The merged part is Compact (too small for one file per column): no "
                 "per-column figures at this size.")
    parts = out[NOISY]["parts_inserted"]
    ctx.note(f"As inserted, history_numeric held {parts:.0f} parts per case (merges stopped); "
             "after OPTIMIZE FINAL one. Points are counted before and after.")
    ctx.log("; ".join(f"{c.split(' (')[0]}: {r['b_pt']:.2f} B/point ({r['b_pt_all']:.2f} all)"
                      for c, r in out.items()))
    return out
