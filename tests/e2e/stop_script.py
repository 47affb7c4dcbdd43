"""A training script for the stop tests: logs until it is stopped, reacting per --mode.

raise     KeyboardInterrupt propagates (the default way a stop ends a script)
ignore    KeyboardInterrupt is swallowed and the loop goes on (runstream escalates)
stop_fn   settings={"stop_fn": ...} sets a flag; the loop ends and the script exits 0
Prints "READY <t>" once logging, "INTERRUPTED <t>" / "STOP_FN <t>" when told to stop.
"""

import argparse
import threading
import time

import runstream

p = argparse.ArgumentParser()
p.add_argument("--run-id", required=True)
p.add_argument("--project", required=True)
p.add_argument("--mode", choices=["raise", "ignore", "stop_fn"], default="raise")
p.add_argument("--sleep-per-step", type=float, default=0.05)
args = p.parse_args()

stop = threading.Event()


def stop_fn():
    print(f"STOP_FN {time.time():.3f}", flush=True)
    stop.set()


settings = {"stop_fn": stop_fn} if args.mode == "stop_fn" else None
run = runstream.init(project=args.project, id=args.run_id, name=f"name-{args.run_id}",
                     config={"mode": args.mode}, settings=settings)
step = 0


def loop():
    global step
    while not stop.is_set():
        run.log({"x": float(step)})
        step += 1
        if step == 1:
            print(f"READY {time.time():.3f}", flush=True)
        time.sleep(args.sleep_per_step)


if args.mode == "raise":
    try:
        loop()
    except KeyboardInterrupt:
        print(f"INTERRUPTED {time.time():.3f}", flush=True)
        raise
elif args.mode == "ignore":
    while True:
        try:
            loop()
        except KeyboardInterrupt:
            print(f"INTERRUPTED {time.time():.3f}", flush=True)
else:
    loop()
    print("STOPPED GRACEFULLY", flush=True)
