"""Fixtures for the web UI tests: the app served by uvicorn on loopback, and headless Chromium
(Debian's /usr/bin/chromium, never a downloaded one)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from imapdesk.domain.accounts.agents import hash_password
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent
from tests.api.conftest import (  # noqa: F401  (the API tests' fixtures, shared)
    agent_token,
    api,
    app,
    cheap_password_hashing,
    client,
    settings,
)
from tests.support.browser import CHROMIUM, LiveServer
from tests.support.web import PASSWORD

# how long a browser waits for a page or a state: a bound on a hang, not a measure (the
# benchmarks measure); a machine running two suites side by side takes seconds for a page
BROWSER_WAIT_MS = 30_000


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

    expect.set_options(timeout=BROWSER_WAIT_MS)
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
        context.set_default_timeout(BROWSER_WAIT_MS)
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
    """Alice (an admin) and Bob, both with PASSWORD. Their composer opens as the plain text
    area (the browser tests type into it); the rich-text editor, every agent's default, is
    tested with it turned back on (tests/web/test_composer_browser.py)."""
    with unit_of_work(engine) as s:
        rows = [
            Agent(email="alice@example.com", name="Alice Agent", handle="alice", is_admin=True,
                  password_hash=password_hash, composer_plain_text=True),
            Agent(email="bob@example.com", name="Bob Builder", handle="bob",
                  password_hash=password_hash, composer_plain_text=True),
        ]  # fmt: skip
        s.add_all(rows)
        s.flush()
        return {"alice": rows[0].id or 0, "bob": rows[1].id or 0}


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh SQLite database; browser tests override `db_url` with it (the behaviour they
    show is covered on both databases at the HTTP level)."""
    template = request.getfixturevalue("_sqlite_template")
    path = tmp_path / "imapdesk.db"
    shutil.copy(template, path)
    return f"sqlite:///{path}"
