"""Drafts and reading on the conversation page in headless Chromium (Debian's), on SQLite and
PostgreSQL: what is typed survives a reload and shows in a second browser context; a colleague
sees "has a draft" live; Cancel asks first; leaving with unsaved text warns; Undo gives the
text back as a draft; a long thread opens at its newest message with the older ones folded; `c`
on a held conversation says who holds it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.domain.conversations import operations
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import ActivitySource, Agent, Draft
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer, signed_in_context
from tests.support.worker import wait_for

pytestmark = pytest.mark.browser

LONG_TEXT = "\n".join(f"Line {i} of a long message about the broken printer." for i in range(40))


@pytest.fixture
def conv(engine: Engine, agents: dict[str, int]) -> int:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, smtp_host="smtp.example.com", smtp_port=587)
        c = f.conversation(s, box, "Printer on fire", minutes=3)
        f.message(s, c, from_email="carol@customer.example", text="It burns.")
        return c.id or 0


@pytest.fixture
def page_of(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> Callable[[str], Any]:
    """A new page in a new browser context (its own cookies: another device) for the agent."""

    def make(name: str) -> Any:
        context = signed_in_context(new_context, live_server, settings, engine, agents[name])
        return context.new_page()

    return make


def drafts_of(engine: Engine) -> list[tuple[int, str, str]]:
    with Session(engine) as s:
        return [(d.agent_id, d.kind, d.body) for d in s.exec(select(Draft))]


def open_conversation(page: Any, url: str) -> None:
    page.goto(url)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "connected")


def test_a_draft_survives_a_reload_and_shows_on_another_device(
    live_server: LiveServer,
    engine: Engine,
    agents: dict[str, int],
    conv: int,
    page_of: Callable[[str], Any],
) -> None:
    url = f"{live_server.url}/conversations/{conv}"
    alice = page_of("alice")
    open_conversation(alice, url)
    bob = page_of("bob")
    open_conversation(bob, url)

    bob.keyboard.press("r")
    body = bob.locator("#composer-form textarea[name=body]")
    expect(body).to_be_focused()
    body.press_sequentially("Dear Carol,\nplease unplug it.")
    expect(bob.locator("[data-draft-status]")).to_have_text("Draft saved")
    assert drafts_of(engine) == [(agents["bob"], "reply", "Dear Carol,\nplease unplug it.")]
    # Alice sees that Bob has a draft (not what it says), without a reload
    expect(alice.locator("#conv-presence [data-draft-holder]")).to_have_text(
        "Bob Builder has a draft"
    )
    expect(alice.locator("#composer-form")).to_be_hidden()

    bob.reload()
    expect(bob.locator("#composer-form")).to_be_visible()
    expect(body).to_have_value("Dear Carol,\nplease unplug it.")
    expect(bob.locator("[data-compose=reply]")).to_have_attribute("aria-pressed", "true")

    # the same agent on another device (a second browser context)
    phone = page_of("bob")
    open_conversation(phone, url)
    phone_body = phone.locator("#composer-form textarea[name=body]")
    expect(phone_body).to_have_value("Dear Carol,\nplease unplug it.")
    # carrying on there, as a forward with a recipient, is what the first device gets next
    phone.locator("[data-compose=forward]").click()
    phone.locator("#composer-form input[name=to]").press_sequentially("boss@example.com")
    phone_body.press_sequentially(" Thanks.")
    phone_body.blur()
    expect(phone.locator("[data-draft-status]")).to_have_text("Draft saved")
    bob.reload()
    expect(body).to_have_value("Dear Carol,\nplease unplug it. Thanks.")
    expect(bob.locator("#composer-form input[name=to]")).to_have_value("boss@example.com")
    expect(bob.locator("[data-compose=forward]")).to_have_attribute("aria-pressed", "true")


def test_cancel_asks_before_the_draft_goes(
    live_server: LiveServer,
    engine: Engine,
    agents: dict[str, int],
    conv: int,
    page_of: Callable[[str], Any],
) -> None:
    bob = page_of("bob")
    open_conversation(bob, f"{live_server.url}/conversations/{conv}")
    form = bob.locator("#composer-form")
    body = form.locator("textarea[name=body]")
    # an empty composer closes without a question
    bob.keyboard.press("n")
    form.locator("[data-compose-cancel]").click()
    expect(form).to_be_hidden()

    bob.keyboard.press("r")
    body.press_sequentially("Half a thought")
    expect(bob.locator("[data-draft-status]")).to_have_text("Draft saved")
    form.locator("[data-compose-cancel]").click()
    dialog = bob.get_by_role("dialog", name=re.compile("Discard this draft"))
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Keep writing").click()
    expect(dialog).to_be_hidden()
    expect(body).to_have_value("Half a thought")
    expect(body).to_be_focused()
    assert drafts_of(engine) == [(agents["bob"], "reply", "Half a thought")]

    # Escape asks too; this time the agent discards it
    body.press("Escape")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Discard draft").click()
    expect(form).to_be_hidden()
    wait_for(lambda: drafts_of(engine) == [], what="the draft to be discarded")
    bob.reload()
    expect(form).to_be_hidden()
    expect(body).to_have_value("")


def test_leaving_with_unsaved_text_warns(
    live_server: LiveServer,
    engine: Engine,
    agents: dict[str, int],
    conv: int,
    page_of: Callable[[str], Any],
) -> None:
    url = f"{live_server.url}/conversations/{conv}"
    bob = page_of("bob")
    open_conversation(bob, url)
    # the server does not answer the saves for now: what is typed stays unsaved
    held: list[Any] = []
    holding = [True]

    def hold(route: Any) -> None:
        if holding[0]:
            held.append(route)
        else:
            route.continue_()

    bob.route("**/draft", hold)
    asked: list[str] = []

    def answer(dialog: Any) -> None:
        asked.append(dialog.type)
        dialog.dismiss()  # stay on the page

    bob.on("dialog", answer)
    bob.keyboard.press("r")
    bob.locator("#composer-form textarea[name=body]").press_sequentially("Not saved yet")
    expect(bob.locator("[data-draft-status]")).to_have_text("Saving draft…")
    with bob.expect_event("dialog") as leaving:
        bob.get_by_role("link", name="← Conversations").click()
    assert leaving.value.type == "beforeunload"
    assert asked == ["beforeunload"]
    assert bob.url == url
    expect(bob.locator("#composer-form textarea[name=body]")).to_have_value("Not saved yet")

    # once saved, leaving asks nothing and loses nothing
    holding[0] = False
    for route in held:
        route.continue_()
    expect(bob.locator("[data-draft-status]")).to_have_text("Draft saved")
    bob.get_by_role("link", name="← Conversations").click()
    bob.wait_for_url(f"{live_server.url}/")
    assert asked == ["beforeunload"]
    assert drafts_of(engine) == [(agents["bob"], "reply", "Not saved yet")]


def test_undo_puts_the_reply_back_as_a_draft(
    live_server: LiveServer,
    engine: Engine,
    agents: dict[str, int],
    conv: int,
    page_of: Callable[[str], Any],
) -> None:
    with unit_of_work(engine) as s:
        bob_row = s.get(Agent, agents["bob"])
        assert bob_row is not None
        bob_row.undo_send_seconds = 60
    bob = page_of("bob")
    open_conversation(bob, f"{live_server.url}/conversations/{conv}")
    bob.keyboard.press("r")
    body = bob.locator("#composer-form textarea[name=body]")
    body.press_sequentially("Unplug it first.")
    bob.locator("#composer-form [data-send]").click()
    expect(bob.locator("#composer-form")).to_be_hidden()
    wait_for(lambda: drafts_of(engine) == [], what="the send to end the draft")
    bob.locator("#send-toast [data-undo-send]").click()
    expect(bob.locator("#composer-form")).to_be_visible()
    expect(body).to_have_value("Unplug it first.")
    assert drafts_of(engine) == [(agents["bob"], "reply", "Unplug it first.")]
    bob.reload()
    expect(body).to_have_value("Unplug it first.")


def test_a_long_thread_opens_at_its_newest_message(
    live_server: LiveServer, engine: Engine, page_of: Callable[[str], Any]
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        c = f.conversation(s, box, "A long story", minutes=20)
        ids = [
            f.message(
                s, c, minutes=i, from_email="carol@customer.example", seen=True,
                text=f"Part {i}\n{LONG_TEXT}", snippet=f"Part {i} begins",
            ).id
            for i in range(8)
        ]  # fmt: skip
        cid = c.id
    bob = page_of("bob")
    open_conversation(bob, f"{live_server.url}/conversations/{cid}")
    newest = bob.locator(f"#message-{ids[-1]}")
    expect(newest).to_be_in_viewport()
    expect(newest.locator(".body")).to_contain_text("Part 7")
    folds = bob.locator("#conv-messages details[data-fold]")
    expect(folds).to_have_count(7)
    first = bob.locator(f"#message-{ids[0]}")
    expect(first.locator(".fold-summary")).to_contain_text("Part 0 begins")
    expect(first.locator(".body")).to_be_hidden()
    # one unfolded by a click; all by "Show all"
    first.locator(".fold-summary").click()
    expect(first.locator(".body")).to_be_visible()
    expect(bob.locator(f"#message-{ids[1]} .body")).to_be_hidden()
    bob.get_by_role("button", name="Show all").click()
    for mid in ids:
        expect(bob.locator(f"#message-{mid} .body")).to_be_visible()

    # a link to an older message unfolds it
    linked = page_of("bob")
    linked.goto(f"{live_server.url}/conversations/{cid}#message-{ids[2]}")
    expect(linked.locator(f"#message-{ids[2]} .body")).to_be_visible()
    expect(linked.locator(f"#message-{ids[2]}")).to_be_in_viewport()
    expect(linked.locator(f"#message-{ids[3]} .body")).to_be_hidden()


def test_c_on_a_held_conversation_says_who_holds_it(
    live_server: LiveServer, engine: Engine, agents: dict[str, int], page_of: Callable[[str], Any]
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        flagged = f.conversation(s, box, "Flagged in Thunderbird", minutes=2)
        operations.claim(s, flagged, None, source=ActivitySource.imap)
        taken = f.conversation(s, box, "Alice has it", minutes=1)
        alice = s.get(Agent, agents["alice"])
        operations.claim(s, taken, alice, source=ActivitySource.web)
        ids = (flagged.id, taken.id)
    bob = page_of("bob")
    bob.goto(f"{live_server.url}/conversations/{ids[0]}")
    expect(bob.locator("#conv-holder")).to_have_text("claimed by someone via mail client")
    bob.keyboard.press("c")
    expect(bob.locator("#flash")).to_have_text(
        "Not claimed: it is already claimed by someone via mail client."
    )
    bob.goto(f"{live_server.url}/conversations/{ids[1]}")
    bob.keyboard.press("c")
    expect(bob.locator("#flash")).to_have_text(
        "Not claimed: it is already assigned to Alice Agent."
    )
