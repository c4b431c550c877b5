"""Teams as the admin keeps them (name, strategy, calendar, members, the mailboxes whose new
conversations they get), and each agent's availability and capacity."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import delete
from sqlmodel import Session, col, select

from imapdesk.domain.teams.assignment import STRATEGIES
from imapdesk.kernel.errors import Conflict, InvalidInput, NotFound
from imapdesk.kernel.models import (
    Agent,
    AgentAvailability,
    Mailbox,
    Team,
    TeamMailbox,
    TeamMember,
    utcnow,
)

NAME_MAX = 200
CAPACITY_MAX = 10_000


@dataclass
class TeamView:
    team: Team
    members: list[Agent] = field(default_factory=list)
    mailbox_ids: list[int] = field(default_factory=list)


def list_teams(session: Session) -> list[TeamView]:
    teams = list(session.exec(select(Team).order_by(col(Team.name))))
    return [team_view(session, t) for t in teams]


def team_view(session: Session, team: Team) -> TeamView:
    members = list(
        session.exec(
            select(Agent)
            .join(TeamMember, col(TeamMember.agent_id) == col(Agent.id))
            .where(col(TeamMember.team_id) == team.id)
            .order_by(col(Agent.name))
        )
    )
    boxes = list(
        session.exec(select(TeamMailbox.mailbox_id).where(col(TeamMailbox.team_id) == team.id))
    )
    return TeamView(team, members, sorted(boxes))


def get_team(session: Session, team_id: int) -> Team:
    team = session.get(Team, team_id)
    if team is None:
        raise NotFound(f"no team {team_id}")
    return team


def find_team(session: Session, ref: int | str) -> Team:
    """A team by id or by name."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        return get_team(session, int(ref))
    team = session.exec(select(Team).where(col(Team.name) == ref)).first()
    if team is None:
        raise NotFound(f"no team named {ref!r}")
    return team


def _check_name(session: Session, name: str, team_id: int | None) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise InvalidInput(f"a team's name is 1 to {NAME_MAX} characters", field="name")
    clash = session.exec(select(Team).where(col(Team.name) == name)).first()
    if clash is not None and clash.id != team_id:
        raise Conflict(f"a team named {name!r} exists already", field="name")
    return name


def _agents(session: Session, emails_or_ids: Iterable[int | str]) -> list[Agent]:
    found = []
    for ref in emails_or_ids:
        if isinstance(ref, int):
            agent = session.get(Agent, ref)
        else:
            agent = session.exec(select(Agent).where(col(Agent.email) == ref.lower())).first()
        if agent is None:
            raise InvalidInput(f"no agent {ref}", field="members")
        found.append(agent)
    return found


def save_team(
    session: Session,
    *,
    team_id: int | None = None,
    name: str | None = None,
    strategy: str | None = None,
    calendar_id: int | None = None,
    calendar_set: bool = False,
    members: Iterable[int | str] | None = None,
    mailbox_ids: Iterable[int] | None = None,
) -> Team:
    """Create a team (no `team_id`) or change the given fields of one."""
    team = Team(name="") if team_id is None else get_team(session, team_id)
    if name is not None or team_id is None:
        team.name = _check_name(session, name or "", team_id)
    if strategy is not None:
        if strategy not in STRATEGIES:
            raise InvalidInput(f"strategy is one of {', '.join(STRATEGIES)}", field="strategy")
        team.strategy = strategy
    if calendar_set:
        team.calendar_id = calendar_id
    session.add(team)
    session.flush()
    assert team.id is not None
    if members is not None:
        agents = _agents(session, members)
        session.exec(delete(TeamMember).where(col(TeamMember.team_id) == team.id))
        for agent in {a.id: a for a in agents}.values():
            session.add(TeamMember(team_id=team.id, agent_id=agent.id))  # type: ignore[arg-type]
    if mailbox_ids is not None:
        ids = sorted(set(mailbox_ids))
        for mailbox_id in ids:
            if session.get(Mailbox, mailbox_id) is None:
                raise InvalidInput(f"no mailbox {mailbox_id}", field="mailboxes")
        session.exec(delete(TeamMailbox).where(col(TeamMailbox.team_id) == team.id))
        session.flush()
        for mailbox_id in ids:
            # a mailbox has one default team: this one takes it over
            existing = session.get(TeamMailbox, mailbox_id)
            if existing is not None:
                existing.team_id = team.id
                session.add(existing)
            else:
                session.add(TeamMailbox(mailbox_id=mailbox_id, team_id=team.id))
    session.flush()
    return team


def delete_team(session: Session, team_id: int) -> None:
    team = get_team(session, team_id)
    session.exec(delete(TeamMember).where(col(TeamMember.team_id) == team_id))
    session.exec(delete(TeamMailbox).where(col(TeamMailbox.team_id) == team_id))
    session.delete(team)
    session.flush()


def default_team_id(session: Session, mailbox_id: int) -> int | None:
    row = session.get(TeamMailbox, mailbox_id)
    return row.team_id if row is not None else None


def availability(session: Session, agent_id: int) -> AgentAvailability:
    """The agent's availability (a row not yet stored: available, no limit)."""
    row = session.get(AgentAvailability, agent_id)
    return row if row is not None else AgentAvailability(agent_id=agent_id)


def set_availability(
    session: Session,
    agent_id: int,
    *,
    available: bool | None = None,
    capacity: int | None = None,
    capacity_set: bool = False,
) -> AgentAvailability:
    if capacity_set and capacity is not None and not 0 <= capacity <= CAPACITY_MAX:
        raise InvalidInput(f"capacity is 0 to {CAPACITY_MAX}, or none", field="capacity")
    row = session.get(AgentAvailability, agent_id)
    if row is None:
        row = AgentAvailability(agent_id=agent_id)
    if available is not None:
        row.available = available
    if capacity_set:
        row.capacity = capacity
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return row
