"""Ordering: which actions are due, and which wait behind another.

Actions run strictly in id order; an action that fails (and waits for its retry) blocks the
later actions of the same conversation (or message), not those of other conversations, so one
broken conversation never holds up the whole mailbox. An action that ends `failed` no longer
blocks: it stays visible (state, `last_error`, an Activity) and the database keeps the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.kernel.models import ImapActionState, PendingImapAction, as_utc

# at most this many actions are looked at per poll
POLL_BATCH = 200


@dataclass(frozen=True)
class QueuedAction:
    """A pending action as the ordering sees it."""

    id: int
    conversation_id: int | None
    message_id: int | None
    next_attempt_at: datetime | None

    @property
    def holds(self) -> tuple[str, int | None]:
        """What a failure of this action holds back: its conversation, else its message."""
        if self.conversation_id is not None:
            return ("c", self.conversation_id)
        return ("m", self.message_id)


def queued_actions(engine: Engine, mailbox_id: int) -> list[QueuedAction]:
    """The mailbox's pending actions in id order (the first POLL_BATCH)."""
    with Session(engine) as db:
        rows = db.exec(
            select(
                PendingImapAction.id,
                PendingImapAction.conversation_id,
                PendingImapAction.message_id,
                PendingImapAction.next_attempt_at,
            )
            .where(
                PendingImapAction.mailbox_id == mailbox_id,
                PendingImapAction.state == ImapActionState.pending,
            )
            .order_by(col(PendingImapAction.id))
            .limit(POLL_BATCH)
        ).all()
    return [
        QueuedAction(action_id, conversation_id, message_id, next_attempt_at)
        for action_id, conversation_id, message_id, next_attempt_at in rows
        if action_id is not None
    ]


@dataclass
class ActionOrder:
    """One pass over the queue: an action runs when it is due and nothing before it of its
    conversation (or message) waits."""

    now: datetime
    blocked: set[tuple[str, int | None]] = field(default_factory=set)

    def may_run(self, action: QueuedAction) -> bool:
        if action.holds in self.blocked:
            return False
        due = as_utc(action.next_attempt_at)
        if due is not None and due > self.now:
            self.blocked.add(action.holds)  # waiting for its retry: later ones of it wait too
            return False
        return True

    def failed(self, action: QueuedAction) -> None:
        """It failed this time: the later ones of its conversation wait for its retry."""
        self.blocked.add(action.holds)
