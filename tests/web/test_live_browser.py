"""Live updates in the browser: two agents see each other's changes without a reload, and what a
plain IMAP client does (through the real Dovecot and a running worker) shows up too. (SQLite;
test_live.py covers the feed and the event stream on both databases.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.domain.conversations import snooze
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import ActivitySource, Agent, Conversation, Message, utcnow
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer, signed_in_context
from tests.support.mail import make_mail
from tests.support.worker import (
    add_test_mailbox,
    caught_up,
    make_settings,
    running_worker,
    wait_for,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


def test_two_agents_see_each_other_live(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    with unit_of_work(engine) as s:
        conv = f.conversation(s, f.mailbox(s), "Printer on fire", minutes=1)
        f.message(s, conv, from_email="carol@customer.example", text="It burns.")
    url = f"{live_server.url}/conversations/{conv.id}"
    alice = signed_in_context(
        new_context, live_server, settings, engine, agents["alice"]
    ).new_page()
    bob = signed_in_context(new_context, live_server, settings, engine, agents["bob"]).new_page()
    alice.goto(url)
    bob.goto(url)
    for page in (alice, bob):
        expect(page.locator("#live-status")).to_have_attribute("data-state", "connected")
    # presence: each sees the other viewing, then Bob replying
    expect(alice.locator("#conv-presence")).to_have_text("Bob Builder is viewing")
    expect(bob.locator("#conv-presence")).to_have_text("Alice Agent is viewing")
    bob.click("[data-compose=reply]")
    expect(alice.locator("#conv-presence")).to_have_text("Bob Builder is replying")

    alice.click("#conv-state form[data-action=claim] button")
    expect(bob.locator("#conv-holder")).to_have_text("assigned to Alice Agent")
    expect(bob.locator("#conv-activity")).to_contain_text("claimed it")

    bob.click("#conv-state button[name=status][value=closed]")
    expect(alice.locator("#conv-status")).to_have_text("closed")
    expect(alice.locator("#conv-activity")).to_contain_text("Bob Builder set the status to closed")
    # Bob's half-written reply survived the live updates
    expect(bob.locator("#composer-form")).to_be_visible()


def test_what_a_plain_imap_client_does_appears_without_a_reload(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    agents: dict[str, int],
    settings: Settings,
    mail_account: MailAccount,
    colleague: Any,
) -> None:
    worker_settings = make_settings(db_url, settings.data_dir)
    mail_account.server.seed(mail_account.user, mail_account.password, "INBOX", [make_mail(1)])
    mailbox_id = add_test_mailbox(engine, worker_settings, mail_account)
    with running_worker(worker_settings, engine):
        wait_for(lambda: caught_up(engine, mailbox_id, "INBOX"), what="the initial sync")

        def conversation_id() -> int:
            with Session(engine) as s:
                return s.exec(select(Conversation.id)).first() or 0

        cid = wait_for(conversation_id, what="the conversation")
        page = signed_in_context(
            new_context, live_server, settings, engine, agents["alice"]
        ).new_page()
        page.goto(f"{live_server.url}/conversations/{cid}")
        expect(page.locator("#live-status")).to_have_attribute("data-state", "connected")
        expect(page.locator("#conv-holder")).to_have_text("unassigned")

        # a colleague in Thunderbird flags it (claims it) and tags it
        colleague.select_folder("INBOX")
        uids = colleague.search("ALL")
        colleague.add_flags(uids, [b"\\Flagged", b"urgent"])
        expect(page.locator("#conv-holder")).to_have_text("claimed by someone via mail client")
        expect(page.locator("#conv-state .tag")).to_have_text("urgent")
        expect(page.locator("#conv-activity")).to_contain_text("from a mail client")

        # the customer writes again: the new message appears
        colleague.append(
            "INBOX", make_mail(2, subject="Re: Question number 1", refs="<m1@example.com>")
        )
        expect(page.locator("article.message")).to_have_count(2)
        with Session(engine) as s:
            assert len(s.exec(select(Message)).all()) == 2

        # snoozed until a moment ago: the worker's supervisor reopens it
        with unit_of_work(engine) as s:
            alice = s.get(Agent, agents["alice"])
            conv = snooze.snooze(
                s, cid, utcnow() + timedelta(hours=1), source=ActivitySource.web, agent=alice
            )
            conv.snoozed_until = utcnow() - timedelta(seconds=1)
        expect(page.locator("#conv-activity")).to_contain_text("snooze reopened it automatically")


@pytest.mark.parametrize("page_script", ["conversation.js", "queues.js"])
def test_a_slow_page_script_still_sees_the_stream_connect(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    page_script: str,
) -> None:
    """The browser may run the stream's first event while a later deferred script is still
    loading; the page must not miss "connected" (it stayed "not live" for good)."""
    with unit_of_work(engine) as s:
        conv = f.conversation(s, f.mailbox(s), "Printer on fire", minutes=1)
    page = signed_in_context(new_context, live_server, settings, engine, agents["alice"]).new_page()

    def slowly(route: Any) -> None:
        time.sleep(1.0)  # the stream is open and has said hello by then
        route.continue_()

    page.route(f"**/static/{page_script}", slowly)
    page.goto(
        live_server.url + (f"/conversations/{conv.id}" if page_script == "conversation.js" else "/")
    )
    expect(page.locator("#live-status")).to_have_attribute("data-state", "connected")
