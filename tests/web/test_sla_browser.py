"""SLAs in headless Chromium: an admin adds a calendar and a policy on the admin pages; the Due
soon and Breached queues list by due time; the conversation page shows the due time with a
warning style before the breach and an alert after it. (On SQLite; the queues are covered on
both databases over HTTP in tests/api/test_sla_api.py.)"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.domain.events import EventKind, record_event
from imapdesk.domain.sla import clock
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import BusinessCalendar, SlaPolicy, utcnow
from tests.support import factories as f
from tests.support.browser import LiveServer, sign_in_page

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("cheap_password_hashing")]


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


def test_admin_sets_up_an_sla_and_the_due_time_shows(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    agents: dict[str, int],
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "support")
        soon = f.conversation(s, box, "Printer on fire", minutes=1)
        late = f.conversation(s, box, "Paper jam", minutes=2)
        ids = {"soon": soon.id or 0, "late": late.id or 0}
    page = new_context().new_page()
    sign_in_page(page, live_server.url, "alice@example.com")

    # the admin pages: a calendar, then a round-the-clock policy for the mailbox
    page.goto(f"{live_server.url}/admin/slas")
    calendar_form = page.locator("section[aria-labelledby=add-calendar] form")
    calendar_form.locator("input[name=name]").fill("Berlin office")
    calendar_form.locator("input[name=timezone]").fill("Europe/Berlin")
    calendar_form.locator("input[name=monday]").fill("09:00-12:00, 13:00-17:00")
    calendar_form.locator("textarea[name=holidays]").fill("2026-12-24\n2026-12-25")
    calendar_form.locator("button[type=submit]").click()
    expect(page.locator(".flash")).to_have_text("Added the calendar Berlin office.")
    expect(page.locator("input[name=monday]")).to_have_value("09:00-12:00, 13:00-17:00")
    page.goto(f"{live_server.url}/admin/slas")
    policy_form = page.locator("section[aria-labelledby=add-policy] form")
    policy_form.locator("input[name=name]").fill("Support hour")
    policy_form.locator("select[name=mailbox_id]").select_option(label="support")
    policy_form.locator("input[name=first_response_minutes]").fill("60")
    policy_form.locator("button[type=submit]").click()
    expect(page.locator(".flash")).to_have_text("Added the SLA policy Support hour.")
    expect(page.locator('tr[data-policy="Support hour"]')).to_contain_text("round the clock")
    with Session(engine) as s:
        assert s.exec(select(BusinessCalendar)).one().holidays == ["2026-12-24", "2026-12-25"]
        assert s.exec(select(SlaPolicy)).one().first_response_minutes == 60

    # the clock gives them due times: one due in 20 minutes, one 30 minutes overdue
    clock.start(engine)
    now = utcnow()
    with unit_of_work(engine) as s:
        for name, age in (("soon", 40), ("late", 90)):
            row = record_event(s, EventKind.conversation_created, conversation_id=ids[name])
            row.created_at = now - timedelta(minutes=age)
    assert clock.handle_events(engine) == 2

    page.goto(live_server.url)
    page.click('.sidebar a[data-queue="due_soon"]')
    expect(page.locator("h1")).to_have_text("Due soon")
    rows = page.locator("table.conversations tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Printer on fire")
    expect(rows.first.locator("[data-sla-due]")).to_have_attribute("data-sla-due", "due_soon")
    page.click('.sidebar a[data-queue="breached"]')
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Paper jam")
    expect(rows.first.locator("[data-sla-due]")).to_contain_text("Overdue since")

    # the conversation page: the due time, in the warning style before the breach
    page.goto(f"{live_server.url}/conversations/{ids['soon']}")
    panel = page.locator(".sla-panel")
    expect(panel).to_have_attribute("data-sla", "due_soon")
    expect(panel).to_contain_text("Support hour")
    expect(panel.locator('[data-sla-target="first_response"]')).to_contain_text(
        "first response due"
    )
    due = now - timedelta(minutes=40) + timedelta(minutes=60)
    expect(panel.locator("[data-sla-target=first_response] time")).to_have_attribute(
        "datetime", due.isoformat()
    )
    # the warning style (retried: a live refresh may replace the panel meanwhile)
    expect(panel).to_have_css("border-left-color", "rgb(199, 154, 0)")
    page.goto(f"{live_server.url}/conversations/{ids['late']}")
    expect(page.locator(".sla-panel")).to_have_attribute("data-sla", "breached")
    expect(page.locator(".sla-panel[role=alert]")).to_contain_text("first response overdue since")
