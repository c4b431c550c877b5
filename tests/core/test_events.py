"""The domain event log: every change leaves its event in its own transaction, and a consumer
handles each event once (receipts, a floor that passes only settled events). Both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, update
from sqlmodel import col, select

from imapdesk.domain import events
from imapdesk.domain.conversations import operations as ops
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent, Event, EventReceipt, utcnow
from tests.core.test_operations import API, IMAP, WEB, Scene, agent, build, run


@pytest.fixture
def scene(engine: Engine) -> Scene:
    return build(engine)


def kinds(scene: Scene) -> list[str]:
    with scene.session() as s:
        return [e.kind for e in s.exec(select(Event).order_by(col(Event.id)))]


def test_each_change_leaves_its_event_with_who_made_it(scene: Scene) -> None:
    with unit_of_work(scene.engine) as s:
        ops.assign(s, scene.conv, agent(s, scene.bob), source=API, agent=agent(s, scene.alice))
    run(scene, lambda s: ops.set_status(s, scene.conv, "pending", source=IMAP))
    with unit_of_work(scene.engine) as s:
        ops.set_tags(
            s, scene.conv, ["vip", "two words", "billing"], source=WEB, agent=agent(s, scene.alice)
        )
    assert kinds(scene) == [
        "conversation.assigned",
        "conversation.status_changed",
        "conversation.tagged",
    ]
    with scene.session() as s:
        assigned, status, tagged = s.exec(select(Event).order_by(col(Event.id))).all()
        alice = s.get(Agent, scene.alice)
        assert alice is not None
        assert assigned.agent_id == scene.alice and assigned.conversation_id == scene.conv
        assert assigned.mailbox_id == scene.box
        assert assigned.payload["details"]["to"] == "bob@example.com"
        assert status.agent_id is None and status.payload["source"] == "imap"
        assert status.payload["details"]["to"] == "pending"
        assert tagged.payload["details"] == {"tags": ["billing"]}


def test_a_change_rolled_back_leaves_no_event(scene: Scene) -> None:
    try:
        with unit_of_work(scene.engine) as s:
            ops.set_status(s, scene.conv, "closed", source=WEB, agent=agent(s, scene.alice))
            raise RuntimeError("the request failed after the change")
    except RuntimeError:
        pass
    assert kinds(scene) == []


def test_a_consumer_handles_each_event_once_and_starts_at_the_end(scene: Scene) -> None:
    run(scene, lambda s: ops.set_status(s, scene.conv, "pending", source=IMAP))
    with unit_of_work(scene.engine) as s:
        # a consumer seen for the first time does not act on the past
        assert events.pending_events(s, "rules") == []
    run(scene, lambda s: ops.set_status(s, scene.conv, "closed", source=IMAP))
    run(scene, lambda s: ops.set_status(s, scene.conv, "open", source=IMAP))
    with unit_of_work(scene.engine) as s:
        first = events.pending_events(s, "rules", limit=1)
        assert [e.payload["details"]["to"] for e in first] == ["closed"]
        events.mark_handled(s, "rules", first)
    with unit_of_work(scene.engine) as s:
        rest = events.pending_events(s, "rules")
        assert [e.payload["details"]["to"] for e in rest] == ["open"]
        # another consumer keeps its own place
        assert events.pending_events(s, "webhooks") == []
    # what was handled but rolled back is handled again
    try:
        with unit_of_work(scene.engine) as s:
            events.mark_handled(s, "rules", events.pending_events(s, "rules"))
            raise RuntimeError("the consumer crashed before its commit")
    except RuntimeError:
        pass
    with unit_of_work(scene.engine) as s:
        again = events.pending_events(s, "rules")
        assert len(again) == 1
        events.mark_handled(s, "rules", again)
    with unit_of_work(scene.engine) as s:
        assert events.pending_events(s, "rules") == []


def test_the_floor_passes_only_settled_handled_events(scene: Scene) -> None:
    with unit_of_work(scene.engine) as s:
        events.pending_events(s, "rules")  # the consumer starts here
    for status in ("pending", "closed", "open"):
        run(scene, lambda s, status=status: ops.set_status(s, scene.conv, status, source=IMAP))
    with unit_of_work(scene.engine) as s:
        found = events.pending_events(s, "rules")
        events.mark_handled(s, "rules", found[:2])  # the last one is not handled yet
    with unit_of_work(scene.engine) as s:
        floor = events.advance_floor(s, "rules")
        # nothing is settled yet: the floor stays, the receipts say what is handled
        assert floor == (found[0].id or 0) - 1
    old = utcnow() - timedelta(seconds=events.SETTLED_SECONDS + 60)
    with unit_of_work(scene.engine) as s:
        s.exec(update(Event).values(created_at=old))  # type: ignore[call-overload]
    with unit_of_work(scene.engine) as s:
        # settled now: the floor passes the handled ones, stops below the unhandled one
        assert events.advance_floor(s, "rules") == found[1].id
        assert s.exec(select(EventReceipt)).all() == []
        assert [e.id for e in events.pending_events(s, "rules")] == [found[2].id]


def test_the_floor_passes_events_of_kinds_the_consumer_does_not_read(scene: Scene) -> None:
    reads = ["conversation.assigned"]
    with unit_of_work(scene.engine) as s:
        events.pending_events(s, "sla", kinds=reads)  # the consumer starts here
    run(scene, lambda s: ops.set_status(s, scene.conv, "pending", source=IMAP))
    with unit_of_work(scene.engine) as s:
        ops.assign(s, scene.conv, agent(s, scene.bob), source=API, agent=agent(s, scene.alice))
    run(scene, lambda s: ops.set_status(s, scene.conv, "open", source=IMAP))
    with unit_of_work(scene.engine) as s:
        (assigned,) = events.pending_events(s, "sla", kinds=reads)
        events.mark_handled(s, "sla", [assigned])
    old = utcnow() - timedelta(seconds=events.SETTLED_SECONDS + 60)
    with unit_of_work(scene.engine) as s:
        s.exec(update(Event).values(created_at=old))  # type: ignore[call-overload]
    with unit_of_work(scene.engine) as s:
        newest = max(e.id or 0 for e in s.exec(select(Event)))
        # without its kinds, the unhandled status changes hold the floor back
        assert events.advance_floor(s, "sla") == (assigned.id or 0) - 2
    with unit_of_work(scene.engine) as s:
        # they are of no kind it reads: the floor passes them
        assert events.advance_floor(s, "sla", kinds=reads) == newest
