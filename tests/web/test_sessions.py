"""Browser sessions stored server-side (imapdesk.domain.accounts.sessions): the cookie carries
only a random key, stored hashed; sign-out, deactivation and a new password end sessions, so a
copied cookie stops working; sessions end when idle too long and at their lifetime (settings);
the password is checked holding no database connection (so no lock); the live streams' check.
Both databases."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.api.app import SESSION_COOKIE, _session_signing_key, create_app
from imapdesk.domain.accounts import agents as agents_module
from imapdesk.domain.accounts import sessions
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.accounts.sessions import SessionPolicy
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent, BrowserSession
from imapdesk.kernel.settings import Settings
from tests.support.web import PASSWORD, csrf

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


@pytest.fixture
def people(engine: Engine) -> dict[str, int]:
    with unit_of_work(engine) as s:
        admin = create_agent(s, "admin@example.com", "Ada Admin", PASSWORD, is_admin=True)
        bob = create_agent(s, "bob@example.com", "Bob", PASSWORD)
        return {"admin": admin.id or 0, "bob": bob.id or 0}


def signed_in(app: FastAPI, email: str) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    r = client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf(client)}
    )
    assert r.status_code == 303, r.text
    return client


def copy_of(app: FastAPI, browser: TestClient) -> TestClient:
    """Another client with the same session cookie (a stolen or copied cookie)."""
    thief = TestClient(app, follow_redirects=False)
    thief.cookies.set(SESSION_COOKIE, browser.cookies[SESSION_COOKIE])
    return thief


def is_signed_in(client: TestClient) -> bool:
    r = client.get("/")
    assert r.status_code in (200, 303), r.status_code
    return r.status_code == 200


def cookie_payload(settings: Settings, cookie: str) -> dict[str, object]:
    signer = TimestampSigner(_session_signing_key(settings.secret_key))
    payload: dict[str, object] = json.loads(base64.b64decode(signer.unsign(cookie)))
    return payload


def sessions_of(engine: Engine, agent_id: int) -> list[BrowserSession]:
    with Session(engine) as s:
        return list(s.exec(select(BrowserSession).where(BrowserSession.agent_id == agent_id)))


def test_the_cookie_carries_only_a_key_that_is_stored_hashed(
    app: FastAPI, settings: Settings, engine: Engine, people: dict[str, int]
) -> None:
    browser = signed_in(app, "bob@example.com")
    payload = cookie_payload(settings, browser.cookies[SESSION_COOKIE])
    # the session's key and the form token: no agent id, nothing that signs in by itself
    assert set(payload) == {"sid", "csrf"}
    key = payload["sid"]
    assert isinstance(key, str) and len(key) >= 40
    [row] = sessions_of(engine, people["bob"])
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in row.key_hash and row.revoked_at is None
    assert row.client_address == "testclient" and row.user_agent == "testclient"
    assert row.expires_at > datetime.now(UTC) + timedelta(days=13)
    # a key that is not one of ours, or a forged cookie, signs no one in
    forged = TestClient(app, follow_redirects=False)
    forged.cookies.set(SESSION_COOKIE, browser.cookies[SESSION_COOKIE][:-2] + "xx")
    assert not is_signed_in(forged)


def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(
    app: FastAPI, engine: Engine, people: dict[str, int]
) -> None:
    browser = signed_in(app, "bob@example.com")
    thief = copy_of(app, browser)
    assert is_signed_in(thief)
    r = browser.post("/logout", data={"csrf_token": csrf(browser, "/")})
    assert r.status_code == 303
    assert not is_signed_in(browser)
    assert not is_signed_in(thief)
    [row] = sessions_of(engine, people["bob"])
    assert row.revoked_at is not None
    # signing in again makes a new session; the old key stays dead
    again = signed_in(app, "bob@example.com")
    assert is_signed_in(again) and not is_signed_in(thief)


def test_deactivating_an_agent_ends_their_sessions_for_good(
    app: FastAPI, engine: Engine, people: dict[str, int]
) -> None:
    bob = signed_in(app, "bob@example.com")
    thief = copy_of(app, bob)
    admin = signed_in(app, "admin@example.com")
    token = csrf(admin, "/admin/agents")
    url = f"/admin/agents/{people['bob']}"
    assert admin.post(url, data={"csrf_token": token, "name": "Bob"}).status_code == 303
    assert not is_signed_in(bob) and not is_signed_in(thief)
    assert all(row.revoked_at is not None for row in sessions_of(engine, people["bob"]))
    # active again: the old cookies stay signed out (they were revoked, not only refused)
    r = admin.post(url, data={"csrf_token": token, "name": "Bob", "is_active": "true"})
    assert r.status_code == 303
    assert not is_signed_in(bob) and not is_signed_in(thief)
    assert is_signed_in(signed_in(app, "bob@example.com"))
    # the admin's own session was not touched
    assert is_signed_in(admin)


def test_a_new_password_ends_every_session_of_the_agent(
    app: FastAPI, engine: Engine, people: dict[str, int]
) -> None:
    laptop, phone = signed_in(app, "bob@example.com"), signed_in(app, "bob@example.com")
    admin = signed_in(app, "admin@example.com")
    r = admin.post(
        f"/admin/agents/{people['bob']}/password",
        data={"csrf_token": csrf(admin, "/admin/agents"), "password": "a brand new password"},
    )
    assert r.status_code == 303
    assert not is_signed_in(laptop) and not is_signed_in(phone)
    rows = sessions_of(engine, people["bob"])
    assert len(rows) == 2 and all(row.revoked_at is not None for row in rows)
    assert is_signed_in(admin)


def test_idle_and_lifetime_expiry(
    app: FastAPI, engine: Engine, settings: Settings, people: dict[str, int]
) -> None:
    policy = SessionPolicy.of(settings)
    browser = signed_in(app, "bob@example.com")

    def age(**changes: timedelta) -> None:
        with unit_of_work(engine) as s:
            row = s.exec(select(BrowserSession)).one()
            for column, by in changes.items():
                setattr(row, column, getattr(row, column) - by)

    # in use within the idle time: still signed in, and the use is recorded
    age(last_seen_at=policy.idle - timedelta(minutes=5))
    before = sessions_of(engine, people["bob"])[0].last_seen_at
    assert is_signed_in(browser)
    after = sessions_of(engine, people["bob"])[0].last_seen_at
    assert after > before + policy.idle / 2
    # unused for longer than the idle time: signed out
    age(last_seen_at=policy.idle + timedelta(seconds=1))
    assert not is_signed_in(browser)

    # in use every minute, but past its lifetime: signed out too
    browser = signed_in(app, "bob@example.com")
    assert is_signed_in(browser)
    age(expires_at=policy.lifetime)
    assert not is_signed_in(browser)
    # a new sign-in forgets the dead sessions
    signed_in(app, "bob@example.com")
    assert len(sessions_of(engine, people["bob"])) == 1


def test_the_idle_time_and_the_lifetime_are_settings(
    tmp_path: Path, db_url: str, engine: Engine, people: dict[str, int]
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        session_idle_seconds=600,
        session_lifetime_seconds=3600,
    )
    app = create_app(settings=settings, engine=engine)
    browser = signed_in(app, "bob@example.com")
    [row] = sessions_of(engine, people["bob"])
    assert row.expires_at - row.created_at == timedelta(hours=1)
    with unit_of_work(engine) as s:
        stored = s.exec(select(BrowserSession)).one()
        stored.last_seen_at = stored.last_seen_at - timedelta(minutes=11)
    assert not is_signed_in(browser)


def test_the_password_is_checked_holding_no_database_connection(
    app: FastAPI, engine: Engine, people: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """argon2 takes a good part of a second: a sign-in that held a connection (or SQLite's
    write lock, or a turn at the database) meanwhile would stall every other request behind
    150 sign-ins."""
    held: list[tuple[int, int]] = []
    verify = agents_module.verify_password

    def watched(password: str, password_hash: str) -> bool:
        # connections checked out, and requests' turns at the database (api/capacity.py)
        held.append((engine.pool.checkedout(), app.state.database_turns.taken))  # type: ignore[attr-defined]
        return verify(password, password_hash)

    monkeypatch.setattr(agents_module, "verify_password", watched)
    for email, password, status in (
        ("bob@example.com", PASSWORD, 303),
        ("bob@example.com", "wrong password", 400),
        ("nobody@example.com", "a guess", 400),
    ):
        client = TestClient(app, follow_redirects=False)
        r = client.post(
            "/login", data={"email": email, "password": password, "csrf_token": csrf(client)}
        )
        assert r.status_code == status
    assert held == [(0, 0)] * 3
    # the bookkeeping happened after the check: the attempts and the session are recorded
    assert len(sessions_of(engine, people["bob"])) == 1


def test_a_stream_can_ask_whether_its_session_still_signs_its_agent_in(
    app: FastAPI, engine: Engine, settings: Settings, people: dict[str, int]
) -> None:
    policy = SessionPolicy.of(settings)
    browser = signed_in(app, "bob@example.com")
    [row] = sessions_of(engine, people["bob"])
    assert row.id is not None
    with Session(engine) as s:
        agent = sessions.session_agent(s, row.id, policy)
        assert agent is not None and agent.id == people["bob"]
        assert sessions.session_agent(s, row.id + 1000, policy) is None
    # deactivated (even without the admin page): the stream ends
    with unit_of_work(engine) as s:
        bob = s.get(Agent, people["bob"])
        assert bob is not None
        bob.is_active = False
    with Session(engine) as s:
        assert sessions.session_agent(s, row.id, policy) is None
    with unit_of_work(engine) as s:
        bob = s.get(Agent, people["bob"])
        assert bob is not None
        bob.is_active = True
    with Session(engine) as s:
        assert sessions.session_agent(s, row.id, policy) is not None
    browser.post("/logout", data={"csrf_token": csrf(browser, "/")})
    with Session(engine) as s:
        assert sessions.session_agent(s, row.id, policy) is None
