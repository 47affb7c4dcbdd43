"""The benchmark harness: run scenarios, keep their numbers, write RESULTS.md.

    python -m bench                    every scenario, full size (``make bench``)
    python -m bench query client_log   some scenarios
    python -m bench --smoke [names]    tiny sizes, 1 repetition (``make bench-smoke``; a
                                       test in ``make test``): proves every scenario still
                                       runs; results go to a temporary directory (or
                                       ``--out DIR``), never to bench/results/
    python -m bench --quick            small sizes, 3 repetitions (~1 min per scenario);
                                       results go to bench/results/quick/
    python -m bench --render           rewrite RESULTS.md from bench/results/*.json only
    python -m bench --list             the scenarios

Each scenario (a module in ``bench/scenarios/``, interface in its ``__init__``) runs in
a fresh child process (``python -m bench --child NAME``), ``REPS`` times (at least 3;
smoke runs once, at ``params(True)`` updated with the scenario's ``SMOKE`` overrides).
Every metric is recorded per repetition; the tables show the median and the min–max.
A full run writes ``bench/results/<scenario>.json`` (numbers, workload, goals, machine,
versions, git commit, date, load average per repetition) and regenerates
``bench/RESULTS.md`` from every JSON file there, so running one scenario updates its
table and keeps the others.

A scenario's ``GOALS`` (targets on one metric of one case, optionally compared with an
anchor case) are evaluated on the medians and shown in the Goals table at the top of
RESULTS.md as met / not met / not measured. Benchmarks record; they never pass or fail
on a time (DESIGN.md §9): a missed goal is a line in the table, not a failure. A failing
scenario (an exception, a server that does not answer) fails the run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import secrets
import shutil
import signal
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
SMOKE_REPS = 1
VERSION_PACKAGES = ("grpcio", "protobuf", "chdb", "clickhouse-connect", "pyarrow", "aiokafka",
                    "numpy")
SCHEMA = 1     # "goals" and "smoke" were added later; readers treat them as optional
CHILD_TIMEOUT_S = 900   # a scenario may allow itself longer with a TIMEOUT_S attribute
BUSY_CORES = 0.25   # "other processes were busy" above this (cores, during a repetition)


@dataclass(frozen=True)
class Metric:
    """One column of a scenario's table."""

    key: str          # key in the dict returned by run_rep
    label: str        # column header, unit included ("records/s", "log() µs p50")
    lower_is_better: bool = False


class Context:
    """What a scenario gets from the harness."""

    def __init__(self, name: str, quick: bool, params: dict[str, Any], tmp: Path,
                 smoke: bool = False) -> None:
        self.name = name
        self.quick = quick or smoke     # smoke sizes are quick sizes made smaller
        self.smoke = smoke
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


def _proc_tree() -> tuple[dict[int, int], dict[int, list[int]]]:
    """(pid → CPU ticks of it and its reaped children, pid → child pids) of every process."""
    cpu: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        raw = _read(f"/proc/{entry}/stat")
        if not raw:
            continue
        rest = raw.rsplit(")", 1)[1].split()
        cpu[int(entry)] = sum(map(int, rest[11:15]))
        children.setdefault(int(rest[1]), []).append(int(entry))
    return cpu, children


