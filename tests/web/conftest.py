"""Fixtures for the web UI tests: the app served by uvicorn on loopback, and headless Chromium
(Debian's /usr/bin/chromium, never a downloaded one)."""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from itsdangerous import TimestampSigner
from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.api.app import SESSION_COOKIE, _session_signing_key
from imapdesk.api.web.auth import sign_in as web_sign_in
from imapdesk.devtools.mailserver import free_port
from imapdesk.domain.accounts.agents import hash_password
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent
from imapdesk.kernel.settings import Settings
from tests.api.conftest import (  # noqa: F401  (the API tests' fixtures, shared)
    PASSWORD,
    agent_token,
    api,
    app,
    cheap_password_hashing,
    client,
    settings,
)

CHROMIUM = "/usr/bin/chromium"


class LiveServer:
    """The app in a uvicorn thread; `url` is its base URL."""

    def __init__(self, asgi_app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            asgi_app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-server", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    server = LiveServer(request.getfixturevalue("app"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    # a loaded CI machine may take seconds where a quiet one takes milliseconds: the waits
    # bound a hang, they measure nothing (the benchmarks do)
    expect.set_options(timeout=10_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_context(chromium: Any) -> Iterator[Callable[..., Any]]:
    """Opens browser contexts (separate cookie jars: separate agents); closed afterwards."""
    contexts: list[Any] = []

    def make(**kwargs: Any) -> Any:
        context = chromium.new_context(**kwargs)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def password_hash() -> str:
    """PASSWORD's argon2 hash, made once (a hash takes most of a second)."""
    return hash_password(PASSWORD)


@pytest.fixture
def agents(engine: Engine, password_hash: str) -> dict[str, int]:
    """Alice (an admin) and Bob, both with PASSWORD."""
    with unit_of_work(engine) as s:
        rows = [
            Agent(email="alice@example.com", name="Alice Agent", handle="alice", is_admin=True,
                  password_hash=password_hash),
            Agent(email="bob@example.com", name="Bob Builder", handle="bob",
                  password_hash=password_hash),
        ]  # fmt: skip
        s.add_all(rows)
        s.flush()
        return {"alice": rows[0].id or 0, "bob": rows[1].id or 0}


def session_cookie(config: Settings, engine: Engine, agent_id: int) -> str:
    """A signed session cookie for the agent, as signing in sets it (skips the slow password
    check where signing in is not what a test is about)."""
    with Session(engine) as db:
        agent = db.get(Agent, agent_id)
        assert agent is not None
        request = SimpleNamespace(session={})
        web_sign_in(request, agent)  # type: ignore[arg-type]
    payload = base64.b64encode(json.dumps(request.session).encode())
    return TimestampSigner(_session_signing_key(config.secret_key)).sign(payload).decode()


def signed_in_context(
    new_context: Callable[..., Any],
    server: LiveServer,
    config: Settings,
    engine: Engine,
    agent_id: int,
    **kwargs: Any,
) -> Any:
    context = new_context(**kwargs)
    context.add_cookies(
        [{"name": SESSION_COOKIE, "value": session_cookie(config, engine, agent_id),
          "url": server.url, "httpOnly": True, "sameSite": "Lax"}]
    )  # fmt: skip
    return context


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh SQLite database; browser tests override `db_url` with it (the behaviour they
    show is covered on both databases at the HTTP level)."""
    template = request.getfixturevalue("_sqlite_template")
    path = tmp_path / "imapdesk.db"
    shutil.copy(template, path)
    return f"sqlite:///{path}"


def sign_in_page(page: Any, base_url: str, email: str, next_path: str = "/") -> None:
    """Signs in through the login form and lands on `next_path`."""
    page.goto(f"{base_url}/login?next={next_path}")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}{next_path}")
