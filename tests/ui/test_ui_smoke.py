"""Smoke test of the browser-test set-up: the served page loads in Chromium, the seeded
project is there through the JSON API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.e2e.procs import auth_headers
from tests.ui.seed_script import SEED_RUNS, STEPS, train_loss, val_acc


def _config(row: dict) -> dict:
    """A run's config from the JSON API, its values decoded if they come JSON-encoded."""
    def value(v):
        if isinstance(v, str):
            try:
                return json.loads(v)
            except ValueError:
                return v
        return v
    return {k: value(v) for k, v in row["config"].items()}


def test_index_page_loads_without_console_errors(ui_server, page, screenshot):
    # First without the browser, for a clear message (Chromium downloads a non-HTML answer).
    try:
        with urllib.request.urlopen(ui_server.http + "/", timeout=30) as r:
            status, ctype = r.status, r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, ctype = e.code, e.headers.get("Content-Type", "")
    assert (status, ctype.split(";")[0]) == (200, "text/html"), f"GET / answered {status} {ctype}"
    response = page.goto(ui_server.http + "/")
    assert response is not None and response.status == 200
    page.wait_for_load_state("networkidle")
    assert "Runstream" in page.title()
    screenshot(page, "smoke")
    assert page.console_errors == []


def test_seeded_project_is_served_by_the_json_api(ui_server):
    projects = ui_server.get_json(f"/api/v1/projects?entity={ui_server.entity}")["projects"]
    by_name = {p["name"]: p for p in projects}
    assert ui_server.project == "ui-demo" and "ui-demo" in by_name
    # Live runs that other tests started in ui-demo are extra runs of the project.
    extra = sum(1 for h in ui_server.live if h.project == ui_server.project)
    assert by_name["ui-demo"]["run_count"] == len(SEED_RUNS) + extra == 9 + extra

    rows = {r["run_id"]: r for r in ui_server.runs_json()}
    assert set(ui_server.runs) == {s["name"] for s in SEED_RUNS}
    for spec in SEED_RUNS:
        row = rows[ui_server.runs[spec["name"]]]
        steps = spec.get("steps", STEPS)
        assert row["name"] == spec["name"]
        assert row["state"] == ("failed" if spec.get("exit_code") else "finished")
        assert _config(row) == spec["config"]
        assert sorted(row["tags"]) == sorted(spec["tags"])
        assert row["notes"] == spec.get("notes", "")
        assert row["summary"]["train/loss"] == train_loss(spec["name"], steps - 1)
        assert row["summary"]["val/acc"] == val_acc(spec["name"], steps - 1)

    run_id = ui_server.runs["cnn-3"]
    series = ui_server.get_json(f"/api/v1/runs/{ui_server.entity}/{ui_server.project}/"
                                f"{run_id}/history?keys=train/loss,val/acc")["series"]
    assert {s["key"] for s in series} == {"train/loss", "val/acc"}
    for s in series:
        assert s["step"] == list(range(STEPS))


def test_live_run_runs_until_stopped(ui_server):
    live = ui_server.start_running_run("live-smoke")
    assert ui_server.run_json(live.run_id)["state"] == "running"
    assert live.proc.poll() is None
    req = urllib.request.Request(
        f"{ui_server.http}/api/v1/runs/{ui_server.entity}/{ui_server.project}/{live.run_id}/stop",
        data=b"{}", method="POST", headers={"Content-Type": "application/json",
                                            **auth_headers()})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 202
    assert live.wait(30) != 0, live.output()
    assert "INTERRUPTED" in live.output()
    ui_server.wait_for(lambda: ui_server.run_json(live.run_id)["state"] == "killed", 30,
                       "the stopped live run to be killed")


def test_page_fixture_collects_console_errors_and_screenshots(page, screenshot):
    page.set_content("<title>Runstream self-test</title><p>ok</p>"
                     "<script>console.log('fine'); console.error('boom');"
                     "setTimeout(() => { throw new Error('kaput'); }, 0);</script>")
    page.wait_for_function("() => true")
    page.wait_for_timeout(100)
    assert any("boom" in e for e in page.console_errors), page.console_errors
    assert any("kaput" in e for e in page.console_errors), page.console_errors
    assert not any("fine" in e for e in page.console_errors)
    path = screenshot(page, "self-test")
    assert path.read_bytes().startswith(b"\x89PNG")
