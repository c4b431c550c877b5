"""Per-agent read marks: "read by me", kept in the database only.

The mailbox's `\\Seen` is shared by everyone on the box (docs/IMAP-MAPPING.md): when Alice
opens a conversation it becomes read for Bob's mail client too. What Alice herself has read is
hers alone: a `ConversationReadMark` says when she last read it in the web UI, and the
conversation is unread *for her* while its last message is newer than that. A conversation
whose last message predates her marks (`Agent.read_marks_since`, else when she was created)
keeps the shared state, so a new agent or a new installation does not see every old
conversation as new.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from imapdesk.kernel.models import Agent, Conversation, ConversationReadMark, as_utc, utcnow


def marks_since(agent: Agent) -> datetime:
    return as_utc(agent.read_marks_since or agent.created_at)


def read_marks(
    session: Session, agent_id: int, conversation_ids: Iterable[int]
) -> dict[int, datetime]:
    """When the agent last read each of these conversations (those never read are absent)."""
    ids = list(dict.fromkeys(conversation_ids))
    if not ids:
        return {}
    rows = session.exec(
        select(ConversationReadMark.conversation_id, ConversationReadMark.read_at).where(
            col(ConversationReadMark.agent_id) == agent_id,
            col(ConversationReadMark.conversation_id).in_(ids),
        )
    ).all()
    return {cid: as_utc(at) for cid, at in rows}


def is_unread_for(agent: Agent, conversation: Conversation, read_at: datetime | None) -> bool:
    last = as_utc(conversation.last_message_at)
    if last is None:
        return False
    if read_at is not None:
        return last > read_at
    if last < marks_since(agent):
        return conversation.unread  # from before the agent's marks: the shared state
    return True


def unread_for(session: Session, agent: Agent, conversations: Iterable[Conversation]) -> set[int]:
    """The ids of those conversations that are unread for this agent (one query)."""
    listed = [c for c in conversations if c.id is not None]
    if agent.id is None or not listed:
        return set()
    marks = read_marks(session, agent.id, (c.id for c in listed if c.id is not None))
    return {c.id for c in listed if c.id is not None and is_unread_for(agent, c, marks.get(c.id))}


def needs_mark(session: Session, agent: Agent, conversation: Conversation) -> bool:
    """Whether opening it now would change the agent's mark (a cheap look before a write)."""
    if agent.id is None or conversation.id is None:
        return False
    read_at = read_marks(session, agent.id, [conversation.id]).get(conversation.id)
    last = as_utc(conversation.last_message_at)
    return read_at is None or (last is not None and last > read_at)


def mark_read_for(session: Session, agent_id: int, conversation_id: int) -> None:
    """The agent read the conversation now (idempotent; a mark only moves forward)."""
    now = utcnow()
    changed = session.execute(
        update(ConversationReadMark)
        .where(
            col(ConversationReadMark.agent_id) == agent_id,
            col(ConversationReadMark.conversation_id) == conversation_id,
        )
        .values(read_at=now)
    )
    if changed.rowcount:  # type: ignore[attr-defined]
        return
    try:
        with session.begin_nested():
            session.add(
                ConversationReadMark(
                    agent_id=agent_id, conversation_id=conversation_id, read_at=now
                )
            )
    except IntegrityError:
        pass  # two tabs at once: the other's insert won, and its mark is as good


def mark_unread_for(session: Session, agent_id: int, conversation_id: int) -> None:
    """ "Mark unread" by this agent: their mark goes."""
    mark = session.get(ConversationReadMark, (agent_id, conversation_id))
    if mark is not None:
        session.delete(mark)


def stamp(session: Session, agent_id: int) -> tuple[str]:
    """Changes whenever the agent reads something (the cached list parts are stamped with
    it: a read changes no conversation). "Mark unread" changes the conversation itself."""
    latest = session.exec(
        select(func.max(ConversationReadMark.read_at)).where(
            col(ConversationReadMark.agent_id) == agent_id
        )
    ).one()
    return (str(latest),)
