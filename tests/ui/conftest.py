"""Browser tests of the web workspace: a seeded real server and headless Debian Chromium.

Fixtures (every test under tests/ui gets the ``ui`` marker automatically):

- ``ui_server`` (session): a real embedded server (``tests/e2e`` ``start_embedded``: every
  role, local event log, chDB, data in a temporary directory, heartbeat timeout 60 s),
  seeded with the real client SDK, one script process per run (``seed_script.py``):
  project ``ui-demo`` of entity ``e2e`` (``tests.e2e.conftest.ENTITY``) holds the runs
  of ``seed_script.SEED_RUNS``: ``cnn-1``..``cnn-4`` and ``mlp-1``..``mlp-4`` finished,
  ``cnn-diverged`` failed (exit code 1). Returned once the HTTP API shows all of them
  in their final state with their summaries. Attributes and methods: see ``UiServer``.
- ``browser`` (package tests/ui, i.e. once for all browser tests): one headless
  Chromium, ``/usr/bin/chromium`` driven by Playwright (sync API) with ``CHROMIUM_ARGS``;
  Playwright's ``launch()`` gives it a new empty profile (``--user-data-dir`` in a
  temporary directory, removed on close). Package scope because a live sync Playwright
  breaks ``asyncio.run`` in later tests (see the fixture).
- ``page`` (function): a Page in a new browser context (viewport 1400x900), signed in
  (cookie ``runstream_key`` = the session's admin key, ``RUNSTREAM_API_KEY``), default
  timeout 10 s (actions, navigation, and ``expect``). ``page.console_errors`` is a list
  of the page's console errors and uncaught exceptions, as strings: assert it is empty.
  When the test fails, a screenshot ``FAILED-<test name>.png`` is saved.
- ``screenshot`` (function): ``screenshot(page, name)`` saves ``test-output/ui/<name>.png``
  (full page) and returns its path. The folder is git-ignored.

A missing browser never skips: without ``/usr/bin/chromium`` or the ``playwright``
package the tests fail, and say that ``make test`` installs them (``make browser``,
``make setup``); with ``CI=true`` the message says CI is missing it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import ENTITY, start_embedded
from tests.e2e.procs import auth_headers
from tests.ui.seed_script import SEED_RUNS

UI_DIR = Path(__file__).resolve().parent
REPO = UI_DIR.parents[1]
SEED_SCRIPT = UI_DIR / "seed_script.py"
SCREENSHOT_DIR = REPO / "test-output" / "ui"
PROJECT = "ui-demo"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic"]
DEFAULT_TIMEOUT_MS = 10_000
HEARTBEAT_TIMEOUT_S = 60


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _browser_unavailable(reason: str) -> None:
    """Fail (never skip): a browser test that did not run has not passed."""
    if _in_ci():
        pytest.fail(f"browser tests cannot run in CI (CI=true): {reason}. `make test` "
                    "installs Debian chromium (`make browser`) and playwright (`make setup`) "
                    "before pytest: run the suite through `make test`.", pytrace=False)
    pytest.fail(f"browser tests cannot run: {reason}. `make test` installs what they need "
                "(or: `make browser` for Debian chromium, `make setup` for playwright).",
                pytrace=False)


# -- the seeded server --------------------------------------------------------------

def _new_run_id() -> str:
    return secrets.token_hex(6)


class LiveRun:
    """A client script logging one step every ``sleep_per_step`` s until it is stopped."""

    def __init__(self, name: str, project: str, run_id: str, proc: subprocess.Popen,
                 log_path: Path) -> None:
        self.name = name
        self.project = project
        self.run_id = run_id
        self.proc = proc
        self.log_path = log_path

    def wait(self, timeout: float = 30) -> int:
        """Wait for the script to exit (after a stop); its exit code."""
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> int | None:
        """Ctrl-C the script (SIGINT), killing it if it is still there after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def __repr__(self) -> str:
        return f"LiveRun({self.name!r}, run_id={self.run_id!r}, pid={self.proc.pid})"


