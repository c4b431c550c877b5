"""Domain operations: each writes exactly its state, one activity row and its outbox rows (none
when the change was read back from the mailbox); claims race safely. SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.conversations import operations as ops
from imapdesk.domain.conversations import reads, snooze
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    Conversation,
    ConversationStatus,
    ConversationTag,
    Direction,
    FolderRole,
    Mailbox,
    Message,
    PendingImapAction,
    utcnow,
)
from tests.support import factories as f

API = ActivitySource.api
WEB = ActivitySource.web
IMAP = ActivitySource.imap
KEYWORDS = {"permanent_flags": ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\*"]}
NO_KEYWORDS = {"permanent_flags": ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen"]}


@dataclass
class Scene:
    engine: Engine
    alice: int  # an agent
    bob: int  # an agent
    carol: int  # an admin
    box: int
    conv: int
    # the conversation's messages: two inbound (older, newer) and our reply
    m_old: int
    m_new: int
    m_out: int

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)


def build(engine: Engine, capabilities: dict[str, Any] | None = None) -> Scene:
    with unit_of_work(engine) as s:
        alice = create_agent(s, "alice@example.com", "Alice", "pw")
        bob = create_agent(s, "bob@example.com", "Bob", "pw")
        carol = create_agent(s, "carol@example.com", "Carol", "pw", is_admin=True)
        box = f.mailbox(s, capabilities=KEYWORDS if capabilities is None else capabilities)
        inbox = f.folder(s, box, "INBOX", watched=True)
        sent = f.folder(s, box, "Sent", role=FolderRole.sent, watched=True)
        conv = f.conversation(s, box, "Printer on fire", tags=("vip", "two words"))
        m_old = f.message(s, conv, minutes=0)
        m_new = f.message(s, conv, minutes=10)
        m_out = f.message(s, conv, minutes=20, direction=Direction.outbound, seen=True)
        # a stale assignee keyword some client left behind
        f.location(s, m_old, inbox, 1, ["$Assigned_zed", "vip"])
        f.location(s, m_new, inbox, 2, [])
        f.location(s, m_out, sent, 1, ["\\Seen"])
        ids = [alice.id, bob.id, carol.id, box.id, conv.id, m_old.id, m_new.id, m_out.id]
    return Scene(engine, *[int(i or 0) for i in ids])


@pytest.fixture
def scene(engine: Engine) -> Scene:
    return build(engine)


def agent(s: Session, agent_id: int) -> Agent:
    found = s.get(Agent, agent_id)
    assert found is not None
    return found


def conversation(s: Session, cid: int) -> Conversation:
    found = s.get(Conversation, cid)
    assert found is not None
    return found


def activities(s: Session) -> list[Activity]:
    return list(s.exec(select(Activity).order_by(col(Activity.id))))


def outbox(s: Session) -> list[PendingImapAction]:
    return list(s.exec(select(PendingImapAction).order_by(col(PendingImapAction.id))))


def tags(s: Session, cid: int) -> set[str]:
    return set(s.exec(select(ConversationTag.tag).where(ConversationTag.conversation_id == cid)))


def run(scene: Scene, op: Callable[[Session], Any]) -> None:
    with unit_of_work(scene.engine) as s:
        op(s)


def do(
    scene: Scene,
    op: Callable[..., Conversation],
    *args: Any,
    source: ActivitySource,
    by: int | None = None,
    **kw: Any,
) -> None:
    """`op` on the scene's conversation in a unit of work, made by the agent `by`."""
    with unit_of_work(scene.engine) as s:
        if by is not None:
            kw["agent"] = agent(s, by)
        op(s, scene.conv, *args, source=source, **kw)


def assert_nothing_written(scene: Scene, version: int = 1) -> None:
    with scene.session() as s:
        assert activities(s) == []
        assert outbox(s) == []
        assert conversation(s, scene.conv).version == version


def one_change(
    scene: Scene, *, source: ActivitySource, action: str, details: dict[str, Any], version: int = 2
) -> Activity:
    """The one activity written, checked against what is expected."""
    with scene.session() as s:
        rows = activities(s)
        assert len(rows) == 1, [(a.action, a.details) for a in rows]
        activity = rows[0]
        assert activity.conversation_id == scene.conv
        assert activity.source == source
        assert activity.action == action
        assert activity.details == details
        assert conversation(s, scene.conv).version == version
        return activity


