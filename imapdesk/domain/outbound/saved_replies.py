"""Saved replies: canned answers any agent can insert into the composer."""

from __future__ import annotations

from sqlmodel import Session, col, select

from imapdesk.kernel.errors import Conflict, InvalidInput, NotFound
from imapdesk.kernel.models import Agent, SavedReply, utcnow

NAME_MAX = 200
BODY_MAX = 100_000


def list_saved_replies(session: Session) -> list[SavedReply]:
    return list(session.exec(select(SavedReply).order_by(col(SavedReply.name))))


def _validate(name: str, body: str) -> tuple[str, str]:
    name = (name or "").strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise InvalidInput(f"a name is 1 to {NAME_MAX} characters", field="name")
    if not body.strip() or len(body) > BODY_MAX:
        raise InvalidInput(f"the text is 1 to {BODY_MAX} characters", field="body")
    return name, body


def save_reply(
    session: Session, agent: Agent, name: str, body: str, *, saved_reply_id: int | None = None
) -> SavedReply:
    """Create one, or change the one with `saved_reply_id`. Names are unique."""
    name, body = _validate(name, body)
    clash = session.exec(select(SavedReply).where(col(SavedReply.name) == name)).first()
    if clash is not None and clash.id != saved_reply_id:
        raise Conflict(f"a saved reply named {name!r} exists already", field="name")
    if saved_reply_id is None:
        row = SavedReply(name=name, body=body, created_by_id=agent.id)
    else:
        found = session.get(SavedReply, saved_reply_id)
        if found is None:
            raise NotFound(f"no saved reply {saved_reply_id}")
        row = found
        row.name, row.body, row.updated_at = name, body, utcnow()
    session.add(row)
    session.flush()
    return row


def delete_saved_reply(session: Session, saved_reply_id: int) -> None:
    row = session.get(SavedReply, saved_reply_id)
    if row is None:
        raise NotFound(f"no saved reply {saved_reply_id}")
    session.delete(row)
    session.flush()
