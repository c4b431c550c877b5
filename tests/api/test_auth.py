"""Bearer-token authentication of the REST API."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import select

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent, ApiToken

PATH = "/api/v1/conversations"


def test_missing_token_is_401_with_a_bearer_challenge(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Basic YWxpY2U6cHc="}, {"Authorization": "Bearer"}):
        r = client.get(PATH, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["code"] == "not_authenticated"


def test_invalid_token_is_401(client: TestClient, agent_token: str) -> None:
    r = client.get(PATH, headers={"Authorization": f"Bearer {agent_token}x"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert r.json()["error"]["code"] == "not_authenticated"


def test_valid_token_works_and_records_its_use(
    api: TestClient, engine: Engine, agent_token: str
) -> None:
    assert api.get(PATH).status_code == 200
    with unit_of_work(engine) as s:
        assert s.exec(select(ApiToken)).one().last_used_at is not None


def test_revoked_token_is_401(api: TestClient, engine: Engine) -> None:
    with unit_of_work(engine) as s:
        token = s.exec(select(ApiToken)).one()
        token.revoked_at = datetime.now(UTC)
        s.add(token)
    assert api.get(PATH).status_code == 401


def test_inactive_agent_is_403(api: TestClient, engine: Engine) -> None:
    with unit_of_work(engine) as s:
        agent = s.exec(select(Agent)).one()
        agent.is_active = False
        s.add(agent)
    r = api.get(PATH)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"


def test_every_api_route_needs_a_token(app: FastAPI, client: TestClient) -> None:
    for path in (
        "/api/v1/conversations",
        "/api/v1/conversations/1",
        "/api/v1/messages/1/raw",
        "/api/v1/attachments/1",
        "/api/v1/mailboxes",
    ):
        assert client.get(path).status_code == 401, path