def flags_rows(scene: Scene) -> list[tuple[str, dict[str, Any], int | None]]:
    with scene.session() as s:
        rows = outbox(s)
        for row in rows:
            assert row.mailbox_id == scene.box
            assert row.conversation_id == scene.conv
            assert row.activity_id is not None
            assert row.state == "pending" and row.attempts == 0
        return [(r.kind, r.payload, r.message_id) for r in rows]


# --- claim ------------------------------------------------------------------------------------


def test_claim(scene: Scene) -> None:
    with scene.session() as s:
        before = conversation(s, scene.conv).updated_at
    run(scene, lambda s: ops.claim(s, scene.conv, agent(s, scene.alice), source=API))
    with scene.session() as s:
        c = conversation(s, scene.conv)
        assert (c.assignee_id, c.claimed) == (scene.alice, True)
        assert c.updated_at > before
    activity = one_change(
        scene, source=API, action="claimed", details={"assignee": "alice@example.com"}
    )
    assert (activity.agent_id, activity.actor) == (scene.alice, "alice@example.com")
    assert flags_rows(scene) == [
        ("flags", {"add": ["\\Flagged", "$Assigned_alice"], "remove": ["$Assigned_zed"]}, None)
    ]
    with scene.session() as s:
        assert outbox(s)[0].activity_id == activity.id

    # claiming one's own again: success, nothing written
    run(scene, lambda s: ops.claim(s, scene.conv, agent(s, scene.alice), source=WEB))
    one_change(scene, source=API, action="claimed", details={"assignee": "alice@example.com"})


def test_claim_held_by_someone_else_conflicts(scene: Scene) -> None:
    run(scene, lambda s: ops.claim(s, scene.conv, agent(s, scene.alice), source=API))
    with pytest.raises(Conflict) as err:
        run(scene, lambda s: ops.claim(s, scene.conv, agent(s, scene.bob), source=API))
    assert err.value.details["holder"] == "alice@example.com"
    assert err.value.status_code == 409
    with scene.session() as s:
        assert conversation(s, scene.conv).assignee_id == scene.alice
        assert len(activities(s)) == 1 and len(outbox(s)) == 1


def test_claim_held_by_a_mail_client_conflicts(scene: Scene) -> None:
    run(scene, lambda s: ops.claim(s, scene.conv, None, source=IMAP, actor="a mail client"))
    with pytest.raises(Conflict) as err:
        run(scene, lambda s: ops.claim(s, scene.conv, agent(s, scene.bob), source=API))
    assert err.value.details["holder"] == "someone via mail client"


def test_claim_of_an_assigned_but_unclaimed_conversation(scene: Scene) -> None:
    with unit_of_work(scene.engine) as s:
        conversation(s, scene.conv).assignee_id = scene.bob
    with pytest.raises(Conflict) as err:
        run(scene, lambda s: ops.claim(s, scene.conv, agent(s, scene.alice), source=API))
    assert err.value.details["holder"] == "bob@example.com"
    # bob's own: he claims it
    run(scene, lambda s: ops.claim(s, scene.conv, agent(s, scene.bob), source=API))
    one_change(scene, source=API, action="claimed", details={"assignee": "bob@example.com"})


def test_claim_without_keywords_writes_only_the_flag(engine: Engine) -> None:
    scene = build(engine, NO_KEYWORDS)
    run(scene, lambda s: ops.claim(s, scene.conv, agent(s, scene.alice), source=API))
    assert flags_rows(scene) == [("flags", {"add": ["\\Flagged"], "remove": []}, None)]


def test_claim_from_a_mail_client(scene: Scene) -> None:
    run(scene, lambda s: ops.claim(s, scene.conv, None, source=IMAP, actor="a mail client"))
    with scene.session() as s:
        c = conversation(s, scene.conv)
        assert (c.assignee_id, c.claimed) == (None, True)
    activity = one_change(
        scene, source=IMAP, action="claimed", details={"holder": "someone via mail client"}
    )
    assert (activity.agent_id, activity.actor) == (None, "a mail client")
    assert flags_rows(scene) == []
    # flagged again: nothing new
    run(scene, lambda s: ops.claim(s, scene.conv, None, source=IMAP))
    one_change(scene, source=IMAP, action="claimed", details={"holder": "someone via mail client"})


