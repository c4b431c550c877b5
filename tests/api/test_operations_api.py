"""PATCH /api/v1/conversations/{id}, POST .../claim and .../release, GET .../activity."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.accounts import access
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Activity,
    Agent,
    Conversation,
    ConversationTag,
    Mailbox,
    PendingImapAction,
)
from tests.support import factories as f

BASE = "/api/v1/conversations"
KEYWORDS = {"permanent_flags": ["\\Flagged", "\\Seen", "\\*"]}


@dataclass
class Scene:
    conv: int  # support, open, tags vip
    other: int  # billing
    merged: int  # merged into conv
    bob_token: str
    carol_token: str  # an admin


@pytest.fixture
def scene(engine: Engine, agent_token: str) -> Scene:
    with unit_of_work(engine) as s:
        bob = create_agent(s, "bob@example.com", "Bob", "pw")
        carol = create_agent(s, "carol@example.com", "Carol", "pw", is_admin=True)
        support = f.mailbox(s, "support", capabilities=KEYWORDS)
        billing = f.mailbox(s, "billing")
        inbox = f.folder(s, support, "INBOX", watched=True)
        conv = f.conversation(s, support, "Printer on fire", tags=("vip",))
        msg = f.message(s, conv)
        f.location(s, msg, inbox, 1)
        other = f.conversation(s, billing, "Refund")
        merged = f.conversation(s, support, "Printer (dup)", merged_into_id=conv.id)
        scene = Scene(
            conv=int(conv.id or 0),
            other=int(other.id or 0),
            merged=int(merged.id or 0),
            bob_token=create_api_token(s, bob),
            carol_token=create_api_token(s, carol),
        )
    return scene


def client_for(app: FastAPI, token: str) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def bob(app: FastAPI, scene: Scene) -> Iterator[TestClient]:
    with client_for(app, scene.bob_token) as c:
        yield c


@pytest.fixture
def carol(app: FastAPI, scene: Scene) -> Iterator[TestClient]:
    with client_for(app, scene.carol_token) as c:
        yield c


def rows(engine: Engine, model: Any) -> list[Any]:
    with Session(engine) as s:
        return list(s.exec(select(model).order_by(col(model.id))))


def conv_row(engine: Engine, cid: int) -> Conversation:
    with Session(engine) as s:
        found = s.get(Conversation, cid)
        assert found is not None
        return found


def error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()["error"]
    assert body["code"] == code
    return body


# --- PATCH ------------------------------------------------------------------------------------


def test_patch_changes_status_assignee_and_tags(
    api: TestClient, scene: Scene, engine: Engine
) -> None:
    r = api.patch(
        f"{BASE}/{scene.conv}",
        json={"status": "pending", "assignee": "Bob@Example.com", "tags": ["urgent", "a b"]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == api.get(f"{BASE}/{scene.conv}").json()
    assert (body["status"], body["assignee"], body["claimed"]) == (
        "pending",
        "bob@example.com",
        True,
    )
    assert body["tags"] == ["a b", "urgent"]
    assert len(body["messages"]) == 1

    acts = rows(engine, Activity)
    assert [(a.action, a.source, a.actor) for a in acts] == [
        ("status", "api", "alice@example.com"),
        ("assigned", "api", "alice@example.com"),
        ("tagged", "api", "alice@example.com"),
        ("untagged", "api", "alice@example.com"),
    ]
    outbox = rows(engine, PendingImapAction)
    assert [(o.kind, o.payload) for o in outbox] == [
        ("move", {"role": "pending"}),
        ("flags", {"add": ["\\Flagged", "$Assigned_bob"], "remove": []}),
        ("flags", {"add": ["urgent"], "remove": ["vip"]}),
    ]
    assert conv_row(engine, scene.conv).version == 5


def test_patch_only_what_is_sent(api: TestClient, scene: Scene, engine: Engine) -> None:
    r = api.patch(f"{BASE}/{scene.conv}", json={"tags": ["vip", "new"]})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["tags"]) == ("open", ["new", "vip"])
    assert [a.action for a in rows(engine, Activity)] == ["tagged"]
    # an empty body changes nothing
    r = api.patch(f"{BASE}/{scene.conv}", json={})
    assert r.status_code == 200, r.text
    assert len(rows(engine, Activity)) == 1


def test_patch_assignee_null_unassigns(api: TestClient, scene: Scene, engine: Engine) -> None:
    assert api.post(f"{BASE}/{scene.conv}/claim").status_code == 200
    r = api.patch(f"{BASE}/{scene.conv}", json={"assignee": None})
    assert r.status_code == 200, r.text
    assert (r.json()["assignee"], r.json()["claimed"]) == (None, False)
    assert [a.action for a in rows(engine, Activity)] == ["claimed", "unassigned"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"assignee": "nobody@example.com"}, "assignee"),
        ({"status": "done"}, "status"),
        ({"status": None}, "status"),
        ({"tags": None}, "tags"),
        ({"tags": "vip"}, "tags"),
        ({"tags": ["ok", ""]}, "tags.1"),
        ({"tags": ["x" * 101]}, "tags.0"),
        ({"tags": ["line\nbreak"]}, "tags"),
        ({"tags": ["   "]}, "tags"),
        ({"assigne": "bob@example.com"}, "assigne"),
        ({"status": "closed", "assignee": "nobody@example.com"}, "assignee"),
        ({"status": "closed", "tags": ["bell\x07"]}, "tags"),
    ],
)
def test_patch_invalid_input(
    api: TestClient, scene: Scene, engine: Engine, payload: dict[str, Any], field: str
) -> None:
    body = error(api.patch(f"{BASE}/{scene.conv}", json=payload), 422, "invalid_input")
    assert body["field"] == field
    # nothing of it stays
    assert rows(engine, Activity) == []
    assert rows(engine, PendingImapAction) == []
    c = conv_row(engine, scene.conv)
    assert (c.status, c.assignee_id, c.version) == ("open", None, 1)


def test_patch_deactivated_assignee(api: TestClient, scene: Scene, engine: Engine) -> None:
    with unit_of_work(engine) as s:
        bob = s.exec(select(Agent).where(Agent.email == "bob@example.com")).one()
        bob.is_active = False
    body = error(
        api.patch(f"{BASE}/{scene.conv}", json={"assignee": "bob@example.com"}),
        422,
        "invalid_input",
    )
    assert body["field"] == "assignee"


# --- claim and release ------------------------------------------------------------------------


def test_claim_and_conflict(api: TestClient, bob: TestClient, scene: Scene, engine: Engine) -> None:
    r = api.post(f"{BASE}/{scene.conv}/claim")
    assert r.status_code == 200, r.text
    assert r.json() == api.get(f"{BASE}/{scene.conv}").json()
    assert (r.json()["assignee"], r.json()["claimed"]) == ("alice@example.com", True)
    # one's own again: fine, nothing new
    assert api.post(f"{BASE}/{scene.conv}/claim").status_code == 200
    assert len(rows(engine, Activity)) == 1

    r = bob.post(f"{BASE}/{scene.conv}/claim")
    assert r.json() == {
        "error": {
            "code": "conflict",
            "message": f"conversation {scene.conv} is claimed by alice@example.com",
            "holder": "alice@example.com",
            "conversation_id": scene.conv,
        }
    }
    assert r.status_code == 409
    assert conv_row(engine, scene.conv).assignee_id is not None
    assert len(rows(engine, Activity)) == 1
    assert [(o.kind, o.payload) for o in rows(engine, PendingImapAction)] == [
        ("flags", {"add": ["\\Flagged", "$Assigned_alice"], "remove": []})
    ]


def test_claim_held_by_a_mail_client(bob: TestClient, scene: Scene, engine: Engine) -> None:
    with unit_of_work(engine) as s:
        c = s.get(Conversation, scene.conv)
        assert c is not None
        c.claimed = True
    body = error(bob.post(f"{BASE}/{scene.conv}/claim"), 409, "conflict")
    assert body["holder"] == "someone via mail client"


def test_release(
    api: TestClient, bob: TestClient, carol: TestClient, scene: Scene, engine: Engine
) -> None:
    assert api.post(f"{BASE}/{scene.conv}/claim").status_code == 200
    body = error(bob.post(f"{BASE}/{scene.conv}/release"), 403, "forbidden")
    assert body["holder"] == "alice@example.com"
    assert conv_row(engine, scene.conv).claimed

    r = api.post(f"{BASE}/{scene.conv}/release")
    assert r.status_code == 200, r.text
    assert (r.json()["assignee"], r.json()["claimed"]) == (None, False)
    # nobody holds it: releasing again is fine for anyone
    assert bob.post(f"{BASE}/{scene.conv}/release").status_code == 200

    # an admin may release what someone else holds
    assert bob.post(f"{BASE}/{scene.conv}/claim").status_code == 200
    r = carol.post(f"{BASE}/{scene.conv}/release")
    assert r.status_code == 200, r.text
    assert [(a.action, a.actor) for a in rows(engine, Activity)] == [
        ("claimed", "alice@example.com"),
        ("released", "alice@example.com"),
        ("claimed", "bob@example.com"),
        ("released", "carol@example.com"),
    ]


def _race(clients: dict[str, TestClient], path: str) -> dict[str, int]:
    """POST `path` from each client in its own thread, all started together."""
    barrier = threading.Barrier(len(clients))
    codes: dict[str, int] = {}

    def attempt(name: str, client: TestClient) -> None:
        barrier.wait(timeout=30)
        codes[name] = client.post(path).status_code

    threads = [threading.Thread(target=attempt, args=item) for item in clients.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return codes


def test_simultaneous_claims_through_the_api(
    app: FastAPI, agent_token: str, scene: Scene, engine: Engine
) -> None:
    with unit_of_work(engine) as s:
        box = s.exec(select(Mailbox).where(Mailbox.name == "support")).one()
        cids = [int(f.conversation(s, box, f"race {i}").id or 0) for i in range(10)]
    with client_for(app, agent_token) as alice, client_for(app, scene.bob_token) as bob:
        for cid in cids:
            codes = _race({"alice": alice, "bob": bob}, f"{BASE}/{cid}/claim")
            assert sorted(codes.values()) == [200, 409], codes
            with Session(engine) as s:
                acts = list(s.exec(select(Activity).where(Activity.conversation_id == cid)))
                assert [a.action for a in acts] == ["claimed"]


# --- the activity log -------------------------------------------------------------------------


def test_activity(api: TestClient, bob: TestClient, scene: Scene) -> None:
    assert api.post(f"{BASE}/{scene.conv}/claim").status_code == 200
    assert bob.patch(f"{BASE}/{scene.conv}", json={"status": "closed"}).status_code == 200
    r = api.get(f"{BASE}/{scene.conv}/activity")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(i["action"], i["actor"], i["source"], i["details"]) for i in items] == [
        ("status", "bob@example.com", "api", {"from": "open", "to": "closed"}),
        ("claimed", "alice@example.com", "api", {"assignee": "alice@example.com"}),
    ]
    assert items[0]["id"] > items[1]["id"]
    assert items[0]["created_at"].endswith("Z") or items[0]["created_at"].endswith("+00:00")
    assert set(items[0]) == {"id", "created_at", "source", "actor", "action", "details"}
    # nothing happened to the other one
    assert api.get(f"{BASE}/{scene.other}/activity").json() == {"items": []}


# --- who may see what -------------------------------------------------------------------------

ROUTES = [
    ("patch", "", {"status": "closed"}),
    ("post", "/claim", None),
    ("post", "/release", None),
    ("get", "/activity", None),
]


@pytest.mark.parametrize(("method", "suffix", "payload"), ROUTES)
def test_unknown_and_invisible_conversations_are_404(
    api: TestClient,
    scene: Scene,
    engine: Engine,
    method: str,
    suffix: str,
    payload: dict[str, Any] | None,
) -> None:
    kwargs = {"json": payload} if payload is not None else {}
    error(api.request(method, f"{BASE}/999999{suffix}", **kwargs), 404, "not_found")

    # Alice (the API token's agent) may work in billing only: support is hidden from her
    with unit_of_work(engine) as s:
        alice = s.exec(select(Agent).where(col(Agent.email) == "alice@example.com")).one()
        billing = s.exec(select(Mailbox.id).where(Mailbox.name == "billing")).one()
        access.set_mailbox_access(s, alice, all_mailboxes=False, mailbox_ids=[billing or 0])
    error(api.request(method, f"{BASE}/{scene.conv}{suffix}", **kwargs), 404, "not_found")
    assert rows(engine, Activity) == []
    assert rows(engine, PendingImapAction) == []


@pytest.mark.parametrize(("method", "suffix", "payload"), ROUTES)
def test_merged_conversations_redirect(
    api: TestClient,
    scene: Scene,
    engine: Engine,
    method: str,
    suffix: str,
    payload: dict[str, Any] | None,
) -> None:
    kwargs = {"json": payload} if payload is not None else {}
    r = api.request(method, f"{BASE}/{scene.merged}{suffix}", follow_redirects=False, **kwargs)
    body = error(r, 308, "conversation_merged")
    assert body["merged_into"] == scene.conv
    assert r.headers["location"] == f"{BASE}/{scene.conv}{suffix}"
    assert rows(engine, Activity) == []


def test_writes_need_a_token(client: TestClient, scene: Scene) -> None:
    assert client.post(f"{BASE}/{scene.conv}/claim").status_code == 401
    assert client.patch(f"{BASE}/{scene.conv}", json={"status": "closed"}).status_code == 401
    assert client.get(f"{BASE}/{scene.conv}/activity").status_code == 401


def test_openapi_lists_the_routes(api: TestClient) -> None:
    paths = api.get("/api/v1/openapi.json").json()["paths"]
    assert "patch" in paths["/api/v1/conversations/{conversation_id}"]
    assert "post" in paths["/api/v1/conversations/{conversation_id}/claim"]
    assert "post" in paths["/api/v1/conversations/{conversation_id}/release"]
    assert "get" in paths["/api/v1/conversations/{conversation_id}/activity"]
    assert "409" in paths["/api/v1/conversations/{conversation_id}/claim"]["post"]["responses"]


def test_tags_stored(api: TestClient, scene: Scene, engine: Engine) -> None:
    api.patch(f"{BASE}/{scene.conv}", json={"tags": [" spaced ", "spaced"]})
    with Session(engine) as s:
        stored = s.exec(
            select(ConversationTag.tag).where(ConversationTag.conversation_id == scene.conv)
        ).all()
    assert list(stored) == ["spaced"]
