"""Rules and teams in the domain, on both databases: conditions (text, regular expressions
that cannot stall, domains, tags, status, assignee, team, attachments; all or any), the order
and "stop here", no loops between rules, the mailbox's default team, round robin and least
busy among the available agents below capacity (fair under concurrent assignment), the dry
run that writes nothing, and what a rule may not say."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from imapdesk.domain.conversations import operations as ops
from imapdesk.domain.events import EventKind, record_event
from imapdesk.domain.rules import definitions
from imapdesk.domain.rules.conditions import Facts, all_hold, regex_matches
from imapdesk.domain.rules.engine import dry_run, run_events, run_time_rules
from imapdesk.domain.sla.business_hours import DAY_NAMES
from imapdesk.domain.teams.administration import save_team, set_availability
from imapdesk.domain.teams.assignment import next_agent
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    BusinessCalendar,
    Conversation,
    ConversationStatus,
    Direction,
    Event,
    Mailbox,
    Message,
    OutboundMail,
    PendingImapAction,
    RuleFiring,
    Team,
    as_utc,
    utcnow,
)
from imapdesk.kernel.settings import Settings
from tests.rules.scene import agents, rule, start_consumer, tags, team
from tests.support import factories
from tests.support.worker import make_settings


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path / "data")


def _mailbox(db: Session, mailbox_id: int) -> Mailbox:
    found = db.get(Mailbox, mailbox_id)
    assert found is not None
    return found


def _box(engine: Engine) -> int:
    with unit_of_work(engine) as db:
        box = factories.mailbox(db)
        assert box.id is not None
        return box.id


def _conversation(
    engine: Engine,
    mailbox_id: int,
    subject: str = "Order 42 is late",
    sender: str = "zoe@customer.example",
    text: str = "Where is my order?",
    **kw: Any,
) -> tuple[int, int]:
    """A conversation with the customer's message, and the event of its arrival."""
    with unit_of_work(engine) as db:
        box = _mailbox(db, mailbox_id)
        conv = factories.conversation(db, box, subject, customer_email=sender, **kw)
        msg = factories.message(
            db,
            conv,
            from_email=sender,
            text=text,
            direction=Direction.inbound,
            to=[{"email": "support@example.com", "name": "Support"}],
        )
        assert conv.id is not None and msg.id is not None
        record_event(
            db,
            EventKind.conversation_created,
            mailbox_id=mailbox_id,
            conversation_id=conv.id,
            message_id=msg.id,
            actor=sender,
        )
        return conv.id, msg.id


def _holds(engine: Engine, cid: int, conditions: list[dict[str, Any]], match: str = "all") -> bool:
    checked = definitions.check_rule(
        {
            "name": "x",
            "trigger": "conversation.created",
            "conditions": conditions,
            "actions": [{"type": "tag", "tag": "t"}],
            "match": match,
        }
    )
    with Session(engine) as db:
        conv = db.get(Conversation, cid)
        assert conv is not None
        return all_hold(Facts(db, conv, None), checked["conditions"], match)


def _run(engine: Engine, settings: Settings) -> int:
    with unit_of_work(engine) as db:
        return run_events(db, settings)


def test_conditions(engine: Engine) -> None:
    box = _box(engine)
    agents(engine, "alice", "bob")
    team(engine, "Billing", [1])
    cid, _ = _conversation(engine, box, tags=("vip",))
    assert _holds(engine, cid, [{"field": "subject", "op": "contains", "value": "ORDER"}])
    assert _holds(engine, cid, [{"field": "subject", "op": "matches", "value": r"order \d+"}])
    assert not _holds(engine, cid, [{"field": "subject", "op": "not_matches", "value": r"\d"}])
    assert _holds(engine, cid, [{"field": "from", "op": "contains", "value": "@customer.example"}])
    assert _holds(engine, cid, [{"field": "to", "op": "contains", "value": "support@"}])
    assert _holds(engine, cid, [{"field": "text", "op": "contains", "value": "my order"}])
    assert _holds(
        engine, cid, [{"field": "customer_domain", "op": "is", "value": "x.org, customer.example"}]
    )
    assert _holds(engine, cid, [{"field": "tag", "op": "has", "value": "VIP"}])
    assert _holds(engine, cid, [{"field": "status", "op": "is", "value": "open"}])
    assert _holds(engine, cid, [{"field": "assignee", "op": "is", "value": "none"}])
    assert _holds(engine, cid, [{"field": "mailbox", "op": "is", "value": "support"}])
    assert _holds(engine, cid, [{"field": "attachments", "op": "is", "value": False}])
    assert _holds(engine, cid, [{"field": "business_hours", "op": "is", "value": True}])
    assert not _holds(engine, cid, [{"field": "team", "op": "is", "value": "Billing"}])
    with unit_of_work(engine) as db:
        ops.assign(db, cid, db.get(Agent, 1), source=ActivitySource.system, actor="test")
    assert _holds(engine, cid, [{"field": "team", "op": "is", "value": "Billing"}])
    assert _holds(engine, cid, [{"field": "assignee", "op": "is", "value": "alice@example.com"}])
    both = [
        {"field": "subject", "op": "contains", "value": "refund"},
        {"field": "tag", "op": "has", "value": "vip"},
    ]
    assert not _holds(engine, cid, both, "all")
    assert _holds(engine, cid, both, "any")


