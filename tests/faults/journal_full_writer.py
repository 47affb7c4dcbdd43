"""A training script for the journal-disk-full scenario (``test_journal_full.py``).

    journal_full_writer.py PROJECT FULL_STEPS FREED_STEPS PAD

Logs ``{"v": step}`` (plus a ``note`` of PAD characters when PAD > 0, so that fewer
events fill the client's memory bound) with the real client, in two phases, and talks
to the test one JSON line at a time on stdout (runstream's warnings go to stderr):

1. ``FULL_STEPS`` steps at once, half-way a config change; the journal's disk is full
   and the server is down, so everything waits in the journal's memory overflow and the
   oldest log events are dropped. Prints ``{"phase": "full", ...}``, then waits for a
   line on stdin: the test has started the server, seen the run's events arrive and
   freed the disk.
2. Waits (at most ``DISK_BACK_S``) until the journal is on disk again, logs
   ``FREED_STEPS`` more steps, prints ``{"phase": "freed", ...}``, calls ``finish()`` and
   prints ``{"phase": "done", "finished": <finish() saw every event acknowledged>}``.
"""

import json
import os
import sys
import time

import runstream

# The journal retries a failed disk every second (``retry_interval_s``, the keeper's
# tick): ten tries are plenty on a loaded machine.
DISK_BACK_S = 10.0


def say(phase: str, run, **fields) -> None:
    j = run._journal
    err = j.last_error
    print(json.dumps({"phase": phase, "run_id": run.id, "journal_dir": run.journal_dir,
                      "dropped": run.dropped_events, "on_disk": j.on_disk,
                      "disk_errors": j.disk_errors, "last_seq": j.last_seq,
                      "errno": err.errno if err is not None else 0,
                      "segments": sorted(n for n in os.listdir(run.journal_dir)
                                         if n.endswith(".wal")),
                      **fields}), flush=True)


def main() -> None:
    project, full_steps, freed_steps, pad = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                             int(sys.argv[4]))
    note = "x" * pad

    def values(step: int) -> dict:
        return {"v": float(step), "note": note} if pad else {"v": float(step)}

    run = runstream.init(project=project, config={"lr": 0.01},
                         settings={"system_metrics": False})
    t0 = time.monotonic()
    for step in range(full_steps):
        run.log(values(step))
        if step == full_steps // 2:
            run.config.update({"phase": "disk-full"})
    say("full", run, logged=full_steps, seconds=time.monotonic() - t0)
    sys.stdin.readline()

    t0 = time.monotonic()
    while not run._journal.on_disk and time.monotonic() - t0 < DISK_BACK_S:
        time.sleep(0.05)
    disk_back_s = time.monotonic() - t0
    for step in range(full_steps, full_steps + freed_steps):
        run.log(values(step))
    say("freed", run, logged=full_steps + freed_steps, disk_back_s=disk_back_s)
    t0 = time.monotonic()
    ok = run.finish()
    print(json.dumps({"phase": "done", "finished": ok, "dropped": run.dropped_events,
                      "finish_s": time.monotonic() - t0}), flush=True)


if __name__ == "__main__":
    main()
