"""The Runstream client against the wandb anchor (offline), in the same run, same workload."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ..harness import REPO, Metric
from .client_log import _proc_cpu_s, _Server

ORDER = 35
WANDB_VERSION = "0.31.0"
VENV = REPO / ".cache" / "bench-venvs" / "wandb"
STAMP = VENV / f".installed-wandb-{WANDB_VERSION}"
WORKER = Path(__file__).with_name("_cvw_worker.py")
WORKER_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 600

# Before each case the server must be idle: still projecting the previous case's events
# it would take CPU from the next case, whichever client that is.
QUIET_CORES = 0.05
QUIET_WINDOW_S = 0.3
QUIET_MAX_S = 60.0


TITLE = "Client `log()` vs wandb 0.31 offline, same run"
ABOUT = f"""\
The issue-3 benchmark: the Runstream client and the anchor **wandb {WANDB_VERSION}** with
`mode="offline"`, measured in the same run on the same workload, each repetition of each
case in a **fresh child process** (`bench/scenarios/_cvw_worker.py`). wandb runs from its
own virtualenv, `.cache/bench-venvs/wandb` (created once by this scenario with
`python3 -m venv` + `pip install wandb=={WANDB_VERSION}`, re-used afterwards), never from
the project venv. Workload: `init(config=<4 keys>)`, then N × `run.log(d)` where `d` is a
fresh dict of 10 floats built before each call (not timed; each call timed with
`perf_counter_ns`), then `run.finish()`.
Runstream: `runstream.init(project="bench", entity="bench", settings={{"url": <addr>}})`
against a real embedded server (`runstream server --data-dir <tmp> --grpc-port 0
--http-port 0`, started once per scenario, SIGTERM at the end); `finish()` waits for the
server's ack of every event. wandb: `wandb.init(project="bench", mode="offline",
dir=<tmp>)` with `WANDB_SILENT=true` and `WANDB_DIR`/`WANDB_CACHE_DIR`/`WANDB_CONFIG_DIR`/
`WANDB_DATA_DIR` in a temp dir per process; **system metrics left at wandb's defaults**
(sampling on), and a second variant with `settings=wandb.Settings(x_disable_stats=True)`.
**init() s** is the `init()` call only (after `import`; for wandb it spawns `wandb-core`).
**log() µs** is caller-thread time inside `log()` (mean, p99 within a repetition).
**CPU µs/call** is whole-process CPU from just before the first `log()` to just after
`finish()` returned ÷ N: the Python process (all threads, reaped children) **plus every
live descendant** (wandb-core, wandb-symon; found as children in `/proc`); the split
Python / helper processes is in the JSON. Runstream's *server* CPU is not in it (it is
the remote side; recorded as `server_cpu_us_call` in the JSON). **peak RSS MB** = the
Python process's `ru_maxrss` (MB = 10^6 bytes); **helper RSS MB** = sum of the helper
processes' VmHWM. **wandb ÷ runstream** = per repetition, the wandb case's value over
the Runstream N-call case's value of the same repetition; the cell is the median (min–max)
of those ratios. The 100k-step Runstream case measures `finish()` after 100k steps.
Every case starts once the server is idle (under {QUIET_CORES} cores over {QUIET_WINDOW_S} s):
the server projecting the previous case's events would take CPU from the next client.
**runstream offline** is the like-for-like case for wandb offline: `mode="offline"`, the
run is journaled on the local disk only (no upload helper, no server), as wandb offline
writes its local file only; its ratios are in the notes under the table."""
METRICS = [
    Metric("init_s", "init() s", lower_is_better=True),
    Metric("log_us_mean", "log() µs mean", lower_is_better=True),
    Metric("log_us_p99", "log() µs p99", lower_is_better=True),
    Metric("cpu_us_call", "CPU µs/call (py + helpers)", lower_is_better=True),
    Metric("finish_s", "finish() s", lower_is_better=True),
    Metric("rss_mb", "peak RSS MB", lower_is_better=True),
    Metric("helper_rss_mb", "helper RSS MB", lower_is_better=True),
    Metric("ratio_log_mean", "wandb ÷ runstream, log() mean"),
    Metric("ratio_cpu", "wandb ÷ runstream, CPU/call"),
]
REPS = 5

RS = "runstream"
RS_OFF = "runstream offline (journal only)"
WB = "wandb offline (defaults)"
WB_NOSTATS = "wandb offline, x_disable_stats=True"
# issue 3's benchmark acceptance (reported, never asserted)
TARGET_LOG_US = 10.0
TARGET_LOG_RATIO = 30.0
TARGET_CPU_RATIO = 15.0
TARGET_INIT_S = 0.3
TARGET_FINISH_S = 1.0
TARGET_RSS_MB = 100.0
# smoke: every case still runs (wandb from its cached venv: ~30 s to create the first time)
SMOKE = {"calls": 1_000, "long_calls": 2_000}


def params(quick: bool) -> dict:
    return {"calls": 5_000 if quick else 20_000,
            "long_calls": 20_000 if quick else 100_000,
            "metrics_per_call": 10}


def _long_case(long_calls: int) -> str:
    return f"runstream, {long_calls:,} steps"


_WANDB_LOG = {"case": WB, "metric": "log_us_mean", "label": "wandb"}
_FULL_LONG = _long_case(params(False)["long_calls"])
GOALS = [
    {"label": f"`log()` mean ≤ {TARGET_LOG_US:g} µs (10 metrics)", "case": RS,
     "metric": "log_us_mean", "target": TARGET_LOG_US, "higher_is_better": False,
     "anchor": _WANDB_LOG},
    {"label": f"`log()` mean ≥ {TARGET_LOG_RATIO:g}× lower than wandb (per-repetition ratio)",
     "case": WB, "metric": "ratio_log_mean", "target": TARGET_LOG_RATIO,
     "higher_is_better": True},
    {"label": f"CPU per call ≥ {TARGET_CPU_RATIO:g}× lower than wandb (per-repetition ratio)",
     "case": WB, "metric": "ratio_cpu", "target": TARGET_CPU_RATIO, "higher_is_better": True},
    {"label": f"`init()` ≤ {TARGET_INIT_S:g} s", "case": RS, "metric": "init_s",
     "target": TARGET_INIT_S, "higher_is_better": False,
     "anchor": {"case": WB, "metric": "init_s", "label": "wandb"}},
    {"label": f"`finish()` ≤ {TARGET_FINISH_S:g} s after 100k steps (embedded server)",
     "case": _FULL_LONG, "metric": "finish_s", "target": TARGET_FINISH_S,
     "higher_is_better": False},
    {"label": f"peak client RSS ≤ {TARGET_RSS_MB:g} MB (100k steps flat out)",
     "case": _FULL_LONG, "metric": "rss_mb", "target": TARGET_RSS_MB,
     "higher_is_better": False},
]


# --- the wandb venv -------------------------------------------------------------------

def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _base_python() -> str:
    """The interpreter the project venv was made from (python3 as a fallback)."""
    base = getattr(sys, "_base_executable", "") or ""
    if base and Path(base).exists() and Path(base).resolve() != Path(sys.executable).resolve():
        return base
    return shutil.which("python3") or "python3"


def ensure_wandb_venv(ctx) -> dict:
    """Create ``.cache/bench-venvs/wandb`` with wandb pinned, once; returns its packages."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / ".wandb.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # two bench runs never install at once
        if not (STAMP.exists() and _venv_python().exists()):
            ctx.log(f"creating {VENV.relative_to(REPO)} (pip install wandb=={WANDB_VERSION})")
            shutil.rmtree(VENV, ignore_errors=True)
            t = time.perf_counter()
            for cmd in ([_base_python(), "-m", "venv", str(VENV)],
                        [str(_venv_python()), "-m", "pip", "install", "--disable-pip-version-check",
                         f"wandb=={WANDB_VERSION}"]):
                try:
                    r = subprocess.run(cmd, capture_output=True, text=True,
                                       timeout=INSTALL_TIMEOUT_S)
                    ok, out = r.returncode == 0, r.stdout + r.stderr
                except subprocess.TimeoutExpired as e:
                    ok = False
                    out = f"timed out after {INSTALL_TIMEOUT_S} s\n{e.stdout or ''}{e.stderr or ''}"
                if not ok:
                    raise RuntimeError(f"creating the wandb venv failed: {' '.join(cmd)}\n{out}")
            freeze = subprocess.run([str(_venv_python()), "-m", "pip", "freeze"],
                                    capture_output=True, text=True, check=True).stdout
            STAMP.write_text(freeze)
            ctx.log(f"wandb venv ready in {time.perf_counter() - t:.0f} s")
    pkgs = dict(line.split("==", 1) for line in STAMP.read_text().splitlines() if "==" in line)
    py = subprocess.run([str(_venv_python()), "-c",
                         "import platform; print(platform.python_version())"],
                        capture_output=True, text=True, check=True).stdout.strip()
    return {"python": py, **pkgs}


def _check_disable_stats() -> None:
    """``x_disable_stats`` must be a real setting of the installed wandb, not a guess."""
    code = ("import wandb; s = wandb.Settings(x_disable_stats=True); "
            "assert s.x_disable_stats is True; "
            "assert 'x_disable_stats' in type(s).model_fields")
    r = subprocess.run([str(_venv_python()), "-c", code], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise RuntimeError("wandb.Settings(x_disable_stats=True) is not a setting of the "
                           f"installed wandb:\n{r.stdout}{r.stderr}")


# --- scenario -------------------------------------------------------------------------

def setup(ctx):
    wb = ensure_wandb_venv(ctx)
    _check_disable_stats()
    ctx.note(f"wandb venv (`.cache/bench-venvs/wandb`): Python {wb['python']}, "
             + ", ".join(f"{p} {wb[p]}" for p in ("wandb", "protobuf", "pydantic", "psutil")
                         if p in wb) + ".")
    server = _Server(ctx.tmp / "data", ctx.tmp / "server.log")
    ctx.log(f"server ready in {server.start_s:.1f} s: gRPC {server.grpc}")
    return {"server": server, "reps": [], "helpers": {}, "clients": set()}


def teardown(ctx, state) -> None:
    rc = state["server"].stop()
    if rc != 0:
        raise RuntimeError(f"runstream server exited {rc} after SIGTERM:\n"
                           + "".join(state["server"].lines[-40:]))
    if state["reps"]:
        _summarize(ctx, state)


def _worker(ctx, kind: str, calls: int, tag: str, *extra: str) -> dict:
    work = ctx.tmp / f"{tag}-{ctx.rep}"
    work.mkdir()
    out = work / "result.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RUNSTREAM_"))}
    if kind == "wandb":
        py = str(_venv_python())
        for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            d = work / var.lower()
            d.mkdir()
            env[var] = str(d)
        env["WANDB_SILENT"] = "true"
    else:
        py = sys.executable
        env["RUNSTREAM_DIR"] = str(work)
        env["RUNSTREAM_API_KEY"] = os.environ.get("RUNSTREAM_API_KEY", "")
    # -I: the script's directory (bench/scenarios) must not shadow any module
    cmd = [py, "-I", str(WORKER), kind, "--calls", str(calls), "--out", str(out), *extra]
    try:
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                           timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{tag}: no result after {WORKER_TIMEOUT_S} s\n"
                           f"{e.stdout or ''}{e.stderr or ''}") from None
    if r.returncode != 0 or not out.exists():
        raise RuntimeError(f"{tag}: worker exited {r.returncode}\n{r.stdout}{r.stderr}")
    return json.loads(out.read_text())


def _wait_server_quiet(server) -> float:
    """Wait until the server uses under QUIET_CORES over QUIET_WINDOW_S; returns the wait."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < QUIET_MAX_S:
        c0 = _proc_cpu_s(server.proc.pid)
        time.sleep(QUIET_WINDOW_S)
        if (_proc_cpu_s(server.proc.pid) - c0) / QUIET_WINDOW_S < QUIET_CORES:
            break
    return time.monotonic() - t0


def run_rep(ctx, state) -> dict:
    p = ctx.params
    server = state["server"]
    url = ["--url", server.grpc]

    def worker(*args) -> dict:
        _wait_server_quiet(server)
        return _worker(ctx, *args)

    def runstream(calls: int, tag: str) -> dict:
        _wait_server_quiet(server)
        cpu0 = _proc_cpu_s(server.proc.pid)
        res = _worker(ctx, "runstream", calls, tag, *url)
        res["server_cpu_us_call"] = (_proc_cpu_s(server.proc.pid) - cpu0) / calls * 1e6
        return res

    results = {
        RS: runstream(p["calls"], "runstream"),
        RS_OFF: worker("runstream", p["calls"], "runstream-offline", "--offline", *url),
        WB: worker("wandb", p["calls"], "wandb"),
        WB_NOSTATS: worker("wandb", p["calls"], "wandb-nostats", "--disable-stats"),
        _rs_long(ctx): runstream(p["long_calls"], "runstream-long"),
    }
    base = results[RS]
    off = results[RS_OFF]
    for case in (WB, WB_NOSTATS):
        results[case]["ratio_log_mean"] = results[case]["log_us_mean"] / base["log_us_mean"]
        results[case]["ratio_cpu"] = results[case]["cpu_us_call"] / base["cpu_us_call"]
        results[case]["ratio_log_mean_offline"] = (results[case]["log_us_mean"]
                                                   / off["log_us_mean"])
        results[case]["ratio_cpu_offline"] = results[case]["cpu_us_call"] / off["cpu_us_call"]
    for case, res in results.items():
        state["helpers"].setdefault(case, set()).update(res.pop("helpers"))
        kind = "runstream" if case.startswith("runstream") else "wandb"
        state["clients"].add(f"{kind} {res.pop('version')} (Python {res.pop('python')})")
    state["reps"].append(results)
    ctx.log(f"log() mean µs: runstream {base['log_us_mean']:.1f}, wandb "
            f"{results[WB]['log_us_mean']:.0f} ({results[WB]['ratio_log_mean']:.0f}×); "
            f"CPU µs/call: {base['cpu_us_call']:.0f} vs {results[WB]['cpu_us_call']:.0f}")
    return results


def _rs_long(ctx) -> str:
    return _long_case(ctx.params["long_calls"])


def _median(state, case: str, key: str) -> float:
    return statistics.median(r[case][key] for r in state["reps"])


def _range(state, case: str, key: str) -> str:
    vals = [r[case][key] for r in state["reps"]]
    return f"{min(vals):.1f}–{max(vals):.1f}"


def _summarize(ctx, state) -> None:
    def met(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    m = lambda case, key: _median(state, case, key)   # noqa: E731
    ctx.note("Issue-3 targets: in the Goals table at the top (medians; reported, not "
             "asserted).")
    off_log, off_ratio = m(RS_OFF, "log_us_mean"), m(WB, "ratio_log_mean_offline")
    off_cpu_ratio = m(WB, "ratio_cpu_offline")
    ctx.note(
        "Like for like, **runstream offline vs wandb offline** (both write a local file only; "
        f"median ratios of the same repetitions): log() mean {off_log:.1f} µs "
        f"{met(off_log <= TARGET_LOG_US)}, {off_ratio:.1f}× lower than wandb "
        f"{met(off_ratio >= TARGET_LOG_RATIO)} (range "
        + _range(state, WB, "ratio_log_mean_offline") + f"); CPU/call {off_cpu_ratio:.1f}× "
        f"lower {met(off_cpu_ratio >= TARGET_CPU_RATIO)}; against wandb without system "
        f"metrics: log() {m(WB_NOSTATS, 'ratio_log_mean_offline'):.1f}×, CPU/call "
        f"{m(WB_NOSTATS, 'ratio_cpu_offline'):.1f}×. The online runstream rows above also "
        "upload everything to a server sharing the same two cores.")
    ctx.note("Against the wandb variant without system metrics (`x_disable_stats=True`): "
             f"log() {m(WB_NOSTATS, 'ratio_log_mean'):.1f}×, "
             f"CPU/call {m(WB_NOSTATS, 'ratio_cpu'):.1f}×.")
    ctx.note("CPU split (median µs/call, Python process + helper processes): "
             + "; ".join(f"{case} {m(case, 'py_cpu_us_call'):.0f} + "
                         f"{m(case, 'helper_cpu_us_call'):.0f}"
                         for case in (RS, RS_OFF, WB, WB_NOSTATS))
             + f". The Runstream server used {m(RS, 'server_cpu_us_call'):.0f} µs of CPU "
             f"per call meanwhile (not counted: it is the remote side; wandb offline only "
             f"writes a local file).")
    ctx.note("Helper processes (descendants seen before the first log() or after finish()): "
             + "; ".join(f"{case}: {', '.join(sorted(names)) or 'none'}"
                         for case, names in state["helpers"].items())
             + ". wandb samples system metrics every 15 s by default "
             "(`x_stats_sampling_interval`): in runs of a few seconds that is a sample or two.")
    ctx.note("Clients: " + ", ".join(sorted(state["clients"])) + ".")
