"""Notifications and webhooks in the web UI, at the HTTP level on both databases: the bell
and the list, marking read (CSRF), opening one, the choices, the handles for `@mention`
completion; the live stream tells each agent of their own notifications only; the admin's
webhook pages (admins only, CSRF, the secret shown once, the delivery log, replay)."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.api.app import SESSION_COOKIE
from imapdesk.api.web.live import LiveHub
from imapdesk.domain.notifications import inbox
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Notification,
    NotificationPreference,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookSubscription,
)
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer
from tests.support.web import Page, session_cookie
from tests.web.test_live import _read_events, _wait


def browser(app: FastAPI, settings: Settings, engine: Engine, agent_id: int) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    client.cookies.set(SESSION_COOKIE, session_cookie(settings, engine, agent_id))
    return client


def tell(engine: Engine, agent_id: int, text: str, conversation_id: int | None = None) -> int:
    with unit_of_work(engine) as s:
        row = inbox.notify(s, agent_id, "assigned", text, conversation_id=conversation_id)
        assert row is not None
        s.flush()
        return row.id or 0


def test_the_bell_the_list_and_marking_read(
    app: FastAPI, settings: Settings, engine: Engine, agents: dict[str, int]
) -> None:
    with unit_of_work(engine) as s:
        conv = f.conversation(s, f.mailbox(s), "Printer on fire", minutes=1)
        cid = conv.id or 0
    first = tell(engine, agents["alice"], "Bob assigned #1 to you", cid)
    tell(engine, agents["alice"], "The customer replied")
    tell(engine, agents["bob"], "for Bob only")
    alice = browser(app, settings, engine, agents["alice"])
    page = alice.get("/notifications")
    assert page.status_code == 200
    parsed = Page(page.text)
    assert "Bob assigned #1 to you" in parsed.all_text and "for Bob only" not in parsed.all_text
    assert 'id="notif-bell"' in page.text  # the header's bell
    assert alice.get("/notifications/unread").json()["unread"] == 2
    token = parsed.inputs["csrf_token"]
    # opening one marks it read and leads to its conversation
    r = alice.get(f"/notifications/{first}/open")
    assert r.status_code == 303 and r.headers["location"] == f"/conversations/{cid}"
    assert alice.get("/notifications/unread").json()["unread"] == 1
    # someone else's is not opened
    with Session(engine) as s:
        bobs = s.exec(select(Notification).where(Notification.agent_id == agents["bob"])).one()
    assert alice.get(f"/notifications/{bobs.id}/open").headers["location"] == "/notifications"
    assert alice.post("/notifications/read", data={}).status_code == 403  # no CSRF token
    r = alice.post(
        "/notifications/read", data={"csrf_token": token}, headers={"X-Requested-With": "fetch"}
    )
    assert r.json() == {"marked": 1, "unread": 0}
    with Session(engine) as s:
        assert s.get(Notification, bobs.id).read_at is None  # type: ignore[union-attr]
    # the choices
    r = alice.post(
        "/notifications/preferences",
        data={"csrf_token": token, "assigned": "true", "email": "true"},
    )
    assert r.status_code == 303
    with Session(engine) as s:
        row = s.get(NotificationPreference, agents["alice"])
        assert row is not None and row.assigned and row.email and not row.mentioned
    handles = alice.get("/agents/handles?q=b").json()
    assert handles == [{"handle": "bob", "name": "Bob Builder"}]
    assert TestClient(app).get("/notifications/unread", follow_redirects=False).status_code in (
        303,
        401,
    )


def test_the_live_stream_tells_each_agent_of_their_own_notifications(
    live_server: LiveServer,
    app: FastAPI,
    settings: Settings,
    engine: Engine,
    agents: dict[str, int],
) -> None:
    cookies = httpx.Cookies()
    cookies.set(SESSION_COOKIE, session_cookie(settings, engine, agents["alice"]))
    seen: list[tuple[str, Any]] = []
    stop = threading.Event()
    reader = threading.Thread(
        target=_read_events, args=(f"{live_server.url}/live", cookies, seen, stop), daemon=True
    )
    reader.start()
    _wait(lambda: any(k == "hello" for k, _ in seen))
    hub: LiveHub = app.state.live_hub
    _wait(lambda: hub.notified_up_to is not None)  # the poller took stock
    tell(engine, agents["bob"], "for Bob")
    tell(engine, agents["alice"], "for Alice")
    _wait(lambda: any(k == "notifications" for k, _ in seen))
    tell(engine, agents["alice"], "again for Alice")
    _wait(lambda: sum(k == "notifications" for k, _ in seen) == 2)
    # read elsewhere (another tab, the API): the count goes down here too, once
    with unit_of_work(engine) as s:
        inbox.mark_read(s, agents["alice"], None)
    _wait(lambda: sum(k == "notifications" for k, _ in seen) == 3)
    with unit_of_work(engine) as s:  # Bob's reads are not Alice's news
        inbox.mark_read(s, agents["bob"], None)
    tell(engine, agents["alice"], "last")
    _wait(lambda: sum(k == "notifications" for k, _ in seen) == 4)
    stop.set()
    told = [d for k, d in seen if k == "notifications"]
    assert [d["unread"] for d in told] == [1, 2, 0, 1]
    assert [[n["text"] for n in d["new"]] for d in told] == [
        ["for Alice"],
        ["again for Alice"],
        [],
        ["last"],
    ]


def test_admin_webhook_pages(
    app: FastAPI, settings: Settings, engine: Engine, agents: dict[str, int]
) -> None:
    app.state.settings = settings.model_copy(update={"webhook_allow_private": True})
    bob = browser(app, settings, engine, agents["bob"])
    assert bob.get("/admin/webhooks").status_code == 403
    alice = browser(app, settings, engine, agents["alice"])
    page = alice.get("/admin/webhooks")
    assert page.status_code == 200
    token = Page(page.text).inputs["csrf_token"]
    form = {"url": "http://127.0.0.1:9/hook", "events": ["reply.sent", "note.added"]}
    assert alice.post("/admin/webhooks", data=form).status_code == 403  # no CSRF token
    r = alice.post("/admin/webhooks", data={**form, "csrf_token": token})
    assert r.status_code == 200
    secret = r.text.split('id="new-secret">')[1].split("<")[0]
    assert secret.startswith("whsec_")
    with Session(engine) as s:
        hook = s.exec(select(WebhookSubscription)).one()
        assert hook.events == ["reply.sent", "note.added"] and hook.id is not None
        hook_id = hook.id
        s.add(
            WebhookDelivery(
                subscription_id=hook_id,
                event_type="reply.sent",
                msg_id="msg_1_1",
                body="{}",
                state=WebhookDeliveryState.failed,
                attempts=3,
                response_status=500,
                response_body="boom",
            )
        )
        s.commit()
    # the secret is not shown again; the delivery log is
    shown = alice.get(f"/admin/webhooks/{hook_id}").text
    assert secret not in shown and "msg_1_1" in shown and "boom" in shown
    with Session(engine) as s:
        delivery = s.exec(select(WebhookDelivery)).one()
    r = alice.post(
        f"/admin/webhooks/{hook_id}/deliveries/{delivery.id}/replay", data={"csrf_token": token}
    )
    assert r.status_code == 303
    with Session(engine) as s:
        again = s.get(WebhookDelivery, delivery.id)
        assert again is not None and again.state == WebhookDeliveryState.pending
    # a private target, refused when not allowed
    app.state.settings = settings
    r = alice.post(
        "/admin/webhooks",
        data={"url": "http://127.0.0.1:9/", "events": ["reply.sent"], "csrf_token": token},
    )
    assert r.status_code == 422 and "IMAPDESK_WEBHOOK_ALLOW_PRIVATE" in r.text
    r = alice.post(f"/admin/webhooks/{hook_id}/rotate", data={"csrf_token": token})
    rotated = r.text.split('id="new-secret">')[1].split("<")[0]
    assert rotated.startswith("whsec_") and rotated != secret
    r = alice.post(f"/admin/webhooks/{hook_id}/delete", data={"csrf_token": token})
    assert r.status_code == 303
    with Session(engine) as s:
        assert s.exec(select(WebhookSubscription)).all() == []
