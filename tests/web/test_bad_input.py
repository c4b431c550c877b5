"""Bad input to the web UI and the REST API: every malformed path, parameter or form answers
with a 4xx that names what is wrong, never a server error (on SQLite and PostgreSQL: integer
bounds and text that a database refuses differ between them)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import select

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent
from tests.support import factories as f
from tests.support.web import Page, csrf, sign_in

BIG = str(2**63)
WEB_GETS = [
    "/?sort=sideways",
    "/?cursor=!!!",
    "/?cursor=" + "A" * 5000,
    "/?queue=nope",
    "/?mailbox=nowhere",
    "/?tag=%00",
    "/?q=%00",
    "/?q=" + "x" * 10000,
    "/?status=bogus",
    "/?assignee=nobody@x",
    "/?limit=-1",
    "/?limit=abc",
    "/?page=abc",
    "/conversations/abc",
    f"/conversations/{BIG}",
    "/conversations/-1",
    "/conversations/0",
    f"/conversations/{BIG}/parts",
    "/conversations/1/messages/abc/body",
    f"/conversations/1/messages/{BIG}/body",
    f"/attachments/{BIG}",
    "/attachments/abc",
    "/queue-parts?sort=x",
    "/queue-parts?cursor=%%%",
    "/admin/mailboxes/abc",
    f"/admin/mailboxes/{BIG}",
    f"/admin/agents/{BIG}",
    "/admin/agents/abc",
]
API_GETS = [
    "/api/v1/conversations?limit=0",
    "/api/v1/conversations?limit=abc",
    "/api/v1/conversations?cursor=!!",
    "/api/v1/conversations?sort=x",
    "/api/v1/conversations?status=nope",
    f"/api/v1/conversations/{BIG}",
    "/api/v1/conversations/abc",
    f"/api/v1/messages/{BIG}",
    f"/api/v1/messages/{BIG}/raw",
    "/api/v1/conversations?q=%00",
    "/api/v1/conversations?tag=%00",
    f"/api/v1/conversations/{BIG}/activity",
]


@pytest.fixture
def conversation_id(engine: Engine, agent_token: str) -> int:
    with unit_of_work(engine) as s:
        alice = s.exec(select(Agent).where(Agent.email == "alice@example.com")).one()
        alice.is_admin = True
        return f.conversation(s, f.mailbox(s, "support"), "Printer on fire", minutes=1).id or 0


@pytest.fixture
def web(app: FastAPI, conversation_id: int) -> TestClient:
    browser = TestClient(app, follow_redirects=False, raise_server_exceptions=False)
    sign_in(browser)
    return browser


@pytest.fixture
def rest(app: FastAPI, agent_token: str) -> TestClient:
    headers = {"Authorization": f"Bearer {agent_token}"}
    return TestClient(app, headers=headers, raise_server_exceptions=False)


def refused(r: Any) -> str:
    """The reason given, when the answer is a 4xx; a failure otherwise."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if r.headers["content-type"].startswith("application/json"):
        return str(r.json()["error"]["message"])
    return Page(r.text).all_text


def test_a_filter_with_a_nul_character_finds_nothing(web: TestClient, rest: TestClient) -> None:
    for query in ("tag=%00", "assignee=a%00b", "mailbox=%00", "q=%00"):
        assert rest.get(f"/api/v1/conversations?{query}").json()["items"] == []
    for query in ("tag=%00", "mailbox=%00", "q=%00"):
        assert 'data-id="' not in web.get(f"/?{query}").text


def not_refused(client: TestClient, paths: list[str]) -> list[tuple[str, int, str]]:
    """The paths answered with neither 200 nor a 4xx that names the problem (all are asked,
    on one signed-in client: a failure lists every path that failed)."""
    wrong = []
    for path in paths:
        r = client.get(path)
        if r.status_code == 200:  # an unknown queue, sort, mailbox or parameter: the default
            continue
        try:
            assert refused(r)
        except AssertionError:
            wrong.append((path[:80], r.status_code, r.text[:200]))
    return wrong


