"""Business hours: adding business minutes to an instant and counting them between two.

A calendar is weekly opening hours (several intervals a day, in minutes since local
midnight, the end up to 24:00), holiday dates (whole local days closed) and a timezone. Business
time is real elapsed time inside the opening intervals, their wall-clock ends placed on the
timeline of the calendar's zone: on the night clocks go forward an interval over the missing
hour is an hour shorter, on the night they go back one over the repeated hour an hour longer.
A wall-clock time that does not exist (inside the gap) is taken as the moment of the change; an
ambiguous one (the repeated hour) as its first occurrence, so the mapping keeps its order.

Pure functions of aware datetimes: no database, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

MINUTES_PER_DAY = 24 * 60
DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# a calendar open only on holidays never opens: give up looking after this many days
SEARCH_DAYS = 3 * 366
_HHMM = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")

Interval = tuple[int, int]  # [start, end) in minutes since local midnight


class CalendarError(ValueError):
    """Opening hours, holidays or a timezone that make no calendar."""


@dataclass(frozen=True)
class Calendar:
    """Weekly opening hours (Monday first), holiday dates and a timezone name."""

    timezone: str = "UTC"
    weekly: tuple[tuple[Interval, ...], ...] = ((),) * 7
    holidays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        zone(self.timezone)  # refuses an unknown zone
        if len(self.weekly) != 7:
            raise CalendarError("weekly hours need seven days, Monday first")
        object.__setattr__(self, "weekly", tuple(normalise(day) for day in self.weekly))
        object.__setattr__(self, "holidays", frozenset(self.holidays))
        if not any(self.weekly):
            raise CalendarError("a calendar needs opening hours on at least one day")

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CalendarError(f"unknown timezone {name!r}") from exc


def timezone_names() -> list[str]:
    return sorted(available_timezones())


def normalise(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    """Sorted, overlapping and touching intervals merged; each within one day."""
    chosen: list[list[int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in intervals):
        if not 0 <= start < end <= MINUTES_PER_DAY:
            raise CalendarError(f"opening hours {hhmm(start)}-{hhmm(end)} are not within a day")
        if chosen and start <= chosen[-1][1]:
            chosen[-1][1] = max(chosen[-1][1], end)
        else:
            chosen.append([start, end])
    return tuple((s, e) for s, e in chosen)


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_hhmm(value: str) -> int:
    found = _HHMM.match(value.strip())
    if found is None or (found.group(1) == "24" and found.group(2) != "00"):
        raise CalendarError(f"{value!r} is not a time of day (HH:MM, up to 24:00)")
    return int(found.group(1)) * 60 + int(found.group(2))


def weekly_from_names(
    hours: Mapping[str, Sequence[Sequence[str]]],
) -> tuple[tuple[Interval, ...], ...]:
    """{"monday": [["09:00", "12:00"], ["13:00", "17:00"]], ...} -> weekly intervals."""
    unknown = set(hours) - set(DAY_NAMES)
    if unknown:
        raise CalendarError(f"unknown day {sorted(unknown)[0]!r}; days are {', '.join(DAY_NAMES)}")
    weekly: list[tuple[Interval, ...]] = []
    for day in DAY_NAMES:
        spans: list[Interval] = []
        for span in hours.get(day, ()):
            if len(span) != 2:
                raise CalendarError("each opening interval is a start and an end")
            spans.append((parse_hhmm(span[0]), parse_hhmm(span[1])))
        weekly.append(normalise(spans))
    return tuple(weekly)


def weekly_to_names(weekly: Sequence[Sequence[Interval]]) -> dict[str, list[list[str]]]:
    return {
        day: [[hhmm(s), hhmm(e)] for s, e in spans]
        for day, spans in zip(DAY_NAMES, weekly, strict=True)
    }


ALWAYS_OPEN = Calendar("UTC", (((0, MINUTES_PER_DAY),),) * 7)


# --- the timeline ---------------------------------------------------------------------------


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise CalendarError("business hours need aware datetimes")
    return instant.astimezone(UTC)


def _wall(day: date, minutes: int) -> datetime:
    return datetime.combine(day, time()) + timedelta(minutes=minutes)


def local_to_utc(naive: datetime, tz: ZoneInfo) -> datetime:
    """A wall-clock time in `tz` as an instant: the first occurrence of a repeated one, the
    moment of the change for one inside a gap (clocks went forward over it)."""
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    # inside a gap: fold=1 reads it with the offset after the change (an instant before the
    # change), fold=0 with the one before (after it); the change lies between the two
    low = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first
    if low > high:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(tz).replace(tzinfo=None) < naive:
            low = middle
        else:
            high = middle
    return high


def _day_intervals(calendar: Calendar, day: date) -> list[tuple[datetime, datetime]]:
    if day in calendar.holidays:
        return []
    tz = calendar.tz
    spans = []
    for start, end in calendar.weekly[day.weekday()]:
        a = local_to_utc(_wall(day, start), tz)
        b = local_to_utc(_wall(day, end), tz)
        if b > a:
            spans.append((a, b))
    return spans


def open_intervals(calendar: Calendar, start: datetime) -> Iterator[tuple[datetime, datetime]]:
    """The business intervals (UTC) that end after `start`, in order, the first cut to begin at
    `start` at the earliest. Endless for a calendar that opens at all."""
    start = _aware(start)
    day = start.astimezone(calendar.tz).date() - timedelta(days=1)
    empty = 0
    while True:
        found = False
        for a, b in _day_intervals(calendar, day):
            if b <= start:
                continue
            found = True
            yield max(a, start), b
        empty = 0 if found else empty + 1
        if empty > SEARCH_DAYS:
            raise CalendarError("the calendar has no opening hours in the next three years")
        day += timedelta(days=1)


def add_business_time(calendar: Calendar, start: datetime, amount: timedelta) -> datetime:
    """The instant when `amount` of business time has passed since `start` (UTC). A zero
    amount is `start` itself."""
    start = _aware(start)
    if amount <= timedelta(0):
        return start
    remaining = amount
    for a, b in open_intervals(calendar, start):
        if b - a >= remaining:
            return a + remaining
        remaining -= b - a
    raise AssertionError("unreachable: open_intervals never ends")  # pragma: no cover


def add_business_minutes(calendar: Calendar, start: datetime, minutes: int) -> datetime:
    return add_business_time(calendar, start, timedelta(minutes=minutes))


def business_time_between(calendar: Calendar, start: datetime, end: datetime) -> timedelta:
    """How much business time lies in [start, end); zero when end is not after start."""
    start, end = _aware(start), _aware(end)
    total = timedelta(0)
    if end <= start:
        return total
    for a, b in open_intervals(calendar, start):
        if a >= end:
            break
        total += min(b, end) - a
    return total


def business_minutes_between(calendar: Calendar, start: datetime, end: datetime) -> float:
    return business_time_between(calendar, start, end).total_seconds() / 60


def is_business_time(calendar: Calendar, instant: datetime) -> bool:
    """Whether `instant` lies inside an opening interval (its start included, end not)."""
    instant = _aware(instant)
    for a, _b in open_intervals(calendar, instant):
        return a <= instant
    return False  # pragma: no cover


# --- by calendar id, for teams and rules (imapdesk/domain/teams/hours.py) ---------------------


def is_open(session: Any, calendar_id: int | None, at: datetime) -> bool:
    """Whether the stored calendar is open at `at` (no calendar: always)."""
    from imapdesk.domain.sla.calendars import load

    return is_business_time(load(session, calendar_id), at)


def business_seconds_between(
    session: Any, calendar_id: int | None, start: datetime, end: datetime
) -> float:
    from imapdesk.domain.sla.calendars import load

    return business_time_between(load(session, calendar_id), start, end).total_seconds()
