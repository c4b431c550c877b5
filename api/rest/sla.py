"""SLA policies and business-hours calendars: list and read (any agent), create, change and
delete (admins). The rules live in imapdesk/domain/sla/."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field, StringConstraints

from imapdesk.api.deps import CurrentAgent, RowId, SessionDep, WriteSessionDep
from imapdesk.api.rest.rules import ensure_admin
from imapdesk.domain.sla import calendars, policies
from imapdesk.kernel.models import BusinessCalendar, SlaPolicy

router = APIRouter(tags=["SLAs"])

HHMM = Annotated[str, StringConstraints(max_length=5)]
Span = Annotated[list[HHMM], Field(min_length=2, max_length=2)]
Hours = Annotated[
    dict[str, Annotated[list[Span], Field(max_length=24)]],
    Field(
        description='Opening hours per day, `monday` to `sunday`: `[["09:00", "12:00"], '
        '["13:00", "17:00"]]`, local time, the end up to `24:00`; a day left out is closed.',
        max_length=7,
    ),
]
Holidays = Annotated[
    list[Annotated[str, StringConstraints(max_length=10)]],
    Field(max_length=calendars.MAX_HOLIDAYS, description="Closed days, `YYYY-MM-DD`."),
]
Minutes = Annotated[int | None, Field(ge=1, le=policies.MAX_MINUTES)]
Scope = Literal["mailbox", "team", "tag"]


class CalendarIn(BaseModel):
    name: str = Field(max_length=200)
    timezone: str = Field(default="UTC", max_length=64, description="An IANA zone name.")
    hours: Hours = Field(default_factory=dict)
    holidays: Holidays = Field(default_factory=list)


class CalendarPatch(BaseModel):
    name: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    hours: Hours | None = None
    holidays: Holidays | None = None


class CalendarPublic(BaseModel):
    id: int
    name: str
    timezone: str
    hours: dict[str, list[list[str]]]
    holidays: list[str]
    created_at: datetime
    updated_at: datetime


class PolicyIn(BaseModel):
    name: str = Field(max_length=200)
    scope: Scope = Field(description="Which conversations: precedence tag > team > mailbox.")
    mailbox_id: int | None = None
    team_id: int | None = None
    tag: str | None = Field(default=None, max_length=100)
    calendar_id: int | None = Field(default=None, description="None: round the clock.")
    first_response_minutes: Minutes = Field(default=None, description="Business minutes.")
    next_response_minutes: Minutes = None
    resolution_minutes: Minutes = None
    warning_minutes: int = Field(
        default=30, ge=0, le=policies.MAX_MINUTES, description="`sla.warning` this long before."
    )
    pause_when_pending: bool = Field(
        default=True,
        description="The next-response and resolution clocks stand still while the "
        "conversation is pending (waiting on the customer); their due times move later by the "
        "business time spent paused.",
    )
    enabled: bool = True


class PolicyPatch(BaseModel):
    name: str | None = Field(default=None, max_length=200)
    scope: Scope | None = None
    mailbox_id: int | None = None
    team_id: int | None = None
    tag: str | None = Field(default=None, max_length=100)
    calendar_id: int | None = None
    first_response_minutes: Minutes = None
    next_response_minutes: Minutes = None
    resolution_minutes: Minutes = None
    warning_minutes: int | None = Field(default=None, ge=0, le=policies.MAX_MINUTES)
    pause_when_pending: bool | None = Field(
        default=None, description="Changed: the pending conversations pause or resume now."
    )
    enabled: bool | None = None


class PolicyPublic(BaseModel):
    id: int
    name: str
    scope: str
    mailbox_id: int | None
    team_id: int | None
    tag: str | None
    calendar_id: int | None
    first_response_minutes: int | None
    next_response_minutes: int | None
    resolution_minutes: int | None
    warning_minutes: int
    pause_when_pending: bool
    enabled: bool
    created_at: datetime
    updated_at: datetime


def _calendar(row: BusinessCalendar) -> CalendarPublic:
    return CalendarPublic.model_validate(calendars.public(row))


def _policy(row: SlaPolicy) -> PolicyPublic:
    return PolicyPublic.model_validate(policies.public(row))


# --- calendars --------------------------------------------------------------------------------


@router.get("/calendars", response_model=list[CalendarPublic], summary="Business-hours calendars")
def list_calendars(session: SessionDep, agent: CurrentAgent) -> list[CalendarPublic]:
    return [_calendar(c) for c in calendars.list_calendars(session)]


@router.get("/calendars/{calendar_id}", response_model=CalendarPublic, summary="A calendar")
def get_calendar(session: SessionDep, agent: CurrentAgent, calendar_id: RowId) -> CalendarPublic:
    return _calendar(calendars.get(session, calendar_id))


@router.post(
    "/calendars", response_model=CalendarPublic, status_code=201, summary="Add a calendar (admins)"
)
def create_calendar(
    session: WriteSessionDep, agent: CurrentAgent, body: CalendarIn
) -> CalendarPublic:
    ensure_admin(agent)
    return _calendar(calendars.create(session, calendars.CalendarInput(**body.model_dump())))


@router.patch(
    "/calendars/{calendar_id}", response_model=CalendarPublic, summary="Change a calendar (admins)"
)
def update_calendar(
    session: WriteSessionDep, agent: CurrentAgent, calendar_id: RowId, body: CalendarPatch
) -> CalendarPublic:
    ensure_admin(agent)
    changes = body.model_dump(exclude_unset=True)
    return _calendar(calendars.update(session, calendar_id, calendars.CalendarInput(**changes)))


@router.delete(
    "/calendars/{calendar_id}",
    status_code=204,
    summary="Delete a calendar (admins); 409 while a policy or a team uses it",
)
def delete_calendar(session: WriteSessionDep, agent: CurrentAgent, calendar_id: RowId) -> Response:
    ensure_admin(agent)
    calendars.delete(session, calendar_id)
    return Response(status_code=204)


# --- policies ---------------------------------------------------------------------------------


@router.get("/sla-policies", response_model=list[PolicyPublic], summary="SLA policies")
def list_policies(session: SessionDep, agent: CurrentAgent) -> list[PolicyPublic]:
    return [_policy(p) for p in policies.list_policies(session)]


@router.get("/sla-policies/{policy_id}", response_model=PolicyPublic, summary="An SLA policy")
def get_policy(session: SessionDep, agent: CurrentAgent, policy_id: RowId) -> PolicyPublic:
    return _policy(policies.get(session, policy_id))


@router.post(
    "/sla-policies",
    response_model=PolicyPublic,
    status_code=201,
    summary="Add an SLA policy (admins)",
    description="Targets in business minutes on the policy's calendar; the conversations "
    "created from then on get due times. Precedence: a tag policy before a team's before a "
    "mailbox's; among several of a kind, the oldest.",
)
def create_policy(session: WriteSessionDep, agent: CurrentAgent, body: PolicyIn) -> PolicyPublic:
    ensure_admin(agent)
    return _policy(policies.create(session, policies.PolicyInput(**body.model_dump())))


@router.patch(
    "/sla-policies/{policy_id}",
    response_model=PolicyPublic,
    summary="Change an SLA policy (admins)",
)
def update_policy(
    session: WriteSessionDep, agent: CurrentAgent, policy_id: RowId, body: PolicyPatch
) -> PolicyPublic:
    ensure_admin(agent)
    changes = body.model_dump(exclude_unset=True)
    return _policy(policies.update(session, policy_id, policies.PolicyInput(**changes)))


@router.delete(
    "/sla-policies/{policy_id}", status_code=204, summary="Delete an SLA policy (admins)"
)
def delete_policy(session: WriteSessionDep, agent: CurrentAgent, policy_id: RowId) -> Response:
    ensure_admin(agent)
    policies.delete(session, policy_id)
    return Response(status_code=204)
