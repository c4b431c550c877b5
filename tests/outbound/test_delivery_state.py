"""Replies that visibly go out, through the real worker, Dovecot and aiosmtpd, on SQLite and
PostgreSQL: the REST API's `delivery` (scheduled, queued, sending, sent, failed); a reply that
retrying cannot fix (a 5xx, an address the server cannot take) fails at once with the server's
words and is sent exactly once by retry after the fix; international domains go out in their
IDNA form through a relay with and without SMTPUTF8, and a non-ASCII local part only through
one that offers it (refused before queueing once the server is known not to); the undo window:
taken back inside it nothing is sent, after it exactly once, never before it ends, and a worker
killed (-9) inside it leaves the next one to send it exactly once. The web UI's side:
tests/web/test_delivery_browser.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from multiprocessing.process import BaseProcess
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.api.app import create_app
from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.domain.accounts.agents import create_api_token
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Activity, Agent, Mailbox, Message, OutboundMail
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

IDN = "claire.dubois@exämple.fr"
IDN_ASCII = "claire.dubois@xn--exmple-cua.fr"
UTF8_LOCAL = "jösé@example.test"


@pytest.fixture
def open_relay(mailserver: LocalMailServer, customer: MailAccount) -> Iterator[LocalSmtpRelay]:
    """A relay without SMTPUTF8 that delivers mail for unknown addresses (an international
    domain, say) to the customer's box, as the Internet would deliver it to them."""
    relay = LocalSmtpRelay(mailserver, security="starttls", catch_all=customer.user)
    relay.start()
    yield relay
    relay.stop()


def _api(settings: Settings, engine: Engine, agent_id: int) -> TestClient:
    with unit_of_work(engine) as db:
        agent = db.get(Agent, agent_id)
        assert agent is not None
        token = create_api_token(db, agent)
    client = TestClient(create_app(settings=settings, engine=engine))
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def _delivery(api: TestClient, cid: int, message_id: int) -> dict[str, Any]:
    detail = api.get(f"/api/v1/conversations/{cid}")
    assert detail.status_code == 200, detail.text
    for m in detail.json()["messages"]:
        if m["id"] == message_id:
            delivery: dict[str, Any] = m["delivery"]["delivery"]
            return delivery
    return {"state": "gone"}


def _state_is(api: TestClient, cid: int, message_id: int, state: str) -> dict[str, Any] | None:
    found = _delivery(api, cid, message_id)
    return found if found["state"] == state else None


def _row(engine: Engine, outbound_id: int) -> OutboundMail:
    with Session(engine) as db:
        row = db.get(OutboundMail, outbound_id)
        assert row is not None
        return row


def _accepted(relay: LocalSmtpRelay, msgid: str) -> list[Any]:
    return [a for a in relay.accepted if f"<{msgid}>".encode() in a.data]


def _arrived(account: MailAccount, msgid: str) -> int:
    return sum(m.message["Message-ID"] == f"<{msgid}>" for m in folder_messages(account))


def _scene(
    engine: Engine,
    settings: Settings,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    relay: LocalSmtpRelay,
    subject: str,
) -> tuple[int, str, int]:
    """The shared box sending through `relay`, Alice, and the customer's mail: the mailbox,
    the customer's Message-ID and Alice's id."""
    mailbox_id = add_sending_mailbox(engine, settings, mail_account, relay)
    alice = make_agent(engine)
    assert alice.id is not None
    return mailbox_id, mail_from_customer(mailserver, customer, mail_account, subject), alice.id


def test_a_5xx_fails_at_once_with_the_servers_words_and_retry_sends_it_once(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    running_relay: LocalSmtpRelay,
) -> None:
    _, original, alice = _scene(
        engine, settings, mailserver, mail_account, customer, running_relay, "Refused"
    )
    with unit_of_work(engine) as db:
        bob = Agent(
            email="bob@example.com", name="Bob", handle="bob", password_hash="x",
            all_mailboxes=False,
        )  # fmt: skip
        db.add(bob)
        db.flush()
        bob_id = bob.id
    assert bob_id is not None
    api, other = _api(settings, engine, alice), _api(settings, engine, bob_id)
    with running_worker(settings, engine):
        cid = wait_for(lambda: conversation_of(engine, original), what="the conversation")
        running_relay.fail_next("554 5.7.1 Message rejected: policy violation")
        answer = api.post(f"/api/v1/conversations/{cid}/replies", json={"body": "Refund sent."})
        assert answer.status_code == 202, answer.text
        reply = answer.json()
        assert reply["delivery"]["state"] == "queued" and reply["state"] == "queued"
        failed = wait_for(
            lambda: _state_is(api, cid, reply["message"], "failed"), what="the failure"
        )
        assert "554 5.7.1 Message rejected: policy violation" in failed["last_error"]
        assert failed["smtp_response"] == "554 5.7.1 Message rejected: policy violation"
        assert failed["attempts"] == 1, "a 5xx is not retried"
        # authorised like the conversation: nothing for an agent who may not see it
        for action in ("retry", "cancel"):
            refused = other.post(f"/api/v1/outbound/{reply['id']}/{action}")
            assert refused.status_code == 404, refused.text
        assert _accepted(running_relay, reply["message_id"]) == []
        again = api.post(f"/api/v1/outbound/{reply['id']}/retry")
        assert again.status_code == 200, again.text
        assert again.json()["delivery"]["state"] == "queued"
        sent = wait_for(lambda: _state_is(api, cid, reply["message"], "sent"), what="sent")
        assert sent["smtp_response"].startswith("250") and sent["last_error"] is None
        assert sent["attempts"] == 1
        too_late = api.post(f"/api/v1/outbound/{reply['id']}/retry")
        assert too_late.status_code == 409
        assert too_late.json()["error"]["code"] == "delivery_state_conflict"
        wait_for(lambda: _row(engine, reply["id"]).copy_uid is not None, what="the copy")
    assert len(_accepted(running_relay, reply["message_id"])) == 1
    assert _arrived(customer, reply["message_id"]) == 1
    with Session(engine) as db:
        actions = [a.action for a in db.exec(select(Activity).order_by(col(Activity.id)))]
    assert actions.count("send_failed") == 1 and actions.count("send_retried") == 1


