"""`@handle` mentions in a note: which agents a note names."""

from __future__ import annotations

import re

from sqlmodel import Session, col, func, select

from imapdesk.kernel.models import Agent

# a handle after a start or a space/punctuation, not inside an address (bob@example.com)
_MENTION = re.compile(r"(?<![\w@.])@([A-Za-z0-9][A-Za-z0-9_.-]{0,31})")


def handles_in(text: str) -> list[str]:
    found = []
    for match in _MENTION.finditer(text or ""):
        handle = match.group(1).rstrip(".-").lower()
        if handle and handle not in found:
            found.append(handle)
    return found


def mentioned_agents(session: Session, text: str) -> list[Agent]:
    """The active agents whose handles the text mentions."""
    handles = handles_in(text)
    if not handles:
        return []
    return list(
        session.exec(
            select(Agent).where(func.lower(col(Agent.handle)).in_(handles), col(Agent.is_active))
        )
    )


def handle_directory(session: Session, prefix: str = "", limit: int = 20) -> list[Agent]:
    """Active agents whose handle or name starts with `prefix` (the composer's completion)."""
    query = select(Agent).where(col(Agent.is_active))
    prefix = prefix.strip().lower()
    if prefix:
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            func.lower(col(Agent.handle)).like(like, escape="\\")
            | func.lower(col(Agent.name)).like(like, escape="\\")
        )
    return list(session.exec(query.order_by(col(Agent.handle)).limit(limit)))
