"""The reports page, its CSV and `GET /api/v1/reports` at the HTTP level on both databases: the
same figures everywhere (tests/support/report_data.py), who may see what (anonymous: no; an
agent: the mailboxes they may see), clear 422s, a CSV a spreadsheet opens safely."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from imapdesk.api.app import SESSION_COOKIE
from imapdesk.domain.accounts.agents import create_api_token
from imapdesk.domain.reports.figures import FIELDS
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent, AgentMailboxAccess, ConversationTag
from imapdesk.kernel.settings import Settings
from tests.support import report_data as data
from tests.support.web import Page, session_cookie

WEEK = "start=2026-12-07&end=2026-12-13&bucket=week"


def browser(app: FastAPI, settings: Settings, engine: Engine, agent_id: int) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    client.cookies.set(SESSION_COOKIE, session_cookie(settings, engine, agent_id))
    return client


def token_client(app: FastAPI, engine: Engine, agent_id: int) -> TestClient:
    with unit_of_work(engine) as s:
        agent = s.get(Agent, agent_id)
        assert agent is not None
        token = create_api_token(s, agent, name="reports")
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


def setup(engine: Engine, agents: dict[str, int]) -> data.Scenario:
    with unit_of_work(engine) as s:
        for agent_id in agents.values():
            agent = s.get(Agent, agent_id)
            assert agent is not None
            agent.timezone = "Europe/Berlin"
    return data.build(engine, agents["alice"], agents["bob"])


def page_data(html: str) -> dict[str, Any]:
    found = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S
    )
    assert found is not None
    parsed: dict[str, Any] = json.loads(found.group(1))
    return parsed


def restrict(engine: Engine, agent_id: int, mailbox_id: int) -> None:
    with unit_of_work(engine) as s:
        agent = s.get(Agent, agent_id)
        assert agent is not None
        agent.all_mailboxes = False
        s.add(AgentMailboxAccess(agent_id=agent_id, mailbox_id=mailbox_id))


def test_the_page_the_csv_and_the_api_give_the_same_figures(
    app: FastAPI, settings: Settings, engine: Engine, agents: dict[str, int]
) -> None:
    setup(engine, agents)
    web = browser(app, settings, engine, agents["alice"])
    r = web.get(f"/reports?{WEEK}")
    assert r.status_code == 200
    # the chart's figures travel as JSON, not as a script: the CSP allows no inline script
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert re.search(r"<script>(?!</script>)", r.text) is None
    page = Page(r.text)
    assert any(link.endswith("/reports") for link in page.links)
    # the CSV link asks the same question
    assert any(
        link.endswith("/reports.csv?start=2026-12-07&end=2026-12-13&bucket=week&breakdown=none")
        for link in page.links
    ), page.links
    shown = page_data(r.text)
    assert shown["overall"]["created"] == 4
    assert shown["overall"]["first_response_median_seconds"] == 90 * data.MINUTE
    assert shown["timezone"] == "Europe/Berlin"
    # the table says it too, for readers without JavaScript
    totals = r.text[r.text.index('id="report-totals"') :]
    assert "1 h 30 min" in totals and "3 h 24 min" in totals and "33.3 %" in totals
    assert "<canvas" not in r.text and "vendor/uplot/uPlot.iife.min.js" in r.text

    api = token_client(app, engine, agents["alice"])
    j = api.get(f"/api/v1/reports?{WEEK}")
    assert j.status_code == 200, j.text
    assert j.json()["overall"] == shown["overall"]
    assert j.json()["series"] == shown["series"]

    c = web.get(f"/reports.csv?{WEEK}&breakdown=tag")
    assert c.status_code == 200
    assert c.headers["content-type"] == "text/csv; charset=utf-8"
    assert c.headers["content-disposition"] == (
        'attachment; filename="imapdesk-report-2026-12-07-2026-12-13-week-tag.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(c.text)))
    assert [(r["bucket"], r["group"]) for r in rows] == [
        ("2026-12-07", "billing"),
        ("2026-12-07", "urgent"),
        ("2026-12-07", "(no tag)"),
        ("all", "billing"),
        ("all", "urgent"),
        ("all", "(no tag)"),
    ]
    billing = rows[0]
    assert billing["created"] == "2"
    assert billing["first_response_median_seconds"] == str(45 * data.MINUTE)
    assert billing["sla_resolution_percent"] == "50.0"
    # nothing to measure is an empty cell
    assert rows[1]["resolution_median_seconds"] == ""


def test_a_cell_a_spreadsheet_would_run_is_quoted(
    app: FastAPI, settings: Settings, engine: Engine, agents: dict[str, int]
) -> None:
    sc = setup(engine, agents)
    with unit_of_work(engine) as s:
        s.add(ConversationTag(conversation_id=sc.convs["D"], tag='=HYPERLINK("x")'))
    web = browser(app, settings, engine, agents["alice"])
    c = web.get(f"/reports.csv?{WEEK}&breakdown=tag")
    groups = {r["group"] for r in csv.DictReader(io.StringIO(c.text))}
    assert '\'=HYPERLINK("x")' in groups
    assert '=HYPERLINK("x")' not in groups


def test_an_agent_sees_only_their_mailboxes(
    app: FastAPI, settings: Settings, engine: Engine, agents: dict[str, int]
) -> None:
    sc = setup(engine, agents)
    restrict(engine, agents["bob"], sc.support)
    web = browser(app, settings, engine, agents["bob"])
    r = web.get(f"/reports?{WEEK}&breakdown=mailbox")
    assert r.status_code == 200
    shown = page_data(r.text)
    assert [g["label"] for g in shown["groups"]] == ["support"]
    assert shown["overall"]["created"] == 3
    # the mailbox filter offers only theirs
    assert 'value="support"' in r.text and 'value="sales"' not in r.text
    # asking for another mailbox: as if it did not exist
    r = web.get(f"/reports?{WEEK}&mailbox=sales")
    assert r.status_code == 422
    assert "no mailbox named &#39;sales&#39;" in r.text
    assert 'id="report-data"' not in r.text
    assert web.get(f"/reports.csv?{WEEK}&mailbox=sales").status_code == 422

    api = token_client(app, engine, agents["bob"])
    j = api.get(f"/api/v1/reports?{WEEK}&breakdown=mailbox")
    assert j.status_code == 200
    assert [g["label"] for g in j.json()["groups"]] == ["support"]
    r = api.get(f"/api/v1/reports?{WEEK}&mailbox=sales")
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "mailbox"


def test_nobody_signed_in_sees_nothing(
    app: FastAPI, settings: Settings, engine: Engine, agents: dict[str, int]
) -> None:
    setup(engine, agents)
    anonymous = TestClient(app, follow_redirects=False)
    r = anonymous.get(f"/reports?{WEEK}")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    r = anonymous.get(f"/reports.csv?{WEEK}")
    assert r.status_code == 303
    assert "created" not in r.text
    r = anonymous.get(f"/api/v1/reports?{WEEK}")
    assert r.status_code == 401
    r = TestClient(app, headers={"Authorization": "Bearer nonsense"}).get("/api/v1/reports")
    assert r.status_code == 401
    # a deactivated agent's token no longer works
    api = token_client(app, engine, agents["bob"])
    with unit_of_work(engine) as s:
        bob = s.get(Agent, agents["bob"])
        assert bob is not None
        bob.is_active = False
    assert api.get(f"/api/v1/reports?{WEEK}").status_code in (401, 403)


def test_bad_questions_get_clear_422s(
    app: FastAPI, settings: Settings, engine: Engine, agents: dict[str, int]
) -> None:
    setup(engine, agents)
    web = browser(app, settings, engine, agents["alice"])
    r = web.get("/reports?start=2026-12-09&end=2026-12-01")
    assert r.status_code == 422
    assert "start must not be after end" in r.text
    assert 'aria-invalid="true"' in r.text
    r = web.get("/reports?bucket=year")
    assert r.status_code == 422 and "bucket must be one of day, week, month" in r.text
    r = web.get("/reports?start=" + "9" * 200)
    assert r.status_code == 422
    api = token_client(app, engine, agents["alice"])
    for query, field in [
        ("bucket=year", "bucket"),
        ("breakdown=customer", "breakdown"),
        ("start=yesterday", "start"),
        ("start=2020-01-01&end=2026-12-01", "end"),
    ]:
        r = api.get(f"/api/v1/reports?{query}")
        assert r.status_code == 422, query
        assert field in json.dumps(r.json()["error"]), (query, r.json())


def test_an_empty_range_says_so(
    app: FastAPI, settings: Settings, engine: Engine, agents: dict[str, int]
) -> None:
    setup(engine, agents)
    web = browser(app, settings, engine, agents["alice"])
    r = web.get("/reports?start=2025-01-01&end=2025-01-31&breakdown=tag")
    assert r.status_code == 200
    assert 'id="report-empty"' in r.text
    assert page_data(r.text)["groups"] == []
    c = web.get("/reports.csv?start=2025-01-01&end=2025-01-31&breakdown=tag")
    assert c.text.splitlines() == ["bucket,group," + ",".join(FIELDS)]
    # by tag per day: a row only where a tag had something that day
    r = web.get("/reports?start=2026-12-07&end=2026-12-13&breakdown=tag")
    rows = re.findall(r'<tr data-bucket="([0-9-]+)" data-group="([^"]+)"', r.text)
    assert rows == [
        ("2026-12-07", "tag:billing"),
        ("2026-12-08", "tag:none"),
        ("2026-12-09", "tag:billing"),
        ("2026-12-09", "tag:urgent"),
        ("2026-12-10", "tag:billing"),
        ("2026-12-10", "tag:none"),
    ]
    # without a breakdown every day has its row
    r = web.get("/reports?start=2025-01-01&end=2025-01-31")
    assert len(re.findall(r"<tr data-bucket=", r.text)) == 31