def test_web_pages_refuse_bad_paths_and_parameters(web: TestClient) -> None:
    assert not_refused(web, WEB_GETS) == []


def test_the_api_refuses_bad_paths_and_parameters(rest: TestClient) -> None:
    assert not_refused(rest, API_GETS) == []


def test_ids_beyond_any_row_are_invalid_input_and_big_ones_not_found(
    web: TestClient, rest: TestClient
) -> None:
    for beyond in (BIG, str(2**31)):  # more than an id column holds, on either database
        assert "conversation_id" in refused(rest.get(f"/api/v1/conversations/{beyond}"))
        assert "less than or equal to" in refused(web.get(f"/conversations/{beyond}"))
    big = 2**31 - 1  # the largest id there could be: simply no such row
    assert rest.get(f"/api/v1/conversations/{big}").status_code == 404
    assert web.get(f"/conversations/{big}").status_code == 404


def test_forms_and_bodies_with_unstorable_values(
    web: TestClient, rest: TestClient, conversation_id: int
) -> None:
    page = f"/conversations/{conversation_id}"
    token = csrf(web, page)
    # an id beyond any row in a form's list, and an hour count no clock can reach
    r = web.post("/bulk", data={"action": "close", "ids": [BIG], "csrf_token": token})
    assert "less than or equal to" in refused(r)
    r = web.post(f"{page}/actions/snooze", data={"hours": str(10**30), "csrf_token": token})
    assert "snooze for 1 hour to a year" in refused(r)
    # text with a NUL character (PostgreSQL could not store it, SQLite could): refused alike
    r = web.post(f"{page}/actions/tags", data={"tags": "a\x00b", "csrf_token": token})
    assert "a tag must not contain control characters" in refused(r)
    r = rest.patch(f"/api/v1/conversations/{conversation_id}", json={"tags": ["a\x00b"]})
    assert "a tag must not contain control characters" in refused(r)
    # an address with a NUL character is no one's (PostgreSQL would refuse it in a query)
    r = web.post(
        "/bulk",
        data={"action": "assign", "ids": [conversation_id], "assignee": "a\x00b",
              "csrf_token": token},
    )  # fmt: skip
    assert r.status_code == 303
    assert "Nothing changed: no agent has the email" in web.get(r.headers["location"]).text
    r = rest.patch(f"/api/v1/conversations/{conversation_id}", json={"assignee": "a\x00b"})
    assert "no agent has the email" in refused(r)
    r = rest.post(f"/api/v1/conversations/{conversation_id}/notes", json={"body": "x\x00y"})
    assert r.status_code == 201, r.text  # a note's text is cleaned as mail text is: no NUL
    # nothing was left half done: the conversation still answers, unchanged where refused
    after = rest.get(f"/api/v1/conversations/{conversation_id}")
    assert after.status_code == 200 and after.json()["status"] == "open"
    assert after.json()["tags"] == [] and "\\u0000" not in after.text
    assert [m["text"] for m in after.json()["messages"]] == ["xy"]


def test_a_value_the_database_refuses_is_the_requests_fault(app: FastAPI, engine: Engine) -> None:
    """Whatever input check is missing, a value the database cannot take answers 422 with the
    database's reason, never the statement or its values (which may hold secrets)."""
    from sqlalchemy import text

    def store(value: str, number: int) -> dict[str, str]:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":  # refuses a NUL; SQLite stores it
                conn.execute(text("SELECT CAST(:v AS text)"), {"v": value})
            conn.execute(text("SELECT :n"), {"n": number})  # SQLite: 64 bits at most
        return {"stored": value}

    app.add_api_route("/api/v1/store-test", store)
    app.add_api_route("/store-test", store)
    client = TestClient(app, raise_server_exceptions=False)
    for path in ("/api/v1/store-test", "/store-test"):
        r = client.get(path, params={"value": "s3cret\x00", "number": str(2**64)})
        assert r.status_code == 422, r.text
        assert "cannot be stored" in r.text and "s3cret" not in r.text and "SELECT" not in r.text
        if path.startswith("/api/"):
            assert r.json()["error"]["code"] == "invalid_input"