def test_a_pattern_that_backtracks_gives_up_and_does_not_match() -> None:
    started = time.monotonic()
    assert not regex_matches(r"(a+)+$", "a" * 50_000 + "!")
    assert time.monotonic() - started < 2.0
    assert regex_matches(r"inv(oice)?\s*#?\d+", "Invoice #123")


def test_what_a_rule_may_not_say() -> None:
    base = {
        "name": "r",
        "trigger": "conversation.created",
        "actions": [{"type": "tag", "tag": "a"}],
    }
    bad = [
        {**base, "trigger": "whenever"},
        {**base, "conditions": [{"field": "subject", "op": "matches", "value": "(unclosed"}]},
        {**base, "conditions": [{"field": "subject", "op": "matches", "value": "a" * 501}]},
        {**base, "conditions": [{"field": "colour", "op": "is", "value": "red"}]},
        {**base, "actions": []},
        {**base, "actions": [{"type": "explode"}]},
        {**base, "actions": [{"type": "status", "status": "gone"}]},
        {**base, "trigger": "time.pending"},  # no amount
    ]
    for data in bad:
        with pytest.raises(InvalidInput):
            definitions.check_rule(data)


def test_rules_in_order_stop_here_and_no_loops(engine: Engine, settings: Settings) -> None:
    box = _box(engine)
    start_consumer(engine)
    rule(
        engine,
        name="First",
        trigger="conversation.created",
        actions=[{"type": "tag", "tag": "first"}],
    )
    rule(
        engine,
        name="Stopper",
        trigger="conversation.created",
        stop=True,
        conditions=[{"field": "subject", "op": "contains", "value": "urgent"}],
        actions=[{"type": "tag", "tag": "urgent"}],
    )
    rule(
        engine,
        name="Last",
        trigger="conversation.created",
        actions=[{"type": "tag", "tag": "last"}],
    )
    # a rule that reacts to tagging and tags: set off by agents, never by rules (no loop)
    rule(
        engine, name="Echo", trigger="conversation.tagged", actions=[{"type": "tag", "tag": "echo"}]
    )
    urgent, _ = _conversation(engine, box, "URGENT: broken")
    plain, _ = _conversation(engine, box, "A question")
    for _ in range(3):
        _run(engine, settings)
    assert tags(engine, urgent) == {"first", "urgent"}
    assert tags(engine, plain) == {"first", "last"}
    with unit_of_work(engine) as db:
        ops.add_tag(
            db, plain, "by-hand", source=ActivitySource.web, agent=db.get(Agent, 1) or _agent(db)
        )
    for _ in range(3):
        _run(engine, settings)
    assert tags(engine, plain) == {"first", "last", "by-hand", "echo"}
    with Session(engine) as db:
        echoes = db.exec(
            select(func.count()).select_from(Activity).where(col(Activity.actor) == "rule Echo")
        ).one()
        assert echoes == 1
        rule_events = db.exec(select(Event).where(col(Event.actor).startswith("rule "))).all()
        assert rule_events and all(e.conversation_id in (urgent, plain) for e in rule_events)


def _agent(db: Session) -> Agent:
    from imapdesk.domain.accounts.agents import create_agent

    agent = create_agent(db, "dora@example.com", "Dora", "correct horse battery")
    db.flush()
    return agent


def test_the_mailbox_default_team_gets_new_conversations(
    engine: Engine, settings: Settings
) -> None:
    box = _box(engine)
    people = agents(engine, "alice", "bob")
    team(engine, "Front", [people["alice"], people["bob"]], mailbox_ids=[box])
    start_consumer(engine)
    cids = [_conversation(engine, box, f"Question {n}")[0] for n in range(4)]
    _run(engine, settings)
    with Session(engine) as db:
        holders = [db.get(Conversation, c).assignee_id for c in cids]  # type: ignore[union-attr]
        actors = {
            a.actor for a in db.exec(select(Activity).where(col(Activity.action) == "assigned"))
        }
    assert holders == [people["alice"], people["bob"], people["alice"], people["bob"]]
    assert actors == {"team Front"}


