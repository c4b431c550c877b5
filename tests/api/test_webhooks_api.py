"""REST for webhooks (admins only) and notifications (each agent's own), on both databases."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlmodel import Session, select

from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.domain.notifications import inbox
from imapdesk.kernel.crypto import decrypt_secret
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent, WebhookSubscription
from imapdesk.kernel.settings import Settings


def make_admin(engine: Engine, email: str = "alice@example.com") -> None:
    with unit_of_work(engine) as s:
        s.exec(update(Agent).where(Agent.email == email).values(is_admin=True))  # type: ignore[call-overload]


def test_only_admins_manage_webhooks(api: TestClient) -> None:
    assert api.get("/api/v1/webhooks").status_code == 403
    r = api.post(
        "/api/v1/webhooks", json={"url": "https://example.com/h", "events": ["reply.sent"]}
    )
    assert r.status_code == 403
    assert api.get("/api/v1/webhooks/1/deliveries").status_code == 403


def test_webhook_lifecycle(
    app: FastAPI, api: TestClient, engine: Engine, settings: Settings
) -> None:
    make_admin(engine)
    app.state.settings = settings.model_copy(update={"webhook_allow_private": True})
    r = api.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["reply.sent", "conversation.created"]},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert created["events"] == ["conversation.created", "reply.sent"]
    hook = created["id"]
    with Session(engine) as s:
        row = s.get(WebhookSubscription, hook)
        assert row is not None and secret not in row.secret_encrypted
        assert decrypt_secret(row.secret_encrypted, settings.secret_key) == secret
    # never shown again
    assert api.get(f"/api/v1/webhooks/{hook}").json()["secret"] is None
    assert [w["secret"] for w in api.get("/api/v1/webhooks").json()] == [None]
    r = api.patch(f"/api/v1/webhooks/{hook}", json={"events": ["note.added"], "enabled": False})
    assert r.json()["events"] == ["note.added"] and r.json()["enabled"] is False
    assert r.json()["disabled_reason"] == "disabled by an admin"
    r = api.patch(f"/api/v1/webhooks/{hook}", json={"enabled": True})
    assert r.json()["enabled"] is True and r.json()["disabled_reason"] is None
    rotated = api.post(f"/api/v1/webhooks/{hook}/rotate-secret").json()["secret"]
    assert rotated.startswith("whsec_") and rotated != secret
    assert api.get(f"/api/v1/webhooks/{hook}/deliveries").json() == []
    assert api.post(f"/api/v1/webhooks/{hook}/deliveries/5/replay").status_code == 404
    # a given secret is checked and not echoed
    r = api.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/", "events": ["reply.sent"], "secret": "whsec_short"},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "secret"
    good = "whsec_" + "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0"
    r = api.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/", "events": ["reply.sent"], "secret": good},
    )
    assert r.status_code == 201 and r.json()["secret"] is None
    r = api.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/", "events": ["nope"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "events"
    assert api.delete(f"/api/v1/webhooks/{hook}").status_code == 204
    assert api.get(f"/api/v1/webhooks/{hook}").status_code == 404


def test_private_targets_are_refused_by_default(api: TestClient, engine: Engine) -> None:
    make_admin(engine)
    for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.0.0.8/"):
        r = api.post("/api/v1/webhooks", json={"url": url, "events": ["reply.sent"]})
        assert r.status_code == 422, url
        assert "IMAPDESK_WEBHOOK_ALLOW_PRIVATE" in r.json()["error"]["message"]


def test_notifications_are_each_agents_own(app: FastAPI, api: TestClient, engine: Engine) -> None:
    with unit_of_work(engine) as s:
        bob = create_agent(s, "bob@example.com", "Bob", "pw")
        bob_token = create_api_token(s, bob, name="t")
        alice = s.exec(select(Agent).where(Agent.email == "alice@example.com")).one()
        assert alice.id is not None and bob.id is not None
        mine = [inbox.notify(s, alice.id, "assigned", f"note {i}") for i in range(3)]
        theirs = inbox.notify(s, bob.id, "assigned", "for bob")
        s.flush()
        ids = [n.id for n in mine if n is not None]
        bob_note = theirs.id if theirs is not None else 0
    body = api.get("/api/v1/notifications").json()
    assert body["unread_count"] == 3
    assert [n["text"] for n in body["notifications"]] == ["note 2", "note 1", "note 0"]
    # someone else's id is left alone
    r = api.post("/api/v1/notifications/read", json={"ids": [ids[0], bob_note]})
    assert r.json() == {"marked": 1, "unread_count": 2}
    assert api.post("/api/v1/notifications/read", json={}).status_code == 422
    assert api.post("/api/v1/notifications/read", json={"all": True}).json()["unread_count"] == 0
    assert len(api.get("/api/v1/notifications?unread=true").json()["notifications"]) == 0
    with TestClient(app, headers={"Authorization": f"Bearer {bob_token}"}) as as_bob:
        assert as_bob.get("/api/v1/notifications").json()["unread_count"] == 1
    r = api.patch("/api/v1/notifications/preferences", json={"mentioned": False, "email": True})
    assert r.json()["mentioned"] is False and r.json()["email"] is True
    assert api.get("/api/v1/notifications/preferences").json()["assigned"] is True
