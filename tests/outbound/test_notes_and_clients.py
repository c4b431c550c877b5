"""Internal notes in the Notes folder survive dropping the database and a rebuild; a reply a
colleague sent from a mail client (it lands in Sent) joins the conversation; auto-replies and
bounces never make imapdesk send anything, and a bounce flags the reply it returns."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import formatdate, make_msgid
from pathlib import Path

from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.domain.outbound.automatic import may_send_automatically
from imapdesk.domain.outbound.replies import add_note, from_address, queue_reply
from imapdesk.domain.sync.rebuild import forget_mail
from imapdesk.kernel.db import unit_of_work, upgrade_database
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    Conversation,
    ConversationStatus,
    Direction,
    Message,
    OutboundMail,
    OutboundState,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail.compose import Upload, compose
from imapdesk.worker.supervisor import sync_until_caught_up
from tests.support.imap import colleague_append, folder_messages
from tests.support.mail import customer_mail
from tests.support.outbound import add_sending_mailbox, mail_from_customer, make_agent, status_of
from tests.support.worker import caught_up, running_worker, wait_for


def _message(engine: Engine, msgid: str) -> Message | None:
    with Session(engine) as db:
        return db.exec(select(Message).where(col(Message.message_id) == msgid)).first()


def _drop_database(engine: Engine, db_url: str) -> None:
    """What losing the database means: nothing left, then the schema made again."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    if engine.dialect.name == "sqlite":
        path = Path(str(engine.url.database))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    upgrade_database(db_url)


def test_notes_survive_dropping_the_database_and_a_rebuild(
    settings: Settings,
    engine: Engine,
    db_url: str,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    running_relay: LocalSmtpRelay,
) -> None:
    add_sending_mailbox(engine, settings, mail_account, running_relay)
    agent = make_agent(engine)
    original = mail_from_customer(mailserver, customer, mail_account, "Refund for order 42")
    with running_worker(settings, engine):
        cid = wait_for(lambda: (m := _message(engine, original)) and m.conversation_id)
        with unit_of_work(engine) as db:
            a = db.get(Agent, agent.id)
            assert a is not None
            note = add_note(
                db,
                a,
                cid,
                body="Approved by finance — refund 42 €",
                attachments=[Upload("receipt.txt", "text/plain", b"paid")],
                source=ActivitySource.web,
            )
            note_msgid = note.message_id
        filed = wait_for(lambda: folder_messages(mail_account, "Notes"), what="note in Notes")
        # a message a colleague puts into Notes by hand becomes a note as well
        hand_msgid = colleague_append(
            mail_account,
            "Notes",
            "Called the customer",
            "She is fine with a voucher.",
            in_reply_to=original,
        )
        hand = wait_for(lambda: _message(engine, hand_msgid), what="hand note")
        assert hand.direction == Direction.note and hand.conversation_id == cid
    assert len(filed) == 1
    copy = filed[0]
    assert "\\Seen" in copy.flags
    assert copy.message["X-Imapdesk-Note"] == "1"
    assert copy.message["In-Reply-To"] == f"<{original}>"
    assert copy.message["Message-ID"] == f"<{note_msgid}>"
    assert running_relay.accepted == [] or all(
        note_msgid.encode() not in a.data for a in running_relay.accepted
    ), "a note is never sent"
    assert folder_messages(customer) == []

    _drop_database(engine, db_url)
    add_sending_mailbox(engine, settings, mail_account, running_relay)
    with unit_of_work(engine) as db:
        forget_mail(db)  # what `imapdesk rebuild` does first
    assert sync_until_caught_up(settings, engine, timeout=30)
    restored = _message(engine, note_msgid)
    assert restored is not None and restored.direction == Direction.note
    assert "Approved by finance — refund 42 €" in restored.text
    first = _message(engine, original)
    assert first is not None and restored.conversation_id == first.conversation_id
    hand = _message(engine, hand_msgid)
    assert hand is not None and hand.direction == Direction.note
    assert hand.conversation_id == first.conversation_id
    with Session(engine) as db:
        conv = db.get(Conversation, first.conversation_id)
        assert conv is not None and conv.message_count == 1  # notes are not messages


