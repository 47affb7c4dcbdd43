"""The web UI in headless Chromium, against the real seeded server (tests/ui/conftest.py).

Read-only checks (search, filters, grouping, sorting, the run page) use the seeded project
``ui-demo``; their expectations come from the JSON API at test time, so runs that other
tests add to ``ui-demo`` (live runs) do not break them. Changes to runs (hide, colour,
rename, notes, delete, stop) happen in a project of their own, ``ui-actions``, seeded
here with the same client script. Every test uses its own user name (localStorage
``runstream.user``), hence its own saved workspace state. The test hooks are listed at the
top of services/runstream_server/web/static/js/main.js (and in docs/web.md).
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.parse

import pytest
from playwright.sync_api import Page, expect

from tests.ui.conftest import SEED_SCRIPT

pytestmark = pytest.mark.ui

ACTIONS_PROJECT = "ui-actions"
ACTION_SEEDS = ["cnn-1", "cnn-2", "mlp-1", "mlp-2"]
PALETTE_2 = "#2ca02c"          # colors.js PALETTE[2]
LONG = 30_000                  # ms: waits that span a projector batch and a live update


# -- helpers ------------------------------------------------------------------------

def _user(page: Page) -> str:
    """Give the page a user of its own (so a fresh workspace state); its name."""
    user = f"ui-test-{secrets.token_hex(4)}"
    page.add_init_script(f"localStorage.setItem('runstream.user', {json.dumps(user)})")
    return user


def _open_workspace(page: Page, ui_server, project: str | None = None) -> None:
    project = project or ui_server.project
    page.goto(f"{ui_server.http}/#/p/{ui_server.entity}/{urllib.parse.quote(project)}")
    expect(page.get_by_test_id("run-total")).to_have_text(re.compile(r"^\d+ runs?$"))


def _rows(page: Page):
    return page.locator("[data-testid^='run-row-']")


def _chart_lines(page: Page, key: str):
    return page.get_by_test_id(f"chart-{key}").locator("path[data-run]")


def _row_names(page: Page) -> list[str]:
    return _rows(page).get_by_test_id("run-name").all_inner_texts()


def _api_runs(ui_server, project: str | None = None, **params) -> list[dict]:
    q = urllib.parse.urlencode({"limit": 1000, **params})
    return ui_server.get_json(
        f"/api/v1/projects/{ui_server.entity}/{project or ui_server.project}/runs?{q}")["runs"]


def _workspace_state(ui_server, user: str, project: str | None = None) -> dict:
    q = urllib.parse.urlencode({"user": user})
    return ui_server.get_json(f"/api/v1/projects/{ui_server.entity}/"
                              f"{project or ui_server.project}/workspace?{q}")["state"]


def _no_console_errors(page: Page) -> None:
    assert page.console_errors == [], page.console_errors


def _menu(page: Page, run_id: str, item: str) -> None:
    page.get_by_test_id(f"run-menu-{run_id}").click()
    page.get_by_test_id(item).click()


@pytest.fixture(scope="module")
def actions(ui_server):
    """Project ``ui-actions``: four finished runs (copies of seeded ones); name → run id."""
    env = {**os.environ, "RUNSTREAM_URL": ui_server.grpc, "RUNSTREAM_ENTITY": ui_server.entity,
           "RUNSTREAM_SYSTEM_METRICS": "0", "PYTHONUNBUFFERED": "1"}
    runs = {}
    for name in ACTION_SEEDS:
        run_id = secrets.token_hex(6)
        p = subprocess.run([sys.executable, str(SEED_SCRIPT), "--project", ACTIONS_PROJECT,
                            "--run-id", run_id, "--name", name], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        assert p.returncode == 0, p.stdout
        runs[name] = run_id

    def projected():
        rows = {r["run_id"]: r for r in _api_runs(ui_server, ACTIONS_PROJECT)}
        return all(rid in rows and rows[rid]["state"] == "finished" for rid in runs.values())
    ui_server.wait_for(projected, 60, "the runs of ui-actions to be projected")
    return runs


# -- projects page --------------------------------------------------------------------

def test_projects_page_lists_and_searches_projects(ui_server, page):
    _user(page)
    page.goto(ui_server.http + "/")
    item = page.get_by_test_id(f"project-{ui_server.project}")
    n = len(_api_runs(ui_server))
    expect(item).to_contain_text(f"{n} runs")
    expect(item).to_contain_text("last activity")
    search = page.get_by_test_id("project-search")
    search.fill("no-such-project")
    expect(item).to_have_count(0)
    search.fill("UI-DEM")
    expect(item).to_be_visible()
    item.click()
    expect(page).to_have_url(re.compile(rf"#/p/{ui_server.entity}/{ui_server.project}$"))
    expect(page.get_by_test_id("run-total")).to_have_text(f"{n} runs")
    _no_console_errors(page)


# -- workspace: read-only views of ui-demo ----------------------------------------------

def test_workspace_shows_runs_and_charts(ui_server, page, screenshot):
    _user(page)
    _open_workspace(page, ui_server)
    runs = _api_runs(ui_server)
    expect(page.get_by_test_id("run-total")).to_have_text(f"{len(runs)} runs")
    expect(_rows(page)).to_have_count(len(runs))
    # Default: the first 10 non-hidden runs, newest first, are drawn.
    drawn = min(10, sum(1 for r in runs if not r["hidden"]))
    expect(page.get_by_test_id("run-visualized")).to_have_text(f"{drawn} visualized")
    expect(page.get_by_test_id("visualized-count")).to_have_value("10")
    expect(_chart_lines(page, "train/loss")).to_have_count(drawn)
    expect(_chart_lines(page, "val/acc")).to_have_count(drawn)
    for key in ("train", "val"):
        expect(page.get_by_test_id(f"section-{key}")).to_be_visible()

    failed = page.get_by_test_id(f"run-row-{ui_server.runs['cnn-diverged']}")
    state = failed.get_by_test_id("run-state")
    expect(state).to_have_text("failed")
    expect(state).to_have_attribute("title", re.compile(r"\S"))       # the cause
    cnn3 = page.get_by_test_id(f"run-row-{ui_server.runs['cnn-3']}")
    expect(cnn3.get_by_test_id("run-name")).to_have_text("cnn-3")
    expect(cnn3).to_contain_text("production")
    expect(cnn3).to_contain_text("Best CNN so far")
    legend = page.get_by_test_id("chart-train/loss").get_by_test_id(
        f"legend-{ui_server.runs['cnn-3']}")
    expect(legend).to_have_text("cnn-3")
    screenshot(page, "workspace")

    # Fewer visualized runs: the charts draw exactly that many.
    page.get_by_test_id("visualized-count").fill("3")
    page.get_by_test_id("visualized-count").press("Enter")
    expect(page.get_by_test_id("run-visualized")).to_have_text("3 visualized")
    expect(_chart_lines(page, "train/loss")).to_have_count(3)
    _no_console_errors(page)


def test_search_filters_table_and_charts(ui_server, page):
    _user(page)
    _open_workspace(page, ui_server)
    mlp = sorted(r["run_id"] for r in _api_runs(ui_server) if "mlp" in r["name"].lower())
    assert len(mlp) == 4

    page.get_by_test_id("run-search").fill("MLP")
    expect(page.get_by_test_id("run-total")).to_have_text("4 runs")
    expect(_rows(page)).to_have_count(4)
    lines = _chart_lines(page, "train/loss")
    expect(lines).to_have_count(4)
    assert sorted(lines.evaluate_all("ps => ps.map(p => p.dataset.run)")) == mlp

    # Regular expression search (name_regex).
    page.get_by_test_id("run-search-regex").click()
    expect(page.get_by_test_id("run-search-regex")).to_have_attribute("aria-pressed", "true")
    page.get_by_test_id("run-search").fill("^cnn-[12]$")
    expect(_rows(page)).to_have_count(2)
    assert sorted(_row_names(page)) == ["cnn-1", "cnn-2"]
    expect(_chart_lines(page, "train/loss")).to_have_count(2)
    _no_console_errors(page)


def test_filters_on_tag_and_config_combine_as_chips(ui_server, page):
    _user(page)
    _open_workspace(page, ui_server)
    runs = _api_runs(ui_server)
    production = {r["name"] for r in runs if "production" in r["tags"]}
    production_cnn = {r["name"] for r in runs if "production" in r["tags"]
                      and json.loads(r["config"]["arch"]) == "cnn"}
    assert production == {"cnn-3", "mlp-2", "mlp-4"} and production_cnn == {"cnn-3"}

    page.get_by_test_id("filter-add").click()
    page.get_by_test_id("filter-kind").select_option("tag")
    page.get_by_test_id("filter-value").fill("production")
    page.get_by_test_id("filter-apply").click()
    expect(page.get_by_test_id("filter-chip-0")).to_contain_text("production")
    expect(_rows(page)).to_have_count(len(production))
    assert set(_row_names(page)) == production
    expect(_chart_lines(page, "train/loss")).to_have_count(len(production))

    page.get_by_test_id("filter-add").click()
    page.get_by_test_id("filter-kind").select_option("config")
    page.get_by_test_id("filter-key").fill("arch")
    page.get_by_test_id("filter-value").fill("cnn")
    page.get_by_test_id("filter-apply").click()
    expect(page.get_by_test_id("filter-chip-1")).to_contain_text("arch = cnn")
    expect(_rows(page)).to_have_count(1)
    assert _row_names(page) == ["cnn-3"]

    page.get_by_test_id("filter-remove-0").click()          # drop the tag filter
    arch_cnn = [r for r in runs if json.loads(r["config"]["arch"]) == "cnn"]
    expect(_rows(page)).to_have_count(len(arch_cnn))
    expect(page.get_by_test_id("filter-chip-1")).to_have_count(0)
    _no_console_errors(page)


def test_group_by_config_draws_group_means_with_bands(ui_server, page, screenshot):
    _user(page)
    _open_workspace(page, ui_server)
    runs = [r for r in _api_runs(ui_server) if not r["hidden"]]
    count = {a: sum(1 for r in runs if json.loads(r["config"]["arch"]) == a)
             for a in ("cnn", "mlp")}

    page.get_by_test_id("group-by").select_option("config.arch")
    chart = page.get_by_test_id("chart-train/loss")
    for arch in ("cnn", "mlp"):
        expect(chart.locator(f"path[data-group='{arch}']")).to_have_count(1)
        expect(chart.get_by_test_id(f"band-{arch}")).to_be_visible()
        expect(chart.get_by_test_id(f"legend-{arch}")).to_have_text(
            f"arch={arch} ({count[arch]})")
    expect(chart.locator("path[data-run]")).to_have_count(0)
    val = page.get_by_test_id("chart-val/acc")
    expect(val.get_by_test_id("band-mlp")).to_be_visible()
    expect(val.locator("path[data-run]")).to_have_count(0)
    std_band = chart.get_by_test_id("band-cnn").get_attribute("d")
    screenshot(page, "grouped-chart")

    # The band switches to min–max (a different, wider area).
    page.get_by_test_id("band-kind").select_option("minmax")
    expect(chart.get_by_test_id("band-cnn")).not_to_have_attribute("d", std_band)
    _no_console_errors(page)


def test_sort_by_summary_decides_the_visualized_runs(ui_server, page):
    _user(page)
    _open_workspace(page, ui_server)
    runs = [r for r in _api_runs(ui_server) if "train/loss" in r["summary"]]
    by_loss = sorted(runs, key=lambda r: (r["summary"]["train/loss"], r["run_id"]))

    page.get_by_test_id("column-chooser").click()
    page.get_by_test_id("column-search").fill("train")
    page.get_by_test_id("column-option-summary.train/loss").check()
    page.keyboard.press("Escape")
    header = page.get_by_test_id("col-summary.train/loss")
    expect(header).to_be_visible()
    header.click()                       # first click: descending (highest loss first)
    expect(_rows(page).first.get_by_test_id("run-name")).to_have_text(by_loss[-1]["name"])
    header.click()                       # then ascending: lowest loss first
    expect(_rows(page).first.get_by_test_id("run-name")).to_have_text(by_loss[0]["name"])
    first = _rows(page).first.get_by_test_id("cell-summary.train/loss")
    expect(first).to_have_text(re.compile(r"^\d"))

    page.get_by_test_id("visualized-count").fill("3")
    page.get_by_test_id("visualized-count").press("Enter")
    lines = _chart_lines(page, "train/loss")
    expect(lines).to_have_count(3)
    drawn = sorted(lines.evaluate_all("ps => ps.map(p => p.dataset.run)"))
    assert drawn == sorted(r["run_id"] for r in by_loss[:3])
    _no_console_errors(page)


def test_chart_zoom_requeries_and_smoothing_and_x_axis(ui_server, page):
    _user(page)
    _open_workspace(page, ui_server)
    chart = page.get_by_test_id("chart-train/loss")
    expect(chart.locator("path[data-run]").first).to_be_visible()
    box = chart.locator("rect.overlay").bounding_box()
    y = box["y"] + box["height"] / 2
    with page.expect_request(lambda r: "/history" in r.url and "min_step=" in r.url):
        page.mouse.move(box["x"] + box["width"] * 0.25, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
        page.mouse.up()
    reset = page.get_by_test_id("chart-reset-train/loss")
    expect(reset).to_be_visible()
    chart.locator("rect.overlay").dblclick()
    expect(reset).to_be_hidden()

    smoothing = page.get_by_test_id("smoothing")
    smoothing.fill("0.8")
    expect(chart.locator("path[data-raw]").first).to_be_attached()
    page.get_by_test_id("x-axis").select_option("relative")
    expect(chart.locator("text.tick.x").first).to_have_text(re.compile(r"s$"))
    expect(chart.locator("path[data-run]").first).to_be_visible()
    _no_console_errors(page)


def test_expand_turns_the_sidebar_into_a_full_table(ui_server, page):
    _user(page)
    _open_workspace(page, ui_server)
    charts = page.locator(".ws-charts")
    expect(charts).to_be_visible()
    page.get_by_test_id("table-expand").click()
    expect(charts).to_be_hidden()
    table_width = page.get_by_test_id("runs-table").bounding_box()["width"]
    assert table_width > 1000, table_width
    page.get_by_test_id("table-expand").click()
    expect(charts).to_be_visible()
    _no_console_errors(page)


def test_workspace_state_survives_a_reload(ui_server, page):
    user = _user(page)
    _open_workspace(page, ui_server)
    page.get_by_test_id("run-search").fill("cnn")
    expect(page.get_by_test_id("run-total")).to_have_text(re.compile(r"^[1-9]\d* runs?$"))
    page.get_by_test_id("group-by").select_option("config.arch")
    page.get_by_test_id("band-kind").select_option("minmax")
    page.get_by_test_id("visualized-count").fill("4")
    page.get_by_test_id("visualized-count").press("Enter")
    page.get_by_test_id("column-chooser").click()
    page.get_by_test_id("column-option-config.lr").check()
    page.keyboard.press("Escape")
    page.get_by_test_id("col-name").click()
    page.get_by_test_id("filter-add").click()
    page.get_by_test_id("filter-kind").select_option("tag")
    page.get_by_test_id("filter-value").fill("baseline")
    page.get_by_test_id("filter-apply").click()
    page.get_by_test_id("smoothing").fill("0.5")
    page.get_by_test_id("section-toggle-val").click()
    want = sorted((r["name"] for r in _api_runs(ui_server)
                   if "cnn" in r["name"] and "baseline" in r["tags"]), key=str.lower)
    assert want == ["cnn-1", "cnn-2"]
    expect(_rows(page)).to_have_count(len(want))
    expect(_rows(page).first.get_by_test_id("run-name")).to_have_text(want[0])

    def saved():
        st = _workspace_state(ui_server, user)
        return (st.get("search") == "cnn" and st.get("groupBy") == "config.arch"
                and st.get("band") == "minmax" and st.get("visualized") == 4
                and st.get("columns") == ["config.lr"] and st.get("sort", {}).get("key") == "name"
                and len(st.get("filters", [])) == 1 and st.get("smoothing") == 0.5
                and st.get("collapsed") == ["val"])
    ui_server.wait_for(saved, 10, "the workspace state to be saved")

    page.reload()
    expect(page.get_by_test_id("run-search")).to_have_value("cnn")
    expect(page.get_by_test_id("group-by")).to_have_value("config.arch")
    expect(page.get_by_test_id("band-kind")).to_have_value("minmax")
    expect(page.get_by_test_id("visualized-count")).to_have_value("4")
    expect(page.get_by_test_id("col-config.lr")).to_be_visible()
    expect(page.get_by_test_id("col-name")).to_contain_text("↑")
    expect(page.get_by_test_id("filter-chip-0")).to_contain_text("baseline")
    expect(page.get_by_test_id("smoothing")).to_have_value("0.5")
    expect(page.get_by_test_id("section-val")).to_have_class(re.compile("collapsed"))
    expect(page.get_by_test_id("chart-train/loss").get_by_test_id("band-cnn")).to_be_visible()
    expect(_rows(page)).to_have_count(len(want))
    expect(_rows(page).first.get_by_test_id("run-name")).to_have_text(want[0])
    assert _row_names(page) == want
    _no_console_errors(page)


# -- run page ---------------------------------------------------------------------------

def test_run_page_overview_shows_every_field(ui_server, page, screenshot):
    _user(page)
    run_id = ui_server.runs["cnn-3"]
    run = ui_server.run_json(run_id)
    page.goto(f"{ui_server.http}/#/r/{ui_server.entity}/{ui_server.project}/{run_id}")
    expect(page.get_by_test_id("run-title")).to_have_text("cnn-3")
    expect(page.get_by_test_id("tab-overview")).to_have_attribute("aria-selected", "true")
    ov = {f: page.get_by_test_id(f"ov-{f}") for f in (
        "name", "notes", "privacy", "tags", "user", "state", "start", "duration", "hostname",
        "os", "python", "executable", "command", "hardware", "client_version")}
    for field, loc in ov.items():
        expect(loc, f"ov-{field}").to_be_visible()
        expect(loc, f"ov-{field}").not_to_have_text(re.compile(r"^\s*(—\s*)?$"))
    expect(ov["name"]).to_contain_text("cnn-3")
    expect(ov["notes"]).to_contain_text("Best CNN so far")
    expect(ov["privacy"]).to_contain_text("Private")
    expect(ov["tags"]).to_contain_text("production")
    expect(ov["user"]).to_have_text(run.get("user") or getpass.getuser())
    expect(ov["state"]).to_contain_text("finished")
    expect(ov["start"]).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
    expect(ov["duration"]).to_have_text(re.compile(r"\d"))
    expect(ov["hostname"]).to_have_text(socket.gethostname())
    expect(ov["os"]).to_contain_text(platform.system())
    expect(ov["python"]).to_have_text(platform.python_version())
    expect(ov["executable"]).to_have_text(sys.executable)
    expect(ov["command"]).to_contain_text("seed_script.py")
    expect(ov["command"]).to_contain_text("cnn-3")
    expect(ov["hardware"]).to_contain_text(f"{os.cpu_count()} CPU")
    expect(ov["client_version"]).to_have_text(re.compile(r"^\d+\.\d+"))
    expect(page.get_by_test_id("ov-artifacts")).to_contain_text("No artifacts yet")

    tree = page.get_by_test_id("config-tree")
    for key in ("arch", "lr", "batch_size"):
        expect(tree.locator(f"li[data-path='{key}']")).to_be_visible()
    expect(tree.locator("li[data-path='arch']")).to_contain_text("cnn")
    summary = page.get_by_test_id("summary-table")
    expect(summary).to_contain_text("train/loss")
    expect(summary).to_contain_text("val/acc")
    screenshot(page, "run-page")
    page.get_by_test_id("config-search").fill("batch")
    expect(tree.locator("li[data-path='arch']")).to_have_count(0)
    expect(tree.locator("li[data-path='batch_size']")).to_contain_text("32")

    page.get_by_test_id("tab-charts").click()
    expect(page.get_by_test_id("tab-charts")).to_have_attribute("aria-selected", "true")
    for key in ("train/loss", "val/acc"):
        expect(page.get_by_test_id(f"chart-{key}").locator(f"path[data-run='{run_id}']")) \
            .to_have_count(1)
    page.get_by_test_id("tab-system").click()
    # The seeded scripts run without system metrics (RUNSTREAM_SYSTEM_METRICS=0).
    expect(page.get_by_test_id("charts-empty")).to_contain_text("No system metrics")
    page.get_by_test_id("tab-overview").click()
    expect(page.get_by_test_id("ov-hostname")).to_be_visible()
    _no_console_errors(page)


# -- changes (project ui-actions) ---------------------------------------------------------

def test_hide_colour_rename_and_delete_runs(ui_server, page, actions):
    user = _user(page)
    _open_workspace(page, ui_server, ACTIONS_PROJECT)
    expect(_rows(page)).to_have_count(len(ACTION_SEEDS))
    rid = actions["cnn-2"]
    row = page.get_by_test_id(f"run-row-{rid}")
    lines = _chart_lines(page, "train/loss")
    expect(lines).to_have_count(len(ACTION_SEEDS))

    # Hide (eye): gone from the charts, dimmed in the table, hidden in the API too.
    row.get_by_test_id("run-eye").click()
    expect(row).to_have_class(re.compile("hidden-run"))
    expect(page.get_by_test_id("chart-train/loss").locator(f"path[data-run='{rid}']")) \
        .to_have_count(0)
    expect(lines).to_have_count(len(ACTION_SEEDS) - 1)
    ui_server.wait_for(lambda: ui_server.run_json(rid, ACTIONS_PROJECT)["hidden"], 10,
                       "the run to be hidden in the API")
    # ... and shown again, through the menu.
    _menu(page, rid, "menu-hide")
    expect(page.get_by_test_id("chart-train/loss").locator(f"path[data-run='{rid}']")) \
        .to_have_count(1)
    ui_server.wait_for(lambda: not ui_server.run_json(rid, ACTIONS_PROJECT)["hidden"], 10,
                       "the run to be shown again in the API")

    # Colour: a preset from the menu; the table swatch and the chart line take it.
    _menu(page, rid, "menu-color")
    page.get_by_test_id("color-preset-2").click()
    expect(row.get_by_test_id("run-color")).to_have_attribute("data-color", PALETTE_2)
    expect(page.get_by_test_id("chart-train/loss").locator(f"path[data-run='{rid}']")) \
        .to_have_attribute("stroke", PALETTE_2)
    ui_server.wait_for(lambda: ui_server.run_json(rid, ACTIONS_PROJECT)["color"] == PALETTE_2,
                       10, "the colour to reach the API")
    # A custom colour (<input type=color>).
    row.get_by_test_id("run-color").click()
    page.get_by_test_id("color-custom").fill("#123456")
    expect(row.get_by_test_id("run-color")).to_have_attribute("data-color", "#123456")
    ui_server.wait_for(lambda: ui_server.run_json(rid, ACTIONS_PROJECT)["color"] == "#123456",
                       10, "the custom colour to reach the API")

    # Rename inline.
    _menu(page, rid, "menu-rename")
    page.get_by_test_id("rename-input").fill("cnn-2-renamed")
    page.get_by_test_id("rename-input").press("Enter")
    expect(row.get_by_test_id("run-name")).to_have_text("cnn-2-renamed")
    ui_server.wait_for(
        lambda: ui_server.run_json(rid, ACTIONS_PROJECT)["name"] == "cnn-2-renamed", 10,
        "the new name to reach the API")
    expect(row.get_by_test_id("run-name")).to_have_text("cnn-2-renamed")   # after a refresh
    ui_server.wait_for(
        lambda: _workspace_state(ui_server, user, ACTIONS_PROJECT)["colors"].get(rid)
        == "#123456", 10, "the colour in the saved workspace state")

    # Delete, after a confirmation (cancel first: nothing happens).
    victim = actions["mlp-2"]
    _menu(page, victim, "menu-delete")
    expect(page.get_by_test_id("confirm-dialog")).to_contain_text("mlp-2")
    page.get_by_test_id("confirm-cancel").click()
    expect(page.get_by_test_id(f"run-row-{victim}")).to_be_visible()
    _menu(page, victim, "menu-delete")
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id(f"run-row-{victim}")).to_have_count(0)

    def deleted():
        try:
            ui_server.run_json(victim, ACTIONS_PROJECT)
        except urllib.error.HTTPError as e:
            return e.code == 404
        return False
    ui_server.wait_for(deleted, 10, "the deleted run to be gone from the API")
    expect(page.get_by_test_id("run-total")).to_have_text(f"{len(ACTION_SEEDS) - 1} runs")
    # The menu offers no stop for a finished run.
    page.get_by_test_id(f"run-menu-{rid}").click()
    expect(page.get_by_test_id("menu-rename")).to_be_visible()
    expect(page.get_by_test_id("menu-stop")).to_have_count(0)
    page.keyboard.press("Escape")
    _no_console_errors(page)


def test_run_page_edits_notes_tags_and_privacy(ui_server, page, actions):
    _user(page)
    rid = actions["mlp-1"]
    page.goto(f"{ui_server.http}/#/r/{ui_server.entity}/{ACTIONS_PROJECT}/{rid}")
    notes = page.get_by_test_id("ov-notes")
    expect(notes).to_contain_text("No description yet")
    page.get_by_test_id("notes-edit").click()
    page.get_by_test_id("notes-input").fill("Edited in the browser.")
    page.get_by_test_id("notes-save").click()
    expect(notes).to_contain_text("Edited in the browser.")
    page.get_by_test_id("tag-input").fill("reviewed")
    page.get_by_test_id("tag-input").press("Enter")
    expect(page.get_by_test_id("ov-tags")).to_contain_text("reviewed")
    page.get_by_test_id("privacy-toggle").click()
    expect(page.get_by_test_id("ov-privacy")).to_contain_text("Public")

    def saved():
        r = ui_server.run_json(rid, ACTIONS_PROJECT)
        return (r["notes"] == "Edited in the browser." and "reviewed" in r["tags"]
                and r["privacy"] == "public")
    ui_server.wait_for(saved, 10, "the run page's edits to reach the API")
    page.reload()
    expect(page.get_by_test_id("ov-notes")).to_contain_text("Edited in the browser.")
    expect(page.get_by_test_id("ov-tags")).to_contain_text("reviewed")
    _no_console_errors(page)


def test_stop_a_running_run_from_the_menu(ui_server, page, actions):
    _user(page)
    live = ui_server.start_running_run("live-stop-ui", ACTIONS_PROJECT)
    _open_workspace(page, ui_server, ACTIONS_PROJECT)
    row = page.get_by_test_id(f"run-row-{live.run_id}")
    expect(row.get_by_test_id("run-state")).to_have_text("running")
    _menu(page, live.run_id, "menu-stop")
    # The script really stops: its process ends, interrupted.
    code = live.wait(30)
    assert code != 0, live.output()
    assert "INTERRUPTED" in live.output()
    # The live updates bring the final state into the table.
    expect(row.get_by_test_id("run-state")).to_have_text("killed", timeout=LONG)
    expect(row.get_by_test_id("run-state")).to_have_attribute(
        "title", re.compile("stop", re.IGNORECASE))
    assert ui_server.run_json(live.run_id, ACTIONS_PROJECT)["state"] == "killed"
    _no_console_errors(page)
