"""A reply's round trip through the real SMTP relay and Dovecot, through the REST API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.api.app import create_app
from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Activity,
    Conversation,
    ConversationStatus,
    Direction,
    Message,
    OutboundMail,
    OutboundState,
)
from imapdesk.kernel.settings import Settings
from tests.support.imap import folder_messages
from tests.support.mail import customer_mail
from tests.support.outbound import (
    add_sending_mailbox,
    conversation_of,
    mail_from_customer,
    status_of,
)
from tests.support.worker import running_worker, wait_for


@pytest.fixture
def api(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with unit_of_work(engine) as db:
        agent = create_agent(db, "alice@example.com", "Alice Ångström", "correct horse battery")
        agent.signature = "Alice\nExample Support"
        token = create_api_token(db, agent, name="tests")
    app = create_app(settings=settings, engine=engine)
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def _flags_of(account: MailAccount, folder: str, msgid: str) -> tuple[str, ...]:
    for stored in folder_messages(account, folder):
        if stored.message["Message-ID"].strip("<>") == msgid:
            return stored.flags
    return ()


def test_reply_round_trip(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    running_relay: LocalSmtpRelay,
    api: TestClient,
) -> None:
    add_sending_mailbox(
        engine,
        settings,
        mail_account,
        running_relay,
        display_name="Example Support",
        from_agent_name=True,
        signature="Example Ltd, support desk",
    )
    original = mail_from_customer(mailserver, customer, mail_account, "Wo ist meine Bestellung?")
    with running_worker(settings, engine):
        cid = wait_for(lambda: conversation_of(engine, original), what="the customer's mail")
        # (read from the database: a GET while the worker writes can hit SQLite's "database
        # is locked", a known issue of the token's last_used_at update in a read transaction)
        with Session(engine) as db:
            conv = db.get(Conversation, cid)
            assert conv is not None
            version = conv.version
        answer = api.post(
            f"/api/v1/conversations/{cid}/replies",
            json={"body": "Sie ist unterwegs. Grüße!", "version": version},
            headers={"Idempotency-Key": "reply-1"},
        )
        assert answer.status_code == 202, answer.text
        sent = answer.json()
        assert sent["state"] == "queued"
        # a retry with the same key queues nothing new
        again = api.post(
            f"/api/v1/conversations/{cid}/replies",
            json={"body": "Sie ist unterwegs. Grüße!", "version": version},
            headers={"Idempotency-Key": "reply-1"},
        )
        assert again.status_code == 202 and again.json()["id"] == sent["id"]

        inbox = wait_for(lambda: folder_messages(customer), what="the reply at the customer's")
        wait_for(
            lambda: (
                "\\Answered" in _flags_of(mail_account, "Pending", original)
                or "\\Answered" in _flags_of(mail_account, "INBOX", original)
            ),
            what="\\Answered on the original",
        )
        copies = wait_for(lambda: folder_messages(mail_account, "Sent"), what="the copy in Sent")
        wait_for(lambda: status_of(engine, cid) == ConversationStatus.pending, what="pending")
        # the customer answers the reply: it joins the same conversation
        reply_msgid = sent["message_id"]
        answer_id, answer_raw = customer_mail(
            customer.user,
            mail_account.user,
            f"Re: Wo ist meine Bestellung? [#{cid}]",
            "Danke!",
            in_reply_to=reply_msgid,
            references=[original, reply_msgid],
        )
        mailserver.deliver(mail_account.user, answer_raw)
        wait_for(lambda: conversation_of(engine, answer_id) == cid, what="the answer joining")

    assert len(inbox) == 1, "delivered exactly once"
    got = inbox[0].message
    assert got["In-Reply-To"] == f"<{original}>"
    assert got["References"].split() == [f"<{original}>"]
    assert got["Message-ID"] == f"<{reply_msgid}>"
    assert reply_msgid.endswith("@" + mail_account.user.partition("@")[2])
    assert got["Subject"] == f"Re: Wo ist meine Bestellung? [#{cid}]"
    assert got["From"].addresses[0].display_name == "Alice Ångström at Example Support"
    assert got["From"].addresses[0].addr_spec == mail_account.user
    assert got["To"].addresses[0].addr_spec == customer.user
    assert got["To"].addresses[0].display_name == "Zoë Müller"
    # non-ASCII names and subject are RFC 2047 encoded, not raw 8-bit
    head = inbox[0].raw.split(b"\r\n\r\n", 1)[0]
    assert all(b < 0x80 for b in head), head
    body = got.get_content().replace("\r\n", "\n")
    assert body == "Sie ist unterwegs. Grüße!\n\n-- \nAlice\nExample Support\n\n" + (
        "Example Ltd, support desk\n"
    )
    assert len(copies) == 1 and "\\Seen" in copies[0].flags
    assert copies[0].message["Message-ID"] == f"<{reply_msgid}>"
    assert len(running_relay.accepted) >= 1
    with Session(engine) as db:
        conv = db.get(Conversation, cid)
        assert conv is not None and conv.status == ConversationStatus.open  # the customer wrote
        mail = db.exec(select(OutboundMail)).one()
        assert mail.state == OutboundState.sent and mail.smtp_response.startswith("250")
        assert mail.copy_folder == "Sent"
        ours = db.exec(select(Message).where(col(Message.message_id) == reply_msgid)).one()
        assert ours.direction == Direction.outbound and ours.conversation_id == cid
        actions = {a.action for a in db.exec(select(Activity))}
        assert "replied" in actions
    detail = api.get(f"/api/v1/conversations/{cid}").json()
    delivery = next(m["delivery"] for m in detail["messages"] if m["message_id"] == reply_msgid)
    assert delivery["state"] == "sent" and delivery["copy_folder"] == "Sent"
    assert [m["direction"] for m in detail["messages"]] == ["inbound", "outbound", "inbound"]