def test_least_busy_availability_and_capacity(engine: Engine) -> None:
    box = _box(engine)
    people = agents(engine, "alice", "bob", "carol")
    tid = team(engine, "Ops", list(people.values()), strategy="least_busy")
    with unit_of_work(engine) as db:
        for n in range(2):
            conv = factories.conversation(db, _mailbox(db, box), f"Alice's {n}")
            conv.assignee_id = people["alice"]
        conv = factories.conversation(db, _mailbox(db, box), "Bob's")
        conv.assignee_id = people["bob"]
        set_availability(db, people["carol"], available=False)

    def chosen() -> str | None:
        with unit_of_work(engine) as db:
            found = next_agent(db, tid, box)
            return found.email if found else None

    assert chosen() == "bob@example.com"  # carol is away; bob holds fewer than alice
    with unit_of_work(engine) as db:
        set_availability(db, people["bob"], capacity=1, capacity_set=True)
    assert chosen() == "alice@example.com"  # bob is at capacity
    with unit_of_work(engine) as db:
        set_availability(db, people["alice"], capacity=2, capacity_set=True)
    assert chosen() is None  # nobody can take one now
    with unit_of_work(engine) as db:
        set_availability(db, people["carol"], available=True)
    assert chosen() == "carol@example.com"


def test_round_robin_is_fair_under_concurrent_assignment(engine: Engine) -> None:
    box = _box(engine)
    people = agents(engine, "alice", "bob", "carol")
    tid = team(engine, "Support", list(people.values()))
    with unit_of_work(engine) as db:
        cids = [factories.conversation(db, _mailbox(db, box), f"C{n}").id for n in range(30)]
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def assign(mine: list[int | None]) -> None:
        try:
            start.wait()
            for cid in mine:
                with unit_of_work(engine) as db:
                    agent = next_agent(db, tid, box)
                    assert agent is not None
                    ops.assign(db, cid or 0, agent, source=ActivitySource.system, actor="t")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=assign, args=(cids[n::6],)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    with Session(engine) as db:
        got = Counter(db.get(Conversation, c).assignee_id for c in cids)  # type: ignore[union-attr]
        assert sorted(got.values()) == [10, 10, 10], got
        assert db.get(Team, tid).last_agent_id in people.values()  # type: ignore[union-attr]


def test_the_dry_run_writes_nothing(engine: Engine) -> None:
    box = _box(engine)
    people = agents(engine, "alice")
    team(engine, "Solo", [people["alice"]])
    late, _ = _conversation(engine, box, "Order late")
    other, _ = _conversation(engine, box, "Hello")
    closed, _ = _conversation(engine, box, "Order closed", status=ConversationStatus.closed)
    rid = rule(
        engine,
        name="Orders",
        trigger="conversation.created",
        conditions=[
            {"field": "subject", "op": "contains", "value": "order"},
            {"field": "status", "op": "is", "value": "open"},
        ],
        actions=[{"type": "tag", "tag": "orders"}, {"type": "assign_team", "team": "Solo"}],
    )

    def counts(db: Session) -> tuple[int, ...]:
        return tuple(
            int(db.exec(select(func.count()).select_from(m)).one()) for m in (Activity, Event, Team)
        )

    with unit_of_work(engine) as db:
        before = counts(db)
        rows = dry_run(db, definitions.get_rule(db, rid))
    with Session(engine) as db:
        assert counts(db) == before
        assert db.get(Team, 1).last_agent_id is None  # type: ignore[union-attr]
    matched = {r.conversation_id: r for r in rows}
    assert set(matched) == {late, other, closed}
    assert matched[late].matched and not matched[other].matched and not matched[closed].matched
    assert matched[late].actions == [
        "tag 'orders'",
        "assign to team Solo's next agent (now: alice@example.com)",
    ]


