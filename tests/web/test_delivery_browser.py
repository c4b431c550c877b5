"""Replies that visibly go out, in Chromium, with a running worker, the real Dovecot and
aiosmtpd, on SQLite and PostgreSQL: a reply refused by the SMTP server (5xx) and one that
cannot be encoded for it show as failed, with the server's words, on the open conversation and
on the open list without a reload; Retry after the fix sends it exactly once. Undo in the toast
takes a reply back into the composer before anything is sent; Edit and resend and Discard on a
failed one. (The same through the REST API, and the worker killed inside the undo window:
tests/outbound/test_delivery_state.py.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.domain.outbound.replies import queue_reply
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    ActivitySource,
    Agent,
    Direction,
    Message,
    OutboundMail,
    OutboundState,
    SmtpSecurity,
)
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer, signed_in_context
from tests.support.imap import folder_messages
from tests.support.outbound import add_sending_mailbox, conversation_of, mail_from_customer
from tests.support.worker import make_settings, running_worker, wait_for

pytestmark = pytest.mark.browser


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """The app's and the worker's: a sender that polls often."""
    return make_settings(db_url, tmp_path / "data", sender_poll_seconds=0.1)


@pytest.fixture
def customer(mailserver: LocalMailServer) -> MailAccount:
    return mailserver.create_account(prefix="customer")


@pytest.fixture
def relay(mailserver: LocalMailServer, customer: MailAccount) -> Iterator[LocalSmtpRelay]:
    """A relay without SMTPUTF8 that delivers mail to unknown addresses to the customer."""
    server = LocalSmtpRelay(mailserver, security="starttls", catch_all=customer.user)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def desk(
    engine: Engine,
    settings: Settings,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    relay: LocalSmtpRelay,
    agents: dict[str, int],
) -> Iterator[int]:
    """The shared box sending through the relay, the worker running, and the customer's
    conversation (its id)."""
    add_sending_mailbox(engine, settings, mail_account, relay)
    original = mail_from_customer(mailserver, customer, mail_account, "Where is my parcel?")
    with running_worker(settings, engine):
        yield wait_for(lambda: conversation_of(engine, original), what="the conversation")


def _undo_window(engine: Engine, agent_id: int, seconds: int) -> None:
    with unit_of_work(engine) as db:
        db.execute(update(Agent).where(col(Agent.id) == agent_id).values(undo_send_seconds=seconds))


def _pages(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agent_id: int,
    cid: int,
) -> tuple[Any, Any]:
    """The conversation and the list of open conversations, both live."""
    context = signed_in_context(new_context, live_server, settings, engine, agent_id)
    page, listing = context.new_page(), context.new_page()
    page.goto(f"{live_server.url}/conversations/{cid}")
    listing.goto(f"{live_server.url}/?queue=open")
    for p in (page, listing):
        expect(p.locator("#live-status")).to_have_attribute("data-state", "connected")
    expect(listing.locator(f'#queue-rows tr[data-id="{cid}"]')).to_be_visible()
    return page, listing


def _reply(page: Any, body: str, to: str = "") -> None:
    page.click("[data-compose=reply]")
    if to:
        page.fill("input[name=to]", to)
    page.fill("textarea[name=body]", body)
    page.click("[data-send]")
    expect(page.locator("#composer-form")).to_be_hidden()


def _outgoing(engine: Engine) -> list[OutboundMail]:
    with Session(engine) as db:
        return list(db.exec(select(OutboundMail).order_by(col(OutboundMail.id))))


def _delivered_once(engine: Engine, relay: LocalSmtpRelay, customer: MailAccount) -> None:
    """The one reply went out exactly once: to the relay, into the customer's box, to Sent."""
    (row,) = _outgoing(engine)
    wait_for(lambda: _outgoing(engine)[0].copy_uid is not None, what="the copy in Sent")
    assert [a for a in relay.accepted if f"<{row.msgid}>".encode() in a.data] != []
    assert len([a for a in relay.accepted if f"<{row.msgid}>".encode() in a.data]) == 1
    arrived = [m for m in folder_messages(customer) if m.message["Message-ID"] == f"<{row.msgid}>"]
    assert len(arrived) == 1


def _failed_then_retried(page: Any, listing: Any, cid: int, words: str) -> None:
    """The failure with `words` on the page and the list, live; then Retry, and it is sent."""
    failed = page.locator("#conv-messages .delivery-failed")
    expect(failed).to_contain_text(words)
    expect(page.locator("#conv-delivery")).to_contain_text(words)
    mark = listing.locator(f'#queue-rows tr[data-id="{cid}"] [data-delivery-failed]')
    expect(mark).to_contain_text(words)
    failed.get_by_role("button", name="Retry").click()
    expect(page.locator("#conv-messages .delivery-sent")).to_be_visible()
    expect(page.locator("#conv-delivery")).to_be_empty()
    # sent, it is pending now: out of "All open", and with no mark anywhere
    expect(listing.locator(f'#queue-rows tr[data-id="{cid}"]')).to_have_count(0)


