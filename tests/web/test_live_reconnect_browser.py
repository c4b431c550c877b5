"""live.js in the browser: a page whose stream is refused at capacity (503, Retry-After) waits
and connects again on its own once there is room. (SQLite; test_capacity.py covers the caps on
both databases.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine

from imapdesk.api.web import live
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer, signed_in_context

pytestmark = pytest.mark.browser


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def settings(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # one live page per agent, and a refused page asked to come back after a second
    monkeypatch.setattr(live, "STREAM_RETRY_AFTER_SECONDS", 1)
    return Settings(data_dir=tmp_path / "data", database_url=db_url, live_streams_per_agent=1)


def test_a_page_refused_at_capacity_connects_once_there_is_room(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    with unit_of_work(engine) as s:
        conv = f.conversation(s, f.mailbox(s), "Printer on fire", minutes=1)
    url = f"{live_server.url}/conversations/{conv.id}"
    context = signed_in_context(new_context, live_server, settings, engine, agents["alice"])
    first, second = context.new_page(), context.new_page()
    first.goto(url)
    expect(first.locator("#live-status")).to_have_attribute("data-state", "connected")
    second.goto(url)
    # Alice has her one stream: the second page is refused, and waits
    expect(second.locator("#live-status")).to_have_attribute("data-state", "reconnecting")
    first.close()
    expect(second.locator("#live-status")).to_have_attribute("data-state", "connected")
