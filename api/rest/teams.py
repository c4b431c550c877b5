"""Teams: list and read (any agent), create, change and delete (admins); and the calling
agent's availability and capacity (`/teams/availability`; an admin may set another agent's)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlmodel import col, select

from imapdesk.api.deps import CurrentAgent, RowId, SessionDep, WriteSessionDep
from imapdesk.api.rest.rules import ensure_admin
from imapdesk.domain.teams import administration as teams
from imapdesk.domain.teams.administration import TeamView
from imapdesk.kernel.errors import NotFound
from imapdesk.kernel.models import Agent

router = APIRouter(prefix="/teams", tags=["teams"])


class TeamIn(BaseModel):
    name: str = Field(max_length=200)
    strategy: str = Field(default="round_robin", description="`round_robin` or `least_busy`")
    calendar_id: int | None = Field(default=None, description="business hours (none: always)")
    members: list[str] = Field(default_factory=list, max_length=1000, description="emails")
    mailboxes: list[int] = Field(
        default_factory=list,
        max_length=1000,
        description="mailbox ids whose new conversations this team gets (its default team)",
    )


class TeamPatch(BaseModel):
    name: str | None = Field(default=None, max_length=200)
    strategy: str | None = None
    calendar_id: int | None = None
    members: list[str] | None = Field(default=None, max_length=1000)
    mailboxes: list[int] | None = Field(default=None, max_length=1000)


class TeamPublic(BaseModel):
    id: int
    name: str
    strategy: str
    calendar_id: int | None
    members: list[str]
    mailboxes: list[int]
    created_at: datetime


class AvailabilityIn(BaseModel):
    available: bool | None = None
    capacity: int | None = Field(default=None, ge=0, le=teams.CAPACITY_MAX)


class AvailabilityPublic(BaseModel):
    agent: str
    available: bool
    capacity: int | None


def _public(view: TeamView) -> TeamPublic:
    t = view.team
    assert t.id is not None
    return TeamPublic(
        id=t.id,
        name=t.name,
        strategy=t.strategy,
        calendar_id=t.calendar_id,
        members=[a.email for a in view.members],
        mailboxes=view.mailbox_ids,
        created_at=t.created_at,
    )


@router.get("", response_model=list[TeamPublic], summary="List the teams")
def list_teams(session: SessionDep, agent: CurrentAgent) -> list[TeamPublic]:
    return [_public(v) for v in teams.list_teams(session)]


@router.post("", response_model=TeamPublic, status_code=201, summary="Add a team (admins)")
def create_team(session: WriteSessionDep, agent: CurrentAgent, body: TeamIn) -> TeamPublic:
    ensure_admin(agent)
    team = teams.save_team(
        session,
        name=body.name,
        strategy=body.strategy,
        calendar_id=body.calendar_id,
        calendar_set=True,
        members=body.members,
        mailbox_ids=body.mailboxes,
    )
    return _public(teams.team_view(session, team))


def _target(session: SessionDep, agent: Agent, email: str | None) -> Agent:
    if email is None or email.lower() == agent.email:
        return agent
    ensure_admin(agent)
    found = session.exec(select(Agent).where(col(Agent.email) == email.lower())).first()
    if found is None:
        raise NotFound(f"no agent {email}")
    return found


AgentQuery = Annotated[
    str | None, Query(max_length=320, description="an agent's email (admins); default: yours")
]


@router.get(
    "/availability", response_model=AvailabilityPublic, summary="Your availability and capacity"
)
def get_availability(
    session: SessionDep, agent: CurrentAgent, of: AgentQuery = None
) -> AvailabilityPublic:
    target = _target(session, agent, of)
    assert target.id is not None
    row = teams.availability(session, target.id)
    return AvailabilityPublic(agent=target.email, available=row.available, capacity=row.capacity)


@router.put(
    "/availability",
    response_model=AvailabilityPublic,
    summary="Set your availability (and capacity: open conversations at most, null for none)",
    description="Only an unavailable agent, or one at capacity, gets no new assignments. "
    "An admin may set another agent's with `of`.",
)
def put_availability(
    session: WriteSessionDep, agent: CurrentAgent, body: AvailabilityIn, of: AgentQuery = None
) -> AvailabilityPublic:
    target = _target(session, agent, of)
    assert target.id is not None
    row = teams.set_availability(
        session,
        target.id,
        available=body.available,
        capacity=body.capacity,
        capacity_set="capacity" in body.model_fields_set,
    )
    return AvailabilityPublic(agent=target.email, available=row.available, capacity=row.capacity)


@router.get("/{team_id}", response_model=TeamPublic, summary="A team")
def get_team(session: SessionDep, agent: CurrentAgent, team_id: RowId) -> TeamPublic:
    return _public(teams.team_view(session, teams.get_team(session, team_id)))


@router.patch("/{team_id}", response_model=TeamPublic, summary="Change a team (admins)")
def update_team(
    session: WriteSessionDep, agent: CurrentAgent, team_id: RowId, body: TeamPatch
) -> TeamPublic:
    ensure_admin(agent)
    given = body.model_fields_set
    team = teams.save_team(
        session,
        team_id=team_id,
        name=body.name,
        strategy=body.strategy,
        calendar_id=body.calendar_id,
        calendar_set="calendar_id" in given,
        members=body.members,
        mailbox_ids=body.mailboxes,
    )
    return _public(teams.team_view(session, team))


@router.delete("/{team_id}", status_code=204, summary="Delete a team (admins)")
def delete_team(session: WriteSessionDep, agent: CurrentAgent, team_id: RowId) -> Response:
    ensure_admin(agent)
    teams.delete_team(session, team_id)
    return Response(status_code=204)
