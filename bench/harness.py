"""The benchmark harness: run scenarios, keep their numbers, write RESULTS.md.

    python -m bench                    every scenario, full size (``make bench``)
    python -m bench query client_log   some scenarios
    python -m bench --quick            small sizes, a smoke run (~1 min); results go to
                                       bench/results/quick/ and RESULTS.md is left alone
    python -m bench --list             the scenarios

Each scenario (a module in ``bench/scenarios/``, interface in its ``__init__``) runs in
a fresh child process (``python -m bench --child NAME``), ``REPS`` times (at least 3).
Every metric is recorded per repetition; the tables show the median and the min–max.
A full run writes ``bench/results/<scenario>.json`` (numbers, workload, machine,
versions, git commit, date, load average per repetition) and regenerates
``bench/RESULTS.md`` from every JSON file there, so running one scenario updates its
table and keeps the others.

Benchmarks record; they never pass or fail on a time (DESIGN.md §9). A failing
scenario (an exception, a server that does not answer) fails the run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
QUICK_DIR = RESULTS_DIR / "quick"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
MIN_REPS = 3
VERSION_PACKAGES = ("grpcio", "protobuf", "chdb", "clickhouse-connect", "pyarrow", "aiokafka",
                    "numpy")
SCHEMA = 1
CHILD_TIMEOUT_S = 900
BUSY_CORES = 0.25   # "other processes were busy" above this (cores, during a repetition)


@dataclass(frozen=True)
class Metric:
    """One column of a scenario's table."""

    key: str          # key in the dict returned by run_rep
    label: str        # column header, unit included ("records/s", "log() µs p50")
    lower_is_better: bool = False


class Context:
    """What a scenario gets from the harness."""

    def __init__(self, name: str, quick: bool, params: dict[str, Any], tmp: Path) -> None:
        self.name = name
        self.quick = quick
        self.params = params
        self.tmp = tmp
        self.rep = -1
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        """A line printed under the scenario's table (same text once, however often called)."""
        if text not in self.notes:
            self.notes.append(text)

    def log(self, text: str) -> None:
        print(f"  [{self.name}] {text}", file=sys.stderr, flush=True)


# --- scenarios -------------------------------------------------------------------------

def scenario_names() -> list[str]:
    from . import scenarios
    names = [m.name for m in pkgutil.iter_modules(scenarios.__path__) if not m.name.startswith("_")]
    return sorted(names, key=lambda n: (getattr(load(n), "ORDER", 100), n))


def load(name: str):
    return importlib.import_module(f"bench.scenarios.{name}")


# --- environment ------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    cpu = ""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    os_name = ""
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = line.split("=", 1)[1].strip().strip('"')
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True,
                                   check=True).stdout.strip())
    except (OSError, ValueError, subprocess.CalledProcessError):
        nproc = len(os.sched_getaffinity(0))
    return {
        "nproc": nproc,
        "memory_gib": round(mem_kib / 2**20, 1),
        "cpu_model": cpu or platform.processor() or "unknown",
        "os": os_name or platform.system(),
        "kernel": platform.release(),
        "arch": platform.machine(),
    }


