"""Conversations: the token in the subject, the subject key, and the aggregates on the row.

The aggregates (count, dates, subject, customer, unread) are kept up to date message by
message by `add_message_to_conversation`; after a merge or a split `recompute_conversation`
rebuilds them from the messages. Nothing here commits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Protocol, cast

from sqlalchemy import Integer, Table, bindparam, func, insert, literal, select, update
from sqlalchemy import delete as sa_delete
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.instrumentation import manager_of_class
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, col

from imapdesk.domain.conversations.search_index import mark_stale
from imapdesk.kernel.models import (
    Conversation,
    ConversationStatus,
    ConversationTag,
    Direction,
    Mailbox,
    Message,
    OutboundMail,
    ThreadNode,
    as_utc,
    utcnow,
)
from imapdesk.mail.parsing import base_subject

# "[#123]": what our own replies carry in the subject so that answers find their way back
_TOKEN_RE = re.compile(r"\[#(\d{1,18})\]")
# a merge points every chain straight at the survivor: more hops than this is a loop
MAX_MERGE_HOPS = 32
SUBJECT_KEY_MAX = 255
# the most active status wins when two conversations are merged
_STATUS_PRECEDENCE = (
    ConversationStatus.open,
    ConversationStatus.pending,
    ConversationStatus.closed,
    ConversationStatus.spam,
    ConversationStatus.deleted,
)

_THREADNODE = cast(Table, ThreadNode.__table__)  # type: ignore[attr-defined]
_TAG = cast(Table, ConversationTag.__table__)  # type: ignore[attr-defined]
_CONVERSATION = cast(Table, Conversation.__table__)  # type: ignore[attr-defined]
_INSERT_CONVERSATION = insert(_CONVERSATION)
_MAILBOX_ADDRESS = select(col(Mailbox.address)).where(col(Mailbox.id) == bindparam("id"))


# --- token and subject key ---------------------------------------------------------------------


def conversation_token(conversation_id: int) -> str:
    """The token our outgoing replies carry in the subject: `[#<conversation id>]`."""
    return f"[#{conversation_id}]"


def find_token(subject: str | None) -> int | None:
    """The conversation id of the first `[#N]` token in a subject, if any."""
    if not subject:
        return None
    match = _TOKEN_RE.search(subject)
    return int(match.group(1)) if match else None


_SPACE_RE = re.compile(r"\s+")


def conversation_subject_key(subject: str | None) -> str:
    """`Conversation.subject_key` for a subject: its base subject (no reply/forward prefixes or
    list tags, casefolded) without our token, for the subject fallback to compare."""
    if not subject:
        return ""
    without_token = _SPACE_RE.sub(" ", _TOKEN_RE.sub(" ", subject)).strip()
    return base_subject(without_token)[:SUBJECT_KEY_MAX]


# --- customer ----------------------------------------------------------------------------------


def message_time(message: Message) -> datetime:
    """When a message happened: its Date, else when we stored it (aware UTC)."""
    return as_utc(message.date or message.created_at)


def our_addresses_for(
    session: Session, mailbox_id: int, our_addresses: Iterable[str] = ()
) -> frozenset[str]:
    """The given addresses plus the mailbox's own, lowercased."""
    # cached for the session (one batch of the ingest): loading the Mailbox row costs more
    cache: dict[int, str | None] = session.info.setdefault("imapdesk.mailbox_address", {})
    if mailbox_id not in cache:
        address = session.connection().execute(_MAILBOX_ADDRESS, {"id": mailbox_id}).scalar()
        cache[mailbox_id] = address.lower() if address else None
    ours = {a.lower() for a in our_addresses}
    if cache[mailbox_id]:
        ours.add(cast(str, cache[mailbox_id]))
    return frozenset(ours)


class _Addressed(Protocol):
    direction: Direction
    from_email: str | None
    from_name: str | None
    to: list[dict[str, str]]


def message_customer(
    message: _Addressed, our_addresses: frozenset[str]
) -> tuple[str | None, str | None]:
    """(email, name) of the customer a message speaks for: the sender of an inbound
    message, the first recipient not ours of an outbound one."""
    if message.direction == Direction.inbound:
        email = message.from_email.lower() if message.from_email else None
        return email, message.from_name or None
    if message.direction == Direction.outbound:
        for rcpt in message.to or []:
            email = (rcpt.get("email") or "").lower()
            if email and email not in our_addresses:
                return email, rcpt.get("name") or None
    return None, None


# --- conversations changed in the session --------------------------------------------------

_TOUCHED = "imapdesk.touched_conversations"


