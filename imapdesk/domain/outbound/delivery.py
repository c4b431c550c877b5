"""What follows a delivery: a reply sent by the sender, one sent from a mail client, a bounce;
and the delivery state as agents see it.

Every change of an outgoing message's state (`delivery_changed`) moves its conversation's
version, which the live feed watches (`imapdesk.domain.live.changes`): open pages and lists
show scheduled, queued, sending, sent or failed as it happens.

Once the SMTP server took a reply (`after_sent`, called by the sender in `worker/sender.py` in
the transaction that records it as sent), the answered message gets `\\Answered` (written back)
and the conversation takes the status the mailbox names (`Mailbox.status_after_reply`, default
pending), unless the customer wrote since.

After the ingest has taken in a batch (`after_ingest`): a reply that a colleague sent from a mail
client (it appears in Sent) joins as outbound and sets the state a reply from imapdesk sets; a
delivery status notification that reports one of our replies as undeliverable (the ingest has
threaded it by the reported Message-ID) flags that reply as failed with the reporting server's
words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from imapdesk.domain.conversations import operations
from imapdesk.domain.events import EventKind, record_event
from imapdesk.domain.mailstate import FlagChange
from imapdesk.kernel.errors import NotFound
from imapdesk.kernel.models import (
    ActivitySource,
    Agent,
    Conversation,
    ConversationStatus,
    Direction,
    Folder,
    FolderRole,
    FolderState,
    Mailbox,
    Message,
    MessageLocation,
    OutboundMail,
    OutboundState,
    PendingImapAction,
    RawMessage,
    as_utc,
    utcnow,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail.dsn import DsnReport, dsn_report

MAIL_CLIENT_REPLY = "replied from a mail client"
# how the sender begins `last_error` (worker/sender.py)
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: ")


def public_state(outbound: OutboundMail, now: datetime | None = None) -> OutboundState:
    """The state agents are shown: a scheduled message whose undo window is over is queued
    (the sender takes it on its next round, or when the worker is back)."""
    if outbound.state == OutboundState.scheduled:
        due = as_utc(outbound.next_attempt_at)
        if due is None or due <= (now or utcnow()):
            return OutboundState.queued
    return OutboundState(outbound.state)


def delivery_changed(session: Session, conversation_id: int | None) -> None:
    """An outgoing message of this conversation changed state: its version moves (row-locked,
    as every change to it), so that open pages and lists show the new state live."""
    if conversation_id is None:
        return
    try:
        conversation = operations._load(session, conversation_id, lock=True)
    except NotFound:
        return  # deleted meanwhile: nobody has it open
    conversation.version += 1
    conversation.updated_at = utcnow()
    session.add(conversation)


def failure_words(outbound: OutboundMail) -> str:
    """Why it was not sent, shortest first: the SMTP server's own words when it answered,
    else the sender's (without the time it was recorded)."""
    if outbound.smtp_response:
        return outbound.smtp_response
    return _STAMP.sub("", outbound.last_error or "") or "the server refused it"


def failed_by_conversation(
    session: Session, conversation_ids: Iterable[int | None]
) -> dict[int, OutboundMail]:
    """The newest outgoing message that failed, of each of these conversations that has one
    (the list's mark)."""
    ids = [i for i in conversation_ids if i is not None]
    if not ids:
        return {}
    rows = session.exec(
        select(OutboundMail)
        .where(
            col(OutboundMail.conversation_id).in_(ids),
            col(OutboundMail.state) == OutboundState.failed,
        )
        .order_by(col(OutboundMail.id))
    ).all()
    return {o.conversation_id: o for o in rows if o.conversation_id is not None}


def _answered_flag(session: Session, conversation: Conversation, answered_id: int) -> None:
    """\\Answered on the answered message, written back (where it is not there yet)."""
    flags = session.exec(
        select(MessageLocation.flags).where(col(MessageLocation.message_id) == answered_id)
    ).all()
    if flags and all("\\Answered" in (f or []) for f in flags):
        return
    session.add(
        PendingImapAction(
            mailbox_id=conversation.mailbox_id,
            conversation_id=conversation.id,
            message_id=answered_id,
            kind="flags",
            payload=FlagChange.of(add=["\\Answered"]).payload(),
            created_at=utcnow(),
        )
    )


def _customer_wrote_since(session: Session, conversation: Conversation, when: datetime) -> bool:
    return (
        session.exec(
            select(func.count())
            .select_from(Message)
            .where(
                col(Message.conversation_id) == conversation.id,
                col(Message.direction) == Direction.inbound,
                col(Message.date) > when,
            )
        ).one()
        > 0
    )