def test_claim_needs_an_agent_unless_from_the_mailbox(scene: Scene) -> None:
    with pytest.raises(ValueError):
        run(scene, lambda s: ops.claim(s, scene.conv, None, source=API))
    with pytest.raises(ValueError):
        run(scene, lambda s: ops.set_status(s, scene.conv, "closed", source=WEB))
    assert_nothing_written(scene)


def test_unknown_conversation(scene: Scene) -> None:
    with pytest.raises(NotFound):
        run(scene, lambda s: ops.claim(s, 999_999, agent(s, scene.alice), source=API))
    with pytest.raises(NotFound):
        run(scene, lambda s: ops.set_status(s, 999_999, "closed", source=IMAP))


# --- two simultaneous claims ------------------------------------------------------------------


def _race(engine: Engine, cid: int, agent_ids: list[int], *, read_first: bool) -> list[str]:
    """Each agent claims in its own thread, session and transaction, started together."""
    barrier = threading.Barrier(len(agent_ids))
    outcome: dict[int, str] = {}

    def attempt(agent_id: int) -> None:
        try:
            if not read_first:
                barrier.wait(timeout=30)
            with unit_of_work(engine) as s:
                who = agent(s, agent_id)
                target = conversation(s, cid)
                if read_first:
                    # both have read the conversation free before either writes
                    barrier.wait(timeout=30)
                ops.claim(s, target, who, source=API)
            outcome[agent_id] = "won"
        except Conflict as exc:
            outcome[agent_id] = f"lost to {exc.details['holder']}"
        except Exception as exc:  # anything else fails the test below
            outcome[agent_id] = f"error {exc!r}"

    threads = [threading.Thread(target=attempt, args=(a,)) for a in agent_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return [outcome.get(a, "hung") for a in agent_ids]


def test_two_simultaneous_claims_exactly_one_wins(engine: Engine) -> None:
    _claim_races(engine, read_first=False)


# SQLite writers hold the write lock from BEGIN: no read can come first there
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_claims_that_read_first_exactly_one_wins(engine: Engine) -> None:
    _claim_races(engine, read_first=True)


def _claim_races(engine: Engine, *, read_first: bool) -> None:
    rounds = 20
    with unit_of_work(engine) as s:
        alice = create_agent(s, "alice@example.com", "Alice", "pw")
        bob = create_agent(s, "bob@example.com", "Bob", "pw")
        box = f.mailbox(s, capabilities=KEYWORDS)
        cids = [f.conversation(s, box, f"race {i}").id for i in range(rounds)]
        emails = {alice.id: alice.email, bob.id: bob.email}
    agent_ids = [int(alice.id or 0), int(bob.id or 0)]
    winners = set()
    for cid in cids:
        assert cid is not None
        results = _race(engine, cid, agent_ids, read_first=read_first)
        assert sorted(r == "won" for r in results) == [False, True], results
        winner = agent_ids[results.index("won")]
        loser_result = results[1 - results.index("won")]
        assert loser_result == f"lost to {emails[winner]}"
        winners.add(winner)
        with Session(engine) as s:
            c = conversation(s, cid)
            assert (c.assignee_id, c.claimed, c.version) == (winner, True, 2)
            acts = list(s.exec(select(Activity).where(Activity.conversation_id == cid)))
            assert [(a.action, a.agent_id) for a in acts] == [("claimed", winner)]
            rows = list(
                s.exec(select(PendingImapAction).where(PendingImapAction.conversation_id == cid))
            )
            assert len(rows) == 1 and rows[0].activity_id == acts[0].id


# --- release ----------------------------------------------------------------------------------


def test_release_by_the_holder(scene: Scene) -> None:
    run(scene, lambda s: ops.claim(s, scene.conv, agent(s, scene.alice), source=API))
    run(scene, lambda s: ops.release(s, scene.conv, source=API, agent=agent(s, scene.alice)))
    with scene.session() as s:
        c = conversation(s, scene.conv)
        assert (c.assignee_id, c.claimed, c.version) == (None, False, 3)
        acts = activities(s)
        assert [(a.action, a.details) for a in acts] == [
            ("claimed", {"assignee": "alice@example.com"}),
            ("released", {"from": "alice@example.com"}),
        ]
    assert flags_rows(scene)[1] == (
        "flags",
        {"add": [], "remove": ["\\Flagged", "$Assigned_alice", "$Assigned_zed"]},
        None,
    )


def test_release_by_someone_else_is_forbidden_unless_admin(scene: Scene) -> None:
    run(scene, lambda s: ops.claim(s, scene.conv, agent(s, scene.alice), source=API))
    with pytest.raises(Forbidden) as err:
        run(scene, lambda s: ops.release(s, scene.conv, source=WEB, agent=agent(s, scene.bob)))
    assert err.value.details["holder"] == "alice@example.com"
    assert err.value.status_code == 403
    run(scene, lambda s: ops.release(s, scene.conv, source=WEB, agent=agent(s, scene.carol)))
    with scene.session() as s:
        assert not conversation(s, scene.conv).claimed
        last = activities(s)[-1]
        assert (last.action, last.agent_id, last.source) == ("released", scene.carol, WEB)


def test_release_of_a_mail_client_claim(scene: Scene) -> None:
    run(scene, lambda s: ops.claim(s, scene.conv, None, source=IMAP))
    with pytest.raises(Forbidden) as err:
        run(scene, lambda s: ops.release(s, scene.conv, source=API, agent=agent(s, scene.bob)))
    assert err.value.details["holder"] == "someone via mail client"
    run(scene, lambda s: ops.release(s, scene.conv, source=API, agent=agent(s, scene.carol)))
    with scene.session() as s:
        assert activities(s)[-1].details == {"from": "someone via mail client"}


def test_release_of_nothing_is_a_no_op(scene: Scene) -> None:
    run(scene, lambda s: ops.release(s, scene.conv, source=API, agent=agent(s, scene.bob)))
    assert_nothing_written(scene)


def test_release_from_a_mail_client(scene: Scene) -> None:
    run(scene, lambda s: ops.claim(s, scene.conv, agent(s, scene.alice), source=API))
    run(scene, lambda s: ops.release(s, scene.conv, source=IMAP, actor="a mail client"))
    with scene.session() as s:
        c = conversation(s, scene.conv)
        assert (c.assignee_id, c.claimed) == (None, False)
        last = activities(s)[-1]
        assert (last.source, last.actor, last.agent_id) == (IMAP, "a mail client", None)
        # nothing echoed; only the tidy-up of the `$Assigned_` keyword on the messages, which
        # names no holder any more
        claim, tidy = outbox(s)
        assert claim.payload["add"] == ["\\Flagged", "$Assigned_alice"]
        assert (tidy.kind, tidy.payload) == ("flags", {"add": [], "remove": ["$Assigned_zed"]})


# --- assign -----------------------------------------------------------------------------------


def test_assign_reassign_unassign(scene: Scene) -> None:
    with unit_of_work(scene.engine) as s:
        ops.assign(s, scene.conv, agent(s, scene.bob), source=API, agent=agent(s, scene.alice))
    with scene.session() as s:
        c = conversation(s, scene.conv)
        assert (c.assignee_id, c.claimed, c.version) == (scene.bob, True, 2)
    activity = one_change(
        scene,
        source=API,
        action="assigned",
        details={"from": None, "to": "bob@example.com", "handle": "bob"},
    )
    assert activity.agent_id == scene.alice
    assert flags_rows(scene) == [
        ("flags", {"add": ["\\Flagged", "$Assigned_bob"], "remove": ["$Assigned_zed"]}, None)
    ]

    # to the same agent again: nothing
    run(scene, lambda s: ops.assign(s, scene.conv, "bob", source=API, agent=agent(s, scene.alice)))
    assert len(flags_rows(scene)) == 1

    # by handle, to someone else: overrides whoever held it
    run(scene, lambda s: ops.assign(s, scene.conv, "Alice", source=WEB, agent=agent(s, scene.bob)))
    with scene.session() as s:
        assert conversation(s, scene.conv).assignee_id == scene.alice
        assert activities(s)[-1].details == {
            "from": "bob@example.com",
            "to": "alice@example.com",
            "handle": "alice",
        }
    assert flags_rows(scene)[-1] == (
        "flags",
        {"add": ["\\Flagged", "$Assigned_alice"], "remove": ["$Assigned_bob", "$Assigned_zed"]},
        None,
    )

    run(scene, lambda s: ops.assign(s, scene.conv, None, source=API, agent=agent(s, scene.bob)))
    with scene.session() as s:
        c = conversation(s, scene.conv)
        assert (c.assignee_id, c.claimed, c.version) == (None, False, 4)
        last = activities(s)[-1]
        assert (last.action, last.details) == ("unassigned", {"from": "alice@example.com"})
    assert flags_rows(scene)[-1] == (
        "flags",
        {"add": [], "remove": ["\\Flagged", "$Assigned_alice", "$Assigned_zed"]},
        None,
    )
    # unassigning what nobody holds: nothing
    run(scene, lambda s: ops.assign(s, scene.conv, None, source=API, agent=agent(s, scene.bob)))
    assert len(flags_rows(scene)) == 3


def test_assign_refuses_unknown_and_deactivated_agents(scene: Scene) -> None:
    with pytest.raises(InvalidInput) as err:
        do(scene, ops.assign, "nobody", source=API, by=scene.alice)
    assert err.value.details["field"] == "assignee"
    with pytest.raises(InvalidInput):
        do(scene, ops.assign, "not a handle", source=API, by=scene.alice)
    with unit_of_work(scene.engine) as s:
        agent(s, scene.bob).is_active = False
    with pytest.raises(InvalidInput) as err:
        do(scene, ops.assign, "bob", source=API, by=scene.alice)
    assert "deactivated" in err.value.message
    assert_nothing_written(scene)


def test_assign_from_a_mail_client(scene: Scene) -> None:
    run(scene, lambda s: ops.assign(s, scene.conv, "bob", source=IMAP, actor="a mail client"))
    with scene.session() as s:
        c = conversation(s, scene.conv)
        assert (c.assignee_id, c.claimed) == (scene.bob, True)
    one_change(
        scene,
        source=IMAP,
        action="assigned",
        details={"from": None, "to": "bob@example.com", "handle": "bob"},
    )
    assert flags_rows(scene) == []
    # the keyword removed: the assignee goes, the flag (the claim) stays
    run(scene, lambda s: ops.assign(s, scene.conv, None, source=IMAP))
    with scene.session() as s:
        c = conversation(s, scene.conv)
        assert (c.assignee_id, c.claimed) == (None, True)
        assert activities(s)[-1].details == {"from": "bob@example.com"}
        assert outbox(s) == []


def test_assign_an_unknown_handle_from_a_mail_client(scene: Scene) -> None:
    run(scene, lambda s: ops.assign(s, scene.conv, "zed", source=IMAP))
    with scene.session() as s:
        c = conversation(s, scene.conv)
        assert (c.assignee_id, c.claimed) == (None, True)
        assert ops.unknown_assignee_handle(s, c) == "zed"
    one_change(
        scene, source=IMAP, action="assigned", details={"from": None, "to": None, "handle": "zed"}
    )
    # seen again: nothing new
    run(scene, lambda s: ops.assign(s, scene.conv, "zed", source=IMAP))
    one_change(
        scene, source=IMAP, action="assigned", details={"from": None, "to": None, "handle": "zed"}
    )
    # the holder of an unknown handle is "someone via mail client" for the helpdesk
    with pytest.raises(Conflict) as err:
        run(scene, lambda s: ops.claim(s, scene.conv, agent(s, scene.alice), source=API))
    assert err.value.details["holder"] == "someone via mail client"
    # an agent assigned over it
    do(scene, ops.assign, "alice", source=API, by=scene.carol)
    with scene.session() as s:
        last = activities(s)[-1]
        assert last.details == {"from": "zed", "to": "alice@example.com", "handle": "alice"}
        assert ops.unknown_assignee_handle(s, conversation(s, scene.conv)) is None
    assert flags_rows(scene) == [
        ("flags", {"add": ["\\Flagged", "$Assigned_alice"], "remove": ["$Assigned_zed"]}, None)
    ]


# --- status -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "role"),
    [
        ("pending", "pending"),
        ("closed", "archive"),
        ("spam", "junk"),
        ("deleted", "trash"),
    ],
)
def test_set_status(scene: Scene, status: str, role: str) -> None:
    do(scene, ops.set_status, status, source=API, by=scene.alice)
    with scene.session() as s:
        assert conversation(s, scene.conv).status == status
    one_change(scene, source=API, action="status", details={"from": "open", "to": status})
    assert flags_rows(scene) == [("move", {"role": role}, None)]
    # and back to open: into the inbox
    do(scene, ops.set_status, ConversationStatus.open, source=WEB, by=scene.bob)
    assert flags_rows(scene)[-1] == ("move", {"role": "inbox"}, None)


