"""One measured MLflow client process of the anchors (run as a script, MLflow's own venv).

    python _mlflow_worker.py --points N --batch 1000 --out RESULT.json

Imports nothing from this repository and nothing outside the standard library but
MLflow. Uses ``MLFLOW_TRACKING_URI`` (a sqlite file). Untimed: import, experiment and run
creation (the first use of a sqlite file creates MLflow's schema). Timed: ceil(N ÷ batch)
× ``MlflowClient().log_batch(run_id, metrics=[batch Metric])``, each batch 10 keys ×
(batch ÷ 10) consecutive steps, values and timestamps built before the timer. CPU is
this process (all threads, reaped children) over the timed span. Afterwards (untimed)
the run's metric histories are read back and counted.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

KEYS = 10                     # metric keys per batch (perf-anchors §2: 10 keys × 100 steps)


def _cpu_s() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _batches(n_batches: int, batch: int, metric_cls) -> list[list]:
    """The Metric lists of every call, built up front (not timed)."""
    rnd = random.Random(5)
    steps_per_batch = batch // KEYS
    t0_ms = int(time.time() * 1000)
    out = []
    for b in range(n_batches):
        metrics = []
        for s in range(b * steps_per_batch, (b + 1) * steps_per_batch):
            for k in range(KEYS):
                metrics.append(metric_cls(f"m{k}", rnd.random(), t0_ms + s, s))
        out.append(metrics)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--points", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if args.batch % KEYS:
        raise SystemExit(f"--batch must be a multiple of {KEYS}")

    t = time.perf_counter()
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    import_s = time.perf_counter() - t

    t = time.perf_counter()
    client = MlflowClient()
    exp = client.get_experiment_by_name("bench")
    exp_id = exp.experiment_id if exp else client.create_experiment("bench")
    run_id = client.create_run(exp_id).info.run_id
    setup_s = time.perf_counter() - t

    n_batches = -(-args.points // args.batch)          # ceil
    batches = _batches(n_batches, args.batch, Metric)
    cpu0, t0 = _cpu_s(), time.perf_counter()
    for metrics in batches:
        client.log_batch(run_id, metrics=metrics)
    elapsed = time.perf_counter() - t0
    cpu = _cpu_s() - cpu0
    client.set_terminated(run_id)

    read_back = sum(len(client.get_metric_history(run_id, f"m{k}")) for k in range(KEYS))
    points = n_batches * args.batch
    result = {
        "version": mlflow.__version__,
        "python": sys.version.split()[0],
        "import_s": import_s,
        "setup_s": setup_s,
        "calls": n_batches,
        "points_logged": points,
        "points_read_back": read_back,
        "seconds": elapsed,
        "call_ms_mean": elapsed / n_batches * 1e3,
        "points_s": points / elapsed,
        "cpu_us_pt": cpu / points * 1e6,
        "cpu_cores": cpu / elapsed,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6,
    }
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
