"""The reports' charts in Chromium: uPlot (vendored) draws each chart's series on a canvas from
the page's JSON, under the page's Content-Security-Policy, with no CSP report and no script
error. (SQLite; tests/web/test_reports.py covers the figures on both databases.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent
from imapdesk.kernel.settings import Settings
from tests.support import report_data as data
from tests.support.browser import LiveServer, signed_in_context

pytestmark = pytest.mark.browser

# whether more than `least` pixels of a chart's canvas have the colours of the given series
# (COLORS in frontend/static/reports.js): the series are drawn
COLOUR_SHOWN = """([box, colours, least]) => {
  const canvas = document.querySelector(`.chart[data-chart="${box}"] canvas`);
  if (!canvas) return false;
  const px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < px.length; i += 4) {
    if (px[i + 3] !== 255) continue;
    for (const c of colours) {
      const off = Math.abs(px[i] - c[0]) + Math.abs(px[i + 1] - c[1]) + Math.abs(px[i + 2] - c[2]);
      if (off < 12) n++;
    }
  }
  return n;
}"""
BLUE = [0x1F, 0x77, 0xB4]  # the first series
RED = [0xD6, 0x27, 0x28]  # the second
GREEN = [0x2C, 0xA0, 0x2C]  # the third


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


def test_the_charts_draw_their_series_under_the_csp(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    with unit_of_work(engine) as s:
        alice = s.get(Agent, agents["alice"])
        assert alice is not None
        alice.timezone = "Europe/Berlin"
    data.build(engine, agents["alice"], agents["bob"])
    context = signed_in_context(new_context, live_server, settings, engine, agents["alice"])
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"error: {exc}"))
    # every console error, and any word of the CSP (a refused script or style is reported so)
    page.on(
        "console",
        lambda msg: (
            problems.append(f"{msg.type}: {msg.text}")
            if msg.type == "error" or "Content Security Policy" in msg.text
            else None
        ),
    )
    response = page.goto(f"{live_server.url}/reports?start=2026-12-07&end=2026-12-13&bucket=day")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]

    for box in ("volume", "times", "sla"):
        chart = page.locator(f'.chart[data-chart="{box}"]')
        expect(chart).to_have_attribute("data-drawn", "true")
        expect(chart.locator("canvas")).to_have_count(1)
    # the legend names the series
    expect(page.locator('.chart[data-chart="volume"] .u-legend')).to_contain_text("Created")
    expect(page.locator('.chart[data-chart="volume"] .u-legend')).to_contain_text("Replies")
    # drawn: the series' own colours on the canvases (closed and customer messages: created
    # lies under them much of the week; the first response's median; its attainment)
    for colour in (RED, GREEN):
        page.wait_for_function(COLOUR_SHOWN, arg=["volume", [colour], 40])
    page.wait_for_function(COLOUR_SHOWN, arg=["times", [BLUE], 40])
    page.wait_for_function(COLOUR_SHOWN, arg=["sla", [BLUE], 40])

    # a breakdown: one series per tag
    page.select_option("select[name=breakdown]", "tag")
    page.click("#report-filters button[type=submit]")
    page.wait_for_url("**breakdown=tag**")
    legend = page.locator('.chart[data-chart="volume"] .u-legend')
    for tag in ("billing", "urgent", "(no tag)"):
        expect(legend).to_contain_text(tag)
    page.wait_for_function(COLOUR_SHOWN, arg=["volume", [BLUE, RED, GREEN], 100])
    expect(page.locator("#report-totals tbody tr")).to_have_count(3)

    # a range with nothing in it: empty charts, no script error
    page.goto(f"{live_server.url}/reports?start=2025-01-01&end=2025-01-31&breakdown=tag")
    expect(page.locator("#report-empty")).to_be_visible()
    expect(page.locator('.chart[data-chart="sla"]')).to_have_attribute("data-drawn", "true")

    assert problems == [], problems