def versions() -> dict[str, str]:
    out = {"python": f"{platform.python_implementation()} {platform.python_version()}"}
    for pkg in VERSION_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.rstrip("\n")
    try:
        commit = git("rev-parse", "HEAD")
        changed = [line[3:] for line in git("status", "--porcelain").splitlines()
                   if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty_files": []}
    # Modified and untracked files count (a new migration changes what is measured),
    # except the benchmarks and their results themselves.
    return {"commit": commit, "dirty_files": [f for f in changed if not f.startswith("bench/")]}


_TICKS = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> int:
    """CPU ticks the whole machine spent not idle (steal included: the VM lost them)."""
    fields = _read("/proc/stat").split("\n", 1)[0].split()[1:]
    if len(fields) < 8:
        return 0
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return user + nice + system + irq + softirq + steal


def _tree_ticks(root: int) -> int:
    """CPU ticks (user + system) of ``root`` and its live descendants, each with its
    reaped children (a child process that ran and exited during a repetition is the
    benchmark's own work, not another process's)."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        raw = _read(f"/proc/{entry}/stat")
        if not raw:
            continue
        rest = raw.rsplit(")", 1)[1].split()
        stats[int(entry)] = (int(rest[1]), sum(map(int, rest[11:15])))   # ppid, cpu
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0))[1]
        todo += children.get(pid, [])
    return total


class CpuWatch:
    """How much CPU processes outside this benchmark used while it ran (cores)."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.busy = _busy_ticks()
        self.own = _tree_ticks(os.getpid())

    def other_cores(self) -> float:
        wall = time.perf_counter() - self.t
        other = (_busy_ticks() - self.busy) - (_tree_ticks(os.getpid()) - self.own)
        return round(max(0.0, other / _TICKS / wall), 2) if wall > 0 else 0.0


def loadavg() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


# --- one scenario, in the child process ---------------------------------------------------

def run_scenario(name: str, quick: bool, reps: int | None) -> dict[str, Any]:
    mod = load(name)
    reps = max(MIN_REPS, reps or (MIN_REPS if quick else getattr(mod, "REPS", MIN_REPS)))
    params = mod.params(quick)
    tmp = Path(tempfile.mkdtemp(prefix=f"rsbench-{name}-"))
    ctx = Context(name, quick, params, tmp)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    samples: dict[str, dict[str, list[float]]] = {}
    rep_info = []
    try:
        ctx.log(f"setup ({json.dumps(params)})")
        state = mod.setup(ctx) if hasattr(mod, "setup") else None
        try:
            for rep in range(reps):
                ctx.rep = rep
                load_before = loadavg()
                watch = CpuWatch()
                t = time.perf_counter()
                result = mod.run_rep(ctx, state)
                rep_info.append({"rep": rep, "loadavg_1m_before": load_before,
                                 "seconds": round(time.perf_counter() - t, 3),
                                 "other_cpu_cores": watch.other_cores()})
                for case, values in result.items():
                    per_case = samples.setdefault(case, {})
                    for key, value in values.items():
                        per_case.setdefault(key, []).append(float(value))
                ctx.log(f"rep {rep + 1}/{reps} done in {rep_info[-1]['seconds']:.1f} s "
                        f"(load {load_before}; other processes used "
                        f"{rep_info[-1]['other_cpu_cores']} cores)")
        finally:
            if hasattr(mod, "teardown"):
                mod.teardown(ctx, state)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shown = [m.key for m in mod.METRICS]
    cases = []
    for case, per_case in samples.items():
        stats = {}
        # the table's metrics first, then any extra ones the scenario returned
        for key in [*shown, *(k for k in per_case if k not in shown)]:
            vals = [_round(v) for v in per_case.get(key, ())]
            if vals:
                stats[key] = {"median": _round(statistics.median(vals)), "min": min(vals),
                              "max": max(vals), "values": vals}
        cases.append({"case": case, "metrics": stats})
    return {
        "schema": SCHEMA,
        "scenario": name,
        "title": mod.TITLE,
        "about": mod.ABOUT.strip(),
        "columns": [{"key": m.key, "label": m.label, "lower_is_better": m.lower_is_better}
                    for m in mod.METRICS],
        "quick": quick,
        "reps": reps,
        "params": params,
        "notes": ctx.notes,
        "cases": cases,
        "rep_info": rep_info,
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.perf_counter() - t0, 1),
        "machine": machine_info(),
        "versions": versions(),
        "git": git_info(),
    }


def _round(v: float) -> float:
    return float(f"{v:.6g}")


def child_main(name: str, quick: bool, reps: int | None, out: Path) -> int:
    try:
        result = run_scenario(name, quick, reps)
    except Exception:
        traceback.print_exc()
        return 1
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return 0


# --- formatting -------------------------------------------------------------------------

def fmt(v: float) -> str:
    a = abs(v)
    if float(v).is_integer() and 10 <= a < 1e15:
        return f"{int(v):,}"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1 or a == 0:
        return f"{v:.2f}"
    return f"{v:.3f}"