class UiServer:
    """The seeded server of the browser tests.

    ``http``: base URL ``"http://127.0.0.1:PORT"`` (web UI and JSON API); ``grpc``:
    ``"127.0.0.1:PORT"`` (ingest and query); ``entity`` (``"e2e"``); ``project``
    (``"ui-demo"``); ``runs``: seeded run name -> run id (9 runs, in creation order);
    ``specs``: name -> the seed spec (config, tags, notes, rate, steps, exit_code);
    ``live``: every ``LiveRun`` started so far; ``server`` (``ServerProcess``, its log in
    ``log_path``); ``query`` (``tests.e2e.procs.QueryClient``).
    """

    def __init__(self, server, query, tmp: Path) -> None:
        self.server = server
        self.query = query
        self.tmp = tmp
        self.http = server.http
        self.grpc = server.grpc
        self.entity = ENTITY
        self.project = PROJECT
        self.runs: dict[str, str] = {}
        self.specs: dict[str, dict] = {s["name"]: s for s in SEED_RUNS}
        self.live: list[LiveRun] = []
        self.log_path = tmp / "server.log"

    # reading
    def get_json(self, path: str):
        """GET ``http + path`` and decode the JSON answer (raises HTTPError on 4xx/5xx)."""
        req = urllib.request.Request(self.http + path, headers=auth_headers())
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def run_json(self, run_id: str, project: str | None = None) -> dict:
        return self.get_json(f"/api/v1/runs/{self.entity}/{project or self.project}/{run_id}")

    def runs_json(self, project: str | None = None) -> list[dict]:
        path = f"/api/v1/projects/{self.entity}/{project or self.project}/runs?limit=1000"
        return self.get_json(path)["runs"]

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except (urllib.error.URLError, OSError, KeyError) as e:
                last = e
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}"
                             f"\nserver log tail:\n{self.server.output()}")

    # writing, with the real client
    def _env(self) -> dict:
        return {**os.environ, "RUNSTREAM_URL": self.grpc, "RUNSTREAM_ENTITY": self.entity,
                "RUNSTREAM_SYSTEM_METRICS": "0", "PYTHONUNBUFFERED": "1"}

    def _script(self, name: str, project: str, run_id: str, *extra: str) -> list[str]:
        return [sys.executable, str(SEED_SCRIPT), "--project", project, "--run-id", run_id,
                "--name", name, *extra]

    def seed(self, timeout: float = 120) -> None:
        env = self._env()
        for spec in SEED_RUNS:
            run_id = _new_run_id()
            p = subprocess.run(self._script(spec["name"], self.project, run_id), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=120)
            want = spec.get("exit_code", 0)
            assert p.returncode == want, (f"seeding {spec['name']}: exit {p.returncode}, "
                                          f"expected {want}:\n{p.stdout}")
            self.runs[spec["name"]] = run_id
        final = {run_id: ("failed" if self.specs[name].get("exit_code") else "finished")
                 for name, run_id in self.runs.items()}

        def projected():
            rows = {r["run_id"]: r for r in self.runs_json()}
            return all(rid in rows and rows[rid]["state"] == state
                       and "train/loss" in (rows[rid].get("summary") or {})
                       for rid, state in final.items())
        self.wait_for(projected, timeout, f"the seeded runs of {self.project} to be projected")

    def start_running_run(self, name: str, project: str | None = None, *,
                          sleep_per_step: float = 0.2, timeout: float = 60) -> LiveRun:
        """Start a client script logging one step every ``sleep_per_step`` s until it is
        stopped (web UI / API stop, or ``.stop()``); return once the API shows the run
        ``running``. The run (config arch from the name, lr 0.01, batch_size 32, tag
        "live") is an extra run of ``project`` (default ``ui-demo``)."""
        project = project or self.project
        run_id = _new_run_id()
        log_path = self.tmp / f"live-{name}-{run_id}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                self._script(name, project, run_id, "--live", "--sleep-per-step",
                             str(sleep_per_step)),
                env=self._env(), stdout=log, stderr=subprocess.STDOUT)
        handle = LiveRun(name, project, run_id, proc, log_path)
        self.live.append(handle)

        def running():
            if proc.poll() is not None:
                raise AssertionError(f"live run {name} exited {proc.returncode}:\n"
                                     f"{handle.output()}")
            try:
                return self.run_json(run_id, project)["state"] == "running"
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return False
                raise
        self.wait_for(running, timeout, f"live run {name} ({run_id}) to be running")
        return handle

    def close(self) -> None:
        errors = []
        for h in self.live:
            try:
                h.stop(timeout=15)
            except Exception as e:  # stop the rest, report after
                errors.append(f"{h!r}: {e}")
        self.query.close()
        self.server.stop()
        if errors:
            raise AssertionError("live runs did not stop: " + "; ".join(errors))


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory):
    """The embedded server seeded with project ``ui-demo`` (see ``UiServer``)."""
    tmp = tmp_path_factory.mktemp("ui-server")
    srv, q = start_embedded(tmp, heartbeat_timeout=HEARTBEAT_TIMEOUT_S)
    ui = UiServer(srv, q, tmp)
    try:
        ui.seed()
        yield ui
    finally:
        ui.close()


