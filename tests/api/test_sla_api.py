"""SLA policies and calendars over REST (admins write, agents read), the `sla` object on
conversations, and the Due soon and Breached queues in the API and the web UI (both
databases)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.domain.events import EventKind, record_event
from imapdesk.domain.sla import clock
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import utcnow
from tests.support import factories as f
from tests.support.web import PASSWORD, sign_in

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


@pytest.fixture
def admin(app: FastAPI, engine: Engine) -> Iterator[TestClient]:
    with unit_of_work(engine) as s:
        carol = create_agent(s, "carol@example.com", "Carol Admin", "pw", is_admin=True)
        token = create_api_token(s, carol, name="tests")
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


WEEK = {"monday": [["09:00", "12:00"], ["13:00", "17:00"]], "friday": [["09:00", "15:00"]]}


def test_calendars_and_policies_crud_admins_only(
    api: TestClient, admin: TestClient, engine: Engine
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        box_id = box.id
    body = {
        "name": "Berlin",
        "timezone": "Europe/Berlin",
        "hours": WEEK,
        "holidays": ["2026-12-25"],
    }
    assert api.post("/api/v1/calendars", json=body).status_code == 403
    r = admin.post("/api/v1/calendars", json=body)
    assert r.status_code == 201, r.text
    cal = r.json()
    assert cal["hours"]["monday"] == [["09:00", "12:00"], ["13:00", "17:00"]]
    assert cal["hours"]["sunday"] == [] and cal["holidays"] == ["2026-12-25"]
    assert admin.post("/api/v1/calendars", json=body).status_code == 409
    bad = admin.post("/api/v1/calendars", json=body | {"name": "x", "timezone": "Mars/Base"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "timezone"
    bad = admin.post(
        "/api/v1/calendars", json=body | {"name": "y", "hours": {"monday": [["17:00", "09:00"]]}}
    )
    assert bad.status_code == 422
    r = admin.patch(
        f"/api/v1/calendars/{cal['id']}", json={"holidays": ["2026-12-24", "2026-12-25"]}
    )
    assert r.status_code == 200 and r.json()["holidays"] == ["2026-12-24", "2026-12-25"]
    assert api.get("/api/v1/calendars").json()[0]["name"] == "Berlin"

    policy = {
        "name": "Support",
        "scope": "mailbox",
        "mailbox_id": box_id,
        "calendar_id": cal["id"],
        "first_response_minutes": 60,
        "resolution_minutes": 480,
    }
    assert api.post("/api/v1/sla-policies", json=policy).status_code == 403
    r = admin.post("/api/v1/sla-policies", json=policy)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert r.json()["warning_minutes"] == 30 and r.json()["enabled"]
    assert r.json()["pause_when_pending"] is True  # paused while pending, unless told
    r = admin.patch(f"/api/v1/sla-policies/{pid}", json={"pause_when_pending": False})
    assert r.status_code == 200 and r.json()["pause_when_pending"] is False
    bad = admin.patch(f"/api/v1/sla-policies/{pid}", json={"pause_when_pending": None})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "pause_when_pending"
    bad = admin.patch(f"/api/v1/sla-policies/{pid}", json={"pause_when_pending": "sometimes"})
    assert bad.status_code == 422
    assert (
        api.patch(f"/api/v1/sla-policies/{pid}", json={"pause_when_pending": True}).status_code
        == 403
    )
    assert (
        admin.post(
            "/api/v1/sla-policies",
            json=policy
            | {"name": "none", "first_response_minutes": None, "resolution_minutes": None},
        ).status_code
        == 422
    )
    assert (
        admin.post(
            "/api/v1/sla-policies", json=policy | {"name": "t", "scope": "team", "team_id": 999}
        ).status_code
        == 422
    )
    r = admin.patch(f"/api/v1/sla-policies/{pid}", json={"scope": "tag", "tag": "VIP"})
    assert r.status_code == 200 and r.json()["tag"] == "vip" and r.json()["mailbox_id"] is None
    assert api.patch(f"/api/v1/sla-policies/{pid}", json={"enabled": False}).status_code == 403
    assert [p["name"] for p in api.get("/api/v1/sla-policies").json()] == ["Support"]
    # a calendar in use stays
    assert admin.delete(f"/api/v1/calendars/{cal['id']}").status_code == 409
    assert api.delete(f"/api/v1/sla-policies/{pid}").status_code == 403
    assert admin.delete(f"/api/v1/sla-policies/{pid}").status_code == 204
    assert admin.get(f"/api/v1/sla-policies/{pid}").status_code == 404
    assert admin.delete(f"/api/v1/calendars/{cal['id']}").status_code == 204
    assert api.get("/api/v1/sla-policies", headers={"Authorization": ""}).status_code == 401


def _scene(engine: Engine, admin: TestClient) -> dict[str, int]:
    """A round-the-clock policy, an hour to answer: `late` is past due, `soon` and `sooner`
    fall due within the hour (`sooner` first), `later` (a day to answer, by its tag) and
    `answered` are in neither queue."""
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        box_id = box.id
        ids = {
            name: f.conversation(s, box, name, tags=("patient",) if name == "later" else ()).id
            for name in ("late", "soon", "sooner", "later", "answered")
        }
    r = admin.post(
        "/api/v1/sla-policies",
        json={
            "name": "Hour",
            "scope": "mailbox",
            "mailbox_id": box_id,
            "first_response_minutes": 60,
        },
    )
    assert r.status_code == 201
    r = admin.post(
        "/api/v1/sla-policies",
        json={"name": "Day", "scope": "tag", "tag": "patient", "first_response_minutes": 1440},
    )
    assert r.status_code == 201
    clock.start(engine)
    now = utcnow()
    ages = {"late": 120, "soon": 30, "sooner": 50, "later": 120, "answered": 10}
    with unit_of_work(engine) as s:
        for name, minutes in ages.items():
            row = record_event(s, EventKind.conversation_created, conversation_id=ids[name])
            row.created_at = now - timedelta(minutes=minutes)
        row = record_event(s, EventKind.reply_sent, conversation_id=ids["answered"])
        row.created_at = now - timedelta(minutes=5)
    assert clock.handle_events(engine) == 6
    return {k: v for k, v in ids.items() if v is not None}


def test_the_sla_queues_and_the_sla_object(
    api: TestClient, admin: TestClient, engine: Engine
) -> None:
    ids = _scene(engine, admin)
    breached = api.get("/api/v1/conversations", params={"sla": "breached"}).json()["items"]
    assert [c["id"] for c in breached] == [ids["late"]]
    assert breached[0]["sla"]["policy"] == "Hour"
    soon = api.get("/api/v1/conversations", params={"sla": "due_soon"}).json()
    assert [c["id"] for c in soon["items"]] == [ids["sooner"], ids["soon"]]
    # paged by due time
    first = api.get("/api/v1/conversations", params={"sla": "due_soon", "limit": 1}).json()
    assert [c["id"] for c in first["items"]] == [ids["sooner"]]
    second = api.get(
        "/api/v1/conversations",
        params={"sla": "due_soon", "limit": 1, "cursor": first["next_cursor"]},
    ).json()
    assert [c["id"] for c in second["items"]] == [ids["soon"]] and second["next_cursor"] is None
    every = api.get("/api/v1/conversations", params={"sla": "with_due"}).json()["items"]
    assert [c["id"] for c in every] == [ids["late"], ids["sooner"], ids["soon"], ids["later"]]

    one = api.get(f"/api/v1/conversations/{ids['answered']}").json()
    assert one["sla"]["first_response_met"] is True and one["sla"]["breached"] is False
    assert one["sla"]["first_response_at"] is not None
    later = api.get(f"/api/v1/conversations/{ids['later']}").json()["sla"]
    assert later["policy"] == "Day"
    listed = {c["id"]: c for c in api.get("/api/v1/conversations").json()["items"]}
    assert listed[ids["late"]]["sla"]["first_response_due"] is not None
    assert api.get("/api/v1/conversations", params={"sla": "bogus"}).status_code == 422


_ROW = re.compile(r'<tr class="[^"]*" data-id="(\d+)"')
_COUNT = re.compile(
    r'data-queue="(due_soon|breached)">\s*<span>[^<]*</span> <span class="count">(\d+)</span>'
)


def test_the_web_queues_list_by_due_time(app: FastAPI, admin: TestClient, engine: Engine) -> None:
    with unit_of_work(engine) as s:
        create_agent(s, "alice@example.com", "Alice", PASSWORD)
    ids = _scene(engine, admin)
    client = TestClient(app, follow_redirects=False)
    sign_in(client)
    page = client.get("/", params={"queue": "due_soon"}).text
    assert [int(i) for i in _ROW.findall(page)] == [ids["sooner"], ids["soon"]]
    assert dict(_COUNT.findall(page)) == {"due_soon": "2", "breached": "1"}
    assert page.count('data-sla-due="due_soon"') == 2
    page = client.get("/", params={"queue": "breached"}).text
    assert [int(i) for i in _ROW.findall(page)] == [ids["late"]]
    assert 'data-sla-due="breached"' in page
    page = client.get("/", params={"queue": "open", "sort": "due"}).text
    assert [int(i) for i in _ROW.findall(page)] == [
        ids["late"],
        ids["sooner"],
        ids["soon"],
        ids["later"],
    ]


def test_a_pending_conversation_shows_its_clock_paused(
    app: FastAPI, api: TestClient, admin: TestClient, engine: Engine
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        box_id = box.id
        cid = f.conversation(s, box, "Waiting on the customer").id
    r = admin.post(
        "/api/v1/sla-policies",
        json={
            "name": "Day",
            "scope": "mailbox",
            "mailbox_id": box_id,
            "first_response_minutes": 60,
            "resolution_minutes": 1440,
        },
    )
    assert r.status_code == 201
    clock.start(engine)
    now = utcnow()
    with unit_of_work(engine) as s:
        for kind, minutes, payload in (
            (EventKind.conversation_created, 30, {}),
            (EventKind.reply_sent, 20, {}),
            (EventKind.status_changed, 10, {"details": {"to": "pending"}}),
        ):
            row = record_event(s, kind, conversation_id=cid, payload=payload)
            row.created_at = now - timedelta(minutes=minutes)
    assert clock.handle_events(engine) == 3
    got = api.get(f"/api/v1/conversations/{cid}").json()["sla"]
    assert got["paused_at"] is not None and got["resolution_due"] is not None
    every = api.get("/api/v1/conversations", params={"sla": "with_due"}).json()["items"]
    assert cid not in [c["id"] for c in every]  # nothing runs while paused
    client = TestClient(app, follow_redirects=False)
    sign_in(client)
    page = client.get(f"/conversations/{cid}").text
    assert 'data-sla-target="resolution" data-sla-paused' in page
    assert "resolution paused since" in page

    # open again: running, its due time later by the ten minutes paused
    with unit_of_work(engine) as s:
        record_event(
            s, EventKind.status_changed, conversation_id=cid, payload={"details": {"to": "open"}}
        )
    assert clock.handle_events(engine) == 1
    got = api.get(f"/api/v1/conversations/{cid}").json()["sla"]
    assert got["paused_at"] is None
    page = client.get(f"/conversations/{cid}").text
    assert "data-sla-paused" not in page and 'data-sla-target="resolution"' in page
