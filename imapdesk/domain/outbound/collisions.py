"""Collision detection ("Traffic Cop"): a reply or note written against an older version.

Every message or note that joins a conversation records the conversation's version then
(`Message.added_version`); a reply or note sent against an older version raises
`VersionConflict` with the messages and notes added since, unless forced.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from imapdesk.kernel.errors import Conflict
from imapdesk.kernel.models import Conversation, Direction, Message


def message_summary(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "message_id": m.message_id,
        "direction": Direction(m.direction).value,
        "from": {"email": m.from_email, "name": m.from_name},
        "date": m.date.isoformat() if m.date else None,
        "subject": m.subject,
        "text": m.text[:2000],
    }


class VersionConflict(Conflict):
    """409: newer messages or notes joined the conversation since the version the agent saw."""

    code = "version_conflict"

    def __init__(self, current_version: int, newer: list[Message]) -> None:
        super().__init__(
            f"the conversation changed since you opened it: {len(newer)} newer message(s) or "
            "note(s); read them, then send again (or send anyway with force)",
            current_version=current_version,
            newer=[message_summary(m) for m in newer],
        )
        self.current_version = current_version
        self.newer = newer


def newer_than(session: Session, conversation: Conversation, version: int) -> list[Message]:
    """Messages and notes that joined the conversation after `version`, oldest first."""
    return list(
        session.exec(
            select(Message)
            .where(
                col(Message.conversation_id) == conversation.id,
                col(Message.added_version) > version,
            )
            .order_by(col(Message.added_version), col(Message.id))
        )
    )


def check_version(
    session: Session, conversation: Conversation, expected: int | None, force: bool
) -> None:
    """VersionConflict when newer messages or notes joined since `expected` (not when forced)."""
    if expected is None or force or expected >= conversation.version:
        return
    newer = newer_than(session, conversation, expected)
    if newer:
        raise VersionConflict(conversation.version, newer)
