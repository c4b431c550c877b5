"""Replies through an SMTP relay that offers no AUTH (a local Postfix, a provider's relay), sent by
the real worker: with the default settings (no SMTP user: the IMAP login, used only where AUTH
is offered) the reply goes out; an SMTP user set on purpose fails the reply at once with what
to change; the server's refusals are retried or not by their code."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.domain.mailboxes.servers import smtp_account
from imapdesk.domain.outbound.replies import queue_reply
from imapdesk.kernel import wakeups
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    Mailbox,
    OutboundMail,
    OutboundState,
)
from imapdesk.kernel.settings import Settings
from tests.support.imap import folder_messages
from tests.support.outbound import (
    add_sending_mailbox,
    conversation_of,
    mail_from_customer,
    make_agent,
)
from tests.support.worker import running_worker, wait_for


@pytest.fixture
def open_relay(mailserver: LocalMailServer) -> Iterator[LocalSmtpRelay]:
    """STARTTLS, no AUTH offered, mail taken from anyone."""
    relay = LocalSmtpRelay(mailserver, security="starttls", auth="none")
    relay.start()
    yield relay
    relay.stop()


def _outbound(engine: Engine, outbound_id: int) -> OutboundMail:
    with Session(engine) as db:
        found = db.get(OutboundMail, outbound_id)
        assert found is not None
        return found


def _reply(engine: Engine, agent_id: int, cid: int, body: str) -> int:
    with unit_of_work(engine) as db:
        agent = db.get(Agent, agent_id)
        assert agent is not None
        mail = queue_reply(db, agent, cid, body=body, source=ActivitySource.api)
        assert mail.id is not None
        return mail.id


def _delivered(account: MailAccount) -> list[str]:
    return [m.message["Message-ID"].strip("<>") for m in folder_messages(account)]


def test_a_reply_through_a_relay_without_auth_with_the_default_settings(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    open_relay: LocalSmtpRelay,
) -> None:
    mailbox_id = add_sending_mailbox(engine, settings, mail_account, open_relay)
    with Session(engine) as db:
        box = db.get(Mailbox, mailbox_id)
        assert box is not None
        # the defaults: no SMTP user or password of its own, so the IMAP login is offered
        assert box.smtp_username is None and box.smtp_password_encrypted is None
        account = smtp_account(box, settings)
        assert account is not None and account.username == mail_account.user
        assert account.login_if_offered
    agent = make_agent(engine)
    assert agent.id is not None
    original = mail_from_customer(mailserver, customer, mail_account, "Printer on fire")
    with running_worker(settings, engine):
        cid = wait_for(lambda: conversation_of(engine, original), what="the conversation")
        reply = _reply(engine, agent.id, cid, "We are on our way with a fire extinguisher.")
        wakeups.wake(wakeups.Loop.SENDER, mailbox_id)
        wait_for(lambda: _outbound(engine, reply).copy_uid is not None, what="sent and filed")
    sent = _outbound(engine, reply)
    assert sent.state == OutboundState.sent
    assert sent.attempts == 1 and sent.last_error is None
    assert (sent.smtp_response or "").startswith("250")
    assert _delivered(customer) == [sent.msgid]
    assert open_relay.accepted[-1].rcpt_tos == [customer.user]


def test_an_smtp_user_on_a_relay_without_auth_fails_the_reply_at_once(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    open_relay: LocalSmtpRelay,
) -> None:
    """Once "cannot reach 127.0.0.1:port", retried every 30 s, though the server answered."""
    mailbox_id = add_sending_mailbox(
        engine, settings, mail_account, open_relay, smtp_username=mail_account.user
    )
    agent = make_agent(engine)
    assert agent.id is not None
    original = mail_from_customer(mailserver, customer, mail_account, "Where is my parcel?")
    with running_worker(settings, engine):
        cid = wait_for(lambda: conversation_of(engine, original), what="the conversation")
        reply = _reply(engine, agent.id, cid, "It left the depot this morning.")
        wakeups.wake(wakeups.Loop.SENDER, mailbox_id)
        wait_for(lambda: _outbound(engine, reply).state == OutboundState.failed, what="failed")
    failed = _outbound(engine, reply)
    assert failed.attempts == 1, "a settings error is not retried"
    error = failed.last_error or ""
    assert f"offers no AUTH, so the SMTP user {mail_account.user} cannot log in" in error
    assert "Send without logging in" in error and "cannot reach" not in error
    with Session(engine) as db:
        shown = db.exec(select(Activity).where(col(Activity.action) == "send_failed")).one()
        assert "offers no AUTH" in shown.details["error"]
    assert _delivered(customer) == []


def test_the_worker_retries_what_can_succeed_later_and_fails_the_rest_at_once(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    open_relay: LocalSmtpRelay,
) -> None:
    mailbox_id = add_sending_mailbox(engine, settings, mail_account, open_relay)
    agent = make_agent(engine)
    assert agent.id is not None
    original = mail_from_customer(mailserver, customer, mail_account, "Refunds")
    with running_worker(settings, engine):
        cid = wait_for(lambda: conversation_of(engine, original), what="the conversation")
        # a temporary refusal of the sender: tried again, then sent
        open_relay.fail_next("451 4.3.0 Temporary lookup failure, try again", at="MAIL")
        later = _reply(engine, agent.id, cid, "Your refund is on its way.")
        wakeups.wake(wakeups.Loop.SENDER, mailbox_id)
        wait_for(lambda: _outbound(engine, later).state == OutboundState.sent, what="sent")
        # the recipient refused for good: failed at once, with the address and the words
        open_relay.fail_next(
            f"550 5.1.1 <{customer.user}>: Recipient address rejected: mailbox disabled",
            at="RCPT",
        )
        refused = _reply(engine, agent.id, cid, "One more thing about the refund.")
        wakeups.wake(wakeups.Loop.SENDER, mailbox_id)
        wait_for(lambda: _outbound(engine, refused).state == OutboundState.failed, what="failed")
    retried = _outbound(engine, later)
    assert retried.attempts == 2
    assert _delivered(customer) == [retried.msgid]
    failed = _outbound(engine, refused)
    assert failed.attempts == 1
    assert f"refused the recipient {customer.user}" in (failed.last_error or "")
    assert "550 5.1.1" in (failed.last_error or "") and "mailbox disabled" in (
        failed.smtp_response or ""
    )
