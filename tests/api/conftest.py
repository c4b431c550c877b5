"""Fixtures for the API and web tests: the app on a fresh database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from imapdesk.api.app import create_app
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.kernel import crypto
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.settings import Settings
from tests.support.web import PASSWORD


@pytest.fixture
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 at its production cost would dominate tests that sign in often; the rules are
    the same at any cost."""
    monkeypatch.setattr(crypto, "_password_hasher", PasswordHasher(time_cost=1, memory_cost=1024))


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url)


@pytest.fixture
def app(settings: Settings, engine: Engine) -> FastAPI:
    return create_app(settings=settings, engine=engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def agent_token(engine: Engine) -> str:
    with unit_of_work(engine) as session:
        agent = create_agent(session, "alice@example.com", "Alice Agent", PASSWORD)
        return create_api_token(session, agent, name="tests")


@pytest.fixture
def api(app: FastAPI, agent_token: str) -> Iterator[TestClient]:
    """A client that sends Alice's API token."""
    with TestClient(app, headers={"Authorization": f"Bearer {agent_token}"}) as c:
        yield c
