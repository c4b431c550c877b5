"""The SLA clock (imapdesk/domain/sla/clock.py) on both databases: due times from the event log
on a business-hours calendar, attainment, a warning and a breach once each, the precedence of
policies (tag > team > mailbox)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.events import EventKind, record_event
from imapdesk.domain.sla import calendars, clock, policies, queues
from imapdesk.domain.sla.business_hours import (
    Calendar,
    add_business_minutes,
    add_business_time,
    business_time_between,
)
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import (
    Conversation,
    ConversationSla,
    ConversationStatus,
    ConversationTag,
    Event,
    Mailbox,
    SlaPolicy,
    Team,
    TeamMember,
)
from tests.core.test_business_hours import calendars as calendar_strategy
from tests.core.test_business_hours import instants
from tests.support import factories as f

BERLIN = ZoneInfo("Europe/Berlin")
NINE_TO_FIVE = {
    d: [["09:00", "17:00"]] for d in ("monday", "tuesday", "wednesday", "thursday", "friday")
}


def berlin(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN).astimezone(UTC)  # type: ignore[misc]


def setup(engine: Engine) -> tuple[int, int, int]:
    """A mailbox with a policy on a Berlin calendar (Tuesday 8 December a holiday), a
    conversation; the clock registered. (mailbox, conversation, policy)"""
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        cal = calendars.create(
            s,
            calendars.CalendarInput(
                name="Berlin office",
                timezone="Europe/Berlin",
                hours=NINE_TO_FIVE,
                holidays=["2026-12-08"],
            ),
        )
        policy = policies.create(
            s,
            policies.PolicyInput(
                name="Support",
                scope="mailbox",
                mailbox_id=box.id,
                calendar_id=cal.id,
                first_response_minutes=60,
                next_response_minutes=30,
                resolution_minutes=8 * 60,
                warning_minutes=15,
            ),
        )
        conv = f.conversation(s, box, "Printer on fire")
        assert box.id and conv.id and policy.id
        ids = box.id, conv.id, policy.id
    clock.start(engine)
    return ids


def event(engine: Engine, kind: EventKind, conv: int, at: datetime, **payload: object) -> None:
    with unit_of_work(engine) as s:
        row = record_event(s, kind, conversation_id=conv, payload=dict(payload))
        row.created_at = at
    assert clock.handle_events(engine) == 1


def sla(engine: Engine, conv: int) -> ConversationSla:
    with Session(engine) as s:
        row = s.get(ConversationSla, conv)
        assert row is not None
        return row


def fired(engine: Engine) -> list[tuple[str, str]]:
    with Session(engine) as s:
        return [
            (e.kind, e.payload["target"])
            for e in s.exec(
                select(Event).where(col(Event.kind).startswith("sla.")).order_by(col(Event.id))
            )
        ]


def test_due_times_attainment_warning_and_breach_once(engine: Engine) -> None:
    _, conv, _ = setup(engine)
    monday_1630 = berlin(2026, 12, 7, 16, 30)
    event(engine, EventKind.conversation_created, conv, monday_1630, direction="inbound")
    row = sla(engine, conv)
    # 30 minutes on Monday; Tuesday is a holiday; 30 more on Wednesday
    assert row.first_response_due == berlin(2026, 12, 9, 9, 30)
    # 8 hours: 30 minutes Monday, 7.5 hours Wednesday
    assert row.resolution_due == berlin(2026, 12, 9, 16, 30)
    assert row.next_due_at == berlin(2026, 12, 9, 9, 30)
    assert row.check_at == berlin(2026, 12, 9, 9, 15)

    assert clock.fire_due(engine, now=berlin(2026, 12, 9, 9, 0)) == 0
    assert clock.fire_due(engine, now=berlin(2026, 12, 9, 9, 20)) == 1
    assert clock.fire_due(engine, now=berlin(2026, 12, 9, 9, 25)) == 0
    assert fired(engine) == [("sla.warning", "first_response")]
    assert clock.fire_due(engine, now=berlin(2026, 12, 9, 9, 31)) == 1
    assert clock.fire_due(engine, now=berlin(2026, 12, 9, 9, 40)) == 0
    assert fired(engine)[-1] == ("sla.breached", "first_response")
    assert sla(engine, conv).breached

    # the first reply, late: attained, not met; resolution is what is due now
    event(engine, EventKind.reply_sent, conv, berlin(2026, 12, 9, 10, 0))
    row = sla(engine, conv)
    assert row.first_response_at == berlin(2026, 12, 9, 10, 0)
    assert row.first_response_met is False
    assert row.next_due_at == berlin(2026, 12, 9, 16, 30)

    # the customer writes back at 16:50: next response due Thursday 09:20
    event(engine, EventKind.customer_replied, conv, berlin(2026, 12, 9, 16, 50))
    row = sla(engine, conv)
    assert row.next_response_due == berlin(2026, 12, 10, 9, 20)
    # an agent answers from a mail client: next response cleared
    event(
        engine, EventKind.message_received, conv, berlin(2026, 12, 9, 16, 55), direction="outbound"
    )
    assert sla(engine, conv).next_response_due is None

    # closed after the resolution due: attained, not met; nothing more due
    event(
        engine,
        EventKind.status_changed,
        conv,
        berlin(2026, 12, 10, 10, 0),
        details={"to": "closed"},
    )
    row = sla(engine, conv)
    assert row.resolved_at == berlin(2026, 12, 10, 10, 0)
    assert row.resolution_met is False
    assert row.next_due_at is None and row.check_at is None
    # reopened: resolution due again, 8 business hours from the reopening
    event(
        engine, EventKind.status_changed, conv, berlin(2026, 12, 11, 9, 0), details={"to": "open"}
    )
    row = sla(engine, conv)
    assert row.resolved_at is None and not row.resolution_breached
    assert row.resolution_due == berlin(2026, 12, 11, 17, 0)
    # the earlier resolution's breach never fired (closed before the clock looked); this one
    # fires its warning and its breach once each
    assert clock.fire_due(engine, now=berlin(2026, 12, 11, 18, 0)) == 1
    assert clock.fire_due(engine, now=berlin(2026, 12, 11, 19, 0)) == 0
    assert fired(engine)[-1] == ("sla.breached", "resolution")


def test_a_rules_acknowledgement_is_no_first_response(engine: Engine) -> None:
    """A rule's automatic reply leaves two `reply.sent` events: the rule's `replied` activity
    (`automatic` in its details) and the delivery's (`automatic` in the payload); neither
    attains the first response, a person's reply after them does."""
    _, conv, _ = setup(engine)
    event(engine, EventKind.conversation_created, conv, berlin(2026, 12, 7, 9, 0))
    event(
        engine,
        EventKind.reply_sent,
        conv,
        berlin(2026, 12, 7, 9, 0, 5),
        action="replied",
        source="system",
        details={"kind": "reply", "automatic": True},
    )
    event(engine, EventKind.reply_sent, conv, berlin(2026, 12, 7, 9, 0, 9), automatic=True)
    row = sla(engine, conv)
    assert row.first_response_at is None and row.first_response_met is None
    assert row.next_due_at == row.first_response_due

    event(engine, EventKind.reply_sent, conv, berlin(2026, 12, 7, 9, 20), automatic=False)
    row = sla(engine, conv)
    assert row.first_response_at == berlin(2026, 12, 7, 9, 20)
    assert row.first_response_met is True