def test_set_status_unchanged_or_invalid(scene: Scene) -> None:
    do(scene, ops.set_status, "open", source=API, by=scene.alice)
    with pytest.raises(InvalidInput) as err:
        do(scene, ops.set_status, "done", source=API, by=scene.alice)
    assert err.value.details["field"] == "status"
    assert_nothing_written(scene)


def test_set_status_from_a_mail_client(scene: Scene) -> None:
    do(scene, ops.set_status, "closed", source=IMAP, actor="a mail client")
    one_change(scene, source=IMAP, action="status", details={"from": "open", "to": "closed"})
    assert flags_rows(scene) == []


def snoozed(scene: Scene) -> None:
    """The scene's conversation snoozed by Alice for four hours, its log and outbox emptied."""
    with unit_of_work(scene.engine) as s:
        snooze.snooze(
            s, scene.conv, utcnow() + timedelta(hours=4), source=WEB, agent=agent(s, scene.alice)
        )
    with unit_of_work(scene.engine) as s:
        for row in [*activities(s), *outbox(s)]:
            s.delete(row)


@pytest.mark.parametrize(
    ("source", "by", "status"),
    [
        (API, "alice", "closed"),
        (WEB, "bob", "open"),
        (IMAP, None, "closed"),
        (ActivitySource.system, None, "spam"),
    ],
)
def test_a_change_of_status_ends_the_snooze(
    scene: Scene, source: ActivitySource, by: str | None, status: str
) -> None:
    snoozed(scene)
    agent_id = getattr(scene, by) if by else None
    do(scene, ops.set_status, status, source=source, by=agent_id)
    with scene.session() as s:
        c = conversation(s, scene.conv)
        assert (c.status, c.snoozed_until) == (status, None)
        assert [(a.action, a.source) for a in activities(s)] == [
            ("status", source),
            ("unsnoozed", source),
        ]
        # one change: the version moves once
        assert c.version == 4
    # the time of the snooze passes: nothing reopens it
    with unit_of_work(scene.engine) as s:
        assert snooze.wake_due(s, now=utcnow() + timedelta(hours=5)) == []
    with scene.session() as s:
        assert conversation(s, scene.conv).status == status


