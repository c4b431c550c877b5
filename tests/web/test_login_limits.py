"""Sign-in: the rate limit per account and per client address (kept in the database, so two
API processes count the same attempts), sign-out, and sessions that end when the password
changes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import select

from imapdesk.api.app import create_app
from imapdesk.domain.accounts import login_attempts
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.kernel.crypto import hash_password
from imapdesk.kernel.db import make_engine, unit_of_work
from imapdesk.kernel.models import Agent, LoginAttempt
from imapdesk.kernel.settings import Settings
from tests.support.web import PASSWORD, Page, csrf

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


@pytest.fixture
def alice(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        create_agent(s, "alice@example.com", "Alice", PASSWORD)
        create_agent(s, "bob@example.com", "Bob", PASSWORD)


def attempt(client: TestClient, email: str, password: str) -> tuple[int, str]:
    r = client.post(
        "/login", data={"email": email, "password": password, "csrf_token": csrf(client)}
    )
    return r.status_code, Page(r.text).all_text if r.status_code != 303 else ""


def test_account_locks_after_failures_even_for_the_right_password(
    app: FastAPI, settings: Settings, db_url: str, alice: None, engine: Engine
) -> None:
    browser = TestClient(app, follow_redirects=False)
    for _ in range(login_attempts.ACCOUNT_LIMIT):
        assert attempt(browser, "alice@example.com", "wrong")[0] == 400
    status, text = attempt(browser, "Alice@Example.com", PASSWORD)
    assert status == 429
    assert "Too many failed sign-in attempts for this account" in text
    assert "try again in 15 minutes" in text
    assert browser.get("/").status_code == 303

    # a second API process (its own engine and app) sees the same lock
    other_engine = make_engine(db_url)
    try:
        other = TestClient(create_app(settings=settings, engine=other_engine))
        r = other.post(
            "/login",
            data={"email": "alice@example.com", "password": PASSWORD, "csrf_token": csrf(other)},
            follow_redirects=False,
        )
        assert r.status_code == 429 and "retry-after" in r.headers
    finally:
        other_engine.dispose()

    # other accounts from the same address are not locked (below the address limit)
    assert attempt(browser, "bob@example.com", PASSWORD)[0] == 303

    # once the failures age out of the window, the right password works again
    with unit_of_work(engine) as s:
        for row in s.exec(select(LoginAttempt)):
            row.created_at = row.created_at - login_attempts.WINDOW - timedelta(seconds=1)
            s.add(row)
    assert attempt(TestClient(app, follow_redirects=False), "alice@example.com", PASSWORD)[0] == 303


def test_success_resets_the_account_count(app: FastAPI, alice: None) -> None:
    browser = TestClient(app, follow_redirects=False)
    for _ in range(login_attempts.ACCOUNT_LIMIT - 1):
        assert attempt(browser, "alice@example.com", "wrong")[0] == 400
    assert attempt(browser, "alice@example.com", PASSWORD)[0] == 303
    browser.post("/logout", data={"csrf_token": csrf(browser, "/")})
    for _ in range(login_attempts.ACCOUNT_LIMIT - 1):
        assert attempt(browser, "alice@example.com", "wrong")[0] == 400
    assert attempt(browser, "alice@example.com", PASSWORD)[0] == 303


def test_client_address_locks_after_failures_on_many_accounts(
    app: FastAPI, alice: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(login_attempts, "ADDRESS_LIMIT", 6)
    browser = TestClient(app, follow_redirects=False)
    for i in range(6):
        assert attempt(browser, f"nobody{i}@example.com", "guess")[0] == 400
    status, text = attempt(browser, "bob@example.com", PASSWORD)
    assert status == 429 and "for this network address" in text


def test_password_reset_ends_existing_sessions(app: FastAPI, engine: Engine, alice: None) -> None:
    browser = TestClient(app, follow_redirects=False)
    assert attempt(browser, "alice@example.com", PASSWORD)[0] == 303
    assert browser.get("/").status_code == 200
    with unit_of_work(engine) as s:
        agent = s.exec(select(Agent).where(Agent.email == "alice@example.com")).one()
        agent.password_hash = hash_password("a brand new password")
        s.add(agent)
    r = browser.get("/")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_sign_out_from_the_top_navigation(app: FastAPI, alice: None) -> None:
    browser = TestClient(app, follow_redirects=False)
    assert attempt(browser, "alice@example.com", PASSWORD)[0] == 303
    home = browser.get("/")
    assert "Sign out" in Page(home.text).all_text
    r = browser.post("/logout", data={"csrf_token": csrf(browser, "/")})
    assert r.status_code == 303 and browser.get("/").status_code == 303
