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
from imapdesk.kernel.models import (
    Activity,
    AgentAvailability,
    BusinessCalendar,
    Rule,
    SavedReply,
    Team,
    TeamMailbox,
)
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
        "conditions-0-field": "subject",
        "conditions-0-op": "contains",
        "conditions-0-value": "invoice",
        # a blank row (the one the page offers) is left out
        "conditions-1-field": "",
        "conditions-1-op": "contains",
        "conditions-1-value": "",
        "actions-0-type": "tag",
        "actions-0-tag": "billing",
        "actions-0-agent": "bob@example.com",  # another type's input: not read
        "actions-1-type": "",
        "enabled": "true",
    }
    # without the CSRF token: refused, nothing stored; an agent who is no admin: refused
    assert admin.post("/admin/rules", data=form).status_code == 403
    bob_token = csrf(bob, "/")
    assert bob.post("/admin/rules", data={**form, "csrf_token": bob_token}).status_code == 403
    r = admin.post("/admin/rules", data={**form, "csrf_token": token})
    assert r.status_code == 303, r.text
    admin.post("/admin/rules", data={**form, "name": "Second", "csrf_token": token})
    with Session(engine) as db:
        rules = {r.name: r for r in db.exec(select(Rule))}
    assert rules["Refunds"].conditions == [
        {"field": "subject", "op": "contains", "value": "invoice"}
    ]
    assert rules["Refunds"].actions == [{"type": "tag", "tag": "billing"}]
    page = admin.get("/admin/rules").text
    assert page.index('data-rule="Refunds"') < page.index('data-rule="Second"')
    r = admin.post(
        f"/admin/rules/{rules['Second'].id}/move", data={"direction": "up", "csrf_token": token}
    )
    assert r.status_code == 303
    page = admin.get("/admin/rules").text
    assert page.index('data-rule="Second"') < page.index('data-rule="Refunds"')
    # the stored rule as rows, and one blank row of each
    edit = Page(admin.get(f"/admin/rules/{rules['Refunds'].id}").text)
    assert edit.inputs["name"] == "Refunds"
    assert edit.inputs["conditions-0-value"] == "invoice"
    assert edit.inputs["conditions-1-value"] == ""
    assert edit.inputs["actions-0-tag"] == "billing"
    assert "actions-1-tag" in edit.inputs and "conditions-2-value" not in edit.inputs
    run = admin.get(f"/admin/rules/{rules['Refunds'].id}/dry-run")
    assert run.status_code == 200
    assert 'class="matched-count">1<' in run.text and "Invoice 7 wrong" in run.text
    r = admin.post(f"/admin/rules/{rules['Refunds'].id}/delete", data={"csrf_token": token})
    assert r.status_code == 303
    with Session(engine) as db:
        assert [r.name for r in db.exec(select(Rule))] == ["Second"]


