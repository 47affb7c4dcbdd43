"""Training scripts for the browser tests: the seeded runs of project "ui-demo", and live runs.

Run as a script with the real client (``RUNSTREAM_URL``/``RUNSTREAM_ENTITY`` from the
environment), one run per process:

  seed_script.py --project ui-demo --run-id ID --name cnn-1
      logs the seeded run ``cnn-1`` of ``SEED_RUNS`` (config, tags, notes, ``STEPS`` steps
      of "train/loss" and "val/acc") and exits with the spec's exit code (0: finished;
      1: the run ends ``failed`` through the client's exit hook).
  seed_script.py --project ui-demo --run-id ID --name live-1 --live [--sleep-per-step 0.2]
      logs one step every 0.2 s until it is stopped (a stop from the API or the web UI
      raises KeyboardInterrupt, which ends the script and the run ``killed``).
Prints ``READY <time>`` once the first step is logged.

Imported by the tests (without ``runstream``): ``SEED_RUNS``, ``STEPS``, ``train_loss``,
``val_acc`` give the values every seeded run logged, so tests can recompute them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

STEPS = 200

# Created in this order (one process after the other), so created_at follows the list.
# rate: how fast the loss falls (negative: it grows, the run diverges).
SEED_RUNS: list[dict] = [
    {"name": "cnn-1", "config": {"arch": "cnn", "lr": 0.1, "batch_size": 32},
     "tags": ["baseline"], "rate": 3.0},
    {"name": "cnn-2", "config": {"arch": "cnn", "lr": 0.03, "batch_size": 64},
     "tags": ["baseline"], "rate": 4.0},
    {"name": "cnn-3", "config": {"arch": "cnn", "lr": 0.01, "batch_size": 32},
     "tags": ["production"], "rate": 6.0,
     "notes": "Best CNN so far: promoted to production after the lr sweep."},
    {"name": "cnn-4", "config": {"arch": "cnn", "lr": 0.003, "batch_size": 64},
     "tags": [], "rate": 2.0},
    {"name": "mlp-1", "config": {"arch": "mlp", "lr": 0.05, "batch_size": 32},
     "tags": ["baseline"], "rate": 1.5},
    {"name": "mlp-2", "config": {"arch": "mlp", "lr": 0.02, "batch_size": 64},
     "tags": ["production"], "rate": 2.5},
    {"name": "mlp-3", "config": {"arch": "mlp", "lr": 0.005, "batch_size": 32},
     "tags": [], "rate": 1.0},
    {"name": "mlp-4", "config": {"arch": "mlp", "lr": 0.001, "batch_size": 64},
     "tags": ["baseline", "production"], "rate": 0.5},
    # Diverges: the loss grows for 60 steps, then the script exits 1 (state "failed").
    {"name": "cnn-diverged", "config": {"arch": "cnn", "lr": 0.5, "batch_size": 64},
     "tags": ["experimental"], "rate": -2.0, "steps": 60, "exit_code": 1},
]
SEED_BY_NAME = {s["name"]: s for s in SEED_RUNS}


def _phase(name: str) -> float:
    return sum(map(ord, name)) % 17 / 3.0


def train_loss(name: str, step: int) -> float:
    """The "train/loss" that run ``name`` logs at ``step`` (deterministic, per-run curve)."""
    spec = SEED_BY_NAME.get(name, {"rate": 2.0})
    decay = math.exp(-spec["rate"] * step / STEPS)
    wobble = 0.03 * math.sin(0.7 * step + _phase(name)) * min(decay, 1.0)
    return round(0.05 + 2.3 * decay + wobble, 6)


def val_acc(name: str, step: int) -> float:
    """The "val/acc" that run ``name`` logs at ``step``."""
    spec = SEED_BY_NAME.get(name, {"rate": 2.0})
    rate = spec["rate"]
    if rate < 0:                          # diverging: accuracy sinks from 0.3
        return round(max(0.0, 0.3 - 0.004 * step), 6)
    top = 0.80 + 0.02 * rate              # faster learners end higher (at most 0.92)
    return round(top - (top - 0.1) * math.exp(-rate * step / STEPS)
                 + 0.005 * math.cos(0.3 * step + _phase(name)), 6)


def _seed(args) -> int:
    import runstream

    spec = SEED_BY_NAME[args.name]
    run = runstream.init(project=args.project, id=args.run_id, name=args.name,
                         config=spec["config"], tags=spec["tags"], notes=spec.get("notes"))
    for step in range(spec.get("steps", STEPS)):
        run.log({"train/loss": train_loss(args.name, step),
                 "val/acc": val_acc(args.name, step)}, step=step)
        if step == 0:
            print(f"READY {time.time():.3f}", flush=True)
    code = spec.get("exit_code", 0)
    if code == 0:
        run.finish()
    print(f"logged {spec.get('steps', STEPS)} steps, exit {code}", flush=True)
    # A non-zero exit code ends the run as failed through the exit hook.
    return code


def _live(args) -> int:
    import runstream

    arch = "cnn" if args.name.startswith("cnn") else "mlp"
    run = runstream.init(project=args.project, id=args.run_id, name=args.name,
                         config={"arch": arch, "lr": 0.01, "batch_size": 32}, tags=["live"])
    step = 0
    try:
        while True:
            run.log({"train/loss": train_loss(args.name, step % STEPS),
                     "val/acc": val_acc(args.name, step % STEPS)}, step=step)
            if step == 0:
                print(f"READY {time.time():.3f}", flush=True)
            step += 1
            time.sleep(args.sleep_per_step)
    except KeyboardInterrupt:
        print(f"INTERRUPTED {time.time():.3f} after {step} steps", flush=True)
        raise


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--project", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--live", action="store_true")
    p.add_argument("--sleep-per-step", type=float, default=0.2)
    args = p.parse_args()
    return _live(args) if args.live else _seed(args)


if __name__ == "__main__":
    code = main()
    # Look sys.exit up only now: runstream wraps it (at import) to see the exit code.
    sys.exit(code)
