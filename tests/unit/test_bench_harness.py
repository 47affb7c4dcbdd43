"""The benchmark harness's pure parts: goals (validation, evaluation, the RESULTS.md
table) and smoke-mode sizes."""

from __future__ import annotations

import types

import pytest

from bench import harness

WB = "wandb offline"
LOG_GOAL = {"label": "log() mean ≤ 10 µs", "case": "runstream", "metric": "log_us_mean",
            "target": 10.0, "higher_is_better": False,
            "anchor": {"case": WB, "metric": "log_us_mean", "label": "wandb"}}
RATIO_GOAL = {"label": "≥ 30× lower than wandb", "case": WB, "metric": "ratio_log_mean",
              "target": 30, "higher_is_better": True}


def _stat(median: float, lo: float, hi: float) -> dict:
    return {"median": median, "min": lo, "max": hi, "values": [lo, median, hi]}


def _result(scenario: str = "client_vs_wandb", goals: list | None = None) -> dict:
    """A recorded result as the harness writes it (what RESULTS.md is rendered from)."""
    return {
        "schema": harness.SCHEMA, "scenario": scenario, "title": "Client vs wandb",
        "about": "About.", "quick": False, "smoke": False, "reps": 3,
        "columns": [{"key": "log_us_mean", "label": "log() µs mean", "lower_is_better": True}],
        "params": {"calls": 20_000}, "notes": [], "goals": goals or [],
        "cases": [
            {"case": "runstream", "metrics": {"log_us_mean": _stat(4.55, 3.9, 5.6)}},
            {"case": WB, "metrics": {"log_us_mean": _stat(168.5, 150.0, 190.0),
                                     "ratio_log_mean": _stat(37.06, 29.9, 46.6)}},
        ],
        "rep_info": [{"rep": i, "loadavg_1m_before": 0.5, "seconds": 1.0,
                      "other_cpu_cores": 0.01} for i in range(3)],
        "date": "2026-11-28T17:27:45Z", "duration_s": 78.5,
        "machine": {"nproc": 2, "memory_gib": 23.5, "cpu_model": "cpu", "os": "Debian",
                    "kernel": "6.1", "arch": "x86_64"},
        "versions": {"python": "CPython 3.11.7"},
        "git": {"commit": "0" * 40, "dirty_files": []},
    }


# --- validate_goals ---------------------------------------------------------------------

def test_validate_goals_returns_copies_of_valid_goals():
    goals = harness.validate_goals([LOG_GOAL, RATIO_GOAL], "GOALS")
    assert goals == [LOG_GOAL, RATIO_GOAL]
    goals[0]["anchor"]["label"] = "changed"
    assert LOG_GOAL["anchor"]["label"] == "wandb"


@pytest.mark.parametrize("bad, message", [
    ({k: v for k, v in RATIO_GOAL.items() if k != "target"}, "missing keys ['target']"),
    ({**RATIO_GOAL, "higher_is_beter": True}, "unknown keys ['higher_is_beter']"),
    ({**RATIO_GOAL, "target": "30"}, "target = '30'"),
    ({**RATIO_GOAL, "target": True}, "target = True"),
    ({**RATIO_GOAL, "higher_is_better": 1}, "higher_is_better = 1"),
    ({**LOG_GOAL, "anchor": {"case": WB, "metric": "log_us_mean"}}, "GOALS[0].anchor"),
    ("log() ≤ 10 µs", "expected a dict"),
])
def test_validate_goals_rejects_malformed_goals(bad, message):
    with pytest.raises(ValueError, match="GOALS") as err:
        harness.validate_goals([bad], "GOALS")
    assert message in str(err.value)


def test_validate_goals_rejects_a_goals_value_that_is_not_a_list():
    with pytest.raises(ValueError, match="expected a list"):
        harness.validate_goals(LOG_GOAL, "GOALS")


# --- evaluate_goal ----------------------------------------------------------------------

@pytest.mark.parametrize("target, higher, status", [
    (10.0, False, "met"), (4.55, False, "met"), (4.0, False, "not met"),
    (4.0, True, "met"), (4.55, True, "met"), (10.0, True, "not met"),
])
def test_evaluate_goal_compares_the_median_with_the_target(target, higher, status):
    goal = {**RATIO_GOAL, "case": "runstream", "metric": "log_us_mean", "target": target,
            "higher_is_better": higher}
    got = harness.evaluate_goal(goal, _result())
    assert got["status"] == status
    assert got["stat"]["median"] == 4.55
    assert got["ratio"] is None


def test_anchor_ratio_is_anchor_over_measured_when_lower_is_better():
    got = harness.evaluate_goal(LOG_GOAL, _result())
    assert got["ratio"] == pytest.approx(168.5 / 4.55)


def test_anchor_ratio_is_measured_over_anchor_when_higher_is_better():
    goal = {**RATIO_GOAL, "anchor": {"case": "runstream", "metric": "log_us_mean",
                                     "label": "runstream"}}
    assert harness.evaluate_goal(goal, _result())["ratio"] == pytest.approx(37.06 / 4.55)


@pytest.mark.parametrize("goal", [
    {**LOG_GOAL, "case": "runstream, 100,000 steps"},
    {**LOG_GOAL, "metric": "log_us_p99"},
])
def test_a_goal_on_a_missing_case_or_metric_is_not_measured(goal):
    assert harness.evaluate_goal(goal, _result()) == {
        "stat": None, "status": "not measured", "ratio": None}


