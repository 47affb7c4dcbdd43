"""The anchors of issue 5 on their own: wandb offline `log()` and MLflow `log_batch`."""

from __future__ import annotations

from ..harness import Metric
from ._anchors import (
    MLFLOW_BATCH,
    MLFLOW_VERSION,
    WANDB_METRICS,
    mlflow_anchor,
    versions,
    wandb_anchor,
)
from .client_vs_wandb import WANDB_VERSION

ORDER = 90
TITLE = "Anchors: wandb offline and MLflow `log_batch`, points/s and CPU per point"
ABOUT = f"""\
What the other tools reach on this machine, measured in the same run as the Runstream
figures (`bench/scenarios/_anchors.py`, which other scenarios also call within their own
repetitions so that their ratios come from the same run). Each case of each repetition
runs in a **fresh child process** under the tool's own virtualenv (created once, pinned:
`.cache/bench-venvs/wandb` with wandb {WANDB_VERSION}, `.cache/bench-venvs/mlflow` with
`mlflow=={MLFLOW_VERSION}`), never the project venv.
**wandb offline**: `wandb.init(project="bench", mode="offline")` (system metrics at
wandb's defaults), N × `run.log(d)` with a fresh dict of {WANDB_METRICS} floats built
before each call, `run.finish()` (the `client_vs_wandb` worker, `_cvw_worker.py`).
**MLflow**: `MLFLOW_TRACKING_URI=sqlite:///<tmp>/mlflow.db` (one file per scenario, a new
run per call; creating the schema and the run is untimed), then ⌈P ÷ {MLFLOW_BATCH}⌉ ×
`MlflowClient().log_batch(run_id, metrics=[{MLFLOW_BATCH} Metric])` of 10 keys × 100
consecutive steps, the `Metric` lists built before the timer (`_mlflow_worker.py`);
afterwards the run's metric histories are read back and must hold every point.
**points/s** = points ÷ (first call → last call returned; for wandb, through `finish()`).
**CPU µs/point** = CPU of the client process (all threads, reaped children) plus, for
wandb, its helper processes (wandb-core, wandb-symon) over the same span ÷ points;
**CPU cores** = that CPU ÷ wall time."""
METRICS = [
    Metric("points_s", "points/s"),
    Metric("cpu_us_pt", "CPU µs/point", lower_is_better=True),
    Metric("cpu_cores", "CPU cores"),
    Metric("call_us", "µs per call", lower_is_better=True),
]
REPS = 3
WANDB_CASE = f"wandb {WANDB_VERSION} offline, log() of {WANDB_METRICS} metrics"
MLFLOW_CASE = f"MLflow {MLFLOW_VERSION} log_batch of {MLFLOW_BATCH} metrics, sqlite"
SMOKE = {"wandb_calls": 500, "mlflow_points": 2_000}
GOALS: list[dict] = []        # the anchors are what goals are compared to, not goals


def params(quick: bool) -> dict:
    return {"wandb_calls": 5_000 if quick else 100_000,
            "mlflow_points": 10_000 if quick else 100_000}


def setup(ctx):
    ctx.note("Versions: " + versions(ctx))      # installs the venvs if needed (untimed)
    return {}


def run_rep(ctx, state) -> dict:
    p = ctx.params
    wb = wandb_anchor(ctx, p["wandb_calls"])
    ml = mlflow_anchor(ctx, p["mlflow_points"])
    ctx.log(f"wandb {wb['points_s']:,.0f} points/s ({wb['cpu_us_pt']:.1f} µs CPU/point); "
            f"MLflow {ml['points_s']:,.0f} points/s ({ml['cpu_us_pt']:.1f} µs CPU/point)")
    wb_out = {"points_s": wb["points_s"], "cpu_us_pt": wb["cpu_us_pt"],
              "cpu_cores": wb["cpu_us_pt"] * wb["points"] / 1e6 / wb["seconds"],
              "call_us": wb["seconds"] / p["wandb_calls"] * 1e6,
              "log_us_mean": wb["log_us_mean"], "log_us_p99": wb["log_us_p99"],
              "py_cpu_us_call": wb["py_cpu_us_call"],
              "helper_cpu_us_call": wb["helper_cpu_us_call"], "init_s": wb["init_s"]}
    ml_out = {"points_s": ml["points_s"], "cpu_us_pt": ml["cpu_us_pt"],
              "cpu_cores": ml["cpu_cores"], "call_us": ml["call_ms_mean"] * 1e3,
              "calls": ml["calls"], "setup_s": ml["setup_s"], "rss_mb": ml["rss_mb"]}
    return {WANDB_CASE: wb_out, MLFLOW_CASE: ml_out}
