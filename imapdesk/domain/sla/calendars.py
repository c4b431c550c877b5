"""Business-hours calendars as stored (`BusinessCalendar`): create, change, delete, and read
as a `business_hours.Calendar`. One code path for the admin pages and the REST API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from imapdesk.domain.sla.business_hours import (
    ALWAYS_OPEN,
    DAY_NAMES,
    Calendar,
    CalendarError,
    weekly_from_names,
    weekly_to_names,
)
from imapdesk.kernel.errors import Conflict, InvalidInput, NotFound
from imapdesk.kernel.models import BusinessCalendar, SlaPolicy, Team, utcnow

MAX_HOLIDAYS = 1000


@dataclass(frozen=True)
class CalendarInput:
    """What an admin gives (every field optional on a change)."""

    name: str | None = None
    timezone: str | None = None
    hours: Mapping[str, Sequence[Sequence[str]]] | None = None
    holidays: Sequence[str] | None = None


def as_calendar(row: BusinessCalendar | None) -> Calendar:
    """The stored calendar as business_hours reads it (none: round the clock)."""
    if row is None:
        return ALWAYS_OPEN
    return Calendar(
        row.timezone,
        weekly_from_names(row.hours or {}),
        frozenset(date.fromisoformat(d) for d in row.holidays or []),
    )


def load(session: Session, calendar_id: int | None) -> Calendar:
    return as_calendar(session.get(BusinessCalendar, calendar_id) if calendar_id else None)


def get(session: Session, calendar_id: int) -> BusinessCalendar:
    row = session.get(BusinessCalendar, calendar_id)
    if row is None:
        raise NotFound("no such calendar", calendar_id=calendar_id)
    return row


def list_calendars(session: Session) -> list[BusinessCalendar]:
    return list(session.exec(select(BusinessCalendar).order_by(col(BusinessCalendar.name))))


def _holidays(values: Sequence[str]) -> list[str]:
    if len(values) > MAX_HOLIDAYS:
        raise InvalidInput(f"at most {MAX_HOLIDAYS} holidays", field="holidays")
    days = set()
    for value in values:
        try:
            days.add(date.fromisoformat(str(value).strip()))
        except ValueError as exc:
            raise InvalidInput(f"{value!r} is not a date (YYYY-MM-DD)", field="holidays") from exc
    return [d.isoformat() for d in sorted(days)]


def _apply(row: BusinessCalendar, data: CalendarInput) -> None:
    if data.name is not None:
        name = data.name.strip()
        if not name or len(name) > 200:
            raise InvalidInput("a calendar needs a name (at most 200 characters)", field="name")
        row.name = name
    if data.timezone is not None:
        row.timezone = data.timezone.strip()
    if data.hours is not None:
        row.hours = {day: [list(span) for span in data.hours.get(day, [])] for day in DAY_NAMES}
    if data.holidays is not None:
        row.holidays = _holidays(data.holidays)
    try:
        calendar = as_calendar(row)
    except CalendarError as exc:
        field = "timezone" if "timezone" in str(exc) else "hours"
        raise InvalidInput(str(exc), field=field) from exc
    row.hours = weekly_to_names(calendar.weekly)
    row.updated_at = utcnow()


def _save(session: Session, row: BusinessCalendar) -> BusinessCalendar:
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError as exc:
        raise Conflict("a calendar of that name exists", field="name") from exc
    return row


def create(session: Session, data: CalendarInput) -> BusinessCalendar:
    row = BusinessCalendar(name="", hours={}, holidays=[])
    _apply(
        row,
        CalendarInput(
            name=data.name or "",
            timezone=data.timezone or "UTC",
            hours=data.hours or {},
            holidays=data.holidays or [],
        ),
    )
    return _save(session, row)


def update(session: Session, calendar_id: int, data: CalendarInput) -> BusinessCalendar:
    """The due times of the conversations whose policy counts on this calendar follow."""
    from imapdesk.domain.sla.clock import refresh_policies

    row = get(session, calendar_id)
    _apply(row, data)
    _save(session, row)
    users = session.exec(select(SlaPolicy.id).where(col(SlaPolicy.calendar_id) == calendar_id))
    refresh_policies(session, [p for p in users if p is not None])
    return row


def delete(session: Session, calendar_id: int) -> None:
    row = get(session, calendar_id)
    used = session.exec(
        select(SlaPolicy.name).where(col(SlaPolicy.calendar_id) == calendar_id)
    ).first()
    if used is not None:
        raise Conflict(f"the SLA policy {used!r} uses this calendar", calendar_id=calendar_id)
    team = session.exec(select(Team.name).where(col(Team.calendar_id) == calendar_id)).first()
    if team is not None:
        raise Conflict(f"the team {team!r} uses this calendar", calendar_id=calendar_id)
    session.delete(row)
    session.flush()


def public(row: BusinessCalendar) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "timezone": row.timezone,
        "hours": {day: (row.hours or {}).get(day, []) for day in DAY_NAMES},
        "holidays": list(row.holidays or []),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }
