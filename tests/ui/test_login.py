"""Signing in to the web UI (services/runstream_server/web/static/js/login.js, main.js).

Every /api/ route needs an API key; the page sends it as the HttpOnly cookie
``runstream_key`` that ``POST /api/v1/login`` sets. The ``page`` fixture starts signed in
(the session's admin key, ``RUNSTREAM_API_KEY``, as that cookie); ``signed_out_page`` is
a page of a new context without the cookie. Chromium logs every 401 answer as a console
error ("Failed to load resource ... 401"): those are expected here and left out of the
console checks.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import Page, expect

from tests.ui.conftest import open_page

pytestmark = pytest.mark.ui

COOKIE = "runstream_key"
WRONG_KEY = "rsk_wrong_0123456789abcdef"


# -- helpers ------------------------------------------------------------------------

@pytest.fixture
def signed_out_page(browser, request):
    """Like the ``page`` fixture, but WITHOUT the sign-in cookie."""
    with open_page(browser, request, signed_in=False) as pg:
        yield pg


def _workspace_url(ui_server) -> str:
    return f"{ui_server.http}/#/p/{ui_server.entity}/{ui_server.project}"


def _server_message_for_wrong_key(ui_server) -> str:
    """What POST /api/v1/login answers (401) for WRONG_KEY: the message the form shows."""
    req = urllib.request.Request(ui_server.http + "/api/v1/login", method="POST",
                                 data=json.dumps({"key": WRONG_KEY}).encode(),
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert info.value.code == 401
    error = json.loads(info.value.read())["error"]
    assert error["code"] == "UNAUTHENTICATED"
    return error["message"]


def _expect_sign_in_form(page: Page) -> None:
    expect(page.get_by_role("heading", name="Sign in to Runstream")).to_be_visible()
    key = page.get_by_label("API key", exact=True)
    expect(key).to_be_visible()
    expect(key).to_have_attribute("type", "password")
    expect(key).to_have_attribute("id", "login-key")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.locator("#app")).to_contain_text("admin-key")
    expect(page.locator("#app")).to_contain_text("runstream key create")
    # No data, and nobody in the top bar.
    expect(page.get_by_test_id("workspace")).to_have_count(0)
    expect(page.get_by_test_id("runs-table")).to_have_count(0)
    expect(page.get_by_test_id("projects-list")).to_have_count(0)
    expect(page.get_by_test_id("signed-in-user")).to_have_count(0)
    expect(page.get_by_test_id("sign-out")).to_have_count(0)


def _sign_in(page: Page, key: str) -> None:
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Sign in").click()


def _expect_workspace(page: Page, ui_server) -> None:
    expect(page.get_by_test_id("run-total")).to_have_text(re.compile(r"^\d+ runs?$"))
    row = page.get_by_test_id(f"run-row-{ui_server.runs['cnn-1']}")
    expect(row.get_by_test_id("run-name")).to_have_text("cnn-1")
    expect(page.locator("#topbar").get_by_test_id("signed-in-user")).to_have_text("admin")
    expect(page.get_by_role("heading", name="Sign in to Runstream")).to_have_count(0)


def _key_cookie(page: Page) -> dict | None:
    return next((c for c in page.context.cookies() if c["name"] == COOKIE), None)


def _unexpected_console_errors(page: Page) -> list[str]:
    """Console errors other than Chromium's "Failed to load resource ... 401" lines."""
    return [e for e in page.console_errors if "status of 401" not in e]


# -- tests --------------------------------------------------------------------------

def test_sign_in_form_refuses_a_wrong_key_and_accepts_the_right_one(
        ui_server, signed_out_page, screenshot):
    page = signed_out_page
    page.goto(_workspace_url(ui_server))
    _expect_sign_in_form(page)
    expect(page.get_by_text("cnn-1")).to_have_count(0)
    expect(page.get_by_role("alert")).to_have_count(0)      # no error before a try
    screenshot(page, "login-form")

    _sign_in(page, WRONG_KEY)
    alert = page.get_by_role("alert")
    expect(alert).to_have_text(_server_message_for_wrong_key(ui_server))
    _expect_sign_in_form(page)                                # the form stays
    assert _key_cookie(page) is None
    screenshot(page, "login-wrong-key")

    _sign_in(page, os.environ["RUNSTREAM_API_KEY"])
    _expect_workspace(page, ui_server)
    expect(page).to_have_url(_workspace_url(ui_server))       # the route the user was on
    cookie = _key_cookie(page)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    screenshot(page, "login-signed-in")
    assert _unexpected_console_errors(page) == [], page.console_errors


def test_sign_out_shows_the_form_and_a_reload_stays_signed_out(ui_server, page, screenshot):
    page.goto(_workspace_url(ui_server))                      # signed in by the fixture
    _expect_workspace(page, ui_server)

    page.get_by_test_id("sign-out").click()
    _expect_sign_in_form(page)
    assert _key_cookie(page) is None
    screenshot(page, "login-signed-out")

    page.reload()
    _expect_sign_in_form(page)
    expect(page.get_by_text("cnn-1")).to_have_count(0)
    screenshot(page, "login-signed-out-reload")
    assert _unexpected_console_errors(page) == [], page.console_errors


def test_a_401_later_shows_the_form_and_signing_in_returns_to_the_route(ui_server, page):
    page.goto(ui_server.http + "/")
    project = page.get_by_test_id(f"project-{ui_server.project}")
    expect(project).to_be_visible()
    expect(page.get_by_test_id("signed-in-user")).to_have_text("admin")

    page.context.clear_cookies()           # the key is gone while the page is open
    project.click()
    _expect_sign_in_form(page)
    expect(page).to_have_url(_workspace_url(ui_server))

    _sign_in(page, os.environ["RUNSTREAM_API_KEY"])
    _expect_workspace(page, ui_server)
    assert _unexpected_console_errors(page) == [], page.console_errors
