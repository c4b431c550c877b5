"""Business hours (imapdesk/domain/sla/business_hours.py): properties over random calendars,
instants and amounts (hypothesis), and weeks with a daylight-saving change checked by hand."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imapdesk.domain.sla.business_hours import (
    MINUTES_PER_DAY,
    Calendar,
    CalendarError,
    add_business_minutes,
    business_minutes_between,
    is_business_time,
    open_intervals,
    weekly_from_names,
)

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # a half-hour change
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Santiago",
    "UTC",
]
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS_9_TO_5 = (((9 * 60, 17 * 60),),) * 5 + ((),) * 2


@st.composite
def day_hours(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    cuts = sorted(
        draw(st.lists(st.integers(0, MINUTES_PER_DAY), min_size=0, max_size=6, unique=True))
    )
    return tuple((cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2))


@st.composite
def calendars(draw: st.DrawFn) -> Calendar:
    weekly = draw(st.lists(day_hours(), min_size=7, max_size=7))
    if not any(weekly):
        weekly[draw(st.integers(0, 6))] = ((8 * 60, 16 * 60),)
    # the days clocks change in 2026 are often among the holidays (and often not)
    holidays = draw(
        st.frozensets(
            st.dates(date(2026, 1, 1), date(2026, 12, 31))
            | st.sampled_from([date(2026, 3, 8), date(2026, 3, 29), date(2026, 10, 25)]),
            max_size=15,
        )
    )
    return Calendar(draw(st.sampled_from(ZONES)), tuple(weekly), holidays)


# whole seconds, around the 2026 changes of clock and midnight (the generator finds both)
instants = st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC)).map(
    lambda d: d.replace(microsecond=0)
)
minutes = st.integers(0, 60 * 24 * 20)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(calendars(), instants, minutes)
def test_adding_then_counting_gives_back_the_minutes(cal: Calendar, a: datetime, n: int) -> None:
    due = add_business_minutes(cal, a, n)
    assert due >= a
    assert business_minutes_between(cal, a, due) == n


@SETTINGS
@given(calendars(), instants, minutes, minutes)
def test_adding_is_monotonic_and_adds_up(cal: Calendar, a: datetime, n: int, m: int) -> None:
    small, large = sorted((n, m))
    assert add_business_minutes(cal, a, small) <= add_business_minutes(cal, a, large)
    # adding in two steps is adding at once
    step = add_business_minutes(cal, add_business_minutes(cal, a, small), large - small)
    assert step == add_business_minutes(cal, a, large)


@SETTINGS
@given(calendars(), instants, st.integers(1, 60 * 24 * 20))
def test_a_due_time_is_always_within_business_hours(cal: Calendar, a: datetime, n: int) -> None:
    due = add_business_minutes(cal, a, n)
    # the due time ends business time: just before it, the calendar is open
    assert is_business_time(cal, due - timedelta(seconds=1))
    before = (due - timedelta(seconds=1)).astimezone(cal.tz)
    assert before.date() not in cal.holidays
    minute = before.hour * 60 + before.minute
    assert any(s <= minute < e for s, e in cal.weekly[before.weekday()])


@SETTINGS
@given(calendars(), instants, instants, instants)
def test_counting_is_additive_and_monotonic(
    cal: Calendar, a: datetime, b: datetime, c: datetime
) -> None:
    a, b, c = sorted((a, b, c))
    ab, bc, ac = (business_minutes_between(cal, x, y) for x, y in ((a, b), (b, c), (a, c)))
    assert ab >= 0 and bc >= 0
    assert ab + bc == pytest.approx(ac, abs=1e-9)
    assert business_minutes_between(cal, b, a) == 0
    # a day holds at most its wall-clock minutes plus an hour given back by the clocks
    assert ab <= (b - a).total_seconds() / 60


@SETTINGS
@given(calendars(), instants)
def test_intervals_are_ordered_and_open_on_working_days(cal: Calendar, a: datetime) -> None:
    seen = []
    for start, end in open_intervals(cal, a):
        seen.append((start, end))
        if len(seen) == 10:
            break
    assert seen[0][0] >= a
    for (s1, e1), (s2, e2) in itertools.pairwise(seen):
        assert s1 < e1 <= s2 < e2
    for start, _ in seen:
        assert start.astimezone(cal.tz).date() not in cal.holidays or start == a


# --- by hand: weeks with a change of clock ----------------------------------------------------


def at(tz: ZoneInfo, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=tz)  # type: ignore[misc]


def test_berlin_spring_forward_weekend_by_hand() -> None:
    """Sunday 29 March 2026, 02:00 CET -> 03:00 CEST."""
    cal = Calendar("Europe/Berlin", WEEKDAYS_9_TO_5)
    friday_4pm = at(BERLIN, 2026, 3, 27, 16, 0)  # 15:00 UTC
    due = add_business_minutes(cal, friday_4pm, 120)
    # an hour on Friday, an hour on Monday from 09:00 CEST (07:00 UTC)
    assert due == datetime(2026, 3, 30, 8, 0, tzinfo=UTC)
    assert due.astimezone(BERLIN).hour == 10
    assert business_minutes_between(cal, friday_4pm, due) == 120
    # round the clock: that weekend has 47 hours
    always = Calendar("Europe/Berlin", (((0, MINUTES_PER_DAY),),) * 7)
    saturday, monday = at(BERLIN, 2026, 3, 28, 0, 0), at(BERLIN, 2026, 3, 30, 0, 0)
    assert business_minutes_between(always, saturday, monday) == 47 * 60
    # opening hours inside the hour that does not exist are no business time at all
    night = Calendar("Europe/Berlin", ((),) * 6 + (((2 * 60, 3 * 60), (4 * 60, 5 * 60)),))
    sunday = at(BERLIN, 2026, 3, 29, 0, 0)
    assert business_minutes_between(night, sunday, at(BERLIN, 2026, 3, 30, 0, 0)) == 60
    assert add_business_minutes(night, sunday, 30) == at(BERLIN, 2026, 3, 29, 4, 30)


def test_berlin_fall_back_weekend_by_hand() -> None:
    """Sunday 25 October 2026, 03:00 CEST -> 02:00 CET: the hour from 02:00 comes twice."""
    always = Calendar("Europe/Berlin", (((0, MINUTES_PER_DAY),),) * 7)
    saturday, monday = at(BERLIN, 2026, 10, 24, 0, 0), at(BERLIN, 2026, 10, 26, 0, 0)
    assert business_minutes_between(always, saturday, monday) == 49 * 60
    # 01:00-04:00 wall clock that Sunday is four real hours
    night = Calendar("Europe/Berlin", ((),) * 6 + (((60, 4 * 60),),))
    sunday = at(BERLIN, 2026, 10, 25, 0, 0)
    assert business_minutes_between(night, sunday, at(BERLIN, 2026, 10, 26, 0, 0)) == 240
    due = add_business_minutes(night, sunday, 150)  # 23:00 UTC + 2:30
    assert due == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert due.astimezone(BERLIN).strftime("%H:%M %Z") == "02:30 CET"  # the second 02:30


def test_new_york_changes_of_clock_by_hand() -> None:
    """Sunday 8 March 2026 02:00 EST -> 03:00 EDT; Sunday 1 November 02:00 EDT -> 01:00 EST."""
    cal = Calendar("America/New_York", WEEKDAYS_9_TO_5)
    friday = at(NEW_YORK, 2026, 3, 6, 16, 30)  # 21:30 UTC
    due = add_business_minutes(cal, friday, 60)
    assert due == datetime(2026, 3, 9, 13, 30, tzinfo=UTC)  # Monday 09:30 EDT
    friday = at(NEW_YORK, 2026, 10, 30, 16, 30)  # 20:30 UTC
    assert add_business_minutes(cal, friday, 60) == datetime(2026, 11, 2, 14, 30, tzinfo=UTC)
    always = Calendar("America/New_York", (((0, MINUTES_PER_DAY),),) * 7)
    assert (
        business_minutes_between(
            always, at(NEW_YORK, 2026, 3, 8, 0, 0), at(NEW_YORK, 2026, 3, 9, 0, 0)
        )
        == 23 * 60
    )
    assert (
        business_minutes_between(
            always, at(NEW_YORK, 2026, 11, 1, 0, 0), at(NEW_YORK, 2026, 11, 2, 0, 0)
        )
        == 25 * 60
    )


def test_holidays_lunch_breaks_and_midnight() -> None:
    hours = weekly_from_names(
        {
            "monday": [["09:00", "12:00"], ["13:00", "17:00"]],
            "tuesday": [["09:00", "12:00"], ["13:00", "17:00"]],
            "wednesday": [["22:00", "24:00"]],
            "thursday": [["00:00", "02:00"]],
        }
    )
    cal = Calendar("Europe/Berlin", hours, frozenset({date(2026, 12, 8)}))
    monday_1130 = at(BERLIN, 2026, 12, 7, 11, 30)
    # 30 minutes before lunch, then from 13:00
    assert add_business_minutes(cal, monday_1130, 60) == at(BERLIN, 2026, 12, 7, 13, 30)
    # Tuesday 8 December is a holiday: Monday 16:30 + 60 goes on Wednesday night
    monday_1630 = at(BERLIN, 2026, 12, 7, 16, 30)
    assert add_business_minutes(cal, monday_1630, 60) == at(BERLIN, 2026, 12, 9, 22, 30)
    # across midnight into Thursday
    assert add_business_minutes(cal, monday_1630, 180) == at(BERLIN, 2026, 12, 10, 0, 30)
    assert business_minutes_between(cal, monday_1630, at(BERLIN, 2026, 12, 10, 0, 30)) == 180


def test_bad_calendars_are_refused() -> None:
    with pytest.raises(CalendarError):
        Calendar("Mars/Olympus", WEEKDAYS_9_TO_5)
    with pytest.raises(CalendarError):
        Calendar("UTC", ((),) * 7)
    with pytest.raises(CalendarError):
        weekly_from_names({"monday": [["17:00", "09:00"]]})
    with pytest.raises(CalendarError):
        weekly_from_names({"funday": [["09:00", "17:00"]]})
    with pytest.raises(CalendarError):
        add_business_minutes(Calendar("UTC", WEEKDAYS_9_TO_5), datetime(2026, 1, 1), 5)
