"""The notifier: the event log into agents' notifications, and their emails.

One thread per worker process (started by `Worker.run`). Each turn, in one transaction, the
events waiting become notifications with the events' receipts
(imapdesk/domain/notifications/from_events.py): each event notifies once, across crashes.
Notifications whose agent chose email are then sent through the SMTP server of the
conversation's mailbox (or the first mailbox with one), `Auto-Submitted: auto-generated`; the
state is recorded after the send (a worker killed in between sends that email again).
"""

from __future__ import annotations

import logging
import threading
import time
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain import events
from imapdesk.domain.mailboxes.servers import smtp_account
from imapdesk.domain.notifications import from_events, inbox
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import ImapdeskError
from imapdesk.kernel.models import Agent, Conversation, Mailbox, Notification
from imapdesk.kernel.settings import Settings
from imapdesk.mail import smtp

log = logging.getLogger(__name__)

FLOOR_EVERY_SECONDS = 60.0
EMAILS_PER_TURN = 20


def _mailbox_for(db: Session, notification: Notification) -> Mailbox | None:
    if notification.conversation_id is not None:
        conversation = db.get(Conversation, notification.conversation_id)
        if conversation is not None:
            mailbox = db.get(Mailbox, conversation.mailbox_id)
            if mailbox is not None and mailbox.smtp_host:
                return mailbox
    return db.exec(
        select(Mailbox)
        .where(col(Mailbox.enabled), col(Mailbox.smtp_host).is_not(None))
        .order_by(col(Mailbox.id))
    ).first()


def notification_email(mailbox: Mailbox, agent: Agent, notification: Notification) -> bytes:
    message = EmailMessage()
    message["From"] = formataddr(("imapdesk", mailbox.address))
    message["To"] = formataddr((agent.name, agent.email))
    message["Subject"] = f"[imapdesk] {notification.text[:150]}"
    message["Message-ID"] = make_msgid(domain=mailbox.address.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message["X-Imapdesk-Notification"] = str(notification.id)
    message.set_content(
        f"{notification.text}\n\n"
        "You get this because you chose email notifications in imapdesk "
        "(Notifications: your choices).\n"
    )
    return message.as_bytes()


class Notifier:
    """Runs until `stop` is set."""

    def __init__(self, engine: Engine, settings: Settings, stop: threading.Event) -> None:
        self.engine = engine
        self.settings = settings
        self.stop = stop
        self._floor_at = 0.0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with unit_of_work(self.engine) as db:
                    events.pending_events(db, from_events.CONSUMER, limit=1)  # its place, once
                break
            except Exception:
                log.exception("notifications: cannot reach the database; trying again")
                self.stop.wait(1.0)
        while not self.stop.is_set():
            try:
                busy = self.turn()
            except Exception:  # a bug or the database away must not end the worker
                log.exception("notifications: a turn failed; trying again")
                busy = False
                self.stop.wait(1.0)
            if not busy:
                self.stop.wait(self.settings.notifications_poll_seconds)

    def turn(self) -> bool:
        taken = 0
        # a look first, that writes nothing: the write (a lock on SQLite) only when needed
        with Session(self.engine) as db:
            waiting = bool(events.pending_events(db, from_events.CONSUMER, limit=1))
        if waiting:
            with unit_of_work(self.engine) as db:
                taken, _made = from_events.consume(db)
        if time.monotonic() - self._floor_at > FLOOR_EVERY_SECONDS:
            with unit_of_work(self.engine) as db:
                events.advance_floor(db, from_events.CONSUMER)
                inbox.prune(db)
            self._floor_at = time.monotonic()
        sent = self.send_emails()
        return bool(taken or sent)

    def send_emails(self) -> int:
        with Session(self.engine) as db:
            ids = list(
                db.exec(
                    select(Notification.id)
                    .where(col(Notification.email_state) == "pending")
                    .order_by(col(Notification.id))
                    .limit(EMAILS_PER_TURN)
                )
            )
        for notification_id in ids:
            assert notification_id is not None
            self._email(notification_id)
        return len(ids)

    def _email(self, notification_id: int) -> None:
        state, error = "sent", None
        with Session(self.engine) as db:
            notification = db.get(Notification, notification_id)
            if notification is None:
                return
            agent = db.get(Agent, notification.agent_id)
            mailbox = _mailbox_for(db, notification)
            account = smtp_account(mailbox, self.settings) if mailbox is not None else None
            raw = (
                notification_email(mailbox, agent, notification)
                if mailbox is not None and agent is not None
                else b""
            )
        if agent is None or mailbox is None or account is None:
            state, error = "failed", "no mailbox with an SMTP server to send it through"
        else:
            client = None
            try:
                client = smtp.connect(account)
                smtp.send_message(
                    client,
                    mailbox.address,
                    [agent.email],
                    raw,
                    before_final_dot=lambda: None,
                    where=f"the SMTP server of {mailbox.name}",
                )
            except ImapdeskError as exc:
                state, error = "failed", exc.message
            finally:
                smtp.close(client)
        with unit_of_work(self.engine) as db:
            row = db.get(Notification, notification_id)
            if row is not None:
                row.email_state = state
                row.email_error = error
        if error:
            log.warning("notifications: email %d not sent: %s", notification_id, error)
