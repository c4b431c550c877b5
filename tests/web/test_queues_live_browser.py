"""The conversation list in headless Chromium, live and by keyboard: what another agent, the
REST API or a plain IMAP client (through the real Dovecot and a running worker) changes shows on
an open list without a reload; j/k/Enter/o/x/?// work. (SQLite; test_queues.py covers the
list's live parts on both databases over HTTP.)"""

from __future__ import annotations

import imaplib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.domain.accounts.agents import create_api_token
from imapdesk.domain.conversations import operations
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import ActivitySource, Agent, Conversation
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer, signed_in_context
from tests.support.mail import make_mail
from tests.support.worker import add_test_mailbox, caught_up, make_settings, running_worker
from tests.support.worker import wait_for as wait_until

pytestmark = pytest.mark.browser


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def alice_page(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> Any:
    """A page signed in as Alice (nothing opened yet)."""
    return signed_in_context(new_context, live_server, settings, engine, agents["alice"]).new_page()


def questions(engine: Engine, n: int) -> list[int]:
    """N open conversations in mailbox "support", the newest last."""
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "support")
        return [f.conversation(s, box, f"Question {i}", minutes=i).id or 0 for i in range(n)]


def row(page: Any, conversation_id: int) -> Any:
    return page.locator(f'#queue-rows tr[data-id="{conversation_id}"]')


def count(page: Any, queue: str) -> Any:
    return page.locator(f'.sidebar a[data-queue="{queue}"] .count')


def open_list(page: Any, url: str) -> None:
    """Opens the list, waits for its live stream, and leaves a marker a reload would lose."""
    page.goto(url)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "connected")
    page.evaluate("window.listMarker = 'still here'")


def shows(page: Any, selector: str, text: str) -> None:
    """Waits (checking every frame, not with expect's back-off) until `selector` shows `text`."""
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel)?.textContent || '').includes(text)",
        arg=[selector, text],
        polling="raf",
        timeout=10_000,
    )


def not_reloaded(page: Any) -> None:
    assert page.evaluate("window.listMarker") == "still here"


def test_another_agents_claim_and_close_show_on_the_open_list(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "support")
        fire = f.conversation(s, box, "Printer on fire", minutes=3)
        invoice = f.conversation(s, box, "Invoice missing", minutes=2)
        reset = f.conversation(s, box, "Password reset", minutes=1)
        bob_token = create_api_token(s, s.get(Agent, agents["bob"]), name="tests")  # type: ignore[arg-type]
    alice = signed_in_context(
        new_context, live_server, settings, engine, agents["alice"]
    ).new_page()
    bob = signed_in_context(new_context, live_server, settings, engine, agents["bob"]).new_page()
    open_list(alice, f"{live_server.url}/?queue=open")
    expect(alice.locator("#queue-rows tr")).to_have_count(3)
    expect(count(alice, "unassigned")).to_have_text("3")
    # Alice selects one with the keyboard; her selection must survive the updates
    alice.keyboard.press("j")
    alice.keyboard.press("j")
    alice.keyboard.press("j")
    alice.keyboard.press("x")
    expect(row(alice, reset.id).locator("input[name=ids]")).to_be_checked()

    # Bob claims the fire on its page
    bob.goto(f"{live_server.url}/conversations/{fire.id}")
    claim = bob.locator("#conv-state form[data-action=claim] button")
    claim.click()
    shows(alice, f'#queue-rows tr[data-id="{fire.id}"]', "Bob Builder")
    expect(count(alice, "unassigned")).to_have_text("2")
    # a brief highlight
    expect(row(alice, fire.id)).to_have_class(re.compile(r"\brow-flash\b"))
    expect(row(alice, fire.id)).not_to_have_class(re.compile(r"\brow-flash\b"))

    # Bob closes the invoice from his own list, with the bulk bar
    bob.goto(f"{live_server.url}/?queue=open")
    bob.check(f'#queue-rows tr[data-id="{invoice.id}"] input[name=ids]')
    bob.select_option("#bulk-action", "close")
    bob.click("#bulk-apply")
    shows(alice, '.sidebar a[data-queue="closed"] .count', "1")
    expect(row(alice, invoice.id)).to_have_count(0)
    expect(count(alice, "open")).to_have_text("2")

    # a tag through the REST API
    r = httpx.patch(
        f"{live_server.url}/api/v1/conversations/{reset.id}",
        json={"tags": ["vip"]},
        headers={"Authorization": f"Bearer {bob_token}"},
    )
    assert r.status_code == 200, r.text
    expect(row(alice, reset.id).locator(".tag")).to_have_text("vip")
    expect(alice.locator('.sidebar a[data-tag="vip"] .count')).to_have_text("1")

    not_reloaded(alice)
    # the selection and the keyboard position survived the row being replaced
    expect(row(alice, reset.id).locator("input[name=ids]")).to_be_checked()
    expect(row(alice, reset.id)).to_have_class(re.compile(r"\bis-current\b"))
    expect(alice.locator("#bulk-count")).to_have_text("1 selected:")
    expect(alice.locator("#queue-rows tr")).to_have_count(2)