def test_a_tag_policy_comes_before_a_team_and_a_mailbox_policy(engine: Engine) -> None:
    box, conv, mailbox_policy = setup(engine)
    with unit_of_work(engine) as s:
        team = Team(name="Billing")
        s.add(team)
        s.flush()
        agent = create_agent(s, "ann@example.com", "Ann", "pw")
        s.add(TeamMember(team_id=team.id, agent_id=agent.id))
        team_policy = policies.create(
            s,
            policies.PolicyInput(
                name="Billing team", scope="team", team_id=team.id, first_response_minutes=120
            ),
        )
        vip = policies.create(
            s, policies.PolicyInput(name="VIP", scope="tag", tag="VIP", first_response_minutes=10)
        )
        ids = team_policy.id, vip.id, agent.id
    team_policy_id, vip_id, ann = ids
    start = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    event(engine, EventKind.conversation_created, conv, start, direction="inbound")
    assert sla(engine, conv).policy_id == mailbox_policy
    with unit_of_work(engine) as s:
        c = s.get(Conversation, conv)
        assert c is not None
        c.assignee_id = ann
    event(engine, EventKind.assigned, conv, start + timedelta(minutes=1))
    row = sla(engine, conv)
    assert row.policy_id == team_policy_id
    # no calendar: round the clock, from the same start
    assert row.first_response_due == start + timedelta(minutes=120)
    with unit_of_work(engine) as s:
        s.add(ConversationTag(conversation_id=conv, tag="vip"))
    event(engine, EventKind.tagged, conv, start + timedelta(minutes=2))
    row = sla(engine, conv)
    assert row.policy_id == vip_id
    assert row.first_response_due == start + timedelta(minutes=10)
    assert box


