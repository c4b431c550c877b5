"""Rules and teams over HTTP: the REST API (anyone reads, admins change; what a rule may not
say is a 422 naming the field; the dry run) and the admin pages (admins only, CSRF on every
form, adding and ordering rules, the dry run page, teams and availability), and an agent's own
availability switch. Both databases."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Activity, AgentAvailability, Rule, Team, TeamMailbox
from tests.support import factories
from tests.support.web import PASSWORD, Page, csrf

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")

RULE: dict[str, Any] = {
    "name": "Billing",
    "trigger": "conversation.created",
    "conditions": [{"field": "subject", "op": "matches", "value": "invoice|refund"}],
    "actions": [{"type": "tag", "tag": "billing"}],
}


@pytest.fixture
def people(engine: Engine) -> dict[str, Any]:
    with unit_of_work(engine) as s:
        admin = create_agent(s, "admin@example.com", "Ada Admin", PASSWORD, is_admin=True)
        bob = create_agent(s, "bob@example.com", "Bob", PASSWORD)
        box = factories.mailbox(s)
        factories.conversation(s, box, "Invoice 7 wrong")
        factories.conversation(s, box, "Hello there")
        return {
            "admin": admin.id,
            "bob": bob.id,
            "box": box.id,
            "admin_token": create_api_token(s, admin),
            "bob_token": create_api_token(s, bob),
        }


def api(app: FastAPI, token: str) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


def browser(app: FastAPI, email: str) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    r = client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf(client)}
    )
    assert r.status_code == 303, r.text
    return client


def test_rules_rest(app: FastAPI, engine: Engine, people: dict[str, Any]) -> None:
    admin, bob = api(app, people["admin_token"]), api(app, people["bob_token"])
    assert bob.post("/api/v1/rules", json=RULE).status_code == 403
    assert TestClient(app).get("/api/v1/rules").status_code == 401
    r = admin.post("/api/v1/rules", json=RULE)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    second = admin.post("/api/v1/rules", json={**RULE, "name": "Second"}).json()
    assert second["position"] == r.json()["position"] + 1
    assert [x["name"] for x in bob.get("/api/v1/rules").json()] == ["Billing", "Second"]
    assert bob.get(f"/api/v1/rules/{rid}").json()["conditions"] == RULE["conditions"]
    # what a rule may not say: 422 naming the field
    bad = admin.post(
        "/api/v1/rules",
        json={
            **RULE,
            "name": "Bad",
            "conditions": [{"field": "subject", "op": "matches", "value": "("}],
        },
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "conditions[0]"
    assert admin.post("/api/v1/rules", json=RULE).status_code == 409  # the name is taken
    r = admin.patch(f"/api/v1/rules/{rid}", json={"enabled": False, "position": 9})
    assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["position"] == 9
    assert r.json()["actions"] == RULE["actions"]
    assert bob.patch(f"/api/v1/rules/{rid}", json={"enabled": True}).status_code == 403
    # the dry run: admins only, writes nothing
    assert bob.post(f"/api/v1/rules/{rid}/dry-run").status_code == 403
    run = admin.post(f"/api/v1/rules/{rid}/dry-run")
    assert run.status_code == 200, run.text
    body = run.json()
    assert body["matched"] == 1 and len(body["conversations"]) == 2
    hit = next(c for c in body["conversations"] if c["matched"])
    assert hit["subject"] == "Invoice 7 wrong" and hit["actions"] == ["tag 'billing'"]
    with Session(engine) as db:
        assert db.exec(select(Activity)).all() == []
    assert bob.delete(f"/api/v1/rules/{rid}").status_code == 403
    assert admin.delete(f"/api/v1/rules/{rid}").status_code == 204
    assert admin.get(f"/api/v1/rules/{rid}").status_code == 404


def test_teams_rest_and_availability(app: FastAPI, engine: Engine, people: dict[str, Any]) -> None:
    admin, bob = api(app, people["admin_token"]), api(app, people["bob_token"])
    team = {"name": "Front", "members": ["bob@example.com"], "mailboxes": [people["box"]]}
    assert bob.post("/api/v1/teams", json=team).status_code == 403
    r = admin.post("/api/v1/teams", json=team)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    assert bob.get("/api/v1/teams").json()[0]["members"] == ["bob@example.com"]
    assert (
        admin.post(
            "/api/v1/teams", json={**team, "name": "Other", "strategy": "random"}
        ).status_code
        == 422
    )
    r = admin.patch(f"/api/v1/teams/{tid}", json={"strategy": "least_busy", "members": []})
    assert r.json()["strategy"] == "least_busy" and r.json()["members"] == []
    assert r.json()["mailboxes"] == [people["box"]]
    # an agent's own availability; another's only for admins
    r = bob.put("/api/v1/teams/availability", json={"available": False, "capacity": 5})
    assert r.json() == {"agent": "bob@example.com", "available": False, "capacity": 5}
    assert bob.get("/api/v1/teams/availability").json()["available"] is False
    assert bob.put("/api/v1/teams/availability?of=admin@example.com", json={}).status_code == 403
    r = admin.put("/api/v1/teams/availability?of=bob@example.com", json={"capacity": None})
    assert r.json() == {"agent": "bob@example.com", "available": False, "capacity": None}
    assert admin.delete(f"/api/v1/teams/{tid}").status_code == 204
    with Session(engine) as db:
        assert db.exec(select(Team)).all() == [] and db.exec(select(TeamMailbox)).all() == []


def test_admin_pages_for_rules(app: FastAPI, engine: Engine, people: dict[str, Any]) -> None:
    bob = browser(app, "bob@example.com")
    for path in ("/admin/rules", "/admin/rules/new", "/admin/teams"):
        assert bob.get(path).status_code == 403
    admin = browser(app, "admin@example.com")
    token = csrf(admin, "/admin/rules/new")
    form = {
        "name": "Refunds",
        "trigger": "conversation.created",
        "match": "all",
        "conditions": '[{"field": "subject", "op": "contains", "value": "invoice"}]',
        "actions": '[{"type": "tag", "tag": "billing"}]',
        "enabled": "true",
    }
    # without the CSRF token: refused, nothing stored
    assert admin.post("/admin/rules", data=form).status_code == 403
    r = admin.post("/admin/rules", data={**form, "actions": "[not json", "csrf_token": token})
    assert r.status_code == 422 and "not valid JSON" in r.text
    r = admin.post("/admin/rules", data={**form, "csrf_token": token})
    assert r.status_code == 303, r.text
    admin.post("/admin/rules", data={**form, "name": "Second", "csrf_token": token})
    with Session(engine) as db:
        rules = {r.name: r for r in db.exec(select(Rule))}
    assert rules["Refunds"].conditions == [
        {"field": "subject", "op": "contains", "value": "invoice"}
    ]
    page = admin.get("/admin/rules").text
    assert page.index('data-rule="Refunds"') < page.index('data-rule="Second"')
    r = admin.post(
        f"/admin/rules/{rules['Second'].id}/move", data={"direction": "up", "csrf_token": token}
    )
    assert r.status_code == 303
    page = admin.get("/admin/rules").text
    assert page.index('data-rule="Second"') < page.index('data-rule="Refunds"')
    edit = Page(admin.get(f"/admin/rules/{rules['Refunds'].id}").text)
    assert edit.inputs["name"] == "Refunds"
    run = admin.get(f"/admin/rules/{rules['Refunds'].id}/dry-run")
    assert run.status_code == 200
    assert 'class="matched-count">1<' in run.text and "Invoice 7 wrong" in run.text
    r = admin.post(f"/admin/rules/{rules['Refunds'].id}/delete", data={"csrf_token": token})
    assert r.status_code == 303
    with Session(engine) as db:
        assert [r.name for r in db.exec(select(Rule))] == ["Second"]


def test_admin_pages_for_teams_and_the_availability_switch(
    app: FastAPI, engine: Engine, people: dict[str, Any]
) -> None:
    admin = browser(app, "admin@example.com")
    token = csrf(admin, "/admin/teams")
    assert admin.post("/admin/teams", data={"name": "Front"}).status_code == 403
    r = admin.post(
        "/admin/teams", data={"name": "Front", "strategy": "round_robin", "csrf_token": token}
    )
    assert r.status_code == 303
    with Session(engine) as db:
        tid = db.exec(select(Team.id)).one()
    r = admin.post(
        f"/admin/teams/{tid}",
        data={
            "name": "Front desk",
            "strategy": "least_busy",
            "members": [str(people["bob"]), str(people["admin"])],
            "mailboxes": [str(people["box"])],
            "csrf_token": token,
        },
    )
    assert r.status_code == 303, r.text
    page = admin.get("/admin/teams").text
    assert "Front desk" in page and "least busy" in page
    r = admin.post(
        f"/admin/teams/availability/{people['bob']}", data={"capacity": "3", "csrf_token": token}
    )
    assert r.status_code == 303
    with Session(engine) as db:
        row = db.get(AgentAvailability, people["bob"])
        assert row is not None and row.available is False and row.capacity == 3
    # an agent's own switch, linked from the header
    bob = browser(app, "bob@example.com")
    home = bob.get("/", follow_redirects=True).text
    assert "/account/availability" in home
    assert "away" in bob.get("/account/availability").text
    assert bob.post("/account/availability", data={"available": "true"}).status_code == 403
    r = bob.post(
        "/account/availability",
        data={
            "available": "true",
            "capacity": "",
            "csrf_token": csrf(bob, "/account/availability"),
        },
    )
    assert r.status_code == 303
    with Session(engine) as db:
        row = db.get(AgentAvailability, people["bob"])
        assert row is not None and row.available is True and row.capacity is None
    r = admin.post(f"/admin/teams/{tid}/delete", data={"csrf_token": token})
    assert r.status_code == 303
    with Session(engine) as db:
        assert db.exec(select(Team).where(col(Team.id) == tid)).first() is None