def test_a_later_page_offers_the_newest_instead_of_changing(
    live_server: LiveServer, engine: Engine, alice_page: Any
) -> None:
    made = questions(engine, 55)
    page = alice_page
    page.goto(f"{live_server.url}/")
    page.click("text=Next page →")
    page.wait_for_url("**cursor=**")
    open_list(page, page.url)
    expect(page.locator("#queue-rows tr")).to_have_count(5)
    expect(page.locator("#queue-changed")).to_be_hidden()
    with unit_of_work(engine) as s:
        # the newest leaves the list (a plain client deleted it): page 1 changed, not page 2
        operations.set_status(s, made[-1], "deleted", source=ActivitySource.imap)
    expect(page.locator("#queue-changed")).to_be_visible()
    expect(count(page, "all")).to_have_text("54")
    # the rows stay as they were until the agent asks for the newest
    expect(page.locator("#queue-rows tr")).to_have_count(5)
    not_reloaded(page)
    page.click("#queue-changed a")
    page.wait_for_url(f"{live_server.url}/")
    expect(page.locator("#queue-rows tr").first).to_have_attribute("data-id", str(made[-2]))


def test_new_mail_from_a_plain_imap_client_appears_as_a_row(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    agents: dict[str, int],
    settings: Settings,
    mail_account: MailAccount,
) -> None:
    worker_settings = make_settings(db_url, settings.data_dir)
    mail_account.server.seed(mail_account.user, mail_account.password, "INBOX", [make_mail(1)])
    mailbox_id = add_test_mailbox(engine, worker_settings, mail_account)
    with running_worker(worker_settings, engine):
        wait_until(lambda: caught_up(engine, mailbox_id, "INBOX"), what="the initial sync")

        def conversations() -> int:
            with Session(engine) as s:
                return len(s.exec(select(Conversation.id)).all())

        wait_until(conversations, what="the first conversation")
        page = signed_in_context(
            new_context, live_server, settings, engine, agents["alice"]
        ).new_page()
        open_list(page, f"{live_server.url}/?queue=unassigned")
        expect(page.locator("#queue-rows tr")).to_have_count(1)
        expect(count(page, "unassigned")).to_have_text("1")

        # someone in a plain mail client files a new customer mail into the box
        imap = imaplib.IMAP4(mail_account.host, mail_account.imap_port)
        try:
            imap.login(mail_account.user, mail_account.password)
            status, _ = imap.append("INBOX", None, None, make_mail(2, subject="Brand new question"))
            assert status == "OK"
        finally:
            imap.logout()
        rows = page.locator("#queue-rows tr")
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text("Brand new question")
        expect(count(page, "unassigned")).to_have_text("2")
        expect(page.locator("#queue-announce")).to_have_text("1 new conversation")
        not_reloaded(page)


def test_keyboard_moves_selects_opens_and_helps(
    live_server: LiveServer, engine: Engine, alice_page: Any
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "support")
        oldest = f.conversation(s, box, "Oldest", minutes=1)
        middle = f.conversation(s, box, "Middle", minutes=2)
        newest = f.conversation(s, box, "Newest", minutes=3)
    page = alice_page
    page.goto(f"{live_server.url}/")
    expect(page.locator("#queue-rows tr")).to_have_count(3)
    current = page.locator("#queue-rows tr.is-current")

    page.keyboard.press("j")
    expect(current).to_have_attribute("data-id", str(newest.id))
    expect(row(page, newest.id).locator(".subject a")).to_be_focused()
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("j")  # stops at the last
    expect(current).to_have_attribute("data-id", str(oldest.id))
    page.keyboard.press("k")
    expect(current).to_have_attribute("data-id", str(middle.id))
    expect(current).to_have_count(1)

    # x selects the current row for the bulk bar, and again unselects it
    page.keyboard.press("x")
    expect(row(page, middle.id).locator("input[name=ids]")).to_be_checked()
    expect(page.locator("#bulk-count")).to_have_text("1 selected:")
    page.keyboard.press("x")
    expect(row(page, middle.id).locator("input[name=ids]")).not_to_be_checked()
    page.keyboard.press("x")

    # ? shows the help; keys do nothing else while it is open; Esc closes it
    page.keyboard.press("?")
    help_ = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(help_).to_be_visible()
    expect(help_).to_contain_text("open the conversation")
    page.keyboard.press("j")
    expect(current).to_have_attribute("data-id", str(middle.id))
    page.keyboard.press("Escape")
    expect(help_).to_be_hidden()

    # / goes to the search; typing there is typing, and modifier keys are left alone
    page.keyboard.press("/")
    search = page.locator("#list-q")
    expect(search).to_be_focused()
    page.keyboard.type("jkx")
    expect(search).to_have_value("jkx")
    search.evaluate("el => el.blur()")
    page.keyboard.press("Alt+j")
    expect(current).to_have_attribute("data-id", str(middle.id))
    expect(row(page, middle.id).locator("input[name=ids]")).to_be_checked()

    # Enter opens the current row
    page.keyboard.press("k")
    expect(current).to_have_attribute("data-id", str(newest.id))
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/conversations/{newest.id}")
    expect(page.locator("h1")).to_have_text("Newest")

    # and o does too
    page.goto(f"{live_server.url}/")
    page.keyboard.press("k")  # from nowhere, k starts at the last
    expect(current).to_have_attribute("data-id", str(oldest.id))
    page.keyboard.press("o")
    page.wait_for_url(f"{live_server.url}/conversations/{oldest.id}")


