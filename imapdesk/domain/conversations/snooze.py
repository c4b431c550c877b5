"""Snooze: a conversation waits (status pending) until a time, then reopens by itself.

`wake_due` is what reopens them; the worker's supervisor calls it every few seconds, so
snoozes wake whichever API process set them and whether or not anyone has a page open. Any
change of status ends a snooze (`operations.set_status`, whatever path made the change).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.conversations import operations
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    Conversation,
    ConversationStatus,
    as_utc,
    utcnow,
)

log = logging.getLogger(__name__)
SNOOZE_ACTOR = "snooze"


def _note(
    session: Session,
    conversation: Conversation,
    action: str,
    details: dict[str, Any],
    *,
    source: ActivitySource,
    agent: Agent | None,
) -> None:
    assert conversation.id is not None
    conversation.version += 1
    conversation.updated_at = utcnow()
    session.add(conversation)
    session.add(
        Activity(
            conversation_id=conversation.id,
            created_at=utcnow(),
            source=source,
            agent_id=agent.id if agent is not None else None,
            actor=agent.email if agent is not None else SNOOZE_ACTOR,
            action=action,
            details=details,
        )
    )
    session.flush()


def snooze(
    session: Session,
    conversation_id: int,
    until: datetime,
    *,
    source: ActivitySource,
    agent: Agent | None,
    now: datetime | None = None,
) -> Conversation:
    """Pending (moved to the Pending folder like any pending conversation) until `until`."""
    when = as_utc(until)
    if when <= (now or utcnow()):
        raise InvalidInput("snooze until a time in the future", field="until")
    current = operations.set_status(
        session, conversation_id, ConversationStatus.pending, source=source, agent=agent
    )
    current.snoozed_until = when
    _note(
        session,
        current,
        "snoozed",
        {"until": when.isoformat(timespec="minutes")},
        source=source,
        agent=agent,
    )
    return current


def unsnooze(
    session: Session, conversation_id: int, *, source: ActivitySource, agent: Agent | None
) -> Conversation:
    """Forget the snooze (the status stays what it is)."""
    return operations.end_snooze(
        session, conversation_id, source=source, agent=agent, actor=SNOOZE_ACTOR
    )


def wake_due(session: Session, *, now: datetime | None = None, limit: int = 200) -> list[int]:
    """Reopen the conversations whose snooze is over; a snoozed conversation that someone
    has moved on in the meantime (answered, closed, reopened) just loses its snooze."""
    moment = now or utcnow()
    due = list(
        session.exec(
            select(Conversation)
            .where(col(Conversation.snoozed_until) <= moment)
            .order_by(col(Conversation.snoozed_until))
            .limit(limit)
        )
    )
    woken: list[int] = []
    for conversation in due:
        assert conversation.id is not None
        conversation.snoozed_until = None
        session.add(conversation)
        if conversation.status != ConversationStatus.pending:
            continue
        operations.set_status(
            session,
            conversation,
            ConversationStatus.open,
            source=ActivitySource.system,
            actor=SNOOZE_ACTOR,
        )
        woken.append(conversation.id)
    session.flush()
    return woken


def wake_snoozed(engine: Engine, *, now: datetime | None = None) -> list[int]:
    """`wake_due` in a unit of work of its own; never raises (the caller is a loop). Looks
    first without taking the write lock, as there is rarely anything to wake."""
    moment = now or utcnow()
    try:
        with Session(engine) as session:
            due = session.exec(
                select(Conversation.id).where(col(Conversation.snoozed_until) <= moment).limit(1)
            ).first()
        if due is None:
            return []
        with unit_of_work(engine) as session:
            woken = wake_due(session, now=moment)
    except Exception:
        log.exception("could not wake snoozed conversations")
        return []
    if woken:
        log.info("woke %d snoozed conversations: %s", len(woken), woken)
    return woken
