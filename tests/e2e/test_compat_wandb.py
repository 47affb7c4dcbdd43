"""A wandb script run unchanged on ``runstream.compat.wandb`` (tests/e2e/wandb_style_script.py)
against a real embedded server, read back through ``wandb.Api()`` (= ``runstream.Api``)
and the query API: states, config, exact history, summary modes and overrides, media
values, and system metrics (sampled every 0.2 s here) beside the user's steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import runstream.compat.wandb as wandb

from .conftest import ENTITY
from .procs import REPO

pytestmark = [pytest.mark.e2e]

SCRIPT = Path(__file__).with_name("wandb_style_script.py")
PROJECT = "wandb-compat"
EPOCHS, SPE = 5, 20
VAL_LOSS = [0.9, 0.5, 0.7, 0.3, 0.4]
VAL_ACC = [0.1, 0.6, 0.4, 0.8, 0.7]


def start(srv, run_id: str, *extra: str) -> subprocess.Popen:
    """The script as a user would run it; entity and project come from WANDB_* variables."""
    env = {**os.environ, "RUNSTREAM_URL": srv.grpc, "WANDB_ENTITY": ENTITY,
           "WANDB_PROJECT": PROJECT, "RUNSTREAM_SYSTEM_METRICS_INTERVAL": "0.2",
           "RUNSTREAM_FINISH_TIMEOUT": "30", "PYTHONUNBUFFERED": "1"}
    for name in ("RUNSTREAM_ENTITY", "RUNSTREAM_SYSTEM_METRICS", "RUNSTREAM_MODE"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, str(SCRIPT), "--run-id", run_id,
                             "--epochs", str(EPOCHS), "--steps-per-epoch", str(SPE),
                             "--sleep-per-step", "0.01", *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def expected_history() -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {"train/loss": [], "train/lr": [],
                                               "val/loss": [], "val/acc": [], "epoch": []}
    step = gs = 0
    for e in range(EPOCHS):
        for _ in range(SPE):
            out["train/loss"].append((step, 1.0 / (1 + gs)))
            out["train/lr"].append((step, 0.02))
            step += 1
            gs += 1
        out["val/loss"].append((step, VAL_LOSS[e]))
        out["val/acc"].append((step, VAL_ACC[e]))
        out["epoch"].append((step, float(e)))
        step += 1
    return out


def test_a_wandb_script_runs_unchanged(embedded, monkeypatch):
    srv, q = embedded
    ok, failing = start(srv, "wb"), start(srv, "wbf", "--fail")
    out, _ = ok.communicate(timeout=180)
    assert ok.returncode == 0, out
    last_step = EPOCHS * (SPE + 1)                  # the media log's step
    assert f"RUN1 wb step={last_step + 1}" in out and "DONE" in out, out
    out_f, _ = failing.communicate(timeout=180)
    assert failing.returncode == 1, out_f
    assert "RuntimeError: evaluation failed" in out_f and "DONE" not in out_f, out_f

    q.wait_states(PROJECT, {"wb": "finished", "wb-eval": "finished", "wbf": "finished",
                            "wbf-eval": "failed"})
    expected = expected_history()

    def complete():
        h = q.history(PROJECT, "wb", keys=list(expected))
        return h if all(len(h[k].step) == len(v) for k, v in expected.items() if k in h) \
            and set(h) == set(expected) else None

    hist = q.wait_for(complete, 60, "the complete history of wb")
    for key, points in expected.items():
        assert list(zip(hist[key].step, hist[key].value, strict=True)) == points, key

    monkeypatch.setenv("RUNSTREAM_API_URL", srv.grpc)
    api = wandb.Api()
    try:
        assert len(api.runs(f"{ENTITY}/{PROJECT}")) == 4
        r = api.run(f"{ENTITY}/{PROJECT}/wb")
        assert (r.state, r.exit_code, r.name, r.notes, sorted(r.tags), r.group,
                r.job_type) == ("finished", 0, "wandb-style", "a wandb script",
                                ["compat", "e2e"], "compat-group", "train")
        assert {k: r.config[k] for k in ("lr", "epochs", "model/layers", "model/act",
                                         "optimizer", "steps_per_epoch", "fail",
                                         "run_id")} == {
            "lr": 0.02, "epochs": EPOCHS, "model/layers": 3, "model/act": "relu",
            "optimizer": "adam", "steps_per_epoch": SPE, "fail": False, "run_id": "wb"}
        s = r.summary
        assert s["val/loss"] == min(VAL_LOSS)           # define_metric(summary="min")
        assert s["val/acc"] == max(VAL_ACC)             # "max,last": the first mode
        assert s["train/loss"] == -1.0                  # the override persists
        assert s["epoch"] == EPOCHS - 1 and s["train/lr"] == 0.02
        assert s["best_epoch"] == VAL_LOSS.index(min(VAL_LOSS))
        assert s["predictions"] == {"_type": "table", "columns": ["id", "prediction"],
                                    "data": [[0, "class-0"], [1, "class-1"],
                                             [2, "class-0"]]}
        assert s["weights"]["_type"] == "histogram" and s["weights"]["values"] == [
            3.0, 0.0, 0.0, 1.0]
        assert 0.0 <= s["system/cpu_percent"] <= 100.0
        assert s["system/proc_rss_bytes"] > 1_000_000
        rows = r.history(keys=["val/loss"])
        assert [(row["_step"], row["val/loss"]) for row in rows] == expected["val/loss"]

        # System metrics: their own points, at steps the user reached, never moving them.
        sysh = q.history(PROJECT, "wb", keys=["system/cpu_percent", "system/memory_percent"])
        cpu = sysh["system/cpu_percent"]
        assert len(cpu.step) >= 2, list(cpu.step)
        assert all(0 <= st <= last_step + 1 for st in cpu.step)
        assert list(cpu.step) == sorted(cpu.step)
        assert all(0.0 < v < 100.0 for v in sysh["system/memory_percent"].value)

        ev = api.run(f"{ENTITY}/{PROJECT}/wb-eval")
        assert (ev.state, ev.job_type, ev.name, ev.config["checkpoint"]) == (
            "finished", "eval", "eval", "best")
        assert ev.summary["eval/best"] == 0.4 and ev.summary["eval/score"] == 0.4
        failed = api.run(f"{ENTITY}/{PROJECT}/wbf-eval")
        assert (failed.state, failed.exit_code) == ("failed", 1)
        assert api.run(f"{ENTITY}/{PROJECT}/wbf").state == "finished"
    finally:
        api.close()
