"""Issue 13's agent's day in headless Chromium (Debian's), on SQLite (the same rules over HTTP
on both databases: test_account.py): closing a conversation goes on to the next one of the
queue and `u` comes back to the queue at the same place; a password changed on /account signs
the other browser out; times and the snooze picker in the agent's timezone; a phone shows six
list rows on its first screen and fits a wide HTML newsletter to its width, with no keyboard
hints on a touch screen; read marks per agent."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent, Conversation, ConversationStatus, as_utc
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer, sign_in_page, signed_in_context
from tests.support.web import PASSWORD

NEW_PASSWORD = "a staple of better passphrases"

CURRENT = re.compile(r"\bis-current\b")
pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("cheap_password_hashing")]

NEWSLETTER = """<html><body style="margin:0">
<table width="680" cellpadding="0" cellspacing="0" style="width:680px;min-width:680px">
<tr><td width="680" style="width:680px">
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" width="680" height="200" alt="Banner">
<h1 style="font-size:28px">December news from Example Gadgets</h1>
<table width="640"><tr>
<td width="320" style="width:320px">Our new widget is here, with twice the battery.</td>
<td width="320" style="width:320px">Winter sale: 30 % off everything until the 31st.</td>
</tr></table>
<p>Read more at https://news.example.com/2026/12/a-very-long-link-that-goes-on-and-on-without-any-space-to-break-at-all</p>
</td></tr></table></body></html>"""


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


def open_queue(engine: Engine, n: int) -> list[int]:
    """`n` open unassigned conversations, each with a customer's message."""
    ids = []
    with unit_of_work(engine) as s:
        box = f.mailbox(s, smtp_host="smtp.example.com", smtp_port=587)
        for i in range(n):
            c = f.conversation(
                s, box, f"Question number {i}", minutes=i, unread=True,
                customer_email=f"c{i}@customer.example", customer_name=f"Customer {i}",
            )  # fmt: skip
            f.message(s, c, minutes=i, from_email=f"c{i}@customer.example", text=f"Hello {i}")
            assert c.id is not None
            ids.append(c.id)
    return ids


def row_ids(page: Any) -> list[int]:
    ids: list[int] = page.eval_on_selector_all(
        "#queue-rows tr[data-id]", "rows => rows.map(r => Number(r.dataset.id))"
    )
    return ids


def focused_row(page: Any) -> int | None:
    found: int | None = page.evaluate(
        "() => { const el = document.activeElement;"
        " const tr = el && el.closest('tr[data-id]'); return tr ? Number(tr.dataset.id) : null; }"
    )
    return found


