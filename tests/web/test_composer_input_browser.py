"""The composer in Chromium: a recipient that is not one address is refused, the form says
why and keeps what was written. (SQLite; test_composer_input.py covers both databases.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import OutboundMail
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer, signed_in_context

pytestmark = pytest.mark.browser


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def conversation_id(engine: Engine) -> int:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, smtp_host="smtp.example.com", smtp_port=587)
        conv = f.conversation(s, box, "Printer", customer_email="carol@customer.example")
        f.message(s, conv, from_email="carol@customer.example", text="Help")
        assert conv.id is not None
        return conv.id


def test_the_form_shows_why_and_keeps_the_text(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    conversation_id: int,
) -> None:
    page = signed_in_context(new_context, live_server, settings, engine, agents["alice"]).new_page()
    page.goto(f"{live_server.url}/conversations/{conversation_id}")
    page.click("[data-compose=forward]")
    page.fill("input[name=to]", "<evil@attacker.test> boss@example.test")
    page.fill("textarea[name=body]", "See below.")
    page.click("[data-send]")
    expect(page.locator("#flash")).to_contain_text("is not one email address")
    expect(page.locator("#composer-form")).to_be_visible()
    expect(page.locator("textarea[name=body]")).to_have_value("See below.")
    with Session(engine) as s:
        assert s.exec(select(OutboundMail)).all() == []