def test_every_action_goes_through_the_operations_as_the_rule(
    engine: Engine, settings: Settings
) -> None:
    box = _box(engine)
    with unit_of_work(engine) as db:
        _mailbox(db, box).smtp_host = "smtp.example.com"
    people = agents(engine, "alice", "bob")
    start_consumer(engine)
    rule(
        engine,
        name="Everything",
        trigger="sla.warning",
        actions=[
            {"type": "assign", "agent": "bob@example.com"},
            {"type": "untag", "tag": "vip"},
            {"type": "tag", "tag": "late"},
            {"type": "note", "text": "The SLA is about to be breached."},
            {"type": "notify", "agent_ids": [people["alice"]], "assignee": True, "text": "hurry"},
            {"type": "webhook", "url": "https://hooks.example.com/sla"},
            {"type": "snooze", "hours": 2},
        ],
    )
    cid, _ = _conversation(engine, box, "Slow", tags=("vip",))
    with unit_of_work(engine) as db:
        record_event(db, EventKind.sla_warning, mailbox_id=box, conversation_id=cid, actor="sla")
    _run(engine, settings)
    _run(engine, settings)  # the rule's own events set off nothing
    with Session(engine) as db:
        conv = db.get(Conversation, cid)
        assert conv is not None
        assert conv.assignee_id == people["bob"] and conv.status == ConversationStatus.pending
        assert conv.snoozed_until is not None
        done = list(
            db.exec(
                select(Activity)
                .where(col(Activity.conversation_id) == cid, col(Activity.action) != "created")
                .order_by(col(Activity.id))
            )
        )
        assert {a.actor for a in done} == {"rule Everything"}
        assert {"assigned", "untagged", "tagged", "note", "status", "snoozed"} <= {
            a.action for a in done
        }
        note = db.exec(select(OutboundMail).where(col(OutboundMail.conversation_id) == cid)).one()
        assert note.kind == "note" and note.agent_id is None  # appended to Notes, sent to nobody
        notify = db.exec(select(Event).where(col(Event.kind) == "rule.notify")).one()
        assert notify.payload["agent_ids"] == [people["alice"], people["bob"]]
        assert notify.payload["text"] == "hurry" and notify.actor == "rule Everything"
        hook = db.exec(select(Event).where(col(Event.kind) == "rule.webhook")).one()
        assert hook.payload["url"] == "https://hooks.example.com/sla"
        assert hook.payload["trigger"] == "sla.warning" and hook.conversation_id == cid
        # the changes go to the mailbox like manual ones
        assert db.exec(select(PendingImapAction)).all()
    assert tags(engine, cid) == {"late"}


def test_no_reply_for_n_hours_fires_once(engine: Engine, settings: Settings) -> None:
    box = _box(engine)
    rid = rule(
        engine,
        name="Nudge",
        trigger="time.no_reply",
        trigger_amount=4,
        actions=[{"type": "tag", "tag": "waiting"}],
    )
    waiting, _ = _conversation(engine, box, "Still waiting")
    answered, _ = _conversation(engine, box, "Answered")
    now = utcnow()
    with unit_of_work(engine) as db:
        for cid in (waiting, answered):
            conv = db.get(Conversation, cid)
            assert conv is not None
            conv.last_message_at = now - timedelta(hours=5)
        for m in db.exec(
            select(Message).where(col(Message.conversation_id).in_([waiting, answered]))
        ):
            m.date = now - timedelta(hours=5)
        factories.message(
            db,
            db.get(Conversation, answered),  # type: ignore[arg-type]
            direction=Direction.outbound,
            date=now - timedelta(hours=5),
        )
    for _ in range(3):
        with unit_of_work(engine) as db:
            run_time_rules(db, settings)
    assert tags(engine, waiting) == {"waiting"}
    assert tags(engine, answered) == set()
    with Session(engine) as db:
        assert [f.conversation_id for f in db.exec(select(RuleFiring))] == [waiting]
        assert db.exec(select(RuleFiring)).one().rule_id == rid


def _notified(engine: Engine, cid: int) -> int:
    with Session(engine) as db:
        return int(
            db.exec(
                select(func.count())
                .select_from(Event)
                .where(col(Event.conversation_id) == cid, col(Event.kind) == "rule.notify")
            ).one()
        )


def _firings(engine: Engine, cid: int) -> list[tuple[int, datetime]]:
    with Session(engine) as db:
        return [
            (f.rule_id, as_utc(f.episode_at))
            for f in db.exec(
                select(RuleFiring)
                .where(col(RuleFiring.conversation_id) == cid)
                .order_by(col(RuleFiring.episode_at))
            )
        ]


def _time_rules(engine: Engine, settings: Settings, times: int = 3) -> None:
    for _ in range(times):
        with unit_of_work(engine) as db:
            run_time_rules(db, settings)