def test_reply_from_a_mail_client_joins_and_auto_mail_never_triggers_sending(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    running_relay: LocalSmtpRelay,
) -> None:
    mailbox_id = add_sending_mailbox(engine, settings, mail_account, running_relay)
    agent = make_agent(engine)
    before = len(running_relay.accepted)
    first = mail_from_customer(mailserver, customer, mail_account, "Invoice question")
    with running_worker(settings, engine):
        cid = wait_for(lambda: (m := _message(engine, first)) and m.conversation_id)
        wait_for(lambda: caught_up(engine, mailbox_id, "Sent"), what="Sent followed")
        # a colleague answers in Thunderbird: the reply goes out by their SMTP and into Sent
        client_msgid = colleague_append(
            mail_account,
            "Sent",
            "Re: Invoice question",
            "Paid, thanks.",
            in_reply_to=first,
            to=customer.user,
            references=[first],
        )
        joined = wait_for(lambda: _message(engine, client_msgid), what="joined")
        wait_for(
            lambda: status_of(engine, cid) == ConversationStatus.pending,
            what="pending, as after a reply from imapdesk",
        )
        wait_for(
            lambda: any(
                "\\Answered" in m.flags and m.message["Message-ID"] == f"<{first}>"
                for m in folder_messages(mail_account, "Pending")
            ),
            what="the customer's message answered, in Pending",
        )

        # our own reply, then an auto-reply and a bounce of it come in
        with unit_of_work(engine) as db:
            a = db.get(Agent, agent.id)
            assert a is not None
            ours = queue_reply(db, a, cid, body="More details", source=ActivitySource.api)
            ours_id, ours_msgid = ours.id, ours.msgid
        wait_for(lambda: len(folder_messages(customer)) == 1, what="our reply delivered")
        _, auto = customer_mail(
            customer.user,
            mail_account.user,
            "Automatic reply: Re: Invoice question",
            "I am out of office.",
            in_reply_to=ours_msgid,
            headers={"Auto-Submitted": "auto-replied"},
        )
        mailserver.deliver(mail_account.user, auto, sender="")
        bounce_msgid, bounce = _bounce(mail_account.user, ours_msgid)
        mailserver.deliver(mail_account.user, bounce, sender="")
        wait_for(
            lambda: (m := _message(engine, bounce_msgid)) and m.conversation_id == cid,
            what="the bounce joining the conversation",
        )
        with Session(engine) as db:
            failed = db.get(OutboundMail, ours_id)
            assert failed is not None
        wait_for(
            lambda: _outbound_state(engine, ours_id) == OutboundState.failed,
            what="the reply flagged as bounced",
        )
    assert joined.direction == Direction.outbound and joined.conversation_id == cid
    with Session(engine) as db:
        replied = db.exec(
            select(Activity).where(
                col(Activity.action) == "replied", col(Activity.source) == ActivitySource.imap
            )
        ).one()
        assert replied.details["via"] == "replied from a mail client"
        mail = db.get(OutboundMail, ours_id)
        assert mail is not None and "5.1.1" in (mail.last_error or "")
        assert "User unknown" in (mail.last_error or "")
        assert db.exec(select(Activity).where(col(Activity.action) == "bounced")).one()
        # nothing but our one reply was ever queued or sent
        assert len(db.exec(select(OutboundMail)).all()) == 1
        auto_row = db.exec(
            select(Message).where(col(Message.subject).startswith("Automatic reply"))
        ).one()
        assert auto_row.conversation_id == cid and not may_send_automatically(auto_row)
        bounce_row = _message(engine, bounce_msgid)
        assert bounce_row is not None and not may_send_automatically(bounce_row)
    assert len(running_relay.accepted) == before + 1, "imapdesk sent only the agent's reply"
    assert len(folder_messages(customer)) == 1


def _outbound_state(engine: Engine, outbound_id: int | None) -> OutboundState | None:
    with Session(engine) as db:
        row = db.get(OutboundMail, outbound_id)
        return row.state if row is not None else None


def _bounce(to: str, failed_msgid: str) -> tuple[str, bytes]:
    msgid = make_msgid(domain="mx.example.test")
    raw = (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.example.test>\r\n"
        f"To: {to}\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: {msgid}\r\n"
        f"Date: {formatdate()}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nThe mail system could not deliver it.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.test\r\n\r\n"
        "Final-Recipient: rfc822; nobody@customer.example\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <nobody@customer.example>: User unknown\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: {to}\r\nMessage-ID: <{failed_msgid}>\r\nSubject: Re: Invoice question\r\n"
        "--B--\r\n"
    ).encode()
    return msgid.strip("<>"), raw


def test_automatic_mail_is_marked_so() -> None:
    from imapdesk.kernel.models import Mailbox

    box = Mailbox(
        name="s", address="support@example.com", imap_host="h", username="u", password_encrypted=""
    )
    raw = compose(
        sender=from_address(box, None),
        to=[from_address(box, None)],
        subject="We got your message",
        msgid="ack@example.com",
        text="Thanks",
        automatic=True,
        date=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert b"\r\nAuto-Submitted: auto-replied\r\n" in raw