def test_a_snooze_ended_by_a_close_never_wakes_the_conversation_later(scene: Scene) -> None:
    """Closed from the API, then set pending by hand (waiting for the customer): the snooze's
    time passing leaves it pending; a snooze left behind by the close would reopen it."""
    snoozed(scene)
    do(scene, ops.set_status, "closed", source=API, by=scene.alice)
    do(scene, ops.set_status, "pending", source=API, by=scene.alice)
    with unit_of_work(scene.engine) as s:
        assert snooze.wake_due(s, now=utcnow() + timedelta(hours=5)) == []
    with scene.session() as s:
        c = conversation(s, scene.conv)
        assert (c.status, c.snoozed_until) == ("pending", None)


def test_setting_the_status_it_has_keeps_the_snooze(scene: Scene) -> None:
    snoozed(scene)
    do(scene, ops.set_status, "pending", source=IMAP)
    with scene.session() as s:
        assert conversation(s, scene.conv).snoozed_until is not None
        assert activities(s) == []


def test_end_snooze(scene: Scene) -> None:
    snoozed(scene)
    do(scene, ops.end_snooze, source=WEB, by=scene.bob)
    with scene.session() as s:
        c = conversation(s, scene.conv)
        assert (c.status, c.snoozed_until) == ("pending", None)
        assert [(a.action, a.agent_id) for a in activities(s)] == [("unsnoozed", scene.bob)]
        assert outbox(s) == []
    # ending no snooze is a no-op
    do(scene, ops.end_snooze, source=WEB, by=scene.bob)
    with scene.session() as s:
        assert len(activities(s)) == 1


