"""A training script for the fault suite: logs ``{"v": step}`` for ``steps`` steps, paced,
with the real client, and reports whether finish() saw every event acknowledged."""

import sys
import time

import runstream

run_id, project, steps, pace = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
run = runstream.init(project=project, id=run_id, settings={"system_metrics": False})
for step in range(steps):
    run.log({"v": float(step)})
    time.sleep(pace)
print("finished", run.finish(), flush=True)
