"""Profile the embedded server under maximum ingest load with py-spy.

    .venv/bin/python -m bench.profile_ingest [--seconds 20] [--runs 100] [--metrics 10]

Starts an embedded server (``bench/scenarios/_topology.py``), drives it with the
protocol-level generator (``bench/scenarios/_loadgen.py``, as fast as allowed), and
records the server process with ``py-spy record --format raw --rate 100 --threads
--nonblocking`` (active threads only: py-spy drops samples of threads the OS reports
idle) for the length of the load plus the projector's catch-up. Prints the top
functions by samples where they are on top of the stack (self) and anywhere in it
(inclusive), and the samples per thread; the raw profile is kept at ``--out``. Tell py-spy's own
error (e.g. missing ptrace permission) as it is: no fallback is attempted here.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .scenarios import _topology as topo_mod

PY_SPY = Path(sys.executable).with_name("py-spy")
RATE_HZ = 100            # py-spy samples/s: fine enough for 20 s, light on 2 cores
DRAIN_S = 15             # the projector's catch-up after the load, also profiled


def _record(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    cmd = [str(PY_SPY), "record", "--pid", str(pid), "--format", "raw", "--rate",
           str(RATE_HZ), "--duration", str(int(seconds)), "--threads",
           "--nonblocking", "--output", str(out)]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _frame(f: str) -> str:
    """``func (a/b/file.py:line)`` → ``func (b/file.py)`` (lines merged)."""
    name, _, where = f.partition(" (")
    return f"{name} ({'/'.join(where.split(':')[0].split('/')[-2:])})" if where else name


def summarize(raw: Path, top: int = 15) -> str:
    """Markdown: top frames by self and inclusive samples, and samples per thread."""
    self_n: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        n = int(n)
        frames = stack.split(";")
        thread = frames[0]
        frames = [_frame(f) for f in frames[1:]]
        total += n
        threads[thread.split(": ", 1)[-1]] += n
        if not frames:
            continue
        self_n[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    lines = [f"{total} samples of active threads ({total / RATE_HZ:.0f} thread-seconds at "
             f"{RATE_HZ} Hz)", "",
             "| # | self % | function (file) |", "|---|---|---|"]
    lines += [f"| {i} | {n / total:.1%} | `{f}` |"
              for i, (f, n) in enumerate(self_n.most_common(top), 1)]
    lines += ["", "| # | inclusive % | function (file) |", "|---|---|---|"]
    lines += [f"| {i} | {n / total:.1%} | `{f}` |"
              for i, (f, n) in enumerate(incl.most_common(top), 1)]
    lines += ["", "| thread | % of samples |", "|---|---|"]
    lines += [f"| {t} | {n / total:.1%} ({n / RATE_HZ:.1f} s) |"
              for t, n in threads.most_common(10)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="load duration")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--metrics", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "ingest.pyspy")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="rsprofile-"))
    topo = topo_mod.make("embedded", tmp)
    try:
        pid = topo.pids["server"]
        spy = _record(pid, args.seconds + DRAIN_S, args.out)
        time.sleep(1)                  # py-spy attached before the load starts
        gen = topo_mod.LoadGen({"target": topo.grpc, "project": "profile", "runs": args.runs,
                                "metrics": args.metrics, "rate": "max",
                                "duration_s": args.seconds}, tmp / "loadgen.log")
        started = gen.wait("started", 120)
        done = gen.wait("done", args.seconds + 600)
        gen.finish(done)
        t_q = topo_mod.wait_runs(topo.http, "bench", "profile", "finished", args.runs, 600)
        pts = done["points_acked"]
        print(f"{pts:,} points: {pts / (done['t_logs_acked'] - started['t']):,.0f} acked/s, "
              f"{pts / (t_q - started['t']):,.0f} queryable/s end to end", flush=True)
        out, _ = spy.communicate(timeout=args.seconds + DRAIN_S + 60)
        print(out[-2000:])
        if spy.returncode != 0 or not args.out.exists():
            print(f"py-spy failed (exit {spy.returncode})", file=sys.stderr)
            return 1
        print(summarize(args.out))
        return 0
    finally:
        topo.stop()


if __name__ == "__main__":
    sys.exit(main())