def test_no_reply_fires_again_once_for_a_new_wait(engine: Engine, settings: Settings) -> None:
    box = _box(engine)
    people = agents(engine, "alice")
    rid = rule(
        engine,
        name="Nudge",
        trigger="time.no_reply",
        trigger_amount=4,
        actions=[{"type": "notify", "agent_ids": [people["alice"]], "text": "waiting"}],
    )
    cid, _ = _conversation(engine, box, "Still waiting")
    now = utcnow()
    first_wait = now - timedelta(hours=9)
    with unit_of_work(engine) as db:
        conv = db.get(Conversation, cid)
        assert conv is not None
        conv.last_message_at = first_wait
        for m in db.exec(select(Message).where(col(Message.conversation_id) == cid)):
            m.date = first_wait
    _time_rules(engine, settings)
    assert _notified(engine, cid) == 1
    assert _firings(engine, cid) == [(rid, first_wait)]

    # answered, then the customer writes again: a new wait, due 4 hours later
    second_wait = now - timedelta(hours=5)
    with unit_of_work(engine) as db:
        conv = db.get(Conversation, cid)
        assert conv is not None
        factories.message(db, conv, direction=Direction.outbound, date=now - timedelta(hours=6))
        conv.last_message_at = now - timedelta(hours=6)
    _time_rules(engine, settings)
    assert _notified(engine, cid) == 1  # answered: nothing waits
    with unit_of_work(engine) as db:
        conv = db.get(Conversation, cid)
        assert conv is not None
        factories.message(db, conv, direction=Direction.inbound, date=second_wait)
        conv.last_message_at = second_wait
    _time_rules(engine, settings)
    assert _notified(engine, cid) == 2
    assert _firings(engine, cid) == [(rid, first_wait), (rid, second_wait)]
    # a wait not long enough yet does not fire
    with unit_of_work(engine) as db:
        conv = db.get(Conversation, cid)
        assert conv is not None
        factories.message(db, conv, direction=Direction.inbound, date=now - timedelta(hours=1))
        conv.last_message_at = now - timedelta(hours=1)
    _time_rules(engine, settings)
    assert _notified(engine, cid) == 2


def test_pending_fires_again_once_after_it_went_pending_anew(
    engine: Engine, settings: Settings
) -> None:
    box = _box(engine)
    people = agents(engine, "alice")
    rule(
        engine,
        name="Chase",
        trigger="time.pending",
        trigger_amount=2,
        actions=[{"type": "notify", "agent_ids": [people["alice"]], "text": "chase"}],
    )
    cid, _ = _conversation(engine, box, "Waiting on them", status=ConversationStatus.pending)
    now = utcnow()
    with unit_of_work(engine) as db:
        conv = db.get(Conversation, cid)
        assert conv is not None
        conv.created_at = now - timedelta(days=6)
    _time_rules(engine, settings)
    assert _notified(engine, cid) == 1
    # a firing from before episodes were kept (its `fired_at` as its episode) still counts
    # for the episode it fired in
    with unit_of_work(engine) as db:
        firing = db.exec(select(RuleFiring)).one()
        firing.episode_at = now - timedelta(days=5)
    _time_rules(engine, settings)
    assert _notified(engine, cid) == 1

    # open, and pending again 3 days ago: a new episode, fired once
    with unit_of_work(engine) as db:
        for days, to in ((4, "open"), (3, "pending")):
            db.add(
                Activity(
                    conversation_id=cid,
                    source=ActivitySource.web,
                    action="status",
                    details={"to": to},
                    created_at=now - timedelta(days=days),
                )
            )
    _time_rules(engine, settings)
    assert _notified(engine, cid) == 2
    assert len(_firings(engine, cid)) == 2
    assert _firings(engine, cid)[-1][1] == now - timedelta(days=3)


def test_a_team_with_a_calendar_assigns_only_within_its_hours(engine: Engine) -> None:
    box = _box(engine)
    people = agents(engine, "alice")
    today = utcnow().date().isoformat()
    with unit_of_work(engine) as db:
        every_day = {d: [["00:00", "24:00"]] for d in DAY_NAMES}
        closed = BusinessCalendar(name="Closed today", hours=every_day, holidays=[today])
        open_ = BusinessCalendar(name="Open", hours=every_day)
        db.add_all([closed, open_])
        db.flush()
        closed_id, open_id = closed.id, open_.id
    tid = team(engine, "Day shift", [people["alice"]], calendar_id=closed_id, calendar_set=True)
    with unit_of_work(engine) as db:
        assert next_agent(db, tid, box) is None  # a holiday: nobody gets anything
        save_team(db, team_id=tid, calendar_id=open_id, calendar_set=True)
    with unit_of_work(engine) as db:
        found = next_agent(db, tid, box)
        assert found is not None and found.id == people["alice"]