def test_changed_targets_and_calendars_count_anew_and_a_deleted_policy_stops(
    engine: Engine,
) -> None:
    _, conv, policy = setup(engine)
    monday_10 = berlin(2026, 12, 7, 10, 0)
    event(engine, EventKind.conversation_created, conv, monday_10, direction="inbound")
    assert sla(engine, conv).first_response_due == berlin(2026, 12, 7, 11, 0)
    with unit_of_work(engine) as s:
        policies.update(s, policy, policies.PolicyInput(first_response_minutes=480))
    # 7 hours on Monday, Tuesday a holiday, 1 more on Wednesday
    assert sla(engine, conv).first_response_due == berlin(2026, 12, 9, 10, 0)
    with unit_of_work(engine) as s:
        row = s.exec(select(SlaPolicy)).one()
        assert row.calendar_id is not None
        calendars.update(s, row.calendar_id, calendars.CalendarInput(holidays=[]))
    assert sla(engine, conv).first_response_due == berlin(2026, 12, 8, 10, 0)
    with unit_of_work(engine) as s:
        policies.delete(s, policy)
    row = sla(engine, conv)
    assert row.policy_id is None and row.next_due_at is None and row.check_at is None


# --- the clock stands still while pending (the policy's pause_when_pending) -------------------


def _answered_then_pending(engine: Engine, conv: int) -> None:
    """Created Monday 10:00 (resolution due Wednesday 10:00: 7 hours Monday, Tuesday a
    holiday, 1 more Wednesday), answered at 10:30, pending from 11:00."""
    event(engine, EventKind.conversation_created, conv, berlin(2026, 12, 7, 10, 0))
    event(engine, EventKind.reply_sent, conv, berlin(2026, 12, 7, 10, 30))
    assert sla(engine, conv).resolution_due == berlin(2026, 12, 9, 10, 0)
    status(engine, conv, "pending", berlin(2026, 12, 7, 11, 0))


def status(engine: Engine, conv: int, to: str, at: datetime) -> None:
    event(engine, EventKind.status_changed, conv, at, details={"to": to})


