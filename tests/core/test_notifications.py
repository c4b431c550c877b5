"""Notifications from the event log (the worker's notifier), on both databases: a mention in
a note notifies the mentioned agent only; assignment, a customer's reply, an SLA warning and a
rule's notice notify whom they concern, as each agent chose; each event notifies once; email
notifications go out through the mailbox's SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import free_port
from imapdesk.domain import events
from imapdesk.domain.conversations import operations as ops
from imapdesk.domain.events import EventKind, record_event
from imapdesk.domain.notifications import from_events, inbox
from imapdesk.domain.notifications.mentions import handles_in
from imapdesk.domain.outbound.replies import add_note
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    ActivitySource,
    Conversation,
    Mailbox,
    Notification,
    utcnow,
)
from imapdesk.kernel.settings import Settings
from imapdesk.worker.notifications import Notifier
from tests.core.test_operations import API, Scene, agent, build


@pytest.fixture
def scene(engine: Engine) -> Scene:
    scene = build(engine)
    with unit_of_work(engine) as s:
        events.pending_events(s, from_events.CONSUMER)
    return scene


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, data_dir=tmp_path / "data")


def notifier(scene: Scene, settings: Settings) -> Notifier:
    return Notifier(scene.engine, settings, threading.Event())


def told(scene: Scene) -> list[tuple[int, str]]:
    with Session(scene.engine) as s:
        rows = s.exec(select(Notification).order_by(col(Notification.id)))
        return [(n.agent_id, n.kind) for n in rows]


def note(scene: Scene, settings: Settings, by: int, text: str) -> None:
    with unit_of_work(scene.engine) as s:
        add_note(
            s, agent(s, by), scene.conv, body=text, source=ActivitySource.web, settings=settings
        )


def test_handles_in_a_note() -> None:
    assert handles_in("@bob and @Carol, not mail@bob.example nor x@y; (@dave.) @bob") == [
        "bob",
        "carol",
        "dave",
    ]


def test_a_mention_notifies_the_mentioned_agent_only(scene: Scene, settings: Settings) -> None:
    note(scene, settings, scene.alice, "@bob can you look at this? (alice@example.com knows)")
    note(scene, settings, scene.alice, "and a note that mentions nobody, and @nobody-here")
    note(scene, settings, scene.bob, "@bob talking to myself")
    notifier(scene, settings).turn()
    assert told(scene) == [(scene.bob, "mentioned")]
    with Session(scene.engine) as s:
        (row,) = s.exec(select(Notification)).all()
        assert row.conversation_id == scene.conv
        assert row.text == f"alice@example.com mentioned you on #{scene.conv} Printer on fire"
    # taken once: another turn (or a restarted worker) notifies no one again
    notifier(scene, settings).turn()
    assert len(told(scene)) == 1


def test_a_mention_of_an_agent_who_cannot_see_the_mailbox_notifies_no_one(
    scene: Scene, settings: Settings
) -> None:
    with unit_of_work(scene.engine) as s:
        agent(s, scene.bob).all_mailboxes = False
    note(scene, settings, scene.alice, "@bob have a look")
    notifier(scene, settings).turn()
    assert told(scene) == []


def test_assigned_replied_sla_and_rule_notices_as_each_agent_chose(
    scene: Scene, settings: Settings
) -> None:
    with unit_of_work(scene.engine) as s:
        ops.assign(s, scene.conv, agent(s, scene.bob), source=API, agent=agent(s, scene.alice))
    with unit_of_work(scene.engine) as s:  # taking it oneself notifies no one
        me = agent(s, scene.alice)
        ops.assign(s, scene.conv, me, source=API, agent=me)
    with unit_of_work(scene.engine) as s:
        ops.assign(s, scene.conv, agent(s, scene.bob), source=API, agent=agent(s, scene.alice))
        record_event(s, EventKind.customer_replied, conversation_id=scene.conv, actor="customer")
        record_event(s, EventKind.sla_warning, conversation_id=scene.conv, actor="system")
        record_event(
            s,
            "rule.notify",
            conversation_id=scene.conv,
            payload={"agent_ids": [scene.alice, scene.carol], "text": "VIP wrote"},
        )
    notifier(scene, settings).turn()
    assert told(scene) == [
        (scene.bob, "assigned"),
        (scene.bob, "assigned"),
        (scene.bob, "customer_replied"),
        (scene.bob, "sla_warning"),
        (scene.alice, "rule_notify"),
        (scene.carol, "rule_notify"),
    ]
    # Bob no longer wants to hear of customers' replies
    with unit_of_work(scene.engine) as s:
        inbox.set_choices(s, scene.bob, customer_replied=False)
        record_event(s, EventKind.customer_replied, conversation_id=scene.conv, actor="customer")
        record_event(s, EventKind.sla_warning, conversation_id=scene.conv, actor="system")
    notifier(scene, settings).turn()
    assert told(scene)[-1] == (scene.bob, "sla_warning")
    assert len(told(scene)) == 7


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


def test_email_notifications_go_through_the_mailboxes_smtp_server(
    scene: Scene, settings: Settings
) -> None:
    handler = _Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with unit_of_work(scene.engine) as s:
            s.exec(
                update(Mailbox).values(  # type: ignore[call-overload]
                    smtp_host="127.0.0.1",
                    smtp_port=port,
                    smtp_security="none",
                    smtp_username="",
                    smtp_password_encrypted=None,
                )
            )
            inbox.set_choices(s, scene.bob, email=True)
        note(scene, settings, scene.alice, "@bob and @carol please")
        notifier(scene, settings).turn()
        assert len(handler.messages) == 1
        envelope = handler.messages[0]
        assert envelope.rcpt_tos == ["bob@example.com"]
        text = envelope.content.decode()
        assert "Auto-Submitted: auto-generated" in text
        assert "mentioned you on" in text
        with Session(scene.engine) as s:
            states = {n.agent_id: n.email_state for n in s.exec(select(Notification))}
        assert states == {scene.bob: "sent", scene.carol: None}
        with Session(scene.engine) as s:
            conv = s.get(Conversation, scene.conv)
            assert conv is not None
    finally:
        controller.stop()


def test_read_notifications_are_kept_ninety_days(scene: Scene) -> None:
    with unit_of_work(scene.engine) as s:
        for read_days_ago in (None, 1, 91):
            row = inbox.notify(s, scene.bob, "assigned", f"read {read_days_ago}")
            assert row is not None
            if read_days_ago is not None:
                row.read_at = utcnow() - timedelta(days=read_days_ago)
    with unit_of_work(scene.engine) as s:
        assert inbox.prune(s) == 1
    with Session(scene.engine) as s:
        assert sorted(n.text for n in s.exec(select(Notification))) == ["read 1", "read None"]
