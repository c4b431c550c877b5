"""Teams: the list with each agent's availability and capacity, adding a team, changing one
(name, strategy, calendar, members, the mailboxes whose new conversations it gets) and
deleting it. The rules live in imapdesk.domain.teams."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlmodel import Session, col, select

from imapdesk.api.deps import IdValue, RowId, SessionDep, WriteSessionDep
from imapdesk.api.web.admin.page import Csrf, all_mailboxes, as_sentence, found, redirect, render
from imapdesk.api.web.auth import WebAdmin, check_csrf
from imapdesk.api.web.flash import flash
from imapdesk.domain.teams import administration as teams
from imapdesk.domain.teams.assignment import STRATEGIES, workloads
from imapdesk.kernel.errors import ImapdeskError, InvalidInput
from imapdesk.kernel.models import Agent, AgentAvailability, Team

router = APIRouter()

Ids = Annotated[list[IdValue] | None, Form()]
Name = Annotated[str, Form(max_length=200)]
Strategy = Annotated[str, Form(max_length=20)]
OptionalNumber = Annotated[str, Form(max_length=12)]


def _number(value: str, field: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit():
        raise InvalidInput(f"{field} is a whole number, or empty")
    return int(value)


def _agents(session: Session) -> list[Agent]:
    return list(session.exec(select(Agent).order_by(col(Agent.name))))


@router.get("/teams", name="admin_teams")
def teams_page(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    people = _agents(session)
    availability = {r.agent_id: r for r in session.exec(select(AgentAvailability))}
    return render(
        request,
        "admin/teams.html",
        admin,
        section="teams",
        teams=teams.list_teams(session),
        agents=people,
        availability=availability,
        load=workloads(session, [a.id for a in people if a.id is not None]),
        mailboxes={m.id: m.name for m in all_mailboxes(session)},
        strategies=STRATEGIES,
    )


@router.post("/teams", name="admin_team_add")
def team_add(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    csrf_token: Csrf = "",
    name: Name = "",
    strategy: Strategy = "round_robin",
) -> Response:
    check_csrf(request, csrf_token)
    try:
        with session.begin_nested():
            team = teams.save_team(session, name=name, strategy=strategy)
    except ImapdeskError as exc:
        flash(request, as_sentence(exc.message), error=True)
        return redirect(request, "admin_teams")
    flash(request, f"Added the team {team.name}; choose its members.")
    return redirect(request, "admin_team", team_id=team.id)


@router.get("/teams/{team_id}", name="admin_team")
def team_page(request: Request, session: SessionDep, admin: WebAdmin, team_id: RowId) -> Response:
    team = found(session, Team, team_id, "team")
    return render(
        request,
        "admin/team.html",
        admin,
        section="teams",
        view=teams.team_view(session, team),
        agents=_agents(session),
        mailboxes=all_mailboxes(session),
        strategies=STRATEGIES,
    )


@router.post("/teams/{team_id}", name="admin_team_save")
def team_save(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    team_id: RowId,
    csrf_token: Csrf = "",
    name: Name = "",
    strategy: Strategy = "round_robin",
    calendar_id: OptionalNumber = "",
    members: Ids = None,
    mailboxes: Ids = None,
) -> Response:
    check_csrf(request, csrf_token)
    found(session, Team, team_id, "team")
    try:
        with session.begin_nested():
            teams.save_team(
                session,
                team_id=team_id,
                name=name,
                strategy=strategy,
                calendar_id=_number(calendar_id, "The calendar"),
                calendar_set=True,
                members=list(members or []),
                mailbox_ids=mailboxes or [],
            )
    except ImapdeskError as exc:
        flash(request, as_sentence(exc.message), error=True)
        return redirect(request, "admin_team", team_id=team_id)
    flash(request, "Saved the team.")
    return redirect(request, "admin_team", team_id=team_id)


@router.post("/teams/{team_id}/delete", name="admin_team_delete")
def team_delete(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    team_id: RowId,
    csrf_token: Csrf = "",
) -> Response:
    check_csrf(request, csrf_token)
    teams.delete_team(session, team_id)
    flash(request, "Deleted the team.")
    return redirect(request, "admin_teams")


@router.post("/teams/availability/{agent_id}", name="admin_availability")
def availability_save(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    agent_id: RowId,
    csrf_token: Csrf = "",
    available: Annotated[bool, Form()] = False,
    capacity: OptionalNumber = "",
) -> Response:
    check_csrf(request, csrf_token)
    target = found(session, Agent, agent_id, "agent")
    try:
        with session.begin_nested():
            teams.set_availability(
                session,
                agent_id,
                available=available,
                capacity=_number(capacity, "The capacity"),
                capacity_set=True,
            )
    except ImapdeskError as exc:
        flash(request, as_sentence(exc.message), error=True)
        return redirect(request, "admin_teams")
    flash(request, f"Saved {target.email}'s availability.")
    return redirect(request, "admin_teams")
