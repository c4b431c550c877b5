"""What other clients did in the mailbox becomes helpdesk state (source `imap`).

The worker records the new flags and places of messages, then calls `apply_mail_changes` in
the same transaction. Each affected conversation's state is derived from its messages' places
and flags (`imapdesk.domain.mailstate.derive_state`) and differences become the domain operations,
so the
activity log says "from a mail client". imapdesk's own writes were recorded on the locations
when they were applied, so they show no difference here: no echo. While a change of ours is
still waiting in the outbox, what it will change is left alone (merge, never overwrite).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from sqlmodel import Session, col, select

from imapdesk.domain.conversations import operations
from imapdesk.domain.mailstate import (
    FLAGGED,
    SEEN,
    DerivedState,
    LocationFacts,
    MessageFacts,
    derive_state,
    is_assignee_keyword,
    keywords_kept,
)
from imapdesk.kernel.models import (
    ActivitySource,
    Agent,
    Conversation,
    Direction,
    Folder,
    FolderRole,
    ImapActionState,
    Mailbox,
    Message,
    MessageLocation,
    PendingImapAction,
    utcnow,
)

log = logging.getLogger(__name__)

_TRACKED = {
    FolderRole.inbox,
    FolderRole.pending,
    FolderRole.archive,
    FolderRole.junk,
    FolderRole.trash,
}


def conversation_facts(
    session: Session, mailbox_id: int, conversation_id: int
) -> list[MessageFacts]:
    """The messages of a conversation with their places in this mailbox's tracked folders."""
    messages = session.exec(
        select(Message.id, Message.direction, Message.date).where(
            Message.conversation_id == conversation_id
        )
    ).all()
    places: dict[int, list[LocationFacts]] = defaultdict(list)
    rows = session.exec(
        select(MessageLocation.message_id, Folder.role, Folder.watched, MessageLocation.flags)
        .join(Folder, col(Folder.id) == col(MessageLocation.folder_id))
        .where(
            Folder.mailbox_id == mailbox_id,
            col(MessageLocation.message_id).in_([m[0] for m in messages]),
        )
    ).all()
    for message_pk, role, watched, flags in rows:
        if role in _TRACKED or watched:
            places[message_pk].append(
                LocationFacts(role=role, watched=watched, flags=tuple(flags or ()))
            )
    return [
        MessageFacts(
            key=pk, direction=Direction(direction), date=date, locations=tuple(places.get(pk, ()))
        )
        for pk, direction, date in messages
        if pk is not None
    ]


def _pending(session: Session, conversation_id: int) -> tuple[bool, set[str]]:
    """Whether a move is waiting in the outbox, and which flags pending changes touch."""
    move = False
    flags: set[str] = set()
    for kind, payload in session.exec(
        select(PendingImapAction.kind, PendingImapAction.payload).where(
            PendingImapAction.conversation_id == conversation_id,
            PendingImapAction.state == ImapActionState.pending,
        )
    ):
        if kind == "move":
            move = True
        else:
            flags.update(payload.get("add", ()), payload.get("remove", ()))
    return move, flags


def apply_mail_changes(session: Session, mailbox_id: int, message_ids: Iterable[int]) -> set[int]:
    """Bring the conversations of these messages in line with the mailbox. Returns the ids of
    the conversations that changed."""
    ids = list(set(message_ids))
    if not ids:
        return set()
    conversation_ids = {
        cid
        for cid in session.exec(
            select(Message.conversation_id).where(col(Message.id).in_(ids))
        ).all()
        if cid is not None
    }
    mailbox = session.get(Mailbox, mailbox_id)
    if mailbox is None:
        return set()
    keywords = keywords_kept(mailbox.capabilities)
    changed: set[int] = set()
    for cid in sorted(conversation_ids):
        # row-locked before the outbox and the tags are read (PostgreSQL): an API change
        # committing in between would otherwise look like a difference from the mailbox
        conversation = session.exec(
            select(Conversation)
            .where(col(Conversation.id) == cid)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).first()
        if conversation is None or conversation.mailbox_id != mailbox_id:
            continue  # another box's conversation (the same mail in two boxes)
        if conversation.merged_into_id is not None:
            continue
        move_pending, flags_pending = _pending(session, cid)
        facts = conversation_facts(session, mailbox_id, cid)
        if move_pending and not any(m.locations for m in facts):
            # every message left its folder and our move's record of where it went is still
            # to come: nothing in the mailbox speaks for the conversation yet
            continue
        derived = derive_state(facts)
        if _apply(session, conversation, derived, move_pending, flags_pending, keywords=keywords):
            changed.add(cid)
    return changed


def _apply(
    session: Session,
    conversation: Conversation,
    derived: DerivedState,
    move_pending: bool,
    flags_pending: set[str],
    *,
    keywords: bool,
) -> bool:
    assert conversation.id is not None
    before = conversation.version
    imap, client = ActivitySource.imap, operations.MAIL_CLIENT

    if derived.status is not None and derived.status != conversation.status and not move_pending:
        operations.set_status(session, conversation, derived.status, source=imap, actor=client)

    assignment_pending = FLAGGED in flags_pending or any(
        is_assignee_keyword(f) for f in flags_pending
    )
    if not assignment_pending:
        handle = derived.assignee_handle if keywords else None
        current_handle = _assignee_handle(session, conversation)
        if derived.claimed and handle and handle != current_handle:
            operations.assign(session, conversation, handle, source=imap, actor=client)
        elif derived.claimed and not conversation.claimed:
            operations.claim(session, conversation, None, source=imap, actor=client)
        elif not derived.claimed and conversation.claimed:
            operations.release(session, conversation, source=imap, actor=client)

    if keywords:
        tag_keywords_pending = {f for f in flags_pending if not f.startswith("\\")}
        if not tag_keywords_pending:
            current = operations.tags_of(session, conversation)
            if set(derived.tags) != current:
                operations.set_tags(
                    session, conversation, set(derived.tags), source=imap, actor=client
                )

    if SEEN not in flags_pending:
        _apply_seen(session, conversation, derived)
    return conversation.version != before


def _assignee_handle(session: Session, conversation: Conversation) -> str | None:
    if conversation.assignee_id is None:
        return operations.unknown_assignee_handle(session, conversation)
    agent = session.get(Agent, conversation.assignee_id)
    return agent.handle if agent else None


def _apply_seen(session: Session, conversation: Conversation, derived: DerivedState) -> None:
    """Read state per message, as `\\Seen` shows it (shared by everyone on the box).

    A change moves the conversation's version and `updated_at`, as every change does: the live
    updates and the lists' caches watch `updated_at` (imapdesk/domain/live/changes.py), so a
    message read or unread in a mail client shows on open pages at once. Read marks from mail
    clients change no assignment: no activity entry for each."""
    if not derived.seen:
        return
    messages = session.exec(select(Message).where(col(Message.id).in_(list(derived.seen)))).all()
    changed = False
    for message in messages:
        assert message.id is not None
        seen = derived.seen[message.id]
        if message.seen != seen:
            message.seen = seen
            changed = True
    if conversation.unread != derived.unread:
        conversation.unread = derived.unread
        changed = True
    if changed:
        conversation.version += 1
        conversation.updated_at = utcnow()
        session.add(conversation)