# --- tags -------------------------------------------------------------------------------------


def test_set_tags(scene: Scene) -> None:
    do(scene, ops.set_tags, [" urgent ", "To Do", "a b", "vip"], source=API, by=scene.alice)
    with scene.session() as s:
        assert tags(s, scene.conv) == {"urgent", "To Do", "a b", "vip"}
        acts = activities(s)
        assert [(a.action, a.details) for a in acts] == [
            ("tagged", {"tags": ["To Do", "a b", "urgent"]}),
            ("untagged", {"tags": ["two words"]}),
        ]
        assert conversation(s, scene.conv).version == 3
        assert outbox(s)[0].activity_id == acts[0].id
    # "a b" and "two words" cannot be keywords: database only
    assert flags_rows(scene) == [("flags", {"add": ["$label4", "urgent"], "remove": []}, None)]

    # the same set again: nothing
    do(scene, ops.set_tags, ["urgent", "To Do", "a b", "vip"], source=API, by=scene.alice)
    with scene.session() as s:
        assert len(activities(s)) == 2 and len(outbox(s)) == 1

    run(scene, lambda s: ops.set_tags(s, scene.conv, [], source=API, agent=agent(s, scene.alice)))
    with scene.session() as s:
        assert tags(s, scene.conv) == set()
        assert activities(s)[-1].details == {"tags": ["To Do", "a b", "urgent", "vip"]}
    assert flags_rows(scene)[-1] == (
        "flags",
        {"add": [], "remove": ["$label4", "urgent", "vip"]},
        None,
    )


