"""The SLA clock (imapdesk/domain/sla/clock.py) on both databases: due times from the event log
on a business-hours calendar, attainment, a warning and a breach once each, the precedence of
policies (tag > team > mailbox)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.events import EventKind, record_event
from imapdesk.domain.sla import calendars, clock, policies
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    ConversationSla,
    ConversationTag,
    Event,
    SlaPolicy,
    Team,
    TeamMember,
)
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
        from imapdesk.kernel.models import Conversation

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
