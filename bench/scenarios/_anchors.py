"""The anchors of issue 5, callable from any scenario's repetition: wandb and MLflow.

``wandb_anchor(ctx, calls)`` and ``mlflow_anchor(ctx, points)`` each run the other
tool once, in a fresh child process under the tool's own virtualenv, and return at
least ``{"points_s": float, "cpu_us_pt": float}``. A scenario calls them inside its own
``run_rep`` so that its figures and the anchors come from the same run, on the same
machine state; ``anchors.py`` records both on their own.

- wandb: ``.cache/bench-venvs/wandb``, made by ``client_vs_wandb.ensure_wandb_venv``
  (its pinned version); the workload is that scenario's worker (``_cvw_worker.py``):
  ``init()``, ``calls`` × ``run.log(<10 floats>)``, ``finish()``, offline.
- MLflow: ``.cache/bench-venvs/mlflow``, made here once with ``MLFLOW_VERSION`` pinned;
  the workload is ``_mlflow_worker.py``: ``MlflowClient().log_batch`` of 1,000 metrics
  (10 keys × 100 steps) against a sqlite tracking URI in the scenario's tmp dir.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..harness import REPO
from .client_vs_wandb import _base_python, _worker, ensure_wandb_venv

# The version measured in /work/shared/reference/perf-anchors.md §2 (MLflow 3.x).
MLFLOW_VERSION = "3.17.2"
MLFLOW_VENV = REPO / ".cache" / "bench-venvs" / "mlflow"
MLFLOW_STAMP = MLFLOW_VENV / f".installed-mlflow-{MLFLOW_VERSION}"
MLFLOW_WORKER = Path(__file__).with_name("_mlflow_worker.py")
# pip resolving and installing mlflow and its ~80 dependencies on 2 cores.
INSTALL_TIMEOUT_S = 1200
# 100k points of log_batch at ~6.7k points/s is ~15 s; first use also creates the schema.
MLFLOW_TIMEOUT_S = 600
WANDB_METRICS = 10            # floats per wandb log() call (the _cvw_worker workload)
MLFLOW_BATCH = 1000           # metrics per log_batch call (perf-anchors §2)

_calls = itertools.count()    # distinct work directories within one repetition


def _run_checked(cmd: list[str], what: str, timeout: float) -> str:
    """Run ``cmd``; its output, or ``RuntimeError`` with the output when it fails."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{what}: timed out after {timeout:g} s\n"
                           f"{e.stdout or ''}{e.stderr or ''}") from None
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed: {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    return r.stdout


def mlflow_python() -> Path:
    return MLFLOW_VENV / "bin" / "python"


def ensure_mlflow_venv(ctx) -> dict[str, str]:
    """Create ``.cache/bench-venvs/mlflow`` with MLflow pinned, once (later calls re-use
    it); return its packages (``pip freeze``) plus its Python version."""
    MLFLOW_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(MLFLOW_VENV.parent / ".mlflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # two bench runs never install at once
        if not (MLFLOW_STAMP.exists() and mlflow_python().exists()):
            ctx.log(f"creating {MLFLOW_VENV.relative_to(REPO)} "
                    f"(pip install mlflow=={MLFLOW_VERSION})")
            shutil.rmtree(MLFLOW_VENV, ignore_errors=True)
            t = time.perf_counter()
            _run_checked([_base_python(), "-m", "venv", str(MLFLOW_VENV)],
                         "creating the mlflow venv", INSTALL_TIMEOUT_S)
            _run_checked([str(mlflow_python()), "-m", "pip", "install",
                          "--disable-pip-version-check", f"mlflow=={MLFLOW_VERSION}"],
                         "installing mlflow", INSTALL_TIMEOUT_S)
            freeze = _run_checked([str(mlflow_python()), "-m", "pip", "freeze"],
                                  "pip freeze", 120)
            MLFLOW_STAMP.write_text(freeze)
            ctx.log(f"mlflow venv ready in {time.perf_counter() - t:.0f} s")
    pkgs = dict(line.split("==", 1) for line in MLFLOW_STAMP.read_text().splitlines()
                if "==" in line)
    py = _run_checked([str(mlflow_python()), "-c",
                       "import platform; print(platform.python_version())"],
                      "reading the mlflow venv's Python version", 60).strip()
    return {"python": py, **pkgs}


def wandb_anchor(ctx, calls: int) -> dict:
    """wandb offline: ``calls`` × ``run.log`` of 10 floats in a fresh process.

    ``points_s`` = calls × 10 ÷ (first ``log()`` → ``finish()`` returned); ``cpu_us_pt``
    = CPU of the Python process and its helpers (wandb-core, wandb-symon) over the same
    span ÷ points. Also returns the worker's own figures (``log_us_mean``, …).
    """
    ensure_wandb_venv(ctx)
    res = _worker(ctx, "wandb", calls, f"anchor-wandb-{next(_calls)}")
    seconds = calls / res["loop_calls_s"] + res["finish_s"]
    points = calls * WANDB_METRICS
    return {**{k: v for k, v in res.items() if isinstance(v, (int, float))},
            "points": points, "seconds": seconds, "points_s": points / seconds,
            "cpu_us_pt": res["cpu_us_call"] / WANDB_METRICS,
            "version": res["version"]}


def mlflow_anchor(ctx, points: int) -> dict:
    """MLflow ``log_batch`` of 1,000 metrics against sqlite until ``points`` are logged
    (rounded up to whole batches), in a fresh process; one sqlite file per scenario
    (``ctx.tmp/mlflow``), one new run per call.

    ``points_s`` = points ÷ (first ``log_batch`` → last returned); ``cpu_us_pt`` = the
    worker's CPU (all threads, and any child process) over the same span ÷ points.
    """
    ensure_mlflow_venv(ctx)
    store = ctx.tmp / "mlflow"
    store.mkdir(exist_ok=True)
    work = ctx.tmp / f"anchor-mlflow-{ctx.rep}-{next(_calls)}"
    work.mkdir()
    out = work / "result.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    # no telemetry leaves the machine (MLflow 3 sends usage events unless told not to);
    # artifacts (none are logged) would go to ./mlruns under the worker's tmp cwd
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    cmd = [str(mlflow_python()), "-I", str(MLFLOW_WORKER), "--points", str(points),
           "--batch", str(MLFLOW_BATCH), "--out", str(out)]
    try:
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                           timeout=MLFLOW_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"mlflow anchor: no result after {MLFLOW_TIMEOUT_S} s\n"
                           f"{e.stdout or ''}{e.stderr or ''}") from None
    if r.returncode != 0 or not out.exists():
        raise RuntimeError(f"mlflow anchor: worker exited {r.returncode}\n{r.stdout}{r.stderr}")
    res = json.loads(out.read_text())
    if res["points_logged"] != res["points_read_back"]:
        raise RuntimeError(f"mlflow anchor: logged {res['points_logged']} points, the run "
                           f"holds {res['points_read_back']}")
    return res


def versions(ctx) -> str:
    """One line naming the anchors' versions (for a scenario's notes)."""
    wb = ensure_wandb_venv(ctx)
    ml = ensure_mlflow_venv(ctx)
    return (f"wandb {wb.get('wandb', '?')} (Python {wb['python']}, `.cache/bench-venvs/wandb`), "
            f"MLflow {ml.get('mlflow', '?')} (SQLAlchemy {ml.get('SQLAlchemy', '?')}, sqlite; "
            f"Python {ml['python']}, `.cache/bench-venvs/mlflow`); this process: Python "
            f"{sys.version.split()[0]}.")