def test_add_and_remove_tag(scene: Scene) -> None:
    do(scene, ops.add_tag, "billing", source=WEB, by=scene.bob)
    one_change(scene, source=WEB, action="tagged", details={"tags": ["billing"]})
    do(scene, ops.add_tag, "billing", source=WEB, by=scene.bob)
    do(scene, ops.remove_tag, "vip", source=WEB, by=scene.bob)
    do(scene, ops.remove_tag, "absent", source=WEB, by=scene.bob)
    do(scene, ops.remove_tag, "two words", source=WEB, by=scene.bob)
    with scene.session() as s:
        assert tags(s, scene.conv) == {"billing"}
        assert [a.action for a in activities(s)] == ["tagged", "untagged", "untagged"]
        assert conversation(s, scene.conv).version == 4
    assert flags_rows(scene) == [
        ("flags", {"add": ["billing"], "remove": []}, None),
        ("flags", {"add": [], "remove": ["vip"]}, None),
    ]


@pytest.mark.parametrize("bad", ["", "   ", "x" * 101, "new\nline", "bell\x07", "nul\x00"])
def test_invalid_tags(scene: Scene, bad: str) -> None:
    with pytest.raises(InvalidInput) as err:
        do(scene, ops.set_tags, ["ok", bad], source=API, by=scene.alice)
    assert err.value.details["field"] == "tags"
    with pytest.raises(InvalidInput):
        do(scene, ops.add_tag, bad, source=API, by=scene.alice)
    assert_nothing_written(scene)
    with scene.session() as s:
        assert tags(s, scene.conv) == {"vip", "two words"}


def test_set_tags_from_a_mail_client_keeps_database_only_tags(scene: Scene) -> None:
    run(scene, lambda s: ops.set_tags(s, scene.conv, {"urgent"}, source=IMAP))
    with scene.session() as s:
        assert tags(s, scene.conv) == {"urgent", "two words"}
        acts = activities(s)
        assert [(a.action, a.details, a.source) for a in acts] == [
            ("tagged", {"tags": ["urgent"]}, IMAP),
            ("untagged", {"tags": ["vip"]}, IMAP),
        ]
        assert outbox(s) == []


# --- read -------------------------------------------------------------------------------------


def seen(s: Session, *ids: int) -> list[bool]:
    return [bool(m.seen) for m in (s.get(Message, i) for i in ids) if m is not None]