def after_sent(session: Session, outbound: OutboundMail) -> None:
    """Once the SMTP server took it: \\Answered on the answered message, and the conversation
    takes the status the mailbox names (default pending), unless the customer wrote since."""
    if outbound.kind == "note" or outbound.conversation_id is None:
        return
    automatic = outbound.agent_id is None and outbound.source == ActivitySource.system
    record_event(
        session,
        EventKind.reply_sent,
        mailbox_id=outbound.mailbox_id,
        conversation_id=outbound.conversation_id,
        message_id=outbound.message_id,
        agent_id=outbound.agent_id,
        actor="agent" if outbound.agent_id else "system",
        payload={
            "outbound_id": outbound.id,
            "kind": outbound.kind,
            "to": outbound.recipients,
            # a rule's automatic reply (an acknowledgement) answers nobody's question
            "automatic": automatic,
        },
    )
    mailbox = session.get(Mailbox, outbound.mailbox_id)
    conversation = operations._load(session, outbound.conversation_id, lock=True)
    if mailbox is None or conversation.id is None:
        return
    if automatic:
        return  # a rule's automatic reply: not \Answered, the status stays (a person answers)
    if outbound.answered_message_id is not None:
        _answered_flag(session, conversation, outbound.answered_message_id)
    if outbound.kind == "forward":
        return  # sent to a third party: the customer still waits as before, the status stays
    status = ConversationStatus(mailbox.status_after_reply)
    if not _customer_wrote_since(session, conversation, as_utc(outbound.created_at) or utcnow()):
        agent = session.get(Agent, outbound.agent_id) if outbound.agent_id else None
        source = outbound.source if agent is not None else ActivitySource.system
        operations.set_status(session, conversation, status, source=source, agent=agent)


def after_ingest(
    session: Session, settings: Settings, mailbox: Mailbox, folder: Folder, message_ids: list[int]
) -> None:
    """Called by the ingest for the new messages of a batch: a reply that a colleague sent
    from a mail client (it appears in Sent) joins as outbound and sets the state a reply from
    imapdesk sets; a bounce of one of our replies flags it as failed."""
    live = folder.state == FolderState.poll
    messages = session.exec(select(Message).where(col(Message.id).in_(message_ids))).all()
    for m in messages:
        if m.conversation_id is None:
            continue
        if m.direction == Direction.outbound and folder.role == FolderRole.sent and live:
            _client_reply(session, mailbox, m)
        elif m.direction == Direction.inbound and m.auto_submitted and m.in_reply_to:
            _bounce(session, mailbox, m)


def _client_reply(session: Session, mailbox: Mailbox, m: Message) -> None:
    ours = session.exec(
        select(OutboundMail.id).where(col(OutboundMail.msgid) == m.message_id)
    ).first()
    if ours is not None:
        return
    conversation = operations._load(session, m.conversation_id or 0, lock=True)
    answered = None
    if m.in_reply_to:
        answered = session.exec(
            select(Message).where(
                col(Message.message_id) == m.in_reply_to,
                col(Message.conversation_id) == conversation.id,
            )
        ).first()
    operations._record(
        session,
        conversation,
        source=ActivitySource.imap,
        agent=None,
        actor=operations.MAIL_CLIENT,
        action="replied",
        details={
            "message_id": m.id,
            "via": MAIL_CLIENT_REPLY,
            "to": [a.get("email") for a in m.to],
        },
    )
    if answered is not None and answered.id is not None:
        _answered_flag(session, conversation, answered.id)
    status = ConversationStatus(mailbox.status_after_reply)
    when = as_utc(m.date) or utcnow()
    if not _customer_wrote_since(session, conversation, when):
        operations.set_status(
            session, conversation, status, source=ActivitySource.system, actor="imapdesk"
        )


def _bounce(session: Session, mailbox: Mailbox, m: Message) -> None:
    outbound = session.exec(
        select(OutboundMail).where(
            col(OutboundMail.msgid) == m.in_reply_to,
            col(OutboundMail.mailbox_id) == mailbox.id,
        )
    ).first()
    if outbound is None or outbound.kind == "note":
        return
    raw = session.get(RawMessage, m.id)
    report = dsn_report(raw.data) if raw is not None else DsnReport()
    if not report.failed:
        return
    # the conversation's row before the outgoing mail's, as the sender and the agents take them
    delivery_changed(session, outbound.conversation_id)
    words = report.diagnostic or "the message was returned as undeliverable"
    outbound.state = OutboundState.failed
    outbound.last_error = f"returned by {m.from_email or 'the mail system'}: {words}"[:2000]
    outbound.smtp_response = words[:2000]
    outbound.updated_at = utcnow()
    session.add(outbound)
    if outbound.conversation_id is not None:
        conversation = operations._load(session, outbound.conversation_id, lock=True)
        operations._record(
            session,
            conversation,
            source=ActivitySource.system,
            agent=None,
            actor="imapdesk",
            action="bounced",
            details={
                "outbound_id": outbound.id,
                "message_id": outbound.message_id,
                "bounce_message_id": m.id,
                "recipients": report.recipients,
                "error": words,
            },
        )