def test_a_5xx_refusal_shows_live_and_retry_sends_it_once(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    customer: MailAccount,
    relay: LocalSmtpRelay,
    desk: int,
) -> None:
    _undo_window(engine, agents["alice"], 0)
    page, listing = _pages(live_server, new_context, engine, settings, agents["alice"], desk)
    relay.fail_next("554 5.7.1 Message rejected: spam score too high")
    _reply(page, "Your parcel left our warehouse today.")
    _failed_then_retried(page, listing, desk, "554 5.7.1 Message rejected: spam score too high")
    (row,) = _outgoing(engine)
    assert row.state == OutboundState.sent
    _delivered_once(engine, relay, customer)


def test_a_reply_that_cannot_be_encoded_shows_live_and_is_sent_once_after_the_fix(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    customer: MailAccount,
    relay: LocalSmtpRelay,
    desk: int,
) -> None:
    _undo_window(engine, agents["alice"], 0)
    page, listing = _pages(live_server, new_context, engine, settings, agents["alice"], desk)
    _reply(page, "Hola José", to="José <jösé@example.test>")
    expect(page.locator("#conv-messages .delivery-failed")).to_contain_text("jösé@example.test")
    # the fix: the mailbox's server offers SMTPUTF8 now
    relay.stop()
    relay.smtputf8 = True
    relay.start()
    _failed_then_retried(page, listing, desk, "does not offer SMTPUTF8")
    _delivered_once(engine, relay, customer)
    assert relay.accepted[-1].rcpt_tos == ["jösé@example.test"]


def test_undo_in_the_toast_takes_the_reply_back_and_nothing_is_sent(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    customer: MailAccount,
    relay: LocalSmtpRelay,
    desk: int,
) -> None:
    _undo_window(engine, agents["alice"], 3)
    page, _ = _pages(live_server, new_context, engine, settings, agents["alice"], desk)
    _reply(page, "Refund sent to the wrong card")
    toast = page.locator("#send-toast")
    expect(toast).to_contain_text("Sending in")
    expect(page.locator("#conv-messages .delivery-scheduled")).to_contain_text("Scheduled")
    toast.get_by_role("button", name="Undo").click()
    expect(toast).to_contain_text("Taken back: nothing was sent.")
    expect(page.locator("#composer-form")).to_be_visible()
    expect(page.locator("textarea[name=body]")).to_have_value("Refund sent to the wrong card")
    expect(page.locator("#conv-messages .delivery")).to_have_count(0)
    assert _outgoing(engine) == []
    # written again and left alone: sent once the window is over
    page.fill("textarea[name=body]", "Refund sent to your card")
    page.click("[data-send]")
    expect(page.locator("#conv-messages .delivery-scheduled")).to_be_visible()
    expect(page.locator("#conv-messages .delivery-sent")).to_be_visible()
    _delivered_once(engine, relay, customer)
    # the one taken back was due before this one: it would have gone first
    assert len(relay.accepted) == 1


@pytest.fixture
def failed_replies(engine: Engine, agents: dict[str, int]) -> tuple[int, list[int]]:
    """A conversation with two replies the server refused (no worker: nothing sends them)."""
    with unit_of_work(engine) as db:
        box = f.mailbox(
            db, smtp_host="smtp.example.com", smtp_port=587, smtp_security=SmtpSecurity.starttls
        )
        conv = f.conversation(db, box, "Broken printer", customer_email="carol@customer.example")
        f.message(db, conv, from_email="carol@customer.example", direction=Direction.inbound)
        alice = db.get(Agent, agents["alice"])
        assert alice is not None and conv.id is not None
        ids = []
        for body in ("First try", "Second try"):
            mail = queue_reply(db, alice, conv.id, body=body, source=ActivitySource.web)
            mail.state = OutboundState.failed
            mail.last_error = "550 5.1.1 <carol@customer.example>: mailbox unavailable"
            assert mail.message_id is not None
            ids.append(mail.message_id)
        return conv.id, ids


def test_edit_and_resend_and_discard_a_failed_reply(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    failed_replies: tuple[int, list[int]],
) -> None:
    cid, (first, second) = failed_replies
    context = signed_in_context(new_context, live_server, settings, engine, agents["alice"])
    page = context.new_page()
    page.goto(f"{live_server.url}/conversations/{cid}")
    expect(page.locator("#conv-delivery p")).to_have_count(2)
    page.locator(f"#message-{first} .delivery").get_by_role("button", name="Discard").click()
    expect(page.locator(f"#message-{first}")).to_have_count(0)
    expect(page.locator("#conv-delivery p")).to_have_count(1)
    badge = page.locator(f"#message-{second} .delivery")
    badge.get_by_role("button", name="Edit and resend").click()
    expect(page.locator(f"#message-{second}")).to_have_count(0)
    expect(page.locator("#composer-form")).to_be_visible()
    expect(page.locator("textarea[name=body]")).to_have_value("Second try")
    expect(page.locator("input[name=to]")).to_have_value("carol@customer.example")
    expect(page.locator("#conv-delivery")).to_be_empty()
    assert _outgoing(engine) == []
    with Session(engine) as db:
        left = db.exec(select(Message).where(col(Message.conversation_id) == cid)).all()
        assert [m.direction for m in left] == [Direction.inbound]