def cell(stat: dict[str, float] | None) -> str:
    if not stat:
        return "–"
    med, lo, hi = stat["median"], stat["min"], stat["max"]
    if fmt(lo) == fmt(hi):
        return fmt(med)
    return f"{fmt(med)} ({fmt(lo)}–{fmt(hi)})"


def table(result: dict[str, Any]) -> list[str]:
    cols = result["columns"]
    lines = ["| case | " + " | ".join(c["label"] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for case in result["cases"]:
        lines.append(f"| {case['case']} | "
                     + " | ".join(cell(case["metrics"].get(c["key"])) for c in cols) + " |")
    return lines


def _machine_line(m: dict[str, Any]) -> str:
    return (f"{m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB RAM, {m['os']}, "
            f"Linux {m['kernel']} {m['arch']}")


def _versions_line(v: dict[str, str]) -> str:
    return ", ".join(f"{k} {val}" for k, val in v.items())


def _commit_line(g: dict[str, Any]) -> str:
    c = g["commit"][:12]
    files = g["dirty_files"]
    if files:
        more = f" and {len(files) - 6} more" if len(files) > 6 else ""
        return f"`{c}` + uncommitted changes in {', '.join(files[:6])}{more}"
    return f"`{c}`"


def section(result: dict[str, Any], header: dict[str, Any]) -> list[str]:
    r = result
    loads = ", ".join(str(i["loadavg_1m_before"]) for i in r["rep_info"])
    lines = [f"## {r['title']} (`{r['scenario']}`)", "", r["about"], "",
             "Workload: " + ", ".join(f"{k} = {v:,}" if isinstance(v, int) else f"{k} = {v}"
                                      for k, v in r["params"].items()) + ".", ""]
    lines += table(r)
    lines.append("")
    quick = " (quick mode)" if r["quick"] else ""
    lines.append(f"Median (min–max) of {r['reps']} repetitions{quick}; recorded {r['date']} "
                 f"in {r['duration_s']:.0f} s; 1-min load average before each repetition: {loads}.")
    other = [i["other_cpu_cores"] for i in r["rep_info"]]
    lines.append("CPU used by processes outside the benchmark during each repetition "
                 f"(cores of {r['machine']['nproc']}): {', '.join(map(str, other))}.")
    if max(other, default=0) > BUSY_CORES:
        lines.append("**Other processes were using the machine** during some repetitions: "
                     "those numbers include their interference; the ranges show how much.")
    for key, what, line in (("machine", "machine", _machine_line),
                            ("versions", "versions", _versions_line),
                            ("git", "commit", _commit_line)):
        if line(r[key]) != line(header[key]):
            lines.append(f"Recorded with a different {what}: {line(r[key])}.")
    if r["notes"]:
        lines.append("")
        lines += [f"- {n}" for n in r["notes"]]
    lines.append("")
    return lines


HOW_TO_READ = """\
## How to read these numbers

- Every cell is the **median (min–max) over the repetitions** listed under its table
  (at least 3, each on a fresh workload); a single number means min and max round to it.
  Per-repetition values are in `bench/results/<scenario>.json`. Under each table: the
  1-minute load average before each repetition and the CPU that processes *outside* the
  benchmark used during it (machine busy time, steal included, minus the benchmark's own
  process tree), which is the thing that disturbs the numbers.
- This is a shared 2-vCPU VM: expect ±10–20 % between runs (see
  `/work/shared/reference/perf-anchors.md`). Compare medians, and look at the range before
  calling something a change. Nothing here is a pass/fail threshold.
- Each scenario runs in its own Python process; the benchmark process and everything it
  measures share the same two cores (for `client_log` the client, the server and the
  HTTP poller all run at once, as on a developer's machine).
- "points" are metric values (one key at one step); "records" are event-log records;
  MB = 10^6 bytes of record payload.

## What is not measured yet

- **wandb** is measured in the same run by `client_vs_wandb` (0.31, offline, from its own
  venv); **MLflow** is not: its numbers (6.5–58 ms per `log_metric`, …) are in
  `/work/shared/reference/perf-anchors.md`, measured on the same kind of machine.
- No scale scenarios yet (many concurrent clients, long runs, 100k-run workspaces,
  sustained ingest for minutes, memory ceilings); they come with the scale issue.
- The **Kafka** event log (distributed deployment) and ClickHouse as a server are not
  measured; only the embedded path (local segment files, chDB in-process).
- The web UI's server side (runs table, multi-run charts, group bands, live freshness) is
  measured by `workspace`; the browser side is not. Not measured: the gRPC Query
  service, the reaper, storage bytes per point, recovery/replay time.
"""


def render_markdown(results: list[dict[str, Any]]) -> str:
    results = sorted(results, key=lambda r: r["date"])
    header = results[-1]
    order = {n: i for i, n in enumerate(scenario_names())}
    results.sort(key=lambda r: (order.get(r["scenario"], 999), r["scenario"]))
    m, v = header["machine"], header["versions"]
    lines = [
        "# Runstream benchmark results",
        "",
        "Generated by `make bench` (`python -m bench`, harness in `bench/harness.py`) from",
        "`bench/results/*.json`; do not edit by hand. Re-run one scenario with",
        "`.venv/bin/python -m bench <scenario>`; `--quick` is a smoke run that does not touch",
        "this file.",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
        f"| date | {header['date']} |",
        f"| machine | {m['nproc']} CPUs (`nproc`), {m['memory_gib']} GiB RAM |",
        f"| CPU | {m['cpu_model']} |",
        f"| OS | {m['os']}, Linux {m['kernel']} ({m['arch']}) |",
        f"| commit | {_commit_line(header['git'])} |",
    ]
    lines += [f"| {k} | {val} |" for k, val in v.items()]
    lines += ["", "A scenario recorded under other conditions says so under its table.", ""]
    lines += HOW_TO_READ.splitlines()
    lines.append("")
    for r in results:
        lines += section(r, header)
    return "\n".join(lines).rstrip() + "\n"


def regenerate_markdown() -> Path | None:
    results = []
    for path in sorted(RESULTS_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("schema") == SCHEMA and not data.get("quick"):
            results.append(data)
    if not results:
        return None
    RESULTS_MD.write_text(render_markdown(results))
    return RESULTS_MD


# --- the parent process -----------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes; results to bench/results/quick/, RESULTS.md untouched")
    p.add_argument("--reps", type=int, default=None,
                   help=f"repetitions per scenario (at least {MIN_REPS}; default per scenario)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        return child_main(args.child, args.quick, args.reps, args.result)

    names = scenario_names()
    if args.list:
        for n in names:
            print(f"{n:18s} {load(n).TITLE}")
        return 0
    unknown = [n for n in args.scenarios if n not in names]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(names)}")
    selected = [n for n in names if n in args.scenarios] if args.scenarios else names
    out_dir = QUICK_DIR if args.quick else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    failed = []
    for name in selected:
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f"rsbench-{name}-", suffix=".json")
        os.close(fd)
        tmp = Path(tmp_name)
        cmd = [sys.executable, "-m", "bench", "--child", name, "--result", str(tmp)]
        if args.quick:
            cmd.append("--quick")
        if args.reps:
            cmd += ["--reps", str(args.reps)]
        t = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                timeout=CHILD_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            rc = -1
            print(f"!! {name}: no result after {CHILD_TIMEOUT_S} s", flush=True)
        if rc != 0 or not tmp.stat().st_size:
            failed.append(name)
            print(f"!! {name} failed (exit {rc}); its previous results are kept", flush=True)
            tmp.unlink(missing_ok=True)
            continue
        result = json.loads(tmp.read_text())
        dest = out_dir / f"{name}.json"
        shutil.move(tmp, dest)
        dest.chmod(0o644)
        print("\n".join(table(result)), flush=True)
        for n in result["notes"]:
            print(f"  - {n}")
        print(f"   ({result['reps']} reps, {time.perf_counter() - t:.1f} s)\n", flush=True)

    if not args.quick:
        md = regenerate_markdown()
        if md:
            print(f"wrote {md.relative_to(REPO)}")
    print(f"total {time.perf_counter() - t0:.1f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0
