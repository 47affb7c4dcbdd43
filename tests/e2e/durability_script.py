"""A training script for tests/e2e/test_client_durability.py.

    python durability_script.py <run-id> <project> [--sleep S] [--steps N] [--timed]

Logs step after step and prints ``STEP <n>`` (flushed) right after each ``log()``
returned: whatever was printed must reach the server even if the process is killed
the next instant. ``--steps`` ends the run normally after N steps (0: log until killed).
``--timed`` prints how long init() took and the longest log() call, and the finish()
result, for the server-down test. Server address, entity and mode come from the
RUNSTREAM_* environment.
"""

import argparse
import sys
import time

import runstream

p = argparse.ArgumentParser()
p.add_argument("run_id")
p.add_argument("project")
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--steps", type=int, default=0)
p.add_argument("--timed", action="store_true")
args = p.parse_args()

t0 = time.perf_counter()
run = runstream.init(project=args.project, id=args.run_id, config={"sleep": args.sleep})
init_s = time.perf_counter() - t0
if args.timed:
    print(f"INIT {init_s:.3f}", flush=True)
out = sys.stdout
worst = 0.0
step = 0
while not args.steps or step < args.steps:
    t = time.perf_counter()
    run.log({"x": float(step), "y": step * 0.5})
    worst = max(worst, time.perf_counter() - t)
    out.write(f"STEP {step}\n")
    out.flush()
    step += 1
    if args.sleep:
        time.sleep(args.sleep)
if args.timed:
    print(f"MAXLOG {worst:.4f}", flush=True)
t = time.perf_counter()
ok = run.finish()
print(f"FINISH {ok} {time.perf_counter() - t:.2f}", flush=True)
