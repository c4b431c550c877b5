"""The domain event log: what automation rules, webhooks and notifications react to.

An event is written in the same transaction as the change it tells of (`record_event`), so a
change that commits has its event and one that rolls back has none. Every conversation change
that leaves an `Activity` row gets its event from that row (`_events_from_activities`, one
place for every code path: web UI, REST, rules, read-back from the mailbox); the ingest adds
`conversation.created` and `message.received` for mail taken in live (not a first sync or a
rebuild: no rule is to answer old mail).

A consumer reads the log in id order (`pending_events`) and, in the transaction of what it
did with an event, writes its receipt (`mark_handled`): handled exactly once, across crashes
and restarts. Ids are handed out before commit, so a transaction may commit an event below
one already handled; the consumer's floor therefore only moves past events older than
`SETTLED_SECONDS` (long committed or rolled back), and above the floor the receipts say what
is done.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, event, func
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, col, select

from imapdesk.kernel.models import Activity, Event, EventConsumer, EventReceipt, utcnow

log = logging.getLogger(__name__)

# an event id older than this is committed or never will be: the floor may pass it
SETTLED_SECONDS = 300


class EventKind(StrEnum):
    conversation_created = "conversation.created"
    message_received = "message.received"  # any new message in a conversation, either way
    customer_replied = "conversation.customer_replied"  # a customer's message in an existing one
    agent_replied = "conversation.agent_replied"  # a reply sent, from imapdesk or a mail client
    status_changed = "conversation.status_changed"
    assigned = "conversation.assigned"
    unassigned = "conversation.unassigned"
    tagged = "conversation.tagged"
    untagged = "conversation.untagged"
    note_added = "note.added"
    reply_sent = "reply.sent"
    reply_failed = "reply.failed"
    updated = "conversation.updated"  # any other change (read, claimed, merged, ...)
    sla_warning = "sla.warning"
    sla_breached = "sla.breached"


# the activity actions with an event kind of their own; any other action is `updated`
_KIND_BY_ACTION: dict[str, EventKind] = {
    "status": EventKind.status_changed,
    "assigned": EventKind.assigned,
    "claimed": EventKind.assigned,
    "unassigned": EventKind.unassigned,
    "released": EventKind.unassigned,
    "tagged": EventKind.tagged,
    "untagged": EventKind.untagged,
    "note": EventKind.note_added,
    "noted": EventKind.note_added,
    "replied": EventKind.reply_sent,
    "send_failed": EventKind.reply_failed,
    "bounced": EventKind.reply_failed,
}
# activity actions that tell of no change anyone reacts to
_QUIET_ACTIONS = frozenset({"read", "unread", "keyword_not_kept", "writeback_failed"})


def kind_for_action(action: str) -> EventKind | None:
    if action in _QUIET_ACTIONS:
        return None
    return _KIND_BY_ACTION.get(action, EventKind.updated)


def record_event(
    session: Session | OrmSession,
    kind: EventKind | str,
    *,
    mailbox_id: int | None = None,
    conversation_id: int | None = None,
    message_id: int | None = None,
    agent_id: int | None = None,
    actor: str = "",
    payload: dict[str, Any] | None = None,
) -> Event:
    """Add an event to the session's transaction (the caller commits)."""
    row = Event(
        kind=str(kind),
        created_at=utcnow(),
        mailbox_id=mailbox_id,
        conversation_id=conversation_id,
        message_id=message_id,
        agent_id=agent_id,
        actor=actor[:320],
        payload=payload or {},
    )
    session.add(row)
    return row


def _mailbox_of(session: OrmSession, conversation_id: int) -> int | None:
    from imapdesk.kernel.models import Conversation

    conversation = session.get(Conversation, conversation_id)
    return conversation.mailbox_id if conversation is not None else None


@event.listens_for(OrmSession, "before_flush")
def _events_from_activities(session: OrmSession, _context: Any, _instances: Any) -> None:
    """Every new Activity row (a change to a conversation) gets its event in the same flush."""
    for obj in list(session.new):
        if not isinstance(obj, Activity):
            continue
        kind = kind_for_action(obj.action)
        if kind is None:
            continue
        source = getattr(obj.source, "value", obj.source)
        session.add(
            Event(
                kind=str(kind),
                created_at=utcnow(),
                mailbox_id=_mailbox_of(session, obj.conversation_id),
                conversation_id=obj.conversation_id,
                agent_id=obj.agent_id,
                actor=obj.actor or str(source),
                payload={"action": obj.action, "source": source, "details": obj.details or {}},
            )
        )


def pending_events(
    session: Session,
    consumer: str,
    *,
    kinds: Iterable[str] | None = None,
    limit: int = 200,
) -> list[Event]:
    """The events above the consumer's floor it has no receipt for, oldest first. A consumer
    seen for the first time starts at the end of the log (it does not act on the past)."""
    floor = _floor(session, consumer)
    handled = select(EventReceipt.event_id).where(EventReceipt.consumer == consumer)
    query = select(Event).where(col(Event.id) > floor, col(Event.id).not_in(handled))
    if kinds is not None:
        query = query.where(col(Event.kind).in_(list(kinds)))
    return list(session.exec(query.order_by(col(Event.id)).limit(limit)).all())


def mark_handled(session: Session, consumer: str, events: Sequence[Event]) -> None:
    """Receipts for these events, in the caller's transaction (with what it did with them)."""
    for row in events:
        assert row.id is not None
        session.add(EventReceipt(consumer=consumer, event_id=row.id))


def _floor(session: Session, consumer: str) -> int:
    row = session.get(EventConsumer, consumer)
    if row is None:
        last = session.exec(select(func.max(Event.id))).one() or 0
        row = EventConsumer(name=consumer, floor_id=int(last))
        session.add(row)
        session.flush()
    return row.floor_id


def advance_floor(session: Session, consumer: str, *, kinds: Iterable[str] | None = None) -> int:
    """Move the consumer's floor past the settled events it handled (or, `kinds` given as to
    `pending_events`, that are of no kind it reads) and drop their receipts: keeps the
    receipts few. Returns the new floor."""
    row = session.get(EventConsumer, consumer)
    if row is None:
        return _floor(session, consumer)
    settled_before = utcnow() - timedelta(seconds=SETTLED_SECONDS)
    # the lowest event above the floor that is not settled yet, or not handled yet
    unsettled = session.exec(
        select(func.min(Event.id)).where(
            col(Event.id) > row.floor_id, col(Event.created_at) >= settled_before
        )
    ).one()
    handled = select(EventReceipt.event_id).where(EventReceipt.consumer == consumer)
    unread = select(func.min(Event.id)).where(
        col(Event.id) > row.floor_id, col(Event.id).not_in(handled)
    )
    if kinds is not None:
        unread = unread.where(col(Event.kind).in_(list(kinds)))
    unhandled = session.exec(unread).one()
    limits = [v for v in (unsettled, unhandled) if v is not None]
    if limits:
        new_floor = min(limits) - 1
    else:
        new_floor = int(session.exec(select(func.max(Event.id))).one() or row.floor_id)
    if new_floor > row.floor_id:
        row.floor_id = new_floor
        row.updated_at = utcnow()
        session.add(row)
        session.exec(
            delete(EventReceipt).where(
                col(EventReceipt.consumer) == consumer, col(EventReceipt.event_id) <= new_floor
            )
        )
    return row.floor_id
