"""The benchmark harness cannot rot: every scenario runs in smoke mode and records its
metrics.

The scenarios are the ones ``python -m bench --list`` prints (asked at collection, so a
scenario added to ``bench/scenarios/`` is tested without touching this file). Each runs
as ``python -m bench --smoke --out <tmp> NAME`` in its own process group: tiny sizes
(``params(True)`` + the scenario's ``SMOKE``), one repetition; results never go to
``bench/results/`` or ``bench/RESULTS.md``. Scenarios that need an anchor's virtualenv
(wandb) create it under ``.cache/bench-venvs`` the first time; scenarios that need Kafka
start their own broker from the jars ``make kafka-libs`` fetched.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench import harness

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 270          # under pytest's 300 s per test (pytest.ini)

pytestmark = pytest.mark.bench


def _bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m bench ARGS`` from the repository, in a new process group that is
    killed whole (servers and workers included) when it outlives ``timeout``."""
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"python -m bench {' '.join(args)}: no exit after {timeout} s\n{out[-5000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def _listed() -> list[str]:
    """The first word of each line ``python -m bench --list`` prints."""
    r = _bench("--list", timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"python -m bench --list exited {r.returncode}:\n{r.stdout}")
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


SCENARIOS = _listed()


def test_list_names_every_scenario_module():
    modules = sorted(p.stem for p in (REPO / "bench" / "scenarios").glob("*.py")
                     if not p.stem.startswith("_"))
    assert sorted(SCENARIOS) == modules


@pytest.mark.parametrize("name", SCENARIOS)
def test_smoke_run_records_every_declared_metric(name, tmp_path):
    out = tmp_path / "results"
    r = _bench("--smoke", "--out", str(out), name, timeout=RUN_TIMEOUT_S)
    assert r.returncode == 0, f"python -m bench --smoke {name} exited {r.returncode}:\n" \
                              f"{r.stdout[-8000:]}"
    assert "RESULTS.md" not in r.stdout
    assert sorted(p.name for p in out.iterdir()) == [f"{name}.json"]
    result = json.loads((out / f"{name}.json").read_text())
    assert (result["scenario"], result["smoke"], result["reps"]) == (name, True, 1)

    declared = [c["key"] for c in result["columns"]]
    cases = {c["case"]: c["metrics"] for c in result["cases"]}
    assert declared and cases
    for case, metrics in cases.items():
        assert set(metrics) & set(declared), f"{case!r} has none of the metrics {declared}"
        for key, stat in metrics.items():
            assert len(stat["values"]) == 1 and math.isfinite(stat["median"]), (case, key)
    recorded = {key for metrics in cases.values() for key in metrics}
    assert [k for k in declared if k not in recorded] == []

    goals = result["goals"]       # as the scenario declares them, checked by the harness
    assert goals == harness.validate_goals(goals, name)
    for goal in goals:      # case names may carry the full sizes; metric keys do not
        assert goal["metric"] in recorded, goal
        if "anchor" in goal:
            assert goal["anchor"]["metric"] in recorded, goal