def test_the_rule_forms_rows_become_the_rules_structures(
    app: FastAPI, engine: Engine, people: dict[str, Any]
) -> None:
    """Every kind of row: ids from the selects as numbers, yes/no as booleans, several agents
    to notify; rows in the order of their index, gaps allowed; an edit keeps what it shows."""
    with unit_of_work(engine) as s:
        team = Team(name="Front")
        s.add(team)
        saved = SavedReply(name="Thanks", body="We got it.")
        s.add(saved)
        calendar = BusinessCalendar(name="Office", hours={}, holidays=[])
        s.add(calendar)
        s.flush()
        ids = {"team": team.id, "saved": saved.id, "calendar": calendar.id}
    admin = browser(app, "admin@example.com")
    token = csrf(admin, "/admin/rules/new")
    form: dict[str, Any] = {
        "csrf_token": token,
        "name": "Everything",
        "trigger": "time.no_reply",
        "trigger_amount": "4",
        "match": "any",
        "conditions-7-field": "mailbox",
        "conditions-7-op": "is",
        "conditions-7-value": str(people["box"]),
        "conditions-2-field": "team",
        "conditions-2-op": "is_not",
        "conditions-2-value": str(ids["team"]),
        "conditions-3-field": "business_hours",
        "conditions-3-op": "is",
        "conditions-3-value": "false",
        "conditions-3-calendar_id": str(ids["calendar"]),
        "conditions-4-field": "assignee",
        "conditions-4-op": "is",
        "conditions-4-value": "none",
        "conditions-5-field": "attachments",
        "conditions-5-op": "is",
        "conditions-5-value": "true",
        "actions-0-type": "assign_team",
        "actions-0-team": str(ids["team"]),
        "actions-1-type": "status",
        "actions-1-status": "pending",
        "actions-2-type": "snooze",
        "actions-2-hours": "1.5",
        "actions-3-type": "note",
        "actions-3-text": "Waiting on the customer.",
        "actions-4-type": "reply",
        "actions-4-saved_reply_id": str(ids["saved"]),
        "actions-5-type": "notify",
        "actions-5-agent_ids": [str(people["bob"]), str(people["admin"])],
        "actions-5-assignee": "true",
        "actions-5-notify_text": "Look at this",
        "actions-6-type": "webhook",
        "actions-6-url": "",
        "actions-10-type": "assign",
        "actions-10-agent": "bob@example.com",
        "actions-9-type": "untag",
        "actions-9-tag": "new",
    }
    r = admin.post("/admin/rules", data=form)
    assert r.status_code == 303, r.text
    with Session(engine) as db:
        rule = db.exec(select(Rule).where(col(Rule.name) == "Everything")).one()
    assert (rule.trigger, rule.trigger_amount, rule.match) == ("time.no_reply", 4, "any")
    assert rule.conditions == [
        {"field": "team", "op": "is_not", "value": ids["team"]},
        {"field": "business_hours", "op": "is", "value": False, "calendar_id": ids["calendar"]},
        {"field": "assignee", "op": "is", "value": "none"},
        {"field": "attachments", "op": "is", "value": True},
        {"field": "mailbox", "op": "is", "value": people["box"]},
    ]
    assert rule.actions == [
        {"type": "assign_team", "team": ids["team"]},
        {"type": "status", "status": "pending"},
        {"type": "snooze", "hours": 1.5},
        {"type": "note", "text": "Waiting on the customer."},
        {"type": "reply", "saved_reply_id": ids["saved"]},
        {
            "type": "notify",
            "agent_ids": [people["bob"], people["admin"]],
            "assignee": True,
            "text": "Look at this",
        },
        {"type": "webhook"},
        {"type": "untag", "tag": "new"},
        {"type": "assign", "agent": "bob@example.com"},
    ]
    # the edit page shows each as it was chosen; saving it unchanged keeps the rule
    html = admin.get(f"/admin/rules/{rule.id}").text
    edit = Page(html)
    assert edit.inputs["trigger_amount"] == "4"
    assert f'<option value="{ids["team"]}" selected>Front</option>' in html
    assert f'<option value="{people["box"]}" selected>' in html
    assert f'<option value="{ids["saved"]}" selected>Thanks</option>' in html
    assert f'<option value="{ids["calendar"]}" selected>Office</option>' in html
    assert '<option value="none" selected>nobody (unassigned)</option>' in html
    assert '<option value="pending" selected>pending</option>' in html
    assert 'name="actions-2-hours" value="1.5"' in html
    assert f'<option value="{people["bob"]}" selected>' in html
    before = (rule.conditions, rule.actions)
    resaved = {k: v for k, v in form.items() if not k.startswith(("conditions-", "actions-"))}
    for n, c in enumerate(rule.conditions):
        for key, value in c.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            resaved[f"conditions-{n}-{key}"] = text
    r = admin.post(f"/admin/rules/{rule.id}", data={**resaved, "actions-0-type": "tag",
                                                    "actions-0-tag": "x"})  # fmt: skip
    assert r.status_code == 303, r.text
    with Session(engine) as db:
        again = db.get(Rule, rule.id)
        assert again is not None
        assert again.conditions == before[0]
        assert again.actions == [{"type": "tag", "tag": "x"}]


