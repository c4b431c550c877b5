"""Who has a conversation open, and who is replying: rows kept alive by heartbeats.

The web page sends a heartbeat every few seconds; a row older than `PRESENCE_TTL` counts for
nothing, so a closed tab disappears on its own. Stored in the database so that every API
process (and its live updates, imapdesk/domain/live/changes.py) sees the same.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from imapdesk.kernel.models import Agent, Presence, PresenceState, utcnow

PRESENCE_TTL = timedelta(seconds=25)
HEARTBEAT_SECONDS = 8


@dataclass(frozen=True)
class PresenceView:
    agent_id: int
    name: str
    email: str
    state: PresenceState


def touch(
    session: Session,
    conversation_id: int,
    agent: Agent,
    state: PresenceState | str = PresenceState.viewing,
    *,
    now: datetime | None = None,
) -> None:
    """The agent is here (viewing or replying) as of now: one upsert."""
    assert agent.id is not None
    values = {
        "conversation_id": conversation_id,
        "agent_id": agent.id,
        "state": PresenceState(state).name,
        "updated_at": now or utcnow(),
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(Presence).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["conversation_id", "agent_id"],
        set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at},
    )
    session.execute(stmt)


def leave(session: Session, conversation_id: int, agent: Agent) -> None:
    session.execute(
        delete(Presence).where(
            col(Presence.conversation_id) == conversation_id, col(Presence.agent_id) == agent.id
        )
    )


def present(
    session: Session, conversation_ids: list[int] | None = None, *, now: datetime | None = None
) -> dict[int, list[PresenceView]]:
    """Live presence per conversation (all, or those given), agents by name."""
    since = (now or utcnow()) - PRESENCE_TTL
    stmt = (
        sa_select(
            col(Presence.conversation_id),
            col(Presence.state),
            col(Agent.id),
            col(Agent.name),
            col(Agent.email),
        )
        .join(Agent, col(Agent.id) == col(Presence.agent_id))
        .where(col(Presence.updated_at) > since)
        .order_by(col(Presence.conversation_id), col(Agent.name), col(Agent.id))
    )
    if conversation_ids is not None:
        stmt = stmt.where(col(Presence.conversation_id).in_(conversation_ids))
    out: dict[int, list[PresenceView]] = defaultdict(list)
    for cid, state, aid, name, email in session.execute(stmt):
        assert aid is not None
        out[cid].append(PresenceView(aid, name, email, PresenceState(state)))
    return dict(out)


def prune(session: Session, *, now: datetime | None = None) -> int:
    """Forget rows long dead (the worker's housekeeping; presence() ignores them anyway)."""
    cutoff = (now or utcnow()) - PRESENCE_TTL * 10
    result = session.execute(delete(Presence).where(col(Presence.updated_at) < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