def test_an_address_the_server_cannot_take_fails_at_once_and_is_then_refused_before_queueing(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    open_relay: LocalSmtpRelay,
) -> None:
    mailbox_id, original, alice = _scene(
        engine, settings, mailserver, mail_account, customer, open_relay, "Encoding"
    )
    api = _api(settings, engine, alice)
    with running_worker(settings, engine):
        cid = wait_for(lambda: conversation_of(engine, original), what="the conversation")
        # not known yet whether the server offers SMTPUTF8: queued, and the sender says
        answer = api.post(
            f"/api/v1/conversations/{cid}/replies", json={"body": "Hola", "to": [UTF8_LOCAL]}
        )
        assert answer.status_code == 202, answer.text
        reply = answer.json()
        failed = wait_for(
            lambda: _state_is(api, cid, reply["message"], "failed"), what="the failure"
        )
        assert failed["attempts"] == 1, "retrying cannot help: it fails at once"
        assert "does not offer SMTPUTF8" in failed["last_error"]
        assert UTF8_LOCAL in failed["last_error"]
        with Session(engine) as db:
            box = db.get(Mailbox, mailbox_id)
            assert box is not None and box.smtputf8 is False
            messages = len(db.exec(select(Message)).all())
        # now it is known: refused in the composer, nothing queued
        refused = api.post(
            f"/api/v1/conversations/{cid}/replies", json={"body": "Hola", "to": [UTF8_LOCAL]}
        )
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["field"] == "to" and "does not offer SMTPUTF8" in error["message"]
        with Session(engine) as db:
            assert len(db.exec(select(Message)).all()) == messages
        # the fix: the server offers SMTPUTF8 (another relay, or new settings); then retry
        open_relay.stop()
        open_relay.smtputf8 = True
        open_relay.start()
        assert api.post(f"/api/v1/outbound/{reply['id']}/retry").status_code == 200
        wait_for(lambda: _state_is(api, cid, reply["message"], "sent"), what="sent")
    accepted = _accepted(open_relay, reply["message_id"])
    assert len(accepted) == 1
    assert accepted[0].rcpt_tos == [UTF8_LOCAL] and "SMTPUTF8" in accepted[0].mail_options
    assert _arrived(customer, reply["message_id"]) == 1
    with Session(engine) as db:
        box = db.get(Mailbox, mailbox_id)
        assert box is not None and box.smtputf8 is True


@pytest.mark.parametrize("smtputf8", [False, True], ids=["plain", "smtputf8"])
def test_a_reply_to_an_international_domain_is_delivered(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    open_relay: LocalSmtpRelay,
    smtputf8: bool,
) -> None:
    open_relay.stop()
    open_relay.smtputf8 = smtputf8
    open_relay.start()
    _, original, alice = _scene(
        engine, settings, mailserver, mail_account, customer, open_relay, "IDN"
    )
    api = _api(settings, engine, alice)
    with running_worker(settings, engine):
        cid = wait_for(lambda: conversation_of(engine, original), what="the conversation")
        answer = api.post(
            f"/api/v1/conversations/{cid}/replies",
            json={"body": "Bonjour", "to": [f"Claire Dubois <{IDN}>"]},
        )
        assert answer.status_code == 202, answer.text
        reply = answer.json()
        assert reply["recipients"] == [IDN_ASCII]
        wait_for(lambda: _state_is(api, cid, reply["message"], "sent"), what="sent")
    accepted = _accepted(open_relay, reply["message_id"])
    assert len(accepted) == 1 and accepted[0].rcpt_tos == [IDN_ASCII]
    assert "SMTPUTF8" not in accepted[0].mail_options, "an IDNA domain needs no SMTPUTF8"
    wanted = f"<{reply['message_id']}>"
    arrived = [m for m in folder_messages(customer) if m.message["Message-ID"] == wanted]
    assert len(arrived) == 1
    to = arrived[0].message["To"].addresses[0]
    assert (to.display_name, to.addr_spec) == ("Claire Dubois", IDN_ASCII)
    head = arrived[0].raw.split(b"\r\n\r\n", 1)[0]
    assert all(b < 0x80 for b in head), "headers in ASCII: any server can carry them"


