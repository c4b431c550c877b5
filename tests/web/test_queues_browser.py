"""The conversation list in headless Chromium: sign in, queue counts, search, bulk close, the
sign-in lockout message, a phone-sized screen. (On SQLite; the same behaviour is covered on
both databases over HTTP in test_queues.py, test_search.py and test_login_limits.py.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine

from imapdesk.domain.accounts import login_attempts
from imapdesk.kernel.db import unit_of_work
from tests.support import factories as f
from tests.support.browser import LiveServer, sign_in_page

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("cheap_password_hashing")]


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def listed(engine: Engine, agents: dict[str, int]) -> dict[str, int]:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "support")
        a = f.conversation(s, box, "Airship delivery", minutes=1)
        f.message(s, a, text="Our zeppelin arrived deflated.", from_email="c@customer.example")
        b = f.conversation(s, box, "Printer on fire", minutes=2, tags=("urgent",))
        c = f.conversation(s, box, "Invoice", minutes=3, assignee_id=agents["alice"])
        f.conversation(s, box, "Waiting", minutes=4, status="pending")
        f.conversation(s, box, "Done", minutes=5, status="closed")
    return {"a": a.id or 0, "b": b.id or 0, "c": c.id or 0}


def count(page: Any, queue: str) -> Any:
    return page.locator(f'.sidebar a[data-queue="{queue}"] .count')


def test_sign_in_queues_search_and_bulk_close(
    live_server: LiveServer, new_context: Callable[..., Any], listed: dict[str, int]
) -> None:
    page = new_context().new_page()
    sign_in_page(page, live_server.url, "alice@example.com")
    for queue, n in (("mine", "1"), ("unassigned", "2"), ("open", "3"), ("pending", "1")):
        expect(count(page, queue)).to_have_text(n)
    expect(count(page, "closed")).to_have_text("1")
    expect(page.locator('.sidebar a[data-tag="urgent"] .count')).to_have_text("1")

    # a word only in a message body
    page.fill("#top-q", "zeppelin")
    page.press("#top-q", "Enter")
    page.wait_for_url("**/?q=zeppelin")
    expect(page.locator("table.conversations tbody tr")).to_have_count(1)
    expect(page.locator("table.conversations tbody tr")).to_contain_text("Airship delivery")

    # select every open one and close them
    page.click('.sidebar a[data-queue="open"]')
    expect(page.locator("h1")).to_have_text("All open")
    page.check("#select-all")
    expect(page.locator("#bulk-count")).to_have_text("3 selected:")
    page.select_option("#bulk-action", "close")
    expect(page.locator(".bulk-assignee")).to_be_hidden()
    page.click("#bulk-apply")
    expect(page.locator(".flash")).to_have_text("Closed 3 conversations.")
    expect(count(page, "open")).to_have_text("0")
    expect(count(page, "closed")).to_have_text("4")
    expect(page.locator("p.empty")).to_have_text("No conversations here.")


def test_lockout_message_and_a_phone_screen(
    live_server: LiveServer, new_context: Callable[..., Any], listed: dict[str, int]
) -> None:
    page = new_context(viewport={"width": 390, "height": 844}).new_page()
    page.goto(f"{live_server.url}/login")
    for _ in range(login_attempts.ACCOUNT_LIMIT):
        page.fill("input[name=email]", "bob@example.com")
        page.fill("input[name=password]", "not it")
        page.click("button[type=submit]")
        expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    page.fill("input[name=email]", "bob@example.com")
    page.fill("input[name=password]", "not it either")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-in attempts")

    sign_in_page(page, live_server.url, "alice@example.com")
    expect(count(page, "open")).to_have_text("3")
    # nothing sticks out sideways on a phone, and the sign-out stays reachable
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.get_by_role("link", name="Admin")).to_be_visible()