def test_the_list_on_a_phone(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "support")
        for i in range(3):
            f.conversation(s, box, f"A rather long subject line number {i} on a phone", minutes=i)
    page = signed_in_context(
        new_context, live_server, settings, engine, agents["alice"],
        viewport={"width": 390, "height": 844}, has_touch=True,
    ).new_page()  # fmt: skip
    open_list(page, f"{live_server.url}/")
    # a touch screen has no keyboard: no shortcuts button (issue 13); a keyboard that is
    # attached anyway still opens their help, which fits
    expect(page.locator("#queue-rows tr")).to_have_count(3)
    expect(page.locator("[data-help-open]")).to_be_hidden()
    page.keyboard.press("?")
    help_ = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(help_).to_be_visible()
    box_ = help_.bounding_box()
    assert box_ is not None and box_["x"] >= 0 and box_["x"] + box_["width"] <= 390
    help_.get_by_role("button", name="Close").tap()
    expect(help_).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_a_burst_of_changes_needs_no_request_but_the_first(
    live_server: LiveServer, engine: Engine, alice_page: Any
) -> None:
    made = questions(engine, 20)
    page = alice_page
    seen = {"started": 0, "open": 0, "most": 0}

    def started(request: Any) -> None:
        if "/queue-parts" in request.url:
            seen["started"] += 1
            seen["open"] += 1
            seen["most"] = max(seen["most"], seen["open"])

    def ended(request: Any) -> None:
        if "/queue-parts" in request.url:
            seen["open"] -= 1

    page.on("request", started)
    page.on("requestfinished", ended)
    page.on("requestfailed", ended)
    open_list(page, f"{live_server.url}/?queue=open")  # its first fetch counts too
    expect(page.locator("#queue-rows tr")).to_have_count(20)
    # twenty separate commits spread over most of a second (pacing, not waiting for anything):
    # several polls of the change feed, each with changes
    for cid in made:
        with unit_of_work(engine) as s:
            operations.set_status(s, cid, "closed", source=ActivitySource.imap)
        time.sleep(0.04)
    expect(page.locator("#queue-empty")).to_be_visible()
    expect(count(page, "closed")).to_have_text("20")
    # the one on connecting; every change after it came with its parts on the stream
    assert seen == {"started": 1, "open": 0, "most": 1}, seen
    not_reloaded(page)


def test_without_javascript_the_list_still_works(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "support")
        first = f.conversation(s, box, "First", minutes=1)
        second = f.conversation(s, box, "Second", minutes=2)
    page = signed_in_context(
        new_context, live_server, settings, engine, agents["alice"], java_script_enabled=False
    ).new_page()
    page.goto(f"{live_server.url}/?queue=open")
    expect(page.locator("#queue-rows tr")).to_have_count(2)
    expect(page.locator("#queue-empty")).to_be_hidden()
    # what needs the script stays out of sight
    expect(page.locator("#live-status")).to_be_hidden()
    expect(page.get_by_role("button", name="Shortcuts (?)")).to_be_hidden()
    page.check(f'#queue-rows tr[data-id="{first.id}"] input[name=ids]')
    page.check(f'#queue-rows tr[data-id="{second.id}"] input[name=ids]')
    page.select_option("#bulk-action", "close")
    page.click("#bulk-apply")
    expect(page.locator(".flash")).to_have_text("Closed 2 conversations.")
    expect(page.locator("#queue-empty")).to_have_text("No conversations here.")
    expect(page.locator("#queue-table")).to_be_hidden()
    expect(page.locator("#bulk")).to_be_hidden()
    expect(count(page, "closed")).to_have_text("2")
    page.click("text=Conversations")
    page.keyboard.press("j")  # no script, no shortcuts: nothing breaks either
    expect(page.locator("#queue-rows tr")).to_have_count(2)