def test_pending_pauses_resolution_across_business_hours_and_fires_once_after(
    engine: Engine,
) -> None:
    _, conv, _ = setup(engine)
    _answered_then_pending(engine, conv)
    row = sla(engine, conv)
    assert row.paused_at == berlin(2026, 12, 7, 11, 0)
    # nothing runs: not in the queues, nothing to warn or breach
    assert row.next_due_at is None and row.check_at is None
    with Session(engine) as s:
        view = queues.sla_views(s, [conv])[conv]
    assert view.paused and view.paused_at == berlin(2026, 12, 7, 11, 0)
    assert view.next_due is None and view.state() == "none"
    # past the old due time: no warning, no breach while paused
    assert clock.fire_due(engine, now=berlin(2026, 12, 9, 12, 0)) == 0
    assert clock.fire_due(engine, now=berlin(2026, 12, 10, 9, 30)) == 0
    assert fired(engine) == []

    # open again Thursday 10:00: paused 6 h Monday + 8 h Wednesday + 1 h Thursday = 15
    # business hours; the 7 left count from Thursday 10:00
    status(engine, conv, "open", berlin(2026, 12, 10, 10, 0))
    row = sla(engine, conv)
    assert row.paused_at is None
    assert row.resolution_paused_seconds == 15 * 3600
    assert row.resolution_due == berlin(2026, 12, 10, 17, 0)
    assert row.next_due_at == berlin(2026, 12, 10, 17, 0)
    assert row.check_at == berlin(2026, 12, 10, 16, 45)
    assert clock.fire_due(engine, now=berlin(2026, 12, 10, 16, 40)) == 0
    assert clock.fire_due(engine, now=berlin(2026, 12, 10, 16, 50)) == 1
    assert clock.fire_due(engine, now=berlin(2026, 12, 10, 16, 55)) == 0
    assert clock.fire_due(engine, now=berlin(2026, 12, 10, 17, 1)) == 1
    assert clock.fire_due(engine, now=berlin(2026, 12, 11, 9, 0)) == 0
    assert fired(engine) == [("sla.warning", "resolution"), ("sla.breached", "resolution")]

    # pending again and back: the breach that fired stays fired, and does not fire again
    status(engine, conv, "pending", berlin(2026, 12, 11, 9, 0))
    status(engine, conv, "open", berlin(2026, 12, 11, 10, 0))
    row = sla(engine, conv)
    assert row.resolution_due == berlin(2026, 12, 10, 17, 0)  # past due at the pause: stays
    assert clock.fire_due(engine, now=berlin(2026, 12, 11, 12, 0)) == 0
    assert len(fired(engine)) == 2


def test_a_warning_before_the_pause_is_not_sent_again_and_the_breach_moves(
    engine: Engine,
) -> None:
    _, conv, _ = setup(engine)
    event(engine, EventKind.conversation_created, conv, berlin(2026, 12, 7, 10, 0))
    event(engine, EventKind.reply_sent, conv, berlin(2026, 12, 7, 10, 30))
    assert clock.fire_due(engine, now=berlin(2026, 12, 9, 9, 50)) == 1
    assert fired(engine) == [("sla.warning", "resolution")]
    status(engine, conv, "pending", berlin(2026, 12, 9, 9, 55))
    assert clock.fire_due(engine, now=berlin(2026, 12, 9, 11, 0)) == 0
    # Thursday 9:00: 7 h 05 paused on Wednesday; the 5 minutes left end Thursday 9:05
    status(engine, conv, "open", berlin(2026, 12, 10, 9, 0))
    row = sla(engine, conv)
    assert row.resolution_due == berlin(2026, 12, 10, 9, 5)
    assert row.resolution_warned and not row.resolution_breached
    assert row.check_at == berlin(2026, 12, 10, 9, 5)
    assert clock.fire_due(engine, now=berlin(2026, 12, 10, 9, 4)) == 0
    assert clock.fire_due(engine, now=berlin(2026, 12, 10, 9, 6)) == 1
    assert clock.fire_due(engine, now=berlin(2026, 12, 10, 9, 7)) == 0
    assert fired(engine) == [("sla.warning", "resolution"), ("sla.breached", "resolution")]


def test_closed_while_paused_counts_the_pause_and_a_reply_resumes_next_response(
    engine: Engine,
) -> None:
    _, conv, _ = setup(engine)
    _answered_then_pending(engine, conv)
    # closed Thursday 12:00, past the unpaused due time: 17 business hours paused, in time
    status(engine, conv, "closed", berlin(2026, 12, 10, 12, 0))
    row = sla(engine, conv)
    assert row.paused_at is None and row.resolution_met is True and not row.breached

    # reopened Friday 9:00 (a new resolution target), an agent's answer; the customer writes
    # at 10:00 (next response due 10:30); pending 10:10, the customer writes again at 11:00
    status(engine, conv, "open", berlin(2026, 12, 11, 9, 0))
    event(engine, EventKind.customer_replied, conv, berlin(2026, 12, 11, 10, 0))
    assert sla(engine, conv).next_response_due == berlin(2026, 12, 11, 10, 30)
    status(engine, conv, "pending", berlin(2026, 12, 11, 10, 10))
    row = sla(engine, conv)
    assert row.paused_at is not None and row.next_due_at is None
    assert clock.fire_due(engine, now=berlin(2026, 12, 11, 10, 45)) == 0
    # the customer's reply ends the wait on them: 50 minutes paused, due 11:20
    event(engine, EventKind.customer_replied, conv, berlin(2026, 12, 11, 11, 0))
    row = sla(engine, conv)
    assert row.paused_at is None
    assert row.next_response_paused_seconds == 50 * 60
    assert row.next_response_due == berlin(2026, 12, 11, 11, 20)
    assert row.next_due_at == berlin(2026, 12, 11, 11, 20)
    # answered: nothing paused is carried into the next target
    event(engine, EventKind.reply_sent, conv, berlin(2026, 12, 11, 11, 10))
    row = sla(engine, conv)
    assert row.next_response_due is None and row.next_response_paused_seconds == 0
    assert fired(engine) == []


