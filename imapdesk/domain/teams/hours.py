"""Business hours as teams and rules see them: a stored calendar by id
(`imapdesk.domain.sla.business_hours`, `imapdesk.domain.sla.calendars`); no calendar is open
round the clock, and a business hour is then a wall-clock hour."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from imapdesk.domain.sla import business_hours


def is_open(session: Session, calendar_id: int | None, at: datetime) -> bool:
    """Whether `at` falls within the calendar's business hours (no calendar: always)."""
    if calendar_id is None:
        return True
    return business_hours.is_open(session, calendar_id, at)


def business_seconds(
    session: Session, calendar_id: int | None, start: datetime, end: datetime
) -> float:
    """Business seconds from `start` to `end` (no calendar: wall-clock seconds)."""
    if calendar_id is None:
        return max(0.0, (end - start).total_seconds())
    return business_hours.business_seconds_between(session, calendar_id, start, end)
