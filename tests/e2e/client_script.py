"""A training script for end-to-end tests: logs a known series with the real client."""

import argparse
import sys
import time

import runstream

p = argparse.ArgumentParser()
p.add_argument("--run-id", required=True)
p.add_argument("--project", required=True)
p.add_argument("--steps", type=int, default=100)
p.add_argument("--metrics", type=int, default=10)
p.add_argument("--exit-code", type=int, default=0)
p.add_argument("--sleep-per-step", type=float, default=0.0)
p.add_argument("--hang", action="store_true", help="after logging, sleep until killed")
args = p.parse_args()

run = runstream.init(project=args.project, id=args.run_id, name=f"name-{args.run_id}",
                     config={"lr": 0.001, "arch": {"layers": 4, "kind": "mlp"}},
                     tags=["e2e"])
for step in range(args.steps):
    run.log({f"m{k}": (k + 1) / (step + 1) + step * 1e-6 for k in range(args.metrics)}
            | {"phase": "train"})
    if args.sleep_per_step:
        time.sleep(args.sleep_per_step)
print(f"logged {args.steps} steps", flush=True)
if args.hang:
    while True:
        time.sleep(1)
# A non-zero exit code ends the run as failed through the exit hook, not finish().
sys.exit(args.exit_code)
