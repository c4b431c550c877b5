"""Outbound mail in tests: the shared box set up to send through the test relay, a customer's
mail delivered to it, and what became of it in the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.mailboxes.config import add_mailbox
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Agent,
    Conversation,
    ConversationStatus,
    ImapSecurity,
    Message,
    SmtpSecurity,
)
from imapdesk.kernel.settings import Settings
from tests.support.mail import customer_mail
from tests.support.web import PASSWORD


def add_sending_mailbox(
    engine: Engine,
    settings: Settings,
    account: MailAccount,
    relay: LocalSmtpRelay,
    *,
    name: str = "support",
    **extra: Any,
) -> int:
    with unit_of_work(engine) as db:
        mb = add_mailbox(
            db,
            settings,
            name=name,
            address=account.user,
            imap_host="localhost",
            imap_port=account.imaps_port,
            imap_security=ImapSecurity.ssl,
            username=account.user,
            password=account.password,
            ca_file=str(account.ca_file),
            smtp_host="localhost",
            smtp_port=relay.port,
            smtp_security=SmtpSecurity.starttls,
        )
        for key, value in extra.items():
            setattr(mb, key, value)
        assert mb.id is not None
        return mb.id


def mail_from_customer(
    mailserver: LocalMailServer, customer: MailAccount, account: MailAccount, subject: str
) -> str:
    """The customer's mail delivered to the shared box; its Message-ID."""
    msgid, raw = customer_mail(customer.user, account.user, subject)
    mailserver.deliver(account.user, raw)
    return msgid


def conversation_of(engine: Engine, msgid: str) -> int | None:
    """The conversation of the message with this Message-ID, once it is in."""
    with Session(engine) as db:
        m = db.exec(select(Message).where(col(Message.message_id) == msgid)).first()
        return m.conversation_id if m is not None else None


def status_of(engine: Engine, cid: int) -> ConversationStatus | None:
    with Session(engine) as db:
        conv = db.get(Conversation, cid)
        return conv.status if conv is not None else None


def make_agent(engine: Engine, email: str = "alice@example.com", name: str = "Alice") -> Agent:
    with unit_of_work(engine) as db:
        agent = create_agent(db, email, name, PASSWORD)
        db.flush()
        return agent
