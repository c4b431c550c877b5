"""A time-based rule fires once per conversation and episode of waiting, however the worker
dies: killed (SIGKILL) after the rule acted but before the commit, nothing of it is left and
the next worker fires it; killed after the commit and started again, it does not fire again;
a new episode (pending anew) fires once more. The worker runs as a child process. Both
databases."""

from __future__ import annotations

import signal
from datetime import timedelta
from multiprocessing.process import BaseProcess
from pathlib import Path

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    ConversationStatus,
    Event,
    Mailbox,
    RuleFiring,
    utcnow,
)
from imapdesk.worker.rules import CRASH_ENV
from tests.rules.scene import agents, rule, start_consumer
from tests.support import factories
from tests.support.worker import wait_for
from tests.support.worker_process import start_worker_process


def _worker(db_url: str, data_dir: Path, crash: str = "") -> BaseProcess:
    values = {
        "database_url": db_url,
        "data_dir": data_dir,
        "mailbox_refresh_seconds": 0.2,
        "rules_poll_seconds": 0.1,
        "parse_processes": 0,
    }
    return start_worker_process(values, {CRASH_ENV: crash})


def _stop(process: BaseProcess) -> None:
    process.kill()
    process.join(timeout=15)


def _box(db: Session, mailbox_id: int) -> Mailbox:
    box = db.get(Mailbox, mailbox_id)
    assert box is not None
    return box


def _pending_since(engine: Engine, mailbox_id: int, days: int, subject: str) -> int:
    with unit_of_work(engine) as db:
        conv = factories.conversation(
            db, _box(db, mailbox_id), subject, status=ConversationStatus.pending
        )
        conv.created_at = utcnow() - timedelta(days=days)
        assert conv.id is not None
        return conv.id


def _fired(engine: Engine, cid: int) -> int:
    with Session(engine) as db:
        return int(
            db.exec(
                select(func.count())
                .select_from(RuleFiring)
                .where(col(RuleFiring.conversation_id) == cid)
            ).one()
        )


def _done(engine: Engine, cid: int) -> tuple[int, int]:
    """The rule's tag activities and notify events on the conversation."""
    with Session(engine) as db:
        tagged = db.exec(
            select(func.count())
            .select_from(Activity)
            .where(col(Activity.conversation_id) == cid, col(Activity.action) == "tagged")
        ).one()
        notified = db.exec(
            select(func.count())
            .select_from(Event)
            .where(col(Event.conversation_id) == cid, col(Event.kind) == "rule.notify")
        ).one()
        return int(tagged), int(notified)


def test_a_time_based_rule_fires_once_across_kill_9_and_restart(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    with unit_of_work(engine) as db:
        box = factories.mailbox(db, enabled=False)  # no mail server: the rules alone
        assert box.id is not None
        mailbox_id = box.id
    people = agents(engine, "alice")
    rule(
        engine,
        name="Chase",
        trigger="time.pending",
        trigger_amount=2,
        actions=[
            {"type": "tag", "tag": "chase"},
            {"type": "notify", "agent_ids": [people["alice"]], "text": "waiting for 2 days"},
        ],
    )
    start_consumer(engine)
    stale = _pending_since(engine, mailbox_id, 3, "Waiting since Monday")
    fresh = _pending_since(engine, mailbox_id, 1, "Waiting since yesterday")

    # killed after the rule acted, before its commit: nothing of it is left
    crashing = _worker(db_url, tmp_path / "data", crash="time")
    crashing.join(timeout=60)
    if crashing.exitcode is None:
        _stop(crashing)
    assert crashing.exitcode == -signal.SIGKILL, "the worker did not die where it should"
    assert _fired(engine, stale) == 0 and _done(engine, stale) == (0, 0)

    # the next worker fires it, and is killed after the commit
    first = _worker(db_url, tmp_path / "data")
    try:
        wait_for(lambda: _fired(engine, stale) == 1, timeout=30, what="the rule to fire")
    finally:
        _stop(first)
    assert _done(engine, stale) == (1, 1)

    # started again, it fires for a conversation whose time has come since, never again
    # for the first; the one not yet due stays alone
    second = _worker(db_url, tmp_path / "data")
    try:
        later = _pending_since(engine, mailbox_id, 5, "Waiting since last week")
        wait_for(lambda: _fired(engine, later) == 1, timeout=30, what="the rule on the new one")
    finally:
        _stop(second)
    assert _done(engine, stale) == (1, 1)
    assert _done(engine, later) == (1, 1)
    assert _fired(engine, fresh) == 0 and _done(engine, fresh) == (0, 0)
    with Session(engine) as db:
        actors = {
            a.actor for a in db.exec(select(Activity).where(col(Activity.action) == "tagged"))
        }
        assert actors == {"rule Chase"}


def test_a_second_episode_fires_once_across_kill_9_and_restart(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """Pending anew is a new episode: it fires once more, never twice, however the worker dies."""
    with unit_of_work(engine) as db:
        box = factories.mailbox(db, enabled=False)
        assert box.id is not None
        mailbox_id = box.id
    people = agents(engine, "alice")
    rule(
        engine,
        name="Chase",
        trigger="time.pending",
        trigger_amount=2,
        actions=[
            {"type": "tag", "tag": "chase"},
            {"type": "notify", "agent_ids": [people["alice"]], "text": "waiting for 2 days"},
        ],
    )
    start_consumer(engine)
    cid = _pending_since(engine, mailbox_id, 9, "Waiting, again and again")
    first = _worker(db_url, tmp_path / "data")
    try:
        wait_for(lambda: _fired(engine, cid) == 1, timeout=30, what="the first episode")
    finally:
        _stop(first)
    assert _done(engine, cid)[1] == 1

    # answered and open 5 days ago, pending again 4 days ago: a second episode
    now = utcnow()
    with unit_of_work(engine) as db:
        for days, to in ((5, "open"), (4, "pending")):
            db.add(
                Activity(
                    conversation_id=cid,
                    source=ActivitySource.web,
                    action="status",
                    details={"to": to},
                    created_at=now - timedelta(days=days),
                )
            )
    crashing = _worker(db_url, tmp_path / "data", crash="time")
    crashing.join(timeout=60)
    if crashing.exitcode is None:
        _stop(crashing)
    assert crashing.exitcode == -signal.SIGKILL, "the worker did not die where it should"
    assert _fired(engine, cid) == 1 and _done(engine, cid)[1] == 1

    second = _worker(db_url, tmp_path / "data")
    try:
        wait_for(lambda: _fired(engine, cid) == 2, timeout=30, what="the second episode")
    finally:
        _stop(second)
    # started again, it fires for a conversation whose time has come since (so the time
    # rules have run), never again for this episode
    third = _worker(db_url, tmp_path / "data")
    try:
        marker = _pending_since(engine, mailbox_id, 3, "Waiting since Thursday")
        wait_for(lambda: _fired(engine, marker) == 1, timeout=30, what="the rule on the new one")
    finally:
        _stop(third)
    assert _fired(engine, cid) == 2
    assert _done(engine, cid)[1] == 2
