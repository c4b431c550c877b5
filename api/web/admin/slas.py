"""SLAs: business-hours calendars (weekly hours, holidays, a timezone) and SLA policies
(targets for a mailbox, a team or a tag) — the list, adding, changing and deleting. The rules
live in imapdesk.domain.sla (calendars, policies)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlmodel import Session, col, select

from imapdesk.api.deps import RowId, SessionDep, WriteSessionDep
from imapdesk.api.web.admin.page import Csrf, all_mailboxes, as_sentence, found, redirect, render
from imapdesk.api.web.auth import WebAdmin, check_csrf
from imapdesk.api.web.flash import flash
from imapdesk.domain.sla import calendars, policies
from imapdesk.domain.sla.business_hours import DAY_NAMES
from imapdesk.kernel.errors import ImapdeskError, InvalidInput
from imapdesk.kernel.models import BusinessCalendar, SlaPolicy, Team

router = APIRouter()

Text = Annotated[str, Form(max_length=200)]
DayHours = Annotated[str, Form(max_length=300)]
HolidayText = Annotated[str, Form(max_length=20_000)]
Number = Annotated[str, Form(max_length=12)]
_SPAN = re.compile(r"^\s*(\d{1,2}:\d{2})\s*[-\u2013]\s*(\d{1,2}:\d{2})\s*$")


def day_text(spans: list[list[str]]) -> str:
    """[["09:00", "12:00"], ["13:00", "17:00"]] -> "09:00-12:00, 13:00-17:00"."""
    return ", ".join(f"{a}-{b}" for a, b in spans)


def _spans(day: str, value: str) -> list[list[str]]:
    spans = []
    for part in value.split(","):
        if not part.strip():
            continue
        found_span = _SPAN.match(part)
        if found_span is None:
            raise InvalidInput(
                f"{day.capitalize()}: write the hours as 09:00-12:00, 13:00-17:00", field="hours"
            )
        spans.append([found_span.group(1), found_span.group(2)])
    return spans


def _calendar_input(
    name: str, timezone: str, days: dict[str, str], holidays: str
) -> calendars.CalendarInput:
    return calendars.CalendarInput(
        name=name,
        timezone=timezone or "UTC",
        hours={day: _spans(day, days.get(day, "")) for day in DAY_NAMES},
        holidays=[h for h in re.split(r"[\s,;]+", holidays) if h],
    )


def _number(value: str, field: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit():
        raise InvalidInput(f"{field} is a whole number of minutes, or empty", field=field)
    return int(value)


def _teams(session: Session) -> list[Team]:
    return list(session.exec(select(Team).order_by(col(Team.name))))


def _choices(session: Session) -> dict[str, object]:
    return {
        "calendars": calendars.list_calendars(session),
        "mailboxes": all_mailboxes(session),
        "teams": _teams(session),
        "scopes": policies.SCOPES,
        "days": DAY_NAMES,
        "day_text": day_text,
    }


@router.get("/slas", name="admin_slas")
def slas_page(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    return render(
        request,
        "admin/slas.html",
        admin,
        section="slas",
        policies=policies.list_policies(session),
        **_choices(session),
    )


# --- calendars --------------------------------------------------------------------------------


def _day_fields(
    monday: DayHours = "",
    tuesday: DayHours = "",
    wednesday: DayHours = "",
    thursday: DayHours = "",
    friday: DayHours = "",
    saturday: DayHours = "",
    sunday: DayHours = "",
) -> dict[str, str]:
    return dict(
        zip(
            DAY_NAMES, (monday, tuesday, wednesday, thursday, friday, saturday, sunday), strict=True
        )
    )


@router.post("/calendars", name="admin_calendar_add")
def calendar_add(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    csrf_token: Csrf = "",
    name: Text = "",
    timezone: Text = "UTC",
    monday: DayHours = "",
    tuesday: DayHours = "",
    wednesday: DayHours = "",
    thursday: DayHours = "",
    friday: DayHours = "",
    saturday: DayHours = "",
    sunday: DayHours = "",
    holidays: HolidayText = "",
) -> Response:
    check_csrf(request, csrf_token)
    days = _day_fields(monday, tuesday, wednesday, thursday, friday, saturday, sunday)
    try:
        with session.begin_nested():
            row = calendars.create(session, _calendar_input(name, timezone, days, holidays))
    except ImapdeskError as exc:
        flash(request, as_sentence(exc.message), error=True)
        return redirect(request, "admin_slas")
    flash(request, f"Added the calendar {row.name}.")
    return redirect(request, "admin_calendar", calendar_id=row.id)


@router.get("/calendars/{calendar_id}", name="admin_calendar")
def calendar_page(
    request: Request, session: SessionDep, admin: WebAdmin, calendar_id: RowId
) -> Response:
    row = found(session, BusinessCalendar, calendar_id, "calendar")
    return render(
        request, "admin/calendar.html", admin, section="slas", calendar=row, **_choices(session)
    )


@router.post("/calendars/{calendar_id}", name="admin_calendar_save")
def calendar_save(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    calendar_id: RowId,
    csrf_token: Csrf = "",
    name: Text = "",
    timezone: Text = "UTC",
    monday: DayHours = "",
    tuesday: DayHours = "",
    wednesday: DayHours = "",
    thursday: DayHours = "",
    friday: DayHours = "",
    saturday: DayHours = "",
    sunday: DayHours = "",
    holidays: HolidayText = "",
) -> Response:
    check_csrf(request, csrf_token)
    found(session, BusinessCalendar, calendar_id, "calendar")
    days = _day_fields(monday, tuesday, wednesday, thursday, friday, saturday, sunday)
    try:
        with session.begin_nested():
            calendars.update(session, calendar_id, _calendar_input(name, timezone, days, holidays))
    except ImapdeskError as exc:
        flash(request, as_sentence(exc.message), error=True)
        return redirect(request, "admin_calendar", calendar_id=calendar_id)
    flash(request, "Saved the calendar.")
    return redirect(request, "admin_calendar", calendar_id=calendar_id)


@router.post("/calendars/{calendar_id}/delete", name="admin_calendar_delete")
def calendar_delete(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    calendar_id: RowId,
    csrf_token: Csrf = "",
) -> Response:
    check_csrf(request, csrf_token)
    try:
        with session.begin_nested():
            calendars.delete(session, calendar_id)
    except ImapdeskError as exc:
        flash(request, as_sentence(exc.message), error=True)
        return redirect(request, "admin_calendar", calendar_id=calendar_id)
    flash(request, "Deleted the calendar.")
    return redirect(request, "admin_slas")


# --- policies ---------------------------------------------------------------------------------


def _policy_input(
    name: str,
    scope: str,
    mailbox_id: str,
    team_id: str,
    tag: str,
    calendar_id: str,
    first_response: str,
    next_response: str,
    resolution: str,
    warning: str,
    enabled: bool,
    pause_when_pending: bool,
) -> policies.PolicyInput:
    return policies.PolicyInput(
        name=name,
        scope=scope,
        mailbox_id=_number(mailbox_id, "mailbox_id"),
        team_id=_number(team_id, "team_id"),
        tag=tag or None,
        calendar_id=_number(calendar_id, "calendar_id"),
        first_response_minutes=_number(first_response, "first_response_minutes"),
        next_response_minutes=_number(next_response, "next_response_minutes"),
        resolution_minutes=_number(resolution, "resolution_minutes"),
        warning_minutes=_number(warning, "warning_minutes") or 0,
        pause_when_pending=pause_when_pending,
        enabled=enabled,
    )


@router.post("/sla-policies", name="admin_sla_policy_add")
def policy_add(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    csrf_token: Csrf = "",
    name: Text = "",
    scope: Text = "mailbox",
    mailbox_id: Number = "",
    team_id: Number = "",
    tag: Text = "",
    calendar_id: Number = "",
    first_response_minutes: Number = "",
    next_response_minutes: Number = "",
    resolution_minutes: Number = "",
    warning_minutes: Number = "30",
    enabled: Annotated[bool, Form()] = False,
    pause_when_pending: Annotated[bool, Form()] = False,
) -> Response:
    check_csrf(request, csrf_token)
    try:
        with session.begin_nested():
            row = policies.create(
                session,
                _policy_input(
                    name, scope, mailbox_id, team_id, tag, calendar_id, first_response_minutes,
                    next_response_minutes, resolution_minutes, warning_minutes, enabled,
                    pause_when_pending,
                ),
            )  # fmt: skip
    except ImapdeskError as exc:
        flash(request, as_sentence(exc.message), error=True)
        return redirect(request, "admin_slas")
    flash(request, f"Added the SLA policy {row.name}.")
    return redirect(request, "admin_slas")


@router.get("/sla-policies/{policy_id}", name="admin_sla_policy")
def policy_page(
    request: Request, session: SessionDep, admin: WebAdmin, policy_id: RowId
) -> Response:
    row = found(session, SlaPolicy, policy_id, "SLA policy")
    return render(
        request, "admin/sla_policy.html", admin, section="slas", policy=row, **_choices(session)
    )


@router.post("/sla-policies/{policy_id}", name="admin_sla_policy_save")
def policy_save(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    policy_id: RowId,
    csrf_token: Csrf = "",
    name: Text = "",
    scope: Text = "mailbox",
    mailbox_id: Number = "",
    team_id: Number = "",
    tag: Text = "",
    calendar_id: Number = "",
    first_response_minutes: Number = "",
    next_response_minutes: Number = "",
    resolution_minutes: Number = "",
    warning_minutes: Number = "30",
    enabled: Annotated[bool, Form()] = False,
    pause_when_pending: Annotated[bool, Form()] = False,
) -> Response:
    check_csrf(request, csrf_token)
    found(session, SlaPolicy, policy_id, "SLA policy")
    try:
        with session.begin_nested():
            policies.update(
                session,
                policy_id,
                _policy_input(
                    name, scope, mailbox_id, team_id, tag, calendar_id, first_response_minutes,
                    next_response_minutes, resolution_minutes, warning_minutes, enabled,
                    pause_when_pending,
                ),
            )  # fmt: skip
    except ImapdeskError as exc:
        flash(request, as_sentence(exc.message), error=True)
        return redirect(request, "admin_sla_policy", policy_id=policy_id)
    flash(request, "Saved the SLA policy.")
    return redirect(request, "admin_sla_policy", policy_id=policy_id)


@router.post("/sla-policies/{policy_id}/delete", name="admin_sla_policy_delete")
def policy_delete(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    policy_id: RowId,
    csrf_token: Csrf = "",
) -> Response:
    check_csrf(request, csrf_token)
    policies.delete(session, policy_id)
    flash(request, "Deleted the SLA policy.")
    return redirect(request, "admin_slas")
