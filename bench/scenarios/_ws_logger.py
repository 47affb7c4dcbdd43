"""Background load for the ``workspace`` scenario's live-update case (a child process).

    python -m bench.scenarios._ws_logger URL DIR PREFIX RUNS METRICS STEPS_PER_S

Starts ``RUNS`` concurrent runs (``reinit="create_new"``) in project ``bench/live`` on the
server at ``URL`` (system metrics off, journals under ``DIR``), prints ``ready``, then logs
``METRICS`` floats per run ``STEPS_PER_S`` times a second until its stdin closes; then
finishes every run and prints ``done <steps logged per run> <seconds of logging>``.
"""

from __future__ import annotations

import sys
import threading
import time

import runstream


def main(argv: list[str]) -> int:
    url, journal_dir, prefix = argv[0], argv[1], argv[2]
    n_runs, n_metrics, rate = int(argv[3]), int(argv[4]), float(argv[5])
    settings = {"url": url, "system_metrics": False}
    runs = [runstream.init(project="live", entity="bench", id=f"{prefix}-{i}",
                           config={"arch": f"arch-{i % 3}", "lr": 1e-3},
                           reinit="create_new", dir=journal_dir, settings=settings)
            for i in range(n_runs)]
    keys = [f"m{j:02d}" for j in range(n_metrics)]
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    period = 1.0 / rate
    step = 0
    t0 = next_t = time.monotonic()
    while not stop.is_set():
        for r, run in enumerate(runs):
            run.log({k: (j + 1 + r) / (step + 1) for j, k in enumerate(keys)})
        step += 1
        next_t += period
        delay = next_t - time.monotonic()
        if delay < -1.0:             # fell more than a second behind: do not catch up
            next_t = time.monotonic()
        stop.wait(max(0.0, delay))
    seconds = time.monotonic() - t0
    for run in runs:
        run.finish()
    print(f"done {step} {seconds:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