# -- the browser --------------------------------------------------------------------

@pytest.fixture(scope="package")
def browser():
    """One headless Debian Chromium for the tests of tests/ui (Playwright sync API).

    Package scope, not session: between calls, Playwright's sync API leaves its event
    loop marked as running in the main thread, so ``asyncio.run`` in any later test of
    the session would fail while it is alive. It stops when the last tests/ui test ends.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        _browser_unavailable(f"the Python package playwright is not installed ({e})")
    if not os.access(CHROMIUM, os.X_OK):
        _browser_unavailable(f"{CHROMIUM} (Debian package chromium) is not installed")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                               timeout=60_000)
    except Exception as e:  # any launch error: no browser
        pw.stop()
        _browser_unavailable(f"{CHROMIUM} did not start: {e}")
    try:
        yield b
    finally:
        b.close()
        pw.stop()


@contextlib.contextmanager
def open_page(browser, request, signed_in: bool = True):
    """A Page in a new context (viewport 1400x900, default timeouts); ``signed_in``: with
    the session's admin key as the sign-in cookie (tests/conftest.py).
    ``page.console_errors`` collects console errors; a failed test leaves a
    FAILED-<test> screenshot."""
    from playwright.sync_api import expect

    expect.set_options(timeout=DEFAULT_TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    if signed_in:
        context.add_cookies([{"name": "runstream_key",
                              "value": os.environ["RUNSTREAM_API_KEY"],
                              "domain": "127.0.0.1", "path": "/"}])
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    context.set_default_navigation_timeout(DEFAULT_TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []

    def on_console(msg):
        if msg.type == "error":
            loc = msg.location or {}
            where = f" ({loc.get('url')}:{loc.get('lineNumber')})" if loc.get("url") else ""
            errors.append(f"console.error: {msg.text}{where}")

    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: errors.append(f"uncaught exception: {exc}"))
    pg.console_errors = errors
    try:
        yield pg
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed and not pg.is_closed():
            try:
                save_screenshot(pg, "FAILED-" + request.node.name)
            except Exception:  # the test's own failure is what matters
                pass
        context.close()


@pytest.fixture
def page(browser, request):
    """A signed-in Page in a new context (``open_page``)."""
    with open_page(browser, request) as pg:
        yield pg


def save_screenshot(page, name: str) -> Path:
    """Save a full-page PNG of ``page`` as ``test-output/ui/<name>.png``; its path."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{safe}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def screenshot():
    """``screenshot(page, name)`` -> ``test-output/ui/<name>.png``."""
    return save_screenshot


# -- hooks --------------------------------------------------------------------------

def pytest_collection_modifyitems(config, items):
    for item in items:
        if UI_DIR in Path(str(item.path)).resolve().parents and \
                not item.get_closest_marker("ui"):
            item.add_marker(pytest.mark.ui)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call":
        item.rep_call = rep
    return rep