def test_mark_read_and_unread(scene: Scene) -> None:
    do(scene, ops.mark_read, True, source=API, by=scene.alice)
    with scene.session() as s:
        assert seen(s, scene.m_old, scene.m_new, scene.m_out) == [True, True, True]
        assert conversation(s, scene.conv).unread is False
    one_change(scene, source=API, action="read", details={"messages": [scene.m_old, scene.m_new]})
    assert flags_rows(scene) == [("flags", {"add": ["\\Seen"], "remove": []}, None)]

    do(scene, ops.mark_read, True, source=API, by=scene.alice)
    assert len(flags_rows(scene)) == 1

    # unread: the newest inbound message only
    do(scene, ops.mark_read, False, source=WEB, by=scene.bob)
    with scene.session() as s:
        assert seen(s, scene.m_old, scene.m_new, scene.m_out) == [True, False, True]
        c = conversation(s, scene.conv)
        assert (c.unread, c.version) == (True, 3)
        assert activities(s)[-1].details == {"messages": [scene.m_new]}
    assert flags_rows(scene)[-1] == ("flags", {"add": [], "remove": ["\\Seen"]}, scene.m_new)


def test_mark_one_message_read_from_a_mail_client(scene: Scene) -> None:
    run(scene, lambda s: ops.mark_read(s, scene.conv, True, source=IMAP, message=scene.m_old))
    with scene.session() as s:
        assert seen(s, scene.m_old, scene.m_new) == [True, False]
        assert conversation(s, scene.conv).unread is True
    one_change(scene, source=IMAP, action="read", details={"messages": [scene.m_old]})
    run(scene, lambda s: ops.mark_read(s, scene.conv, True, source=IMAP, message=scene.m_new))
    with scene.session() as s:
        assert conversation(s, scene.conv).unread is False
        assert outbox(s) == []
    with pytest.raises(NotFound):
        run(scene, lambda s: ops.mark_read(s, scene.conv, True, source=IMAP, message=999_999))


# --- merged conversations and the log ---------------------------------------------------------


def test_operations_follow_merges_and_the_log_includes_merged(scene: Scene) -> None:
    with unit_of_work(scene.engine) as s:
        box = s.get(Mailbox, scene.box)
        assert box is not None
        old = f.conversation(s, box, "old half")
        assert old.id is not None
        old_id = old.id
    run(scene, lambda s: ops.add_tag(s, old_id, "early", source=API, agent=agent(s, scene.bob)))
    with unit_of_work(scene.engine) as s:
        conversation(s, old_id).merged_into_id = scene.conv
    with unit_of_work(scene.engine) as s:
        ops.set_status(s, old_id, "closed", source=API, agent=agent(s, scene.alice))
    with scene.session() as s:
        assert conversation(s, scene.conv).status == "closed"
        assert conversation(s, old_id).status == "open"
        log = reads.conversation_activity(s, scene.conv)
        assert [(a.action, a.conversation_id) for a in log] == [
            ("status", scene.conv),
            ("tagged", old_id),
        ]
        assert reads.conversation_activity(s, old_id)[0].action == "tagged"


def test_activity_newest_first_with_actors(scene: Scene) -> None:
    run(scene, lambda s: ops.claim(s, scene.conv, agent(s, scene.alice), source=API))
    run(scene, lambda s: ops.set_status(s, scene.conv, "pending", source=IMAP))
    run(scene, lambda s: ops.add_tag(s, scene.conv, "x", source=ActivitySource.system))
    with scene.session() as s:
        log = reads.conversation_activity(s, scene.conv)
        emails = ops.agent_emails(s, log)
        assert [(a.action, ops.activity_actor(a, emails)) for a in log] == [
            ("tagged", "imapdesk"),
            ("status", "a mail client"),
            ("claimed", "alice@example.com"),
        ]
    # a system change is written back like any other
    assert [kind for kind, _, _ in flags_rows(scene)] == ["flags", "flags"]


def test_nothing_is_committed_by_an_operation(scene: Scene) -> None:
    with scene.session() as s:
        ops.claim(s, scene.conv, agent(s, scene.alice), source=API)
        ops.set_status(s, scene.conv, "closed", source=API, agent=agent(s, scene.alice))
        s.rollback()
    assert_nothing_written(scene)
    with scene.session() as s:
        c = conversation(s, scene.conv)
        assert (c.claimed, c.status) == (False, "open")
