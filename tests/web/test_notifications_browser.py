"""Notifications in Chromium: Alice mentions Bob in a note (with the composer's `@mention`
completion); the worker's notifier makes Bob's notification; Bob's bell counts it live in
another browser context, on a page with its own event stream and on one without, and the
browser shows it (the Notification API) while his tab is open. (SQLite; the HTTP-level tests
cover both databases.)"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine

from imapdesk.domain import events
from imapdesk.domain.notifications import from_events
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.settings import Settings
from imapdesk.worker.notifications import Notifier
from tests.support import factories as f
from tests.support.browser import LiveServer, signed_in_context

pytestmark = pytest.mark.browser

# records what the page asks the browser to show (headless Chromium shows nothing)
RECORD_NOTIFICATIONS = """
window.__shown = [];
window.Notification = function (title, options) {
  window.__shown.push((options || {}).body);
  return { close: function () {} };
};
window.Notification.permission = "granted";
window.Notification.requestPermission = function () { return Promise.resolve("granted"); };
"""


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def notifier(engine: Engine, settings: Settings) -> Iterator[None]:
    with unit_of_work(engine) as s:
        events.pending_events(s, from_events.CONSUMER)  # starts here
    stop = threading.Event()
    quick = settings.model_copy(update={"notifications_poll_seconds": 0.05})
    thread = threading.Thread(target=Notifier(engine, quick, stop).run, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(10)


def test_a_mention_reaches_the_other_agents_bell_live(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    notifier: None,
) -> None:
    with unit_of_work(engine) as s:
        conv = f.conversation(s, f.mailbox(s), "Printer on fire", minutes=1)
        f.message(s, conv, from_email="carol@customer.example", text="It burns.")
        cid = conv.id
    bob_context = signed_in_context(new_context, live_server, settings, engine, agents["bob"])
    bob_context.add_init_script(RECORD_NOTIFICATIONS)
    bob_list = bob_context.new_page()  # the list has its own event stream
    bob_list.goto(f"{live_server.url}/")
    bob_other = bob_context.new_page()  # this page has none: the bell's own
    bob_other.goto(f"{live_server.url}/notifications")
    for page in (bob_list, bob_other):
        expect(page.locator("#notif-bell")).to_have_attribute("data-unread", "0")
        expect(page.locator("#notif-count")).to_be_hidden()
    expect(bob_list.locator("#live-status")).to_have_attribute("data-state", "connected")

    alice = signed_in_context(new_context, live_server, settings, engine, agents["alice"])
    page = alice.new_page()
    page.goto(f"{live_server.url}/conversations/{cid}")
    page.locator("body").press("n")
    body = page.locator("textarea[name=body]")
    body.press_sequentially("Could you look, @bo")
    expect(page.locator("#mention-list")).to_contain_text("@bob (Bob Builder)")
    body.press("Enter")
    expect(page.locator("#mention-list")).to_have_count(0)
    body.press_sequentially("? Thanks")
    expect(body).to_have_value("Could you look, @bob ? Thanks")
    page.click("[data-send]")
    expect(page.locator("article.message-note")).to_contain_text("@bob")

    for bob in (bob_list, bob_other):
        expect(bob.locator("#notif-count")).to_have_text("1")
        expect(bob.locator("#notif-count")).to_be_visible()
    shown = bob_list.evaluate("window.__shown")
    assert shown and "mentioned you on" in shown[0]
    # Alice, who wrote it, is told nothing
    expect(page.locator("#notif-bell")).to_have_attribute("data-unread", "0")

    # Bob opens it: read, and the count goes down on reload
    bob_other.reload()
    expect(bob_other.locator("#notif-list li.unread")).to_have_count(1)
    bob_other.click("#notif-list li.unread a")
    expect(bob_other.locator("h1")).to_have_text("Printer on fire")
    expect(bob_other.locator("#notif-bell")).to_have_attribute("data-unread", "0")