def _descendants(root: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """Every live descendant of ``root``."""
    if children is None:
        children = _proc_tree()[1]
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _tree_ticks(root: int) -> int:
    """CPU ticks (user + system) of ``root`` and its live descendants, each with its
    reaped children (a child process that ran and exited during a repetition is the
    benchmark's own work, not another process's)."""
    cpu, children = _proc_tree()
    return sum(cpu.get(pid, 0) for pid in [root, *_descendants(root, children)])


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

def scenario_params(mod, quick: bool, smoke: bool) -> dict[str, Any]:
    """The workload of a run: ``params(quick)``; in smoke mode ``params(True)`` updated
    with the module's optional ``SMOKE`` dict, whose keys must all be keys of params."""
    if not smoke:
        return mod.params(quick)
    params = mod.params(True)
    overrides = getattr(mod, "SMOKE", {})
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise ValueError(f"{mod.__name__}.SMOKE: {', '.join(unknown)} not in params()")
    return {**params, **overrides}


def repetitions(mod, quick: bool, smoke: bool, reps: int | None) -> int:
    """``SMOKE_REPS`` in smoke mode; else ``reps`` or the scenario's ``REPS`` (``MIN_REPS``
    when quick), never fewer than ``MIN_REPS``."""
    if smoke:
        return SMOKE_REPS
    return max(MIN_REPS, reps or (MIN_REPS if quick else getattr(mod, "REPS", MIN_REPS)))


def run_scenario(name: str, quick: bool, reps: int | None,
                 smoke: bool = False) -> dict[str, Any]:
    mod = load(name)
    goals = validate_goals(getattr(mod, "GOALS", []), f"{mod.__name__}.GOALS")
    reps = repetitions(mod, quick, smoke, reps)
    params = scenario_params(mod, quick, smoke)
    tmp = Path(tempfile.mkdtemp(prefix=f"rsbench-{name}-"))
    ctx = Context(name, quick, params, tmp, smoke)
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
        "quick": quick or smoke,
        "smoke": smoke,
        "reps": reps,
        "params": params,
        "goals": goals,
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


def child_main(name: str, quick: bool, reps: int | None, out: Path, smoke: bool) -> int:
    try:
        result = run_scenario(name, quick, reps, smoke)
    except Exception:
        traceback.print_exc()
        return 1
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return 0


# --- goals -----------------------------------------------------------------------------

GOAL_KEYS: dict[str, type | tuple[type, ...]] = {
    "label": str, "case": str, "metric": str, "target": (int, float), "higher_is_better": bool}
ANCHOR_KEYS: dict[str, type | tuple[type, ...]] = {"case": str, "metric": str, "label": str}
MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"


def _checked(d: Any, keys: dict[str, Any], optional: set[str], where: str) -> dict[str, Any]:
    """A copy of ``d``; ``ValueError`` unless it is a dict holding every key of ``keys``
    with a value of its type (``bool`` is not a number), plus only ``optional`` keys."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a dict, got {type(d).__name__}")
    missing = sorted(set(keys) - set(d))
    unknown = sorted(set(d) - set(keys) - optional)
    if missing or unknown:
        raise ValueError(f"{where}: missing keys {missing}, unknown keys {unknown}")
    for key, typ in keys.items():
        value = d[key]
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
            raise ValueError(f"{where}: {key} = {value!r} is not {typ}")
    return dict(d)


def validate_goals(goals: Any, where: str) -> list[dict[str, Any]]:
    """A scenario's ``GOALS`` as a list of plain dicts (copies): each
    ``{"label", "case", "metric", "target", "higher_is_better"}`` and optionally
    ``"anchor": {"case", "metric", "label"}``. ``ValueError`` naming ``where`` otherwise,
    so a mistyped goal fails the scenario's (smoke) run instead of vanishing."""
    if not isinstance(goals, list | tuple):
        raise ValueError(f"{where}: expected a list of dicts, got {type(goals).__name__}")
    out = []
    for i, goal in enumerate(goals):
        checked = _checked(goal, GOAL_KEYS, {"anchor"}, f"{where}[{i}]")
        if "anchor" in checked:
            checked["anchor"] = _checked(checked["anchor"], ANCHOR_KEYS, set(),
                                         f"{where}[{i}].anchor")
        out.append(checked)
    return out


def _stat(result: dict[str, Any] | None, case: str, metric: str) -> dict[str, float] | None:
    """The recorded ``{"median", "min", "max", …}`` of ``metric`` in ``case``, or None."""
    for c in (result or {}).get("cases", ()):
        if c["case"] == case:
            return c["metrics"].get(metric)
    return None


def evaluate_goal(goal: dict[str, Any], result: dict[str, Any] | None) -> dict[str, Any]:
    """A goal against a scenario's result (None: the scenario has no results).

    Returns ``{"stat", "status", "ratio"}``: ``stat`` is the measured metric's record
    (None when the case or metric is missing), ``status`` MET / NOT_MET (the median
    against the target, the target itself included) or NOT_MEASURED; ``ratio`` is how
    many times better than the anchor (measured ÷ anchor median when higher is better,
    anchor ÷ measured when lower is better), None without an anchor, when either side is
    not measured or the divisor is 0."""
    stat = _stat(result, goal["case"], goal["metric"])
    if stat is None:
        return {"stat": None, "status": NOT_MEASURED, "ratio": None}
    median, target = stat["median"], goal["target"]
    met = median >= target if goal["higher_is_better"] else median <= target
    ratio = None
    anchor = goal.get("anchor")
    a_stat = _stat(result, anchor["case"], anchor["metric"]) if anchor else None
    if a_stat is not None:
        num, den = ((median, a_stat["median"]) if goal["higher_is_better"]
                    else (a_stat["median"], median))
        ratio = num / den if den else None
    return {"stat": stat, "status": MET if met else NOT_MET, "ratio": ratio}


def goal_rows(results: list[dict[str, Any]],
              declared: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row ``{"scenario", "goal", **evaluate_goal(...)}`` per goal, in the order of
    ``results`` and then of the scenarios in ``declared`` without results (their goals
    all not measured). A scenario's goals are ``declared[scenario]`` (the module's
    current ``GOALS``) when present there, else the ``goals`` its result recorded."""
    rows = []
    seen = set()
    for r in results:
        seen.add(r["scenario"])
        for goal in declared.get(r["scenario"], r.get("goals", [])):
            rows.append({"scenario": r["scenario"], "goal": goal, **evaluate_goal(goal, r)})
    for scenario, goals in declared.items():
        if scenario not in seen:
            rows += [{"scenario": scenario, "goal": g, **evaluate_goal(g, None)} for g in goals]
    return rows


def _target(goal: dict[str, Any]) -> str:
    t = goal["target"]
    number = f"{int(t):,}" if float(t).is_integer() else f"{t:g}"
    return ("≥ " if goal["higher_is_better"] else "≤ ") + number


def _ratio(row: dict[str, Any]) -> str:
    anchor = row["goal"].get("anchor")
    if not anchor:
        return "–"
    r = row["ratio"]
    if r is None:
        return f"{anchor['label']} not measured"
    return f"{r:.0f}× {anchor['label']}" if r >= 10 else f"{r:.2g}× {anchor['label']}"


def goals_table(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown table of ``goal_rows``: scenario | goal | target | measured median
    (min–max) | met / not met | anchor ratio."""
    lines = ["| scenario | goal | target | measured median (min–max) | status | anchor ratio |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        status = row["status"] if row["status"] == NOT_MEASURED else f"**{row['status']}**"
        lines.append(f"| `{row['scenario']}` | {row['goal']['label']} | {_target(row['goal'])} "
                     f"| {cell(row['stat'])} | {status} | {_ratio(row)} |")
    return lines


def declared_goals() -> dict[str, list[dict[str, Any]]]:
    """Every scenario module's current ``GOALS`` (validated), by scenario name."""
    return {n: validate_goals(getattr(load(n), "GOALS", []), f"{n}.GOALS")
            for n in scenario_names()}


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
  calling something a change. Nothing here is a pass/fail threshold: the goals above are
  reported as met or not met, never asserted.
- Each scenario runs in its own Python process; the benchmark process and everything it
  measures share the same two cores (for `client_log` the client, the server and the
  HTTP poller all run at once, as on a developer's machine).
- "points" are metric values (one key at one step); "records" are event-log records;
  MB = 10^6 bytes of record payload.

## What is not measured yet

- **ClickHouse as a server**: every scenario uses the ClickHouse engine in-process
  (chDB), so its inserts and merges share the two cores with everything else. The
  distributed deployment's Kafka path is measured (`ingest`, `sweep`), with chDB held by
  the projector process.
- **More than one machine**: several gateways or projectors on their own cores. Here
  the generator, the broker and every role share two vCPUs.
- The web UI's **browser side** (rendering, chart drawing); `workspace` measures its
  server side.
- Runs longer than a few minutes of sustained load (hours of history per run, merges
  over days of parts).
"""


GOALS_INTRO = """\
## Goals

Each goal is one metric of one case of a scenario (its table is below), the **median
(min–max) over the repetitions** against the target. **anchor ratio**: how many times
better than the anchor measured in the same run (e.g. wandb), medians: measured ÷ anchor
when higher is better, anchor ÷ measured when lower is better. A goal whose case is not
in the recorded results says **not measured**. Reported, never asserted.
"""


def goals_section(rows: list[dict[str, Any]]) -> list[str]:
    """The "Goals" section of RESULTS.md (a line saying none are declared when empty)."""
    if not rows:
        return [*GOALS_INTRO.splitlines()[:1], "", "No scenario declares goals.", ""]
    return [*GOALS_INTRO.splitlines(), "", *goals_table(rows), ""]


def render_markdown(results: list[dict[str, Any]],
                    declared: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """RESULTS.md from full-size results; ``declared``: the scenarios' current goals
    (default: read from the scenario modules)."""
    results = sorted(results, key=lambda r: r["date"])
    header = results[-1]
    order = {n: i for i, n in enumerate(scenario_names())}
    results.sort(key=lambda r: (order.get(r["scenario"], 999), r["scenario"]))
    if declared is None:
        declared = declared_goals()
    m, v = header["machine"], header["versions"]
    lines = [
        "# Runstream benchmark results",
        "",
        "Generated by `make bench` (`python -m bench`, harness in `bench/harness.py`) from",
        "`bench/results/*.json`; do not edit by hand. Re-run one scenario with",
        "`.venv/bin/python -m bench <scenario>`; `--render` rewrites this file from the",
        "recorded results without running anything; `--smoke` and `--quick` never touch it.",
        "",
    ]
    lines += goals_section(goal_rows(results, declared))
    lines += [
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
    """Rewrite RESULTS.md from the full-size results in bench/results/ (None: there are
    none)."""
    results = []
    for path in sorted(RESULTS_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("schema") == SCHEMA and not data.get("quick") and not data.get("smoke"):
            results.append(data)
    if not results:
        return None
    RESULTS_MD.write_text(render_markdown(results))
    return RESULTS_MD


# --- the parent process -----------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true",
                      help=f"tiny sizes (params(True) + the scenario's SMOKE), {SMOKE_REPS} "
                           "repetition; results to a temporary directory or --out, "
                           "RESULTS.md untouched")
    mode.add_argument("--quick", action="store_true",
                      help="small sizes; results to bench/results/quick/ (or --out), "
                           "RESULTS.md untouched")
    mode.add_argument("--render", action="store_true",
                      help="rewrite bench/RESULTS.md from bench/results/*.json, run nothing")
    mode.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--reps", type=int, default=None,
                   help=f"repetitions per scenario (at least {MIN_REPS}; default per scenario)")
    p.add_argument("--out", type=Path, default=None,
                   help="directory for the results of --smoke or --quick")
    p.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p


def _out_dir(args: argparse.Namespace) -> Path:
    """Where results go: bench/results/ for a full run; --out, else a fresh temporary
    directory (smoke) or bench/results/quick/ (quick)."""
    if args.out:
        return args.out
    if args.smoke:
        return Path(tempfile.mkdtemp(prefix="rsbench-smoke-"))
    return QUICK_DIR if args.quick else RESULTS_DIR


def _kill_group(child: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop the child and everything it started, also what runs in its own session (the
    Kafka broker script starts the broker so): SIGTERM, then SIGKILL after ``grace_s``."""
    pids = [child.pid, *_descendants(child.pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.killpg(pid, sig) if pid == child.pid else os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            child.poll()                     # reap the child; the others are not ours
            pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
            if not pids:
                return
            time.sleep(0.1)


def _run_child(name: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any] | None:
    """One scenario in a child process; its result (also moved to ``out_dir``), or None
    when it failed (the previous result there is kept)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f"rsbench-{name}-", suffix=".json")
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [sys.executable, "-m", "bench", "--child", name, "--result", str(tmp)]
    for flag in ("smoke", "quick"):
        if getattr(args, flag):
            cmd.append(f"--{flag}")
    if args.reps:
        cmd += ["--reps", str(args.reps)]
    timeout = getattr(load(name), "TIMEOUT_S", CHILD_TIMEOUT_S)
    # Its own process group, so that a timeout stops the servers, brokers and generators
    # it started too (killing the child alone left them running under later scenarios).
    child = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                             start_new_session=True)
    try:
        rc = child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rc = -1
        print(f"!! {name}: no result after {timeout} s; stopping its processes", flush=True)
        _kill_group(child)
    except BaseException:
        _kill_group(child)
        raise
    if rc != 0 or not tmp.stat().st_size:
        print(f"!! {name} failed (exit {rc}); its previous results are kept", flush=True)
        tmp.unlink(missing_ok=True)
        return None
    result = json.loads(tmp.read_text())
    dest = out_dir / f"{name}.json"
    shutil.move(tmp, dest)
    dest.chmod(0o644)
    return result


def _print_result(result: dict[str, Any], seconds: float) -> None:
    print("\n".join(table(result)), flush=True)
    for n in result["notes"]:
        print(f"  - {n}")
    rows = goal_rows([result], {})
    if rows and not result.get("smoke"):     # smoke sizes are not the goals' sizes
        print("\n".join(goals_table(rows)))
    print(f"   ({result['reps']} reps, {seconds:.1f} s)\n", flush=True)


def ensure_api_key() -> None:
    """One admin key for every server and client the bench starts (they inherit the
    environment): servers make it an admin key (RUNSTREAM_BOOTSTRAP_KEY), clients and
    the load generator send it (RUNSTREAM_API_KEY)."""
    key = os.environ.get("RUNSTREAM_API_KEY") or "rsk_bench_" + secrets.token_hex(16)
    os.environ["RUNSTREAM_API_KEY"] = key
    os.environ.setdefault("RUNSTREAM_BOOTSTRAP_KEY", key)


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    ensure_api_key()

    if args.child:
        return child_main(args.child, args.quick, args.reps, args.result, args.smoke)
    if args.render:
        md = regenerate_markdown()
        print(f"wrote {md.relative_to(REPO)}" if md else "no results in bench/results/")
        return 0 if md else 1

    names = scenario_names()
    if args.list:
        for n in names:
            print(f"{n:18s} {load(n).TITLE}")
        return 0
    unknown = [n for n in args.scenarios if n not in names]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(names)}")
    if args.out and not (args.smoke or args.quick):
        p.error("--out is for --smoke and --quick: a full run writes bench/results/")
    if args.reps and args.smoke:
        p.error(f"--smoke runs {SMOKE_REPS} repetition")
    selected = [n for n in names if n in args.scenarios] if args.scenarios else names
    out_dir = _out_dir(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = " (smoke)" if args.smoke else " (quick)" if args.quick else ""

    t0 = time.perf_counter()
    failed = []
    for name in selected:
        print(f"== {name}{mode}", flush=True)
        t = time.perf_counter()
        result = _run_child(name, args, out_dir)
        if result is None:
            failed.append(name)
        else:
            _print_result(result, time.perf_counter() - t)

    if args.smoke or args.quick:
        print(f"results in {out_dir}")
    else:
        md = regenerate_markdown()
        if md:
            print(f"wrote {md.relative_to(REPO)}")
    print(f"total {time.perf_counter() - t0:.1f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0
