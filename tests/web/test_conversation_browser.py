"""The conversation page in Chromium: sign in, claim, reply, note, close, end to end; keyboard
shortcuts; the collision warning; a phone-sized screen. (SQLite; test_conversation.py covers
the same routes on both databases.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.domain.outbound import replies as outbound
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    ActivitySource,
    Agent,
    Conversation,
    ConversationStatus,
    Direction,
    Message,
)
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer, sign_in_page, signed_in_context

pytestmark = pytest.mark.browser


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def conversation_id(engine: Engine) -> int:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, smtp_host="smtp.example.com", smtp_port=587)
        conv = f.conversation(
            s, box, "Printer on fire", minutes=2,
            customer_email="carol@customer.example", customer_name="Carol",
        )  # fmt: skip
        f.message(
            s, conv, from_email="carol@customer.example", from_name="Carol",
            to=[{"email": "support@example.com", "name": ""}],
            text="It burns.\n\nOn Mon, 1 Jan 2024, Support wrote:\n> How can we help?\n",
            message_id="first@customer.example",
        )  # fmt: skip
        f.message(
            s, conv, minutes=1, from_email="carol@customer.example", from_name="Carol",
            text="Still burning.", in_reply_to="first@customer.example",
            thread_rule="references",
        )  # fmt: skip
        assert conv.id is not None
        return conv.id


def test_sign_in_claim_reply_note_close(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    agents: dict[str, int],
    conversation_id: int,
) -> None:
    page = new_context().new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    path = f"/conversations/{conversation_id}"
    sign_in_page(page, live_server.url, "alice@example.com", path)
    expect(page.locator("h1")).to_have_text("Printer on fire")
    # quoted history collapsed; why each message joined
    expect(page.locator("details.quoted").first).not_to_have_attribute("open", "")
    expect(page.locator(".why").nth(1)).to_contain_text("In-Reply-To/References")
    expect(page.locator(".why").nth(1)).to_contain_text("replies to Carol")

    page.click("#conv-state form[data-action=claim] button")
    expect(page.locator("#conv-holder")).to_have_text("assigned to Alice Agent")

    page.keyboard.press("r")
    expect(page.locator("#composer-form")).to_be_visible()
    expect(page.locator("textarea[name=body]")).to_be_focused()
    page.fill("textarea[name=body]", "We are on our way with a fire extinguisher.")
    page.click("[data-send]")
    expect(page.locator("article.message-outbound")).to_contain_text("fire extinguisher")
    expect(page.locator("#composer-form")).to_be_hidden()

    page.locator("body").press("n")
    page.fill("textarea[name=body]", "Customer sounds calm.")
    page.set_input_files(
        "input[name=attachments]",
        files=[{"name": "log.txt", "mimeType": "text/plain", "buffer": b"smoke"}],
    )
    page.click("[data-send]")
    expect(page.locator("article.message-note")).to_contain_text("Customer sounds calm.")
    expect(page.locator("article.message-note .attachments")).to_contain_text("log.txt")

    page.locator("body").press("e")
    expect(page.locator("#conv-status")).to_have_text("closed")
    expect(page.locator("#conv-activity")).to_contain_text("set the status to closed")
    with Session(engine) as s:
        conv = s.get(Conversation, conversation_id)
        assert conv is not None and conv.status == ConversationStatus.closed
        directions = [m.direction for m in s.exec(select(Message)).all()]
        assert Direction.outbound in directions and Direction.note in directions
    assert not errors


def test_collision_warning_then_send_anyway(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    conversation_id: int,
) -> None:
    page = signed_in_context(new_context, live_server, settings, engine, agents["alice"]).new_page()
    page.goto(f"{live_server.url}/conversations/{conversation_id}")
    page.click("[data-compose=reply]")
    page.fill("textarea[name=body]", "My answer.")
    # Bob adds a note meanwhile, through the API's code path
    with unit_of_work(engine) as s:
        bob = s.get(Agent, agents["bob"])
        assert bob is not None
        outbound.add_note(
            s, bob, conversation_id, body="I already called her.", source=ActivitySource.api,
            settings=settings,
        )  # fmt: skip
    page.click("[data-send]")
    conflict = page.locator("#composer-conflict")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text("I already called her.")
    page.click("[data-send-anyway]")
    expect(page.locator("article.message-outbound")).to_contain_text("My answer.")
    expect(conflict).to_be_hidden()


def test_shortcuts_help_and_phone_screen(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    conversation_id: int,
) -> None:
    context = signed_in_context(
        new_context, live_server, settings, engine, agents["bob"],
        viewport={"width": 375, "height": 740}, is_mobile=True,
    )  # fmt: skip
    page = context.new_page()
    page.goto(f"{live_server.url}/conversations/{conversation_id}")
    page.locator("body").press("j")
    expect(page.locator("article.message").first).to_be_focused()
    page.keyboard.press("j")
    expect(page.locator("article.message").nth(1)).to_be_focused()
    page.keyboard.press("k")
    expect(page.locator("article.message").first).to_be_focused()
    page.keyboard.press("?")
    expect(page.locator("dialog#help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("dialog#help")).to_be_hidden()
    # nothing wider than the phone's screen
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.keyboard.press("c")
    expect(page.locator("#conv-holder")).to_have_text("assigned to Bob Builder")
    # tags from the keyboard; the focus stays in the field when the part is replaced
    page.fill("#conv-state input[name=tags]", "printer, urgent")
    page.press("#conv-state input[name=tags]", "Enter")
    expect(page.locator("#conv-state .tag")).to_have_count(2)
    expect(page.locator("#conv-state input[name=tags]")).to_be_focused()
    page.locator("#conv-state input[name=tags]").blur()
    page.keyboard.press("/")
    expect(page.locator("input[type=search]").first).to_be_focused()
