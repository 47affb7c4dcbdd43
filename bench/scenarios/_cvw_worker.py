"""One measured client process of the ``client_vs_wandb`` scenario (run as a script).

    python _cvw_worker.py runstream --calls N --out RESULT.json --url HOST:PORT [--offline]
    python _cvw_worker.py wandb --calls N --out RESULT.json [--disable-stats]

Runs under the project venv (runstream) or under the wandb anchor's own venv, so it
imports nothing from this repository and nothing outside the standard library except
the client under test. The same workload for both: ``init()``, N × ``log(d)`` with a
fresh dict ``d`` of 10 floats built before each call (not timed; each call timed with
``perf_counter_ns``), ``finish()``. CPU is this process (all its threads, reaped
children included) plus every live descendant process (wandb-core, wandb's system
monitor), sampled just before the first ``log()`` and just after ``finish()`` returned.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

METRICS_PER_CALL = 10
CONFIG = {"lr": 0.001, "batch_size": 64, "optimizer": "adam", "epochs": 10}
_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid → (ppid, utime+stime+cutime+cstime in ticks, command name) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.find("(") + 1:raw.rfind(")")]
        rest = raw.rsplit(")", 1)[1].split()
        out[int(entry)] = (int(rest[1]), sum(int(x) for x in rest[11:15]), name)
    return out


def _descendants(root: int) -> dict[int, tuple[int, str]]:
    """pid → (cpu ticks incl. reaped children, name) of every live descendant of ``root``."""
    table = _proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = {}, list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        _, ticks, name = table[pid]
        out[pid] = (ticks, name)
        todo += kids.get(pid, [])
    return out


def _own_cpu_s() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class CpuSample:
    def __init__(self) -> None:
        self.own = _own_cpu_s()
        self.desc = _descendants(os.getpid())
        self.hwm = {pid: _vm_hwm_bytes(pid) for pid in self.desc}

    def helper_s(self, since: CpuSample) -> float:
        """Descendants' CPU since ``since`` (a process started in between counts fully)."""
        total = 0
        for pid, (ticks, _) in self.desc.items():
            before = since.desc.get(pid)
            total += ticks - (before[0] if before else 0)
        # a descendant that exited and was reaped by the worker moved its CPU into
        # RUSAGE_CHILDREN (counted in own); one reaped by another descendant into that
        # descendant's cutime/cstime (counted above)
        return max(0, total) / _TICKS


def _vm_hwm_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _start(kind: str, args: argparse.Namespace):
    """Import the client and start a run; returns (run, import s, init s, version)."""
    t = time.perf_counter()
    if kind == "runstream":
        import runstream as client
        t_import = time.perf_counter() - t
        t = time.perf_counter()
        run = client.init(project="bench", entity="bench", config=CONFIG,
                          mode="offline" if args.offline else None,
                          settings={"url": args.url})
        return run, t_import, time.perf_counter() - t, client.__version__
    import wandb as client
    t_import = time.perf_counter() - t
    kwargs = {}
    if args.disable_stats:
        kwargs["settings"] = client.Settings(x_disable_stats=True)
    t = time.perf_counter()
    run = client.init(project="bench", mode="offline", dir=os.environ["WANDB_DIR"],
                      config=CONFIG, **kwargs)
    return run, t_import, time.perf_counter() - t, client.__version__


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("runstream", "wandb"))
    p.add_argument("--calls", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--url", default="")
    p.add_argument("--disable-stats", action="store_true")
    p.add_argument("--offline", action="store_true", help="runstream: mode=\"offline\"")
    args = p.parse_args()

    run, import_s, init_s, version = _start(args.kind, args)
    calls = args.calls
    keys = [f"m{i}" for i in range(METRICS_PER_CALL)]
    lat = [0] * calls
    clock = time.perf_counter_ns
    log = run.log
    before = CpuSample()
    t0 = time.perf_counter()
    for step in range(calls):
        d = {k: (i + 1) / (step + 1) for i, k in enumerate(keys)}
        t = clock()
        log(d)
        lat[step] = clock() - t
    t_logged = time.perf_counter()
    acked = run.finish()
    t_finished = time.perf_counter()
    after = CpuSample()
    if args.kind == "runstream" and not args.offline and acked is not True:
        raise SystemExit(f"runstream finish() returned {acked!r}: not everything was acked")

    own_s = after.own - before.own
    helper_s = after.helper_s(before)
    helpers = sorted({name for _, name in [*before.desc.values(), *after.desc.values()]})
    lat.sort()
    result = {
        "version": version,
        "python": sys.version.split()[0],
        "helpers": helpers,
        "import_s": import_s,
        "init_s": init_s,
        "log_us_mean": sum(lat) / calls / 1e3,
        "log_us_p50": lat[calls // 2] / 1e3,
        "log_us_p99": lat[min(calls - 1, int(calls * 0.99))] / 1e3,
        "log_us_max": lat[-1] / 1e3,
        "loop_calls_s": calls / (t_logged - t0),
        "finish_s": t_finished - t_logged,
        "cpu_us_call": (own_s + helper_s) / calls * 1e6,
        "py_cpu_us_call": own_s / calls * 1e6,
        "helper_cpu_us_call": helper_s / calls * 1e6,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6,
        # VmHWM read before the loop and after finish(): a helper gone by then (wandb-symon
        # stops with the run) counts with its high-water mark at the first read
        "helper_rss_mb": sum(max(before.hwm.get(pid, 0), after.hwm.get(pid, 0))
                             for pid in {*before.hwm, *after.hwm}) / 1e6,
    }
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
