"""Who gets a team's next conversation.

Candidates are the team's active members who are available, below their capacity (open and
pending conversations they hold) and allowed in the conversation's mailbox; none at all
outside the team's business hours (`imapdesk.domain.teams.hours`).

- `round_robin`: the first candidate after the one who got the last (by agent id, wrapping);
  the team's row keeps who that was. The row is locked (FOR UPDATE on PostgreSQL; SQLite
  serialises writers) from reading the pointer to moving it, so concurrent assignments take
  turns and each agent gets their share.
- `least_busy`: the candidate holding the fewest open conversations (ties: the lowest id).
"""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, col, select

from imapdesk.domain.accounts import access
from imapdesk.domain.teams.hours import is_open
from imapdesk.kernel.models import (
    Agent,
    AgentAvailability,
    Conversation,
    ConversationStatus,
    Team,
    TeamMember,
    utcnow,
)

STRATEGIES = ("round_robin", "least_busy")
# what an agent's capacity counts
_HELD = (ConversationStatus.open, ConversationStatus.pending)


def workloads(session: Session, agent_ids: list[int]) -> dict[int, int]:
    """Open and pending conversations each agent holds."""
    if not agent_ids:
        return {}
    rows = session.exec(
        select(Conversation.assignee_id, func.count())
        .where(
            col(Conversation.assignee_id).in_(agent_ids),
            col(Conversation.status).in_(list(_HELD)),
            col(Conversation.merged_into_id).is_(None),
        )
        .group_by(col(Conversation.assignee_id))
    ).all()
    found = {int(a): int(n) for a, n in rows if a is not None}
    return {a: found.get(a, 0) for a in agent_ids}


def candidates(session: Session, team: Team, mailbox_id: int) -> list[tuple[Agent, int]]:
    """The members who may get a conversation of this mailbox now, with their workload, by id."""
    if not is_open(session, team.calendar_id, utcnow()):
        return []
    members = list(
        session.exec(
            select(Agent)
            .join(TeamMember, col(TeamMember.agent_id) == col(Agent.id))
            .where(col(TeamMember.team_id) == team.id, col(Agent.is_active).is_(True))
            .order_by(col(Agent.id))
        ).all()
    )
    ids = [a.id for a in members if a.id is not None]
    availability = {
        row.agent_id: row
        for row in session.exec(
            select(AgentAvailability).where(col(AgentAvailability.agent_id).in_(ids))
        )
    }
    load = workloads(session, ids)
    chosen = []
    for agent in members:
        assert agent.id is not None
        state = availability.get(agent.id)
        if state is not None and not state.available:
            continue
        if state is not None and state.capacity is not None and load[agent.id] >= state.capacity:
            continue
        if not access.can_see_mailbox(session, agent, mailbox_id):
            continue
        chosen.append((agent, load[agent.id]))
    return chosen


def _locked_team(session: Session, team_id: int) -> Team | None:
    session.flush()
    return session.exec(select(Team).where(col(Team.id) == team_id).with_for_update()).first()


def next_agent(
    session: Session, team_id: int, mailbox_id: int, *, move: bool = True
) -> Agent | None:
    """The agent who gets the team's next conversation of this mailbox (None: nobody can
    now). With `move`, round robin's pointer moves to them (in the caller's transaction)."""
    team = _locked_team(session, team_id) if move else session.get(Team, team_id)
    if team is None:
        return None
    found = candidates(session, team, mailbox_id)
    if not found:
        return None
    if team.strategy == "least_busy":
        return min(found, key=lambda pair: (pair[1], pair[0].id or 0))[0]
    last = team.last_agent_id or 0
    after = [agent for agent, _ in found if (agent.id or 0) > last]
    agent = after[0] if after else found[0][0]
    if move:
        team.last_agent_id = agent.id
        session.add(team)
        session.flush()
    return agent
