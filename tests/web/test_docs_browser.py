"""/docs in Chromium with no way out: every request to another host is refused and recorded,
and the page still shows the API and runs a call ("Try it out"), with no policy violation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.browser import LiveServer

pytestmark = pytest.mark.browser


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


def test_docs_work_offline(live_server: LiveServer, new_context: Callable[..., Any]) -> None:
    context = new_context()
    elsewhere: list[str] = []

    def only_this_server(route: Any) -> None:
        if route.request.url.startswith(f"{live_server.url}/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", only_this_server)
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(f"{live_server.url}/docs")
    expect(page.locator(".info .title")).to_contain_text("imapdesk")
    expect(page.locator("#operations-health-healthz_healthz_get")).to_be_visible()
    assert page.locator(".opblock").count() > 10
    # a call from the page: the policy lets it reach this server
    page.click("#operations-health-healthz_healthz_get .opblock-summary")
    page.click("#operations-health-healthz_healthz_get .try-out__btn")
    page.click("#operations-health-healthz_healthz_get .execute")
    live = page.locator("#operations-health-healthz_healthz_get .live-responses-table")
    expect(live.locator("tbody .response-col_status")).to_have_text("200")
    expect(live.locator("tbody .response-col_description")).to_contain_text('"status": "ok"')
    assert elsewhere == []
    assert problems == []