def test_a_policy_that_does_not_pause_keeps_counting_and_switching_resumes(
    engine: Engine,
) -> None:
    _, conv, policy = setup(engine)
    with unit_of_work(engine) as s:
        assert policies.get(s, policy).pause_when_pending is True  # the default
        policies.update(s, policy, policies.PolicyInput(pause_when_pending=False))
    _answered_then_pending(engine, conv)
    row = sla(engine, conv)
    assert row.paused_at is None and row.next_due_at == berlin(2026, 12, 9, 10, 0)
    assert clock.fire_due(engine, now=berlin(2026, 12, 9, 10, 1)) == 1
    assert fired(engine) == [("sla.breached", "resolution")]

    # switched on: a pending conversation pauses now; off again: it runs again
    _, other, _ = _second(engine)
    _answered_then_pending(engine, other)
    assert sla(engine, other).paused_at is None
    with unit_of_work(engine) as s:
        s.get(Conversation, other).status = ConversationStatus.pending  # type: ignore[union-attr]
    with unit_of_work(engine) as s:
        policies.update(s, policy, policies.PolicyInput(pause_when_pending=True))
    row = sla(engine, other)
    assert row.paused_at is not None and row.next_due_at is None and row.check_at is None
    with unit_of_work(engine) as s:
        policies.update(s, policy, policies.PolicyInput(pause_when_pending=False))
    row = sla(engine, other)
    assert row.paused_at is None and row.next_due_at == row.resolution_due
    with pytest.raises(InvalidInput) as refused, unit_of_work(engine) as s:
        policies.update(s, policy, policies.PolicyInput(pause_when_pending="yes"))
    assert refused.value.details == {"field": "pause_when_pending"}


def _second(engine: Engine) -> tuple[int, int, int]:
    with unit_of_work(engine) as s:
        box = s.exec(select(Mailbox)).one()
        conv = f.conversation(s, box, "Another one")
        assert box.id and conv.id
        return box.id, conv.id, 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    calendar_strategy(),
    instants,
    st.integers(1, 60 * 24 * 10),
    st.integers(0, 60 * 24 * 20),
    st.integers(0, 60 * 24 * 20),
)
def test_a_pause_moves_the_due_time_by_the_business_time_paused(
    cal: Calendar, start: datetime, target: int, pause_after: int, pause_for: int
) -> None:
    """Whatever the calendar (holidays, time zones, changes of clock) and wherever the pause
    falls: the business time counted outside the pause is the target, the due time moves no
    earlier, and a pause outside business hours or after the due time moves nothing."""
    due = add_business_minutes(cal, start, target)
    since = start + timedelta(minutes=pause_after)
    until = since + timedelta(minutes=pause_for)
    spent = clock.paused_time(cal, start, due, since, until)
    moved = add_business_time(cal, start, timedelta(minutes=target) + spent)
    assert moved >= due
    if since >= due:
        assert spent == timedelta(0) and moved == due
        return
    counted = business_time_between(cal, start, moved) - business_time_between(cal, since, until)
    assert counted == timedelta(minutes=target)
    assert until <= moved
    if business_time_between(cal, since, until) == timedelta(0):
        assert moved == due