def test_close_goes_to_the_next_conversation_and_u_back_to_the_queue(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    open_queue(engine, 30)
    context = signed_in_context(
        new_context, live_server, settings, engine, agents["alice"],
        viewport={"width": 1200, "height": 600},
    )  # fmt: skip
    page = context.new_page()
    page.goto(f"{live_server.url}/?queue=open")
    expect(page.locator("#queue-rows tr")).to_have_count(30)
    listed = row_ids(page)
    for _ in range(13):  # down to the 13th row: the list scrolls
        page.keyboard.press("j")
    current = listed[12]
    expect(page.locator(f'#queue-rows tr[data-id="{current}"]')).to_have_class(CURRENT)
    scrolled = page.evaluate("window.scrollY")
    assert scrolled > 0

    page.keyboard.press("o")
    page.wait_for_url(f"**/conversations/{current}")
    page.keyboard.press("e")  # close: on to the next of the queue
    page.wait_for_url(f"**/conversations/{listed[13]}")
    with Session(engine) as s:
        closed = s.get(Conversation, current)
        assert closed is not None and closed.status == ConversationStatus.closed
    page.keyboard.press("e")
    page.wait_for_url(f"**/conversations/{listed[14]}")

    page.keyboard.press("u")  # back to the queue, scrolled as it was, on this conversation
    page.wait_for_url("**/?queue=open")
    expect(page.locator(f'#queue-rows tr[data-id="{listed[14]}"]')).to_have_class(CURRENT)
    assert focused_row(page) == listed[14]
    assert abs(page.evaluate("window.scrollY") - scrolled) <= 2
    # the two closed ones left the queue (the row at the place stays the keyboard position)
    assert current not in row_ids(page) and listed[13] not in row_ids(page)
    page.keyboard.press("j")
    assert focused_row(page) == listed[15]

    # the last of the queue: closing it comes back to the queue
    page.goto(f"{live_server.url}/?queue=open")
    last = row_ids(page)[-1]
    page.locator(f'#queue-rows tr[data-id="{last}"] td.subject a').click()
    page.wait_for_url(f"**/conversations/{last}")
    page.keyboard.press("e")
    page.wait_for_url("**/?queue=open")
    expect(page.locator(f'#queue-rows tr[data-id="{last}"]')).to_have_count(0)


def test_a_reply_sent_goes_on_to_the_next_conversation(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    open_queue(engine, 3)
    with unit_of_work(engine) as s:
        alice = s.get(Agent, agents["alice"])
        assert alice is not None
        alice.undo_send_seconds = 0  # sent at once: no undo window to wait for
    page = signed_in_context(new_context, live_server, settings, engine, agents["alice"]).new_page()
    page.goto(f"{live_server.url}/?queue=open")
    listed = row_ids(page)
    page.locator(f'#queue-rows tr[data-id="{listed[0]}"] td.subject a').click()
    page.wait_for_url(f"**/conversations/{listed[0]}")
    # a note stays here
    page.locator("body").press("n")
    page.fill("textarea[name=body]", "Checking the logs.")
    page.click("[data-send]")
    expect(page.locator("article.message-note")).to_contain_text("Checking the logs.")
    assert page.url.endswith(f"/conversations/{listed[0]}")
    # a reply goes on to the next of the queue
    page.locator("body").press("r")
    page.fill("textarea[name=body]", "Fixed on our side.")
    page.click("[data-send]")
    page.wait_for_url(f"**/conversations/{listed[1]}")


def test_password_change_signs_the_other_browser_out(
    live_server: LiveServer, new_context: Callable[..., Any], agents: dict[str, int]
) -> None:
    here = new_context().new_page()
    sign_in_page(here, live_server.url, "bob@example.com")
    other = new_context().new_page()
    sign_in_page(other, live_server.url, "bob@example.com")

    here.click("a.agent-name")
    here.wait_for_url("**/account")
    form = here.locator("#password-form")
    form.locator("input[name=current_password]").fill("not my password")
    form.locator("input[name=new_password]").fill(NEW_PASSWORD)
    form.locator("input[name=repeat_password]").fill(NEW_PASSWORD)
    form.locator("button[type=submit]").click()
    expect(here.locator(".flash")).to_have_text("The current password is not right.")

    form.locator("input[name=current_password]").fill(PASSWORD)
    form.locator("input[name=new_password]").fill(NEW_PASSWORD)
    form.locator("input[name=repeat_password]").fill(NEW_PASSWORD)
    form.locator("button[type=submit]").click()
    expect(here.locator(".flash")).to_have_text(
        "Your password is changed; your other browsers are signed out."
    )
    here.goto(f"{live_server.url}/")
    expect(here.locator("a.agent-name")).to_have_text("Bob Builder")
    # the other browser is signed out; the old password no longer signs in, the new one does
    other.goto(f"{live_server.url}/")
    other.wait_for_url("**/login**")
    other.fill("input[name=email]", "bob@example.com")
    other.fill("input[name=password]", PASSWORD)
    other.click("button[type=submit]")
    expect(other.get_by_role("alert")).to_have_text("Wrong email or password.")
    other.fill("input[name=email]", "bob@example.com")
    other.fill("input[name=password]", NEW_PASSWORD)
    other.click("button[type=submit]")
    expect(other.locator("a.agent-name")).to_have_text("Bob Builder")


def test_times_and_the_snooze_picker_in_the_agents_timezone(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    (cid,) = open_queue(engine, 1)
    context = signed_in_context(
        new_context, live_server, settings, engine, agents["bob"], timezone_id="Asia/Tokyo"
    )
    page = context.new_page()
    page.goto(f"{live_server.url}/?queue=open")
    time_ = page.locator(f'#queue-rows tr[data-id="{cid}"] time')
    expect(time_).to_have_text("2024-05-01 09:00")  # no zone yet: UTC
    # the browser's zone is offered (once), and taken
    offer = page.locator("#zone-offer")
    expect(offer).to_contain_text("Use Asia/Tokyo")
    offer.locator("[data-zone-use]").click()
    expect(time_).to_have_text("2024-05-01 18:00")  # 09:00 UTC is 18:00 in Tokyo
    expect(page.locator("#zone-offer")).to_have_count(0)
    page.goto(f"{live_server.url}/account")
    expect(page.locator("#account-timezone")).to_have_value("Asia/Tokyo")

    # another agent changes theirs on /account
    other = signed_in_context(
        new_context, live_server, settings, engine, agents["alice"]
    ).new_page()
    other.goto(f"{live_server.url}/account")
    other.fill("#account-timezone", "America/New_York")
    other.click("#account-form button[type=submit]")
    expect(other.locator(".flash")).to_have_text("Your account is saved.")
    other.goto(f"{live_server.url}/?queue=open")
    expect(other.locator(f'#queue-rows tr[data-id="{cid}"] time')).to_have_text("2024-05-01 05:00")

    page.goto(f"{live_server.url}/conversations/{cid}")
    page.fill("#conv-state input[name=until]", "2031-01-15T08:30")
    page.click("#conv-state form[data-action=snooze] button[type=submit]")
    expect(page.locator("#conv-state .snoozed")).to_have_text(
        "snoozed until 2031-01-15 08:30 Asia/Tokyo"
    )
    with Session(engine) as s:
        c = s.get(Conversation, cid)
        assert c is not None
        assert as_utc(c.snoozed_until) == datetime(2031, 1, 14, 23, 30, tzinfo=UTC)


def test_a_phone_shows_six_rows_and_fits_a_newsletter(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    open_queue(engine, 12)
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "news")
        letter = f.conversation(s, box, "December news", minutes=60, unread=True)
        f.message(s, letter, minutes=60, from_email="news@gadgets.example", html=NEWSLETTER)
        letter_id = letter.id
    context = signed_in_context(
        new_context, live_server, settings, engine, agents["bob"],
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
    )  # fmt: skip
    page = context.new_page()
    page.goto(f"{live_server.url}/?queue=open")
    expect(page.locator("#queue-rows tr")).to_have_count(13)
    on_screen = page.eval_on_selector_all(
        "#queue-rows tr",
        "rows => rows.filter(r => r.getBoundingClientRect().bottom <= window.innerHeight).length",
    )
    assert on_screen >= 6, f"{on_screen} rows on the first screen"
    # (a phone widens its layout to what overflows: the width must stay the screen's)
    assert page.evaluate("[window.innerWidth, document.documentElement.scrollWidth]") == [390, 390]
    # no keyboard hints on a touch screen
    expect(page.locator("[data-help-open]")).to_be_hidden()

    page.goto(f"{live_server.url}/conversations/{letter_id}")
    frame_element = page.locator("iframe.html-body")
    expect(frame_element).to_be_visible()
    frame = frame_element.element_handle().content_frame()
    assert frame is not None
    frame.wait_for_selector("h1")
    assert page.evaluate("[window.innerWidth, document.documentElement.scrollWidth]") == [390, 390]
    box = frame_element.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 390
    # inside the frame: the newsletter fits its width (nothing cut off at the right)
    widths = frame.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1] + 1, widths
    expect(page.locator("#conv-state button[value=closed] kbd")).to_be_hidden()


def test_read_marks_are_each_agents_own(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    (cid,) = open_queue(engine, 1)
    with unit_of_work(engine) as s:
        for agent_id in agents.values():
            agent = s.get(Agent, agent_id)
            assert agent is not None
            agent.read_marks_since = datetime(2000, 1, 1, tzinfo=UTC)
    alice = signed_in_context(new_context, live_server, settings, engine, agents["alice"])
    bob = signed_in_context(new_context, live_server, settings, engine, agents["bob"])
    alice_page, bob_page = alice.new_page(), bob.new_page()
    bold = "el => getComputedStyle(el).fontWeight"
    for page in (alice_page, bob_page):
        page.goto(f"{live_server.url}/?queue=open")
        link = page.locator(f'#queue-rows tr[data-id="{cid}"] td.subject a')
        assert link.evaluate(bold) == "700"

    alice_page.locator(f'#queue-rows tr[data-id="{cid}"] td.subject a').click()
    alice_page.wait_for_url(f"**/conversations/{cid}")
    alice_page.keyboard.press("u")
    alice_page.wait_for_url("**/?queue=open")
    row = alice_page.locator(f'#queue-rows tr[data-id="{cid}"]')
    expect(row).not_to_have_attribute("data-unseen-by-me", "")
    assert row.locator("td.subject a").evaluate(bold) == "400"
    # still unread for Bob, after a reload too
    bob_page.reload()
    bob_row = bob_page.locator(f'#queue-rows tr[data-id="{cid}"]')
    expect(bob_row).to_have_attribute("data-unseen-by-me", "")
    assert bob_row.locator("td.subject a").evaluate(bold) == "700"