def test_undo_inside_the_window_sends_nothing_and_after_it_exactly_once(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    running_relay: LocalSmtpRelay,
) -> None:
    _, original, alice = _scene(
        engine, settings, mailserver, mail_account, customer, running_relay, "Undo"
    )
    with unit_of_work(engine) as db:
        agent = db.get(Agent, alice)
        assert agent is not None
        agent.undo_send_seconds = 2
    api = _api(settings, engine, alice)
    with running_worker(settings, engine):
        cid = wait_for(lambda: conversation_of(engine, original), what="the conversation")
        replies = f"/api/v1/conversations/{cid}/replies"
        first = api.post(replies, json={"body": "Oops, wrong customer", "undo_window": True})
        assert first.status_code == 202, first.text
        undone = first.json()
        assert undone["delivery"]["state"] == "scheduled"
        assert undone["delivery"]["not_before"] is not None
        taken = api.post(f"/api/v1/outbound/{undone['id']}/cancel")
        assert taken.status_code == 200, taken.text
        assert taken.json()["body"] == "Oops, wrong customer"
        assert taken.json()["conversation_id"] == cid
        assert _delivery(api, cid, undone["message"]) == {"state": "gone"}
        second = api.post(replies, json={"body": "The right answer", "undo_window": True})
        kept = second.json()
        assert kept["delivery"]["state"] == "scheduled"
        # sent once its window is over; the first one's ended earlier, so the sender would
        # have sent it by now, had it not been taken back
        wait_for(lambda: _state_is(api, cid, kept["message"], "sent"), what="sent")
        gone = api.post(f"/api/v1/outbound/{kept['id']}/cancel")
        assert gone.status_code == 409, "too late once it is sent"
    delivered = _accepted(running_relay, kept["message_id"])
    assert len(delivered) == 1
    window_end = datetime.fromisoformat(kept["delivery"]["not_before"]).timestamp()
    assert delivered[0].received_at >= window_end, "never before the window ends"
    assert _accepted(running_relay, undone["message_id"]) == []
    assert _arrived(customer, undone["message_id"]) == 0
    assert _arrived(customer, kept["message_id"]) == 1
    with Session(engine) as db:
        assert db.exec(select(Activity).where(col(Activity.action) == "taken_back")).one()


def _worker(settings: Settings) -> BaseProcess:
    values = {
        "database_url": settings.database_url,
        "data_dir": settings.data_dir,
        "sender_poll_seconds": 0.1,
        "mailbox_refresh_seconds": 0.2,
        "reconnect_initial_seconds": 0.2,
        "reconnect_max_seconds": 1.0,
        "parse_processes": 0,
    }
    return start_worker_process(values, {CRASH_ENV: ""})


def test_a_worker_killed_inside_the_window_leaves_it_to_be_sent_once_after_it(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    running_relay: LocalSmtpRelay,
) -> None:
    mailbox_id, original, alice = _scene(
        engine, settings, mailserver, mail_account, customer, running_relay, "Kill me"
    )
    api = _api(settings, engine, alice)
    first = _worker(settings)
    try:
        cid = wait_for(lambda: conversation_of(engine, original), what="the conversation")
        wait_for(lambda: caught_up(engine, mailbox_id, "Sent"), what="Sent followed")
        # the default window (10 s) leaves room to kill the worker inside it on a busy machine
        answer = api.post(
            f"/api/v1/conversations/{cid}/replies", json={"body": "Soon", "undo_window": True}
        )
        reply = answer.json()
        assert reply["delivery"]["state"] == "scheduled"
    finally:
        first.kill()
        first.join(timeout=15)
    assert first.exitcode is not None
    window_end = datetime.fromisoformat(reply["delivery"]["not_before"])
    # killed inside the window: nothing was sent, nothing claimed
    assert _row(engine, reply["id"]).state == "scheduled"
    assert datetime.now(window_end.tzinfo) < window_end, "the machine was too slow to kill it"
    assert _accepted(running_relay, reply["message_id"]) == []
    second = _worker(settings)
    try:
        wait_for(
            lambda: _row(engine, reply["id"]).copy_uid is not None,
            timeout=40,
            what="sent and filed by the next worker",
        )
    finally:
        second.kill()
        second.join(timeout=15)
    delivered = _accepted(running_relay, reply["message_id"])
    assert len(delivered) == 1, "exactly once"
    assert delivered[0].received_at >= window_end.timestamp(), "not before the window ends"
    assert _arrived(customer, reply["message_id"]) == 1
    sent_copies = [
        m for m in folder_messages(mail_account, "Sent")
        if m.message["Message-ID"] == f"<{reply['message_id']}>"
    ]  # fmt: skip
    assert len(sent_copies) == 1