@pytest.mark.parametrize(
    ("rows", "row_error", "kept"),
    [
        # a pattern that is no regular expression: the error beside the second condition
        (
            {
                "conditions-0-field": "subject",
                "conditions-0-op": "contains",
                "conditions-0-value": "invoice",
                "conditions-1-field": "subject",
                "conditions-1-op": "matches",
                "conditions-1-value": "refund(",
                "actions-0-type": "tag",
                "actions-0-tag": "billing",
            },
            ("conditions-1-value", "Not a valid regular expression"),
            {"conditions-0-value": "invoice", "conditions-1-value": "refund(",
             "actions-0-tag": "billing"},
        ),
        # snooze for no time: beside the action
        (
            {"actions-0-type": "tag", "actions-0-tag": "later",
             "actions-3-type": "snooze", "actions-3-hours": "0"},
            ("actions-1-hours", "Hours is a number"),
            {"actions-0-tag": "later", "actions-1-hours": "0"},
        ),
        # nobody to notify
        (
            {"actions-0-type": "notify", "actions-0-notify_text": "Hello"},
            ("actions-0-notify_text", "Notify whom"),
            {"actions-0-notify_text": "Hello"},
        ),
        # no action at all: the page says so, the condition kept
        (
            {"conditions-0-field": "customer_domain", "conditions-0-op": "is",
             "conditions-0-value": "example.org", "actions-0-type": ""},
            (None, "Actions is a list of 1 to 20"),
            {"conditions-0-value": "example.org"},
        ),
    ],
)  # fmt: skip
def test_a_rule_form_with_an_error_comes_back_as_it_was_sent(
    app: FastAPI,
    engine: Engine,
    people: dict[str, Any],
    rows: dict[str, str],
    row_error: tuple[str | None, str],
    kept: dict[str, str],
) -> None:
    admin = browser(app, "admin@example.com")
    token = csrf(admin, "/admin/rules/new")
    base = {"csrf_token": token, "name": "Kept name", "trigger": "conversation.created",
            "match": "any", "stop": "true"}  # fmt: skip
    r = admin.post("/admin/rules", data={**base, **rows})
    assert r.status_code == 422, r.text
    page = Page(r.text)
    assert page.inputs["name"] == "Kept name"
    assert 'name="stop" value="true" checked' in r.text
    assert '<option value="any" selected>' in r.text
    for name, value in kept.items():
        assert page.inputs[name] == value, name
    near, message = row_error
    assert message in r.text
    if near is not None:
        # the error within the row of the input it is about
        row = r.text[r.text.index(f'name="{near}"') :]
        row = row[: row.index("</li>")]
        assert 'class="error row-error"' in row and message in row
    with Session(engine) as db:
        assert db.exec(select(Rule)).all() == []
    # an edit with an error keeps the stored rule as it was
    good = {**base, "conditions-0-field": "subject", "conditions-0-op": "contains",
            "conditions-0-value": "x", "actions-0-type": "tag", "actions-0-tag": "y"}  # fmt: skip
    assert admin.post("/admin/rules", data=good).status_code == 303
    with Session(engine) as db:
        rid = db.exec(select(Rule.id)).one()
    r = admin.post(f"/admin/rules/{rid}", data={**base, "name": "Changed", **rows})
    assert r.status_code == 422
    assert Page(r.text).inputs["name"] == "Changed"
    with Session(engine) as db:
        stored = db.get(Rule, rid)
        assert stored is not None and stored.name == "Kept name"
        assert stored.actions == [{"type": "tag", "tag": "y"}]


def test_a_rule_form_refuses_too_many_rows_and_too_long_values(
    app: FastAPI, people: dict[str, Any]
) -> None:
    admin = browser(app, "admin@example.com")
    token = csrf(admin, "/admin/rules/new")
    base = {"csrf_token": token, "name": "Big", "trigger": "conversation.created",
            "actions-0-type": "tag", "actions-0-tag": "y"}  # fmt: skip
    many = {f"conditions-{n}-field": "subject" for n in range(300)}
    r = admin.post("/admin/rules", data={**base, **many})
    assert r.status_code == 422 and "at most 200 rows" in r.text
    r = admin.post("/admin/rules", data={**base, "actions-0-tag": "y" * 30_000})
    assert r.status_code == 422 and "at most 20000 characters" in r.text
    # a duplicate name: the page again, saying so
    assert admin.post("/admin/rules", data=base).status_code == 303
    r = admin.post("/admin/rules", data=base)
    assert r.status_code == 409 and "exists already" in r.text


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


def _switch(html: str) -> dict[str, str]:
    """The header's availability switch's fields."""
    start = html.index('class="inline availability-toggle"')
    return Page(html[start : html.index("</form>", start)]).inputs


def test_the_headers_availability_switch(
    app: FastAPI, engine: Engine, people: dict[str, Any]
) -> None:
    """Every page shows a signed-in agent whether they are available; the switch turns it
    over, keeps the capacity, and returns to the page it was on (only a path on this site)."""
    with unit_of_work(engine) as s:
        s.add(AgentAvailability(agent_id=people["bob"], available=True, capacity=4))
    bob = browser(app, "bob@example.com")
    page = bob.get("/?queue=mine").text
    assert 'data-available="true"' in page and ">Available</button>" in page
    switch = _switch(page)
    assert switch["available"] == "false" and switch["toggle"] == "true"
    assert switch["back"] == "/?queue=mine"
    # without the CSRF token: refused
    assert bob.post("/account/availability", data={**switch, "csrf_token": ""}).status_code == 403
    r = bob.post("/account/availability", data=switch)
    assert r.status_code == 303 and r.headers["location"] == "/?queue=mine"
    with Session(engine) as db:
        row = db.get(AgentAvailability, people["bob"])
        assert row is not None and row.available is False and row.capacity == 4
    for path in ("/", "/account", "/customers"):
        page = bob.get(path).text
        assert 'data-available="false"' in page and ">Away</button>" in page, path
    assert _switch(page)["available"] == "true"
    # back elsewhere: home
    r = bob.post("/account/availability", data={**_switch(page), "back": "//evil.test/x"})
    assert r.status_code == 303 and r.headers["location"] == "/"
    with Session(engine) as db:
        row = db.get(AgentAvailability, people["bob"])
        assert row is not None and row.available is True and row.capacity == 4
    # an admin's pages show the admin's own state; an agent never seen switching: available
    admin = browser(app, "admin@example.com")
    assert 'data-available="true"' in admin.get("/admin/rules").text
    # signed out: no switch
    assert "data-available" not in TestClient(app).get("/login").text
