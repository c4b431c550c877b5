"""Delivery through the outbox: SMTP down, temporary and permanent refusals, and kill -9 of the
worker at each step of sending: never zero and never two deliveries, never two copies in Sent."""

from __future__ import annotations

import signal
from multiprocessing.process import BaseProcess

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.domain.outbound.replies import queue_reply
from imapdesk.kernel import wakeups
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Activity, ActivitySource, Agent, OutboundMail, OutboundState
from imapdesk.kernel.settings import Settings
from imapdesk.worker.sender import CRASH_ENV
from tests.support.imap import folder_messages
from tests.support.outbound import (
    add_sending_mailbox,
    conversation_of,
    mail_from_customer,
    make_agent,
)
from tests.support.worker import caught_up, running_worker, wait_for
from tests.support.worker_process import start_worker_process


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


def _msgids(account: MailAccount, folder: str = "INBOX") -> list[str]:
    return [m.message["Message-ID"].strip("<>") for m in folder_messages(account, folder)]


def test_smtp_down_then_back_delivers_once_and_refusals_show(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    running_relay: LocalSmtpRelay,
) -> None:
    mailbox_id = add_sending_mailbox(engine, settings, mail_account, running_relay)
    agent = make_agent(engine)
    assert agent.id is not None
    original = mail_from_customer(mailserver, customer, mail_account, "Delivery")
    with running_worker(settings, engine):
        cid = wait_for(lambda: conversation_of(engine, original), what="the conversation")
        # down: nothing listens on the relay's port
        running_relay.stop()
        first = _reply(engine, agent.id, cid, "First answer")
        wakeups.wake(wakeups.Loop.SENDER, mailbox_id)
        wait_for(lambda: _outbound(engine, first).attempts >= 2, what="retries while SMTP is down")
        down = _outbound(engine, first)
        assert down.state in (OutboundState.queued, OutboundState.sending)
        assert down.last_error and "cannot reach" in down.last_error
        assert folder_messages(customer) == []
        running_relay.start()
        wait_for(lambda: _outbound(engine, first).state == OutboundState.sent, what="sent")
        # a temporary refusal is retried, a permanent one fails with the server's words
        running_relay.fail_next("451 4.7.1 Greylisted, please try again")
        second = _reply(engine, agent.id, cid, "Second answer")
        wakeups.wake(wakeups.Loop.SENDER, mailbox_id)
        wait_for(lambda: _outbound(engine, second).state == OutboundState.sent, what="2nd sent")
        assert "Greylisted" in (_outbound(engine, second).smtp_response or "") or (
            _outbound(engine, second).attempts == 2
        )
        running_relay.fail_next("554 5.7.1 Message rejected: policy violation")
        third = _reply(engine, agent.id, cid, "Third answer")
        wakeups.wake(wakeups.Loop.SENDER, mailbox_id)
        wait_for(lambda: _outbound(engine, third).state == OutboundState.failed, what="failed")
        wait_for(lambda: _outbound(engine, second).copy_uid is not None, what="2nd copy")
    delivered = _msgids(customer)
    assert sorted(delivered) == sorted(
        [_outbound(engine, first).msgid, _outbound(engine, second).msgid]
    ), "each delivered exactly once, the refused one never"
    assert _outbound(engine, second).attempts == 2
    failed = _outbound(engine, third)
    assert failed.attempts == 1
    assert "554 5.7.1 Message rejected: policy violation" in (failed.last_error or "")
    with Session(engine) as db:
        shown = db.exec(select(Activity).where(col(Activity.action) == "send_failed")).one()
        assert "policy violation" in shown.details["error"]
    assert len(_msgids(mail_account, "Sent")) == 2


def _worker(settings: Settings, crash_at: str | None) -> BaseProcess:
    values = {
        "database_url": settings.database_url,
        "data_dir": settings.data_dir,
        "sender_poll_seconds": 0.1,
        "mailbox_refresh_seconds": 0.2,
        "reconnect_initial_seconds": 0.2,
        "reconnect_max_seconds": 1.0,
        "parse_processes": 0,
    }
    return start_worker_process(values, {CRASH_ENV: crash_at or ""})


def test_kill_9_at_each_step_of_sending(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    running_relay: LocalSmtpRelay,
) -> None:
    mailbox_id = add_sending_mailbox(engine, settings, mail_account, running_relay)
    agent = make_agent(engine)
    assert agent.id is not None
    original = mail_from_customer(mailserver, customer, mail_account, "Crash me")
    first = _worker(settings, None)  # takes the customer's mail in, then is killed too
    try:
        cid = wait_for(lambda: conversation_of(engine, original), what="the conversation")
        wait_for(lambda: caught_up(engine, mailbox_id, "Sent"), what="Sent followed")
    finally:
        first.kill()
        first.join(timeout=15)
    replies = [_reply(engine, agent.id, cid, f"Answer {n}") for n in range(4)]
    # each run dies (SIGKILL) at its step; the next one takes over what the dead one left
    for point in ("claimed", "accepted", "recorded", "appended"):
        proc = _worker(settings, point)
        proc.join(timeout=30)
        code = proc.exitcode
        if code is None:
            proc.kill()
        assert code == -signal.SIGKILL, f"the worker did not die at {point!r}: {code}"
        if point == "claimed":
            assert folder_messages(customer) == []
    proc = _worker(settings, None)
    try:
        wait_for(
            lambda: all(_outbound(engine, r).copy_uid is not None for r in replies),
            timeout=30,
            what="every reply sent and filed",
        )
    finally:
        proc.kill()
        proc.join(timeout=15)
    expected = sorted(_outbound(engine, r).msgid for r in replies)
    assert sorted(_msgids(customer)) == expected, "every reply delivered exactly once"
    assert sorted(_msgids(mail_account, "Sent")) == expected, "exactly one copy of each in Sent"
    assert all(_outbound(engine, r).state == OutboundState.sent for r in replies)
