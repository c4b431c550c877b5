"""The reports' figures (imapdesk/domain/reports/) on both databases, from conversations and
events with known times (tests/support/report_data.py): volume, median and p90 of first
response and resolution, SLA attainment, the breakdowns, buckets in the agent's timezone, a
rule's automatic reply that is no response, and what a restricted agent sees."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.domain import reports
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import Agent, AgentMailboxAccess
from tests.support import report_data as data

WEEK = {"start": "2026-12-07", "end": "2026-12-13"}


def agents(engine: Engine) -> tuple[int, int]:
    with unit_of_work(engine) as s:
        alice = Agent(
            email="alice@example.com",
            name="Alice Agent",
            handle="alice",
            is_admin=True,
            password_hash="x",
            timezone="Europe/Berlin",
        )
        bob = Agent(
            email="bob@example.com",
            name="Bob Builder",
            handle="bob",
            password_hash="x",
            timezone="Europe/Berlin",
        )
        s.add_all([alice, bob])
        s.flush()
        assert alice.id and bob.id
        return alice.id, bob.id


@pytest.fixture
def scenario(engine: Engine) -> tuple[data.Scenario, int, int]:
    alice, bob = agents(engine)
    return data.build(engine, alice, bob), alice, bob


def report(engine: Engine, agent_id: int, **kw: Any) -> reports.Report:
    with Session(engine) as s:
        agent = s.get(Agent, agent_id)
        assert agent is not None
        query = reports.make_query(s, agent, **kw)
        return reports.build_report(s, query)


def by_label(rep: reports.Report) -> dict[str, dict[str, Any]]:
    return {g.label: rep.total(g) for g in rep.groups}


def test_percentile_interpolates_between_ranks() -> None:
    assert reports.percentile([], 50) is None
    assert reports.percentile([7.0], 90) == 7.0
    assert reports.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert reports.percentile([1800, 3600, 7200, 14400], 90) == pytest.approx(12240)
    assert reports.percentile(list(range(1, 102)), 90) == 91


def test_volume_times_and_attainment_of_a_week(
    engine: Engine, scenario: tuple[data.Scenario, int, int]
) -> None:
    _, alice, _ = scenario
    rep = report(engine, alice, **WEEK, bucket="week")
    assert [b.isoformat() for b in rep.buckets] == ["2026-12-07"]
    total = rep.overall.summary()
    # A, B, C, D (E and F were created in November)
    assert total["created"] == 4
    # A, B twice, C, D
    assert total["customer_messages"] == 5
    # Bob on A, D, E, F; Alice on C; a mail client on B: not the rule's acknowledgement on A,
    # and each reply from imapdesk once (when sent, not when queued)
    assert total["replies"] == 6
    assert total["closed"] == 2
    # 30 min, 1 h (A: the acknowledgement a minute in is no response), 2 h, 4 h
    assert total["first_response_count"] == 4
    assert total["first_response_median_seconds"] == 90 * data.MINUTE
    assert total["first_response_p90_seconds"] == 204 * data.MINUTE
    # A 3 h, C 24 h
    assert total["resolution_count"] == 2
    assert total["resolution_median_seconds"] == round((3 + 24) / 2 * data.HOUR)
    assert total["resolution_p90_seconds"] == round((3 + 0.9 * 21) * data.HOUR)
    # first response: A met, C late, B breached and still not answered; resolution: A late, C met
    assert (total["sla_first_response_met"], total["sla_first_response_missed"]) == (1, 2)
    assert total["sla_first_response_percent"] == 33.3
    assert (total["sla_resolution_met"], total["sla_resolution_missed"]) == (1, 1)
    assert total["sla_resolution_percent"] == 50.0
    # one group, the same figures in the week's bucket
    assert [g.label for g in rep.groups] == ["All"]
    cell = rep.cell(rep.groups[0], rep.buckets[0])
    assert cell == total


def test_days_are_the_agents_days(engine: Engine, scenario: tuple[data.Scenario, int, int]) -> None:
    _, alice, _ = scenario
    rep = report(engine, alice, **WEEK, bucket="day")
    assert len(rep.buckets) == 7
    group = rep.groups[0]
    created = {b.day: rep.cell(group, b)["created"] for b in rep.buckets}
    # B came on Tuesday 00:30 in Berlin (still Monday in UTC)
    assert created == {7: 1, 8: 1, 9: 2, 10: 0, 11: 0, 12: 0, 13: 0}
    assert rep.cell(group, date(2026, 12, 10))["replies"] == 2
    assert rep.cell(group, date(2026, 12, 10))["resolution_median_seconds"] == 24 * data.HOUR

    # the same conversations for an agent in UTC
    with unit_of_work(engine) as s:
        agent = s.get(Agent, alice)
        assert agent is not None
        agent.timezone = None
    rep = report(engine, alice, **WEEK, bucket="day")
    created = {b.day: rep.cell(rep.groups[0], b)["created"] for b in rep.buckets}
    assert created == {7: 2, 8: 0, 9: 2, 10: 0, 11: 0, 12: 0, 13: 0}


def test_weeks_and_months(engine: Engine, scenario: tuple[data.Scenario, int, int]) -> None:
    _, alice, _ = scenario
    rep = report(engine, alice, start="2026-12-01", end="2026-12-13", bucket="week")
    # weeks start on Monday: 30 November holds 1 to 6 December
    assert [b.isoformat() for b in rep.buckets] == ["2026-11-30", "2026-12-07"]
    rep = report(engine, alice, start="2026-11-01", end="2026-12-31", bucket="month")
    assert [b.isoformat() for b in rep.buckets] == ["2026-11-01", "2026-12-01"]
    november = rep.cell(rep.groups[0], date(2026, 11, 1))
    # E (a customer's, answered in 2 h) and F (started by Bob: nobody waited for a response)
    assert november["created"] == 2
    assert november["first_response_count"] == 1
    assert november["first_response_median_seconds"] == 2 * data.HOUR
    december = rep.cell(rep.groups[0], date(2026, 12, 1))
    assert (december["created"], december["replies"]) == (4, 6)


def test_breakdown_by_agent(engine: Engine, scenario: tuple[data.Scenario, int, int]) -> None:
    _, alice, _ = scenario
    rep = report(engine, alice, **WEEK, bucket="week", breakdown="agent")
    figures = by_label(rep)
    assert list(figures) == ["Alice Agent", "Bob Builder", "(nobody)"]
    # replies and first responses: who wrote them; closes: who closed; created: the assignee
    assert [figures[k]["replies"] for k in figures] == [1, 4, 1]
    assert figures["Bob Builder"]["first_response_count"] == 2
    assert figures["Bob Builder"]["first_response_median_seconds"] == round(2.5 * data.HOUR)
    assert figures["(nobody)"]["first_response_median_seconds"] == 2 * data.HOUR
    assert [figures[k]["closed"] for k in figures] == [0, 1, 1]
    assert figures["(nobody)"]["resolution_median_seconds"] == 24 * data.HOUR
    assert [figures[k]["created"] for k in figures] == [1, 2, 1]
    # attainment by the assignee: A (Bob) met / missed; C (Alice) missed / met; B nobody's
    assert figures["Bob Builder"]["sla_first_response_percent"] == 100.0
    assert figures["Alice Agent"]["sla_first_response_percent"] == 0.0
    assert figures["(nobody)"]["sla_first_response_missed"] == 1


def test_breakdown_by_team_mailbox_and_tag(
    engine: Engine, scenario: tuple[data.Scenario, int, int]
) -> None:
    _, alice, _ = scenario
    team = by_label(report(engine, alice, **WEEK, bucket="week", breakdown="team"))
    # support's default team is Tier 1; C is in sales with Alice, who is in no team
    assert list(team) == ["Tier 1", "(no team)"]
    assert (team["Tier 1"]["created"], team["(no team)"]["created"]) == (3, 1)
    assert team["(no team)"]["first_response_median_seconds"] == 30 * data.MINUTE

    box = by_label(report(engine, alice, **WEEK, bucket="week", breakdown="mailbox"))
    assert list(box) == ["sales", "support"]
    assert (box["sales"]["created"], box["support"]["created"]) == (1, 3)
    assert box["support"]["replies"] == 5

    tag = by_label(report(engine, alice, **WEEK, bucket="week", breakdown="tag"))
    assert list(tag) == ["billing", "urgent", "(no tag)"]
    assert [tag[k]["created"] for k in tag] == [2, 1, 1]
    assert tag["billing"]["first_response_median_seconds"] == 45 * data.MINUTE
    assert tag["billing"]["resolution_count"] == 2
    assert [tag[k]["replies"] for k in tag] == [2, 1, 3]


def test_an_agent_sees_the_mailboxes_they_may_see(
    engine: Engine, scenario: tuple[data.Scenario, int, int]
) -> None:
    sc, alice, bob = scenario
    with unit_of_work(engine) as s:
        agent = s.get(Agent, bob)
        assert agent is not None
        agent.all_mailboxes = False
        s.add(AgentMailboxAccess(agent_id=bob, mailbox_id=sc.support))
    rep = report(engine, bob, **WEEK, bucket="week", breakdown="mailbox")
    assert [g.label for g in rep.groups] == ["support"]
    total = rep.overall.summary()
    assert (total["created"], total["first_response_count"]) == (3, 3)
    assert (total["sla_first_response_met"], total["sla_first_response_missed"]) == (1, 1)
    # a mailbox the agent may not see is as unknown as one that does not exist
    with pytest.raises(InvalidInput, match="no mailbox named 'sales'") as caught:
        report(engine, bob, **WEEK, mailbox="sales")
    assert caught.value.details["field"] == "mailbox"
    # one mailbox chosen
    rep = report(engine, alice, **WEEK, mailbox="sales")
    assert rep.overall.summary()["created"] == 1
    # a restricted agent without mailboxes sees nothing at all
    with unit_of_work(engine) as s:
        s.delete(s.get(AgentMailboxAccess, (bob, sc.support)))
    assert report(engine, bob, **WEEK).overall.summary()["created"] == 0


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"start": "2026-12-08", "end": "2026-12-07"}, "start"),
        ({"start": "2025-01-01", "end": "2026-12-07"}, "end"),
        ({"start": "7 December"}, "start"),
        ({"bucket": "year"}, "bucket"),
        ({"breakdown": "customer"}, "breakdown"),
        ({"mailbox": "nowhere"}, "mailbox"),
    ],
)
def test_bad_questions_name_their_field(engine: Engine, given: dict[str, str], field: str) -> None:
    alice, _ = agents(engine)
    with pytest.raises(InvalidInput) as caught:
        report(engine, alice, **given)
    assert caught.value.details["field"] == field


def test_the_range_defaults_to_the_last_30_days(engine: Engine) -> None:
    alice, _ = agents(engine)
    with Session(engine) as s:
        agent = s.get(Agent, alice)
        assert agent is not None
        query = reports.make_query(s, agent, today=date(2026, 12, 31))
    assert (query.start, query.end, query.bucket, query.breakdown) == (
        date(2026, 12, 2),
        date(2026, 12, 31),
        "day",
        "none",
    )
    assert query.zone_name == "Europe/Berlin"


def test_times_of_conversations_created_before_the_range(
    engine: Engine, scenario: tuple[data.Scenario, int, int]
) -> None:
    """Their earlier events are read too: C (created Wednesday, answered the same day) is
    resolved on Thursday, in the range; its first response is not."""
    _, alice, _ = scenario
    total = report(engine, alice, start="2026-12-10", end="2026-12-13").overall.summary()
    assert total["created"] == 0
    assert (total["replies"], total["closed"]) == (2, 1)
    assert total["first_response_count"] == 0
    assert total["resolution_count"] == 1
    assert total["resolution_median_seconds"] == 24 * data.HOUR
