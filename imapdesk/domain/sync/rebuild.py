"""`imapdesk rebuild`: forget what the mailbox holds and read it all back.

Configuration (agents, tokens, mailboxes) stays; conversations, messages, their places, the
thread index, the activity log and the outbox go, and the worker then reads every followed
folder again, deriving status, claim, assignee and tags from folders, flags and keywords
(`imapdesk.domain.sync.readback`). Customers and their notes stay too (they live only in the
database and span mailboxes): the ingest finds their conversations again by address.
"""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from imapdesk.kernel.models import (
    Activity,
    Attachment,
    Conversation,
    ConversationTag,
    Folder,
    FolderState,
    Mailbox,
    Message,
    MessageLocation,
    PendingImapAction,
    RawMessage,
    ThreadNode,
)


def forget_mail(session: Session, mailbox_names: list[str] | None = None) -> list[str]:
    """Delete what was read from these mailboxes (all when None); returns their names."""
    query = select(Mailbox)
    if mailbox_names:
        query = query.where(col(Mailbox.name).in_(mailbox_names))
    mailboxes = list(session.exec(query))
    if mailbox_names:
        missing = set(mailbox_names) - {m.name for m in mailboxes}
        if missing:
            from imapdesk.kernel.errors import NotFound

            raise NotFound(f"no mailbox named {', '.join(sorted(missing))}")
    ids = [m.id for m in mailboxes]
    folder_ids = list(session.exec(select(Folder.id).where(col(Folder.mailbox_id).in_(ids))))
    conversation_ids = list(
        session.exec(select(Conversation.id).where(col(Conversation.mailbox_id).in_(ids)))
    )
    for table, column in (
        (PendingImapAction, PendingImapAction.mailbox_id),
        (Activity, Activity.conversation_id),
        (ConversationTag, ConversationTag.conversation_id),
    ):
        keys = ids if table is PendingImapAction else conversation_ids
        session.execute(delete(table).where(col(column).in_(keys)))
    session.execute(delete(MessageLocation).where(col(MessageLocation.folder_id).in_(folder_ids)))
    # messages of these conversations, or with no place left anywhere
    orphans = select(Message.id).where(
        col(Message.conversation_id).in_(conversation_ids)
        | ~select(MessageLocation.id).where(MessageLocation.message_id == Message.id).exists()
    )
    message_ids = list(session.exec(orphans))
    session.execute(
        update(ThreadNode)
        .where(col(ThreadNode.conversation_id).in_(conversation_ids))
        .values(conversation_id=None)
    )
    session.execute(delete(ThreadNode).where(col(ThreadNode.message_id).in_(message_ids)))
    session.execute(delete(Attachment).where(col(Attachment.message_id).in_(message_ids)))
    session.execute(delete(RawMessage).where(col(RawMessage.message_id).in_(message_ids)))
    session.execute(delete(Message).where(col(Message.id).in_(message_ids)))
    session.execute(
        update(Conversation)
        .where(col(Conversation.merged_into_id).in_(conversation_ids))
        .values(merged_into_id=None)
    )
    session.execute(delete(Conversation).where(col(Conversation.id).in_(conversation_ids)))
    # ghosts nobody points to any more
    session.execute(
        delete(ThreadNode).where(
            col(ThreadNode.message_id).is_(None), col(ThreadNode.conversation_id).is_(None)
        )
    )
    session.execute(
        update(Folder)
        .where(col(Folder.id).in_(folder_ids))
        .values(
            state=FolderState.initial,
            uidvalidity=None,
            uidnext=1,
            highestmodseq=None,
            message_count=0,
            initial_target_uid=None,
            last_error=None,
        )
    )
    return [m.name for m in mailboxes]