def test_a_goal_without_results_is_not_measured():
    assert harness.evaluate_goal(LOG_GOAL, None)["status"] == "not measured"


def test_a_missing_anchor_leaves_the_goal_measured_without_a_ratio():
    goal = {**LOG_GOAL, "anchor": {**LOG_GOAL["anchor"], "case": "wandb online"}}
    got = harness.evaluate_goal(goal, _result())
    assert (got["status"], got["ratio"]) == ("met", None)


# --- goal_rows and the table -------------------------------------------------------------

def test_goal_rows_take_the_declared_goals_then_the_recorded_ones():
    recorded_only = _result("old", goals=[RATIO_GOAL])
    rows = harness.goal_rows([_result(goals=[RATIO_GOAL]), recorded_only],
                             {"client_vs_wandb": [LOG_GOAL], "ingest": [RATIO_GOAL]})
    assert [(r["scenario"], r["goal"]["label"], r["status"]) for r in rows] == [
        ("client_vs_wandb", LOG_GOAL["label"], "met"),
        ("old", RATIO_GOAL["label"], "met"),
        ("ingest", RATIO_GOAL["label"], "not measured"),     # declared, never recorded
    ]


def test_goals_table_shows_target_measured_status_and_anchor_ratio():
    missing = {**RATIO_GOAL, "label": "finish() ≤ 1 s", "case": "runstream, 100,000 steps",
               "target": 1, "higher_is_better": False}
    no_anchor = {**LOG_GOAL, "label": "init() ≤ 0.3 s",
                 "anchor": {**LOG_GOAL["anchor"], "case": "gone"}}
    low = {**RATIO_GOAL, "label": "x", "target": 1_000_000,
           "anchor": {"case": "runstream", "metric": "log_us_mean", "label": "rs"}}
    rows = harness.goal_rows([_result()], {"client_vs_wandb": [LOG_GOAL, RATIO_GOAL, missing,
                                                               no_anchor, low]})
    assert harness.goals_table(rows) == [
        "| scenario | goal | target | measured median (min–max) | status | anchor ratio |",
        "|---|---|---|---|---|---|",
        "| `client_vs_wandb` | log() mean ≤ 10 µs | ≤ 10 | 4.55 (3.90–5.60) | **met** "
        "| 37× wandb |",
        "| `client_vs_wandb` | ≥ 30× lower than wandb | ≥ 30 | 37.1 (29.9–46.6) | **met** | – |",
        "| `client_vs_wandb` | finish() ≤ 1 s | ≤ 1 | – | not measured | – |",
        "| `client_vs_wandb` | init() ≤ 0.3 s | ≤ 10 | 4.55 (3.90–5.60) | **met** "
        "| wandb not measured |",
        "| `client_vs_wandb` | x | ≥ 1,000,000 | 37.1 (29.9–46.6) | **not met** | 8.1× rs |",
    ]


def test_results_md_starts_with_the_goals_table(monkeypatch):
    monkeypatch.setattr(harness, "scenario_names", lambda: ["client_vs_wandb"])
    md = harness.render_markdown([_result()], {"client_vs_wandb": [LOG_GOAL],
                                               "ingest": [RATIO_GOAL]})
    goals, machine = md.index("## Goals"), md.index("## Machine and versions")
    assert goals < machine < md.index("## Client vs wandb (`client_vs_wandb`)")
    section = md[goals:machine]
    assert "| `client_vs_wandb` | log() mean ≤ 10 µs | ≤ 10 | 4.55 (3.90–5.60) | **met** " \
           "| 37× wandb |" in section
    assert "| `ingest` | ≥ 30× lower than wandb | ≥ 30 | – | not measured | – |" in section


def test_results_md_says_when_no_scenario_declares_goals(monkeypatch):
    monkeypatch.setattr(harness, "scenario_names", lambda: ["client_vs_wandb"])
    md = harness.render_markdown([_result()], {"client_vs_wandb": []})
    assert "## Goals\n\nNo scenario declares goals.\n" in md


# --- smoke mode ---------------------------------------------------------------------------

def _scenario(**attrs) -> types.ModuleType:
    mod = types.ModuleType("bench.scenarios.fake")
    mod.params = lambda quick: {"calls": 5_000 if quick else 100_000, "metrics": 10}
    for k, v in attrs.items():
        setattr(mod, k, v)
    return mod


def test_smoke_params_are_quick_params_with_the_smoke_overrides():
    mod = _scenario(SMOKE={"calls": 100})
    assert harness.scenario_params(mod, False, True) == {"calls": 100, "metrics": 10}
    assert harness.scenario_params(mod, True, False) == {"calls": 5_000, "metrics": 10}
    assert harness.scenario_params(mod, False, False) == {"calls": 100_000, "metrics": 10}
    assert harness.scenario_params(_scenario(), False, True) == {"calls": 5_000, "metrics": 10}


def test_a_smoke_override_of_an_unknown_param_is_an_error():
    with pytest.raises(ValueError, match="SMOKE: cals not in params"):
        harness.scenario_params(_scenario(SMOKE={"cals": 100}), False, True)


def test_smoke_runs_one_repetition_other_modes_at_least_min_reps():
    mod = _scenario(REPS=5)
    assert harness.repetitions(mod, False, True, None) == 1
    assert harness.repetitions(mod, False, False, None) == 5
    assert harness.repetitions(mod, True, False, None) == harness.MIN_REPS
    assert harness.repetitions(mod, False, False, 1) == harness.MIN_REPS
