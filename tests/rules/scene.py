"""Rules and teams in tests: agents, a team, a saved reply and rules, made through the domain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.events import pending_events
from imapdesk.domain.outbound.saved_replies import save_reply
from imapdesk.domain.rules.definitions import create_rule
from imapdesk.domain.rules.engine import CONSUMER
from imapdesk.domain.teams.administration import save_team, set_availability
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Activity, Agent, ConversationTag, OutboundMail
from tests.support.web import PASSWORD


def agents(engine: Engine, *names: str) -> dict[str, int]:
    """Agents `<name>@example.com`, by name."""
    out = {}
    with unit_of_work(engine) as db:
        for name in names:
            agent = create_agent(db, f"{name}@example.com", name.title(), PASSWORD)
            db.flush()
            assert agent.id is not None
            out[name] = agent.id
    return out


def team(engine: Engine, name: str, members: list[int], **kw: Any) -> int:
    with unit_of_work(engine) as db:
        row = save_team(db, name=name, members=members, **kw)
        assert row.id is not None
        return row.id


def unavailable(engine: Engine, agent_id: int) -> None:
    with unit_of_work(engine) as db:
        set_availability(db, agent_id, available=False)


def saved_reply(engine: Engine, by: int, body: str) -> int:
    with unit_of_work(engine) as db:
        agent = db.get(Agent, by)
        assert agent is not None
        row = save_reply(db, agent, "Acknowledgement", body)
        assert row.id is not None
        return row.id


def rule(engine: Engine, **data: Any) -> int:
    with unit_of_work(engine) as db:
        row = create_rule(db, data)
        assert row.id is not None
        return row.id


def start_consumer(engine: Engine) -> None:
    """The rules' place in the event log: from now on (as a worker's first look would)."""
    with unit_of_work(engine) as db:
        pending_events(db, CONSUMER)


def tags(engine: Engine, cid: int) -> set[str]:
    with Session(engine) as db:
        return set(
            db.exec(select(ConversationTag.tag).where(col(ConversationTag.conversation_id) == cid))
        )


def activities(engine: Engine, cid: int, action: str | None = None) -> list[Activity]:
    with Session(engine) as db:
        query = select(Activity).where(col(Activity.conversation_id) == cid)
        if action is not None:
            query = query.where(col(Activity.action) == action)
        return list(db.exec(query.order_by(col(Activity.id))))


def outbound_of(engine: Engine, cid: int) -> list[OutboundMail]:
    with Session(engine) as db:
        return list(
            db.exec(
                select(OutboundMail)
                .where(col(OutboundMail.conversation_id) == cid)
                .order_by(col(OutboundMail.id))
            )
        )