def _touch(session: Session, conversation: Conversation) -> None:
    session.info.setdefault(_TOUCHED, {})[id(conversation)] = conversation


def pending_conversations(session: Session) -> list[Conversation]:
    """Conversations changed here whose changes are not flushed yet (their rows are stale).

    Lets a lookup judge them by their objects instead of flushing the caller's pending rows:
    the ingest threads a whole batch before it flushes.
    """
    touched: dict[int, Conversation] = session.info.get(_TOUCHED, {})
    pending = []
    for key, conversation in list(touched.items()):
        state = sa_inspect(conversation)
        if state.modified and state.session_id == session.hash_key:
            pending.append(conversation)
        else:
            del touched[key]
    return pending


# --- aggregates --------------------------------------------------------------------------------


def new_conversation(
    session: Session,
    mailbox_id: int,
    message: Message,
    *,
    our_addresses: frozenset[str] = frozenset(),
    like: Conversation | None = None,
) -> Conversation:
    """Create (and insert, for its id) a conversation started by `message`.

    `like`: the conversation this one was split from; its tags, assignee and status carry over.
    """
    when = message_time(message)
    is_note = message.direction == Direction.note
    customer_email, customer_name = (None, None)
    if not is_note:
        ours = our_addresses
        if message.direction == Direction.outbound:
            ours = our_addresses_for(session, mailbox_id, our_addresses)
        customer_email, customer_name = message_customer(message, ours)
    values = dict(_conversation_defaults())
    values.update(
        mailbox_id=mailbox_id,
        subject=message.subject or "",
        subject_key=conversation_subject_key(message.subject),
        customer_email=customer_email,
        customer_name=customer_name,
        message_count=0 if is_note else 1,
        unread=message.direction == Direction.inbound and not message.seen,
        last_message_at=None if is_note else when,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    if like is not None:
        values.update(status=like.status, assignee_id=like.assignee_id, claimed=like.claimed)
    # a plain INSERT, then the object joins the session as if loaded: a third of the cost of
    # a unit-of-work flush, and the caller's pending changes stay for its own flush; the
    # object is built the way a query builds it (the model's constructor costs more than the
    # INSERT)
    inserted = session.connection().execute(_INSERT_CONVERSATION, values).inserted_primary_key
    assert inserted is not None
    conversation = cast(Conversation, manager_of_class(Conversation).new_instance())
    sa_inspect(conversation).dict.update(values, id=inserted[0])
    make_transient_to_detached(conversation)  # all of it counts as loaded
    session.add(conversation)
    mark_stale(session, conversation.id)  # its search document
    if like is not None and like.id is not None:
        session.execute(
            insert(_TAG).from_select(
                ["conversation_id", "tag"],
                select(literal(conversation.id, Integer), _TAG.c.tag).where(
                    _TAG.c.conversation_id == like.id
                ),
            )
        )
    return conversation


@cache
def _conversation_defaults() -> dict[str, Any]:
    """The column values a new Conversation gets from its constructor without arguments."""
    sample = Conversation(mailbox_id=0)
    return {c.name: getattr(sample, c.name) for c in _CONVERSATION.columns if c.name != "id"}


def add_message_to_conversation(
    session: Session,
    conversation: Conversation,
    message: Message,
    *,
    our_addresses: frozenset[str] = frozenset(),
) -> None:
    """Account for one more message in the aggregates (cheap: no query in the usual case).

    Notes count for nothing but `updated_at`. The subject is the first message's (by date);
    the customer is the sender of the first inbound message, or, while there is none, the
    first recipient not ours of the first outbound one.
    """
    _touch(session, conversation)
    mark_stale(session, conversation.id)  # its search document
    conversation.updated_at = utcnow()
    conversation.version += 1
    # collision detection (imapdesk/domain/outbound/collisions.py): what joined after the version an
    # agent saw
    message.added_version = conversation.version
    if message.direction == Direction.note:
        return
    when = message_time(message)
    first = conversation.message_count == 0
    conversation.message_count += 1
    previous_last = as_utc(conversation.last_message_at) if conversation.last_message_at else None
    if previous_last is None or when > previous_last:
        conversation.last_message_at = when
    if message.direction == Direction.inbound and not message.seen:
        conversation.unread = True
    # a message older than the newest one may be the first: only then ask the database
    earliest = first or (
        previous_last is not None
        and when < previous_last
        and not _has_earlier(session, conversation, message, when, inbound_only=False)
    )
    if earliest:
        conversation.subject = message.subject or ""
        conversation.subject_key = conversation_subject_key(message.subject)
    if message.direction == Direction.inbound:
        email, name = message_customer(message, our_addresses)
        if conversation.customer_email is None or (
            email != conversation.customer_email
            and not _has_earlier(session, conversation, message, when, inbound_only=True)
        ):
            conversation.customer_email, conversation.customer_name = email, name
        elif email == conversation.customer_email and not conversation.customer_name:
            conversation.customer_name = name
    elif conversation.customer_email is None:
        ours = our_addresses_for(session, conversation.mailbox_id, our_addresses)
        conversation.customer_email, conversation.customer_name = message_customer(message, ours)


def _has_earlier(
    session: Session,
    conversation: Conversation,
    message: Message,
    when: datetime,
    *,
    inbound_only: bool,
) -> bool:
    """Whether the conversation holds another message dated no later than `when`."""
    stmt = _EARLIER_INBOUND if inbound_only else _EARLIER_MESSAGE
    params = {"conversation_id": conversation.id, "message_id": message.id, "when": when}
    return session.execute(stmt, params).first() is not None


_EARLIER = (
    select(col(Message.id))
    .where(
        col(Message.conversation_id) == bindparam("conversation_id"),
        col(Message.id) != bindparam("message_id"),
        func.coalesce(col(Message.date), col(Message.created_at)) <= bindparam("when"),
    )
    .limit(1)
)
_EARLIER_INBOUND = _EARLIER.where(col(Message.direction) == Direction.inbound)
_EARLIER_MESSAGE = _EARLIER.where(col(Message.direction) != Direction.note)


def recompute_conversation(
    session: Session,
    conversation: Conversation,
    *,
    our_addresses: frozenset[str] = frozenset(),
) -> None:
    """Rebuild every aggregate from the conversation's messages (after a merge or a split)."""
    rows = session.execute(
        select(
            col(Message.id),
            col(Message.date),
            col(Message.created_at),
            col(Message.direction),
            col(Message.subject),
            col(Message.from_email),
            col(Message.from_name),
            col(Message.to),
            col(Message.seen),
        ).where(col(Message.conversation_id) == conversation.id)
    ).all()
    ours = our_addresses_for(session, conversation.mailbox_id, our_addresses)
    messages = sorted(
        (
            _Row(
                r.id,
                as_utc(r.date or r.created_at),
                r.direction,
                r.subject,
                r.from_email,
                r.from_name,
                r.to or [],
                r.seen,
            )
            for r in rows
            if r.direction != Direction.note
        ),
        key=lambda m: (m.when, m.id),
    )
    _touch(session, conversation)
    mark_stale(session, conversation.id)  # its search document
    conversation.message_count = len(messages)
    conversation.updated_at = utcnow()
    conversation.version += 1
    if not messages:
        conversation.last_message_at = None
        conversation.unread = False
        return
    conversation.last_message_at = max(m.when for m in messages)
    conversation.subject = messages[0].subject or ""
    conversation.subject_key = conversation_subject_key(messages[0].subject)
    conversation.unread = any(m.direction == Direction.inbound and not m.seen for m in messages)
    inbound = [m for m in messages if m.direction == Direction.inbound]
    source = inbound[0] if inbound else messages[0]
    conversation.customer_email, conversation.customer_name = message_customer(source, ours)


@dataclass(slots=True)
class _Row:
    id: int
    when: datetime
    direction: Direction
    subject: str
    from_email: str | None
    from_name: str | None
    to: list[dict[str, str]]
    seen: bool


# no autoflush: pending changes to a conversation live on its object in the identity map
_CONVERSATION_BY_ID = (
    select(Conversation)
    .where(col(Conversation.id) == bindparam("id"))
    .execution_options(autoflush=False)
)


def _in_session(session: Session, conversation_id: int) -> Conversation | None:
    known = session.identity_map.get(identity_key(Conversation, conversation_id))
    if known is not None and not sa_inspect(known).expired:
        return cast(Conversation, known)
    return None


def conversation_by_id(
    session: Session, conversation_id: int, *, fresh: bool = False, lock: bool = False
) -> Conversation | None:
    """`session.get`, at two thirds of the cost when the row must be read (a prebuilt query).

    `fresh`: read from the database even when the session holds it, overwriting what it holds
    (an operation decides on the row as it is now); `lock` (implies `fresh`): row-locked too
    (FOR UPDATE on PostgreSQL), so read-then-write is safe against a concurrent change.
    """
    if not (fresh or lock):
        known = _in_session(session, conversation_id)
        if known is not None:
            return known
        return session.execute(_CONVERSATION_BY_ID, {"id": conversation_id}).scalar_one_or_none()
    stmt = _CONVERSATION_BY_ID.with_for_update() if lock else _CONVERSATION_BY_ID
    return session.execute(
        stmt.execution_options(populate_existing=True), {"id": conversation_id}
    ).scalar_one_or_none()


_LOAD_CHUNK = 500


def load_conversations(session: Session, conversation_ids: Iterable[int]) -> None:
    """Read the conversations of `conversation_ids` not in the session yet, and the ones they
    were merged into, in a few queries: `conversation_by_id` then finds them in the session."""
    todo = {i for i in conversation_ids if _in_session(session, i) is None}
    for _ in range(MAX_MERGE_HOPS):
        if not todo:
            return
        ordered, todo = sorted(todo), set()
        for start in range(0, len(ordered), _LOAD_CHUNK):
            stmt = (
                select(Conversation)
                .where(col(Conversation.id).in_(ordered[start : start + _LOAD_CHUNK]))
                .execution_options(autoflush=False)
            )
            for c in session.execute(stmt).scalars():
                target = c.merged_into_id
                if target is not None and _in_session(session, target) is None:
                    todo.add(target)


# --- merging -----------------------------------------------------------------------------------


def resolve_merged(
    session: Session,
    conversation: Conversation | None,
    *,
    fresh: bool = False,
    lock: bool = False,
) -> Conversation | None:
    """Follow `merged_into_id` to the surviving conversation: the one place that does, for
    the threading, the operations and the reads alike. Each hop is read by
    `conversation_by_id` (`fresh` and `lock` as there). After `MAX_MERGE_HOPS` (a loop, which
    no merge makes) the conversation reached is returned, still merged: callers that need a
    survivor check `merged_into_id`."""
    for _ in range(MAX_MERGE_HOPS):
        if conversation is None or conversation.merged_into_id is None:
            return conversation
        conversation = conversation_by_id(
            session, conversation.merged_into_id, fresh=fresh, lock=lock
        )
    return conversation


def merge_conversations(
    session: Session,
    keep: Conversation,
    others: Sequence[Conversation],
    *,
    our_addresses: frozenset[str] = frozenset(),
) -> Conversation:
    """Move the messages, tags, thread nodes and outgoing mail of `others` into `keep`.

    The others stay as rows with `merged_into_id` set and no messages, so links to them can be
    redirected. The caller picks `keep` (the threading keeps the oldest, the lowest id).
    """
    assert keep.id is not None
    statuses = [keep.status]
    for other in others:
        if other.id is None or other.id == keep.id:
            continue
        statuses.append(other.status)
        session.execute(
            update(Message)
            .where(col(Message.conversation_id) == other.id)
            .values(conversation_id=keep.id)
            .execution_options(synchronize_session="evaluate")
        )
        session.execute(
            update(_THREADNODE)
            .where(_THREADNODE.c.conversation_id == other.id)
            .values(conversation_id=keep.id)
        )
        # its outgoing mail too: the delivery state shows where its messages are
        session.execute(
            update(OutboundMail)
            .where(col(OutboundMail.conversation_id) == other.id)
            .values(conversation_id=keep.id)
            .execution_options(synchronize_session="evaluate")
        )
        kept_tags = select(_TAG.c.tag).where(_TAG.c.conversation_id == keep.id)
        session.execute(
            insert(_TAG).from_select(
                ["conversation_id", "tag"],
                select(literal(keep.id, Integer), _TAG.c.tag).where(
                    _TAG.c.conversation_id == other.id, _TAG.c.tag.not_in(kept_tags)
                ),
            )
        )
        session.execute(
            sa_delete(ConversationTag)
            .where(col(ConversationTag.conversation_id) == other.id)
            .execution_options(synchronize_session="evaluate")
        )
        # conversations merged into `other` earlier now point straight at `keep`
        session.execute(
            update(Conversation)
            .where(col(Conversation.merged_into_id) == other.id)
            .values(merged_into_id=keep.id)
            .execution_options(synchronize_session="evaluate")
        )
        if keep.assignee_id is None and other.assignee_id is not None:
            keep.assignee_id = other.assignee_id
            keep.claimed = other.claimed
        _touch(session, other)
        mark_stale(session, other.id)  # no messages left: no search document
        other.merged_into_id = keep.id
        other.message_count = 0
        other.unread = False
        other.updated_at = utcnow()
        other.version += 1
    keep.status = min(statuses, key=_STATUS_PRECEDENCE.index)
    recompute_conversation(session, keep, our_addresses=our_addresses)
    return keep
