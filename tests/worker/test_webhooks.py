"""Outgoing webhooks end to end, on both databases: real changes leave events, the worker's
webhook sender delivers them to a real HTTP receiver on loopback, signed in the Standard
Webhooks manner (checked with the `standardwebhooks` package); a receiver down for a while
gets every delivery exactly once when it is back; a worker killed with SIGKILL loses none;
replay sends again; private targets are refused; a webhook failing too long is disabled and
the admins are told."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select
from standardwebhooks import Webhook

from imapdesk.domain import events
from imapdesk.domain.conversations import operations as ops
from imapdesk.domain.events import EventKind, record_event
from imapdesk.domain.webhooks import deliveries, subscriptions
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import (
    Mailbox,
    Notification,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookSubscription,
    as_utc,
    utcnow,
)
from imapdesk.kernel.settings import Settings
from imapdesk.worker.webhooks import WebhookSender
from tests.core.test_operations import API, IMAP, Scene, agent, build
from tests.support.webhook_receiver import Receiver
from tests.support.worker import wait_for
from tests.support.worker_process import start_worker_process


def fast_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "data_dir": tmp_path / "data",
        "webhook_allow_private": True,
        "webhook_poll_seconds": 0.05,
        "webhook_timeout_seconds": 2.0,
        "webhook_retry_initial_seconds": 0.2,
        "webhook_retry_max_seconds": 0.5,
        "mailbox_refresh_seconds": 0.2,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def scene(engine: Engine) -> Scene:
    scene = build(engine)
    with unit_of_work(engine) as s:
        # the mailbox is not on a real server here: the worker leaves it alone
        s.exec(update(Mailbox).values(enabled=False))  # type: ignore[call-overload]
        # the consumer starts here (it never acts on the past)
        events.pending_events(s, deliveries.CONSUMER)
    return scene


def subscribe(
    engine: Engine, settings: Settings, url: str, names: list[str] | None = None
) -> tuple[int, str]:
    from imapdesk.domain.webhooks.names import PUBLIC_EVENTS

    with unit_of_work(engine) as s:
        row, secret = subscriptions.create(
            s, settings, url=url, events=names or list(PUBLIC_EVENTS)
        )
        assert row.id is not None and secret is not None
        return row.id, secret


@contextmanager
def sending(engine: Engine, settings: Settings) -> Iterator[WebhookSender]:
    stop = threading.Event()
    sender = WebhookSender(engine, settings, stop)
    thread = threading.Thread(target=sender.run, daemon=True)
    thread.start()
    try:
        yield sender
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive()


def changes(scene: Scene, count: int = 1) -> None:
    """`count` rounds of real changes: assigned, status changed, tagged (+ a message event)."""
    for i in range(count):
        with unit_of_work(scene.engine) as s:
            who = agent(s, scene.alice)
            ops.assign(
                s,
                scene.conv,
                agent(s, scene.bob if i % 2 == 0 else scene.alice),
                source=API,
                agent=who,
            )
        with unit_of_work(scene.engine) as s:
            ops.set_status(s, scene.conv, "pending" if i % 2 == 0 else "open", source=IMAP)
        with unit_of_work(scene.engine) as s:
            record_event(
                s,
                EventKind.message_received,
                mailbox_id=scene.box,
                conversation_id=scene.conv,
                actor="customer",
            )


def delivery_rows(engine: Engine) -> list[WebhookDelivery]:
    with Session(engine) as s:
        return list(s.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.id))))


def all_delivered(engine: Engine, expected: int) -> bool:
    rows = delivery_rows(engine)
    return len(rows) == expected and all(r.state == WebhookDeliveryState.delivered for r in rows)


def test_each_event_reaches_the_receiver_with_a_valid_signature(
    scene: Scene, db_url: str, tmp_path: Path
) -> None:
    settings = fast_settings(db_url, tmp_path)
    receiver = Receiver().start()
    try:
        _, secret = subscribe(scene.engine, settings, receiver.url)
        with sending(scene.engine, settings):
            changes(scene)
            wait_for(lambda: len(receiver.snapshot()) >= 3, what="three webhooks")
            wait_for(lambda: all_delivered(scene.engine, 3), what="the deliveries recorded")
        verifier = Webhook(secret)
        # in parallel: the order of arrival is not the events' order
        got = sorted(
            (verifier.verify(r.body, r.headers) for r in receiver.snapshot()),
            key=lambda g: g["data"]["event_id"],
        )
        assert [g["type"] for g in got] == [
            "conversation.assigned",
            "conversation.status_changed",
            "message.received",
        ]
        assert got[0]["data"]["conversation"]["id"] == scene.conv
        assert got[0]["data"]["details"]["details"]["to"] == "bob@example.com"
        assert got[0]["data"]["agent"]["email"] == "alice@example.com"
        assert got[1]["data"]["details"]["details"]["to"] == "pending"
        # a wrong secret does not verify
        with pytest.raises(Exception, match="signature"):
            Webhook("whsec_" + "QUJD" * 8).verify(
                receiver.snapshot()[0].body, receiver.snapshot()[0].headers
            )
        rows = delivery_rows(scene.engine)
        assert {r.response_status for r in rows} == {200}
        assert all(r.response_body == '{"ok": true}' and r.duration_ms is not None for r in rows)
    finally:
        receiver.stop()


def test_only_the_events_subscribed_to_are_sent(scene: Scene, db_url: str, tmp_path: Path) -> None:
    settings = fast_settings(db_url, tmp_path)
    receiver = Receiver().start()
    try:
        subscribe(scene.engine, settings, receiver.url, ["conversation.status_changed"])
        with sending(scene.engine, settings):
            changes(scene)
            wait_for(lambda: all_delivered(scene.engine, 1), what="the one delivery")
        assert [r.event_type for r in delivery_rows(scene.engine)] == [
            "conversation.status_changed"
        ]
    finally:
        receiver.stop()


def test_a_receiver_down_for_a_while_then_gets_every_delivery_exactly_once(
    scene: Scene, db_url: str, tmp_path: Path
) -> None:
    settings = fast_settings(db_url, tmp_path)
    receiver = Receiver()  # not listening yet: connections are refused
    subscribe(scene.engine, settings, receiver.url)
    try:
        with sending(scene.engine, settings):
            changes(scene, 3)
            expected = 9
            wait_for(
                lambda: (
                    len(delivery_rows(scene.engine)) == expected
                    and all(r.attempts >= 2 for r in delivery_rows(scene.engine))
                ),
                timeout=60,
                what="every delivery to have failed twice",
            )
            failed = delivery_rows(scene.engine)
            assert all(r.state == WebhookDeliveryState.pending and r.last_error for r in failed)
            assert all(r.response_status is None for r in failed)
            receiver.start()
            wait_for(
                lambda: all_delivered(scene.engine, expected), timeout=60, what="every delivery"
            )
        ids = receiver.ids()
        assert set(ids) == {r.msg_id for r in delivery_rows(scene.engine)}
        assert set(ids.values()) == {1}, ids
    finally:
        receiver.stop()


def test_a_worker_killed_with_sigkill_loses_no_delivery(
    scene: Scene, db_url: str, tmp_path: Path
) -> None:
    settings = fast_settings(db_url, tmp_path)
    # slow answers: the kill lands while deliveries are on their way
    receiver = Receiver(delay=0.15).start()
    subscribe(scene.engine, settings, receiver.url)
    values = settings.model_dump(mode="json")
    try:
        first = start_worker_process(values, {})
        changes(scene, 8)
        expected = 24
        wait_for(lambda: len(receiver.snapshot()) >= 3, timeout=60, what="the first webhooks")
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        first.join(10)
        assert len(receiver.ids()) < expected, "the kill came too late to show anything"
        second = start_worker_process(values, {})
        try:
            wait_for(
                lambda: all_delivered(scene.engine, expected), timeout=90, what="every delivery"
            )
        finally:
            second.kill()
            second.join(10)
        ids = receiver.ids()
        assert set(ids) == {r.msg_id for r in delivery_rows(scene.engine)}
        # at most the attempts in flight at the kill came twice (the same webhook-id)
        assert sum(ids.values()) - len(ids) <= 4, ids
    finally:
        receiver.stop()


def test_replay_sends_the_same_delivery_again(scene: Scene, db_url: str, tmp_path: Path) -> None:
    settings = fast_settings(db_url, tmp_path)
    receiver = Receiver().start()
    try:
        sub_id, secret = subscribe(
            scene.engine, settings, receiver.url, ["conversation.status_changed"]
        )
        with sending(scene.engine, settings):
            changes(scene)
            wait_for(lambda: all_delivered(scene.engine, 1), what="the delivery")
            (row,) = delivery_rows(scene.engine)
            assert row.id is not None
            with unit_of_work(scene.engine) as s:
                subscriptions.replay(s, sub_id, row.id)
            wait_for(lambda: receiver.ids()[row.msg_id] == 2, what="the replay")
            wait_for(lambda: all_delivered(scene.engine, 1), what="the replay recorded")
        first, again = receiver.snapshot()
        assert first.body == again.body
        Webhook(secret).verify(again.body, again.headers)
        assert delivery_rows(scene.engine)[0].attempts == 2
    finally:
        receiver.stop()


def test_private_and_loopback_targets_are_refused_unless_allowed(
    scene: Scene, db_url: str, tmp_path: Path
) -> None:
    strict = fast_settings(db_url, tmp_path, webhook_allow_private=False)
    receiver = Receiver().start()
    try:
        for url in (
            receiver.url,
            f"http://localhost:{receiver.port}/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.1/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://0.0.0.0/hook",
        ):
            with unit_of_work(scene.engine) as s, pytest.raises(InvalidInput, match="private"):
                subscriptions.create(s, strict, url=url, events=["conversation.updated"])
        for url in ("ftp://example.com/x", "http://user:pw@example.com/", "not a url"):
            with unit_of_work(scene.engine) as s, pytest.raises(InvalidInput):
                subscriptions.create(s, strict, url=url, events=["conversation.updated"])
        # saved while allowed, the target is checked again at every attempt
        allowing = fast_settings(db_url, tmp_path)
        subscribe(scene.engine, allowing, receiver.url)
        with sending(scene.engine, strict):
            changes(scene)
            wait_for(
                lambda: (
                    len(delivery_rows(scene.engine)) == 3
                    and all(r.attempts >= 1 for r in delivery_rows(scene.engine))
                ),
                what="the refused attempts",
            )
        assert receiver.snapshot() == []
        assert all("private" in (r.last_error or "") for r in delivery_rows(scene.engine))
    finally:
        receiver.stop()


def test_a_webhook_failing_too_long_is_disabled_and_admins_are_told(
    scene: Scene, db_url: str, tmp_path: Path
) -> None:
    settings = fast_settings(
        db_url, tmp_path, webhook_disable_after_failures=3, webhook_disable_after_seconds=0
    )
    receiver = Receiver(status=500).start()
    try:
        sub_id, _ = subscribe(scene.engine, settings, receiver.url)
        with sending(scene.engine, settings):
            changes(scene)

            def disabled() -> bool:
                with Session(scene.engine) as s:
                    row = s.get(WebhookSubscription, sub_id)
                    return row is not None and not row.enabled

            wait_for(disabled, what="the webhook disabled")
        with Session(scene.engine) as s:
            row = s.get(WebhookSubscription, sub_id)
            assert row is not None and row.failure_count >= 3
            assert "500" in (row.disabled_reason or "")
            told = s.exec(select(Notification).where(Notification.kind == "webhook_disabled")).all()
            assert [n.agent_id for n in told] == [scene.carol]  # the admin only
        assert all(r.response_status == 500 for r in delivery_rows(scene.engine) if r.attempts)
        # enabled again, what waited is sent
        receiver.status = 200
        with unit_of_work(scene.engine) as s:
            subscriptions.update(s, settings, sub_id, enabled=True)
        with sending(scene.engine, settings):
            wait_for(lambda: all_delivered(scene.engine, 3), what="the waiting deliveries")
    finally:
        receiver.stop()


def test_the_log_keeps_what_is_over_for_thirty_days(
    scene: Scene, db_url: str, tmp_path: Path
) -> None:
    settings = fast_settings(db_url, tmp_path)
    sub_id, _ = subscribe(scene.engine, settings, "http://127.0.0.1:9/hook")
    old = utcnow() - timedelta(days=31)
    with unit_of_work(scene.engine) as s:
        for n, state in enumerate(WebhookDeliveryState):
            for created in (old, utcnow()):
                s.add(
                    WebhookDelivery(
                        subscription_id=sub_id, event_type="reply.sent",
                        msg_id=f"m{n}{created.day}", body="{}", state=state, created_at=created,
                    )
                )  # fmt: skip
    with unit_of_work(scene.engine) as s:
        assert deliveries.prune(s) == 2  # the old delivered and failed ones
    kept = delivery_rows(scene.engine)
    assert len(kept) == 4
    assert [r.state for r in kept if as_utc(r.created_at) < utcnow() - timedelta(days=1)] == [
        WebhookDeliveryState.pending
    ]
