"""Reading a conversation, as in any mail client: opening it in the web UI marks it read.

Read state is `\\Seen`, shared by everyone on the box (docs/IMAP-MAPPING.md): marking it read
goes through `operations.mark_read`, so the activity log says who read it and the write-back
sets `\\Seen` on its messages, which colleagues' mail clients then show as read. A mailbox can
turn this off (`Mailbox.mark_read_on_open`), for a team whose colleagues on mail clients keep
`\\Seen` for themselves: agents then mark read by hand. Replying and adding a note mark it read
whatever the setting (`imapdesk.domain.outbound.replies`): an answered conversation is a read
one.
"""

from __future__ import annotations

from sqlmodel import Session

from imapdesk.domain.conversations import operations
from imapdesk.kernel.models import ActivitySource, Agent, Conversation, Mailbox


def reads_on_open(session: Session, conversation: Conversation) -> bool:
    """Whether opening it would mark it read: it is unread and its mailbox says so. A cheap
    look before the request takes the write."""
    if not conversation.unread:
        return False
    mailbox = session.get(Mailbox, conversation.mailbox_id)
    return mailbox is not None and mailbox.mark_read_on_open


def read_on_open(session: Session, agent: Agent, conversation_id: int) -> Conversation | None:
    """The agent opened the conversation: read, when its mailbox says so (looked at again
    inside the write, which another tab may have done meanwhile: then nothing changes).
    Returns the conversation when it was marked read."""
    conversation = session.get(Conversation, conversation_id, populate_existing=True)
    if conversation is None or not reads_on_open(session, conversation):
        return None
    return operations.mark_read(
        session, conversation_id, True, source=ActivitySource.web, agent=agent
    )
