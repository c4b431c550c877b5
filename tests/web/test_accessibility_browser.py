"""Accessibility of the main pages, checked by axe-core (the rules engine of the browsers'
accessibility tools) in headless Chromium: WCAG 2.1 A and AA and axe's best practices (labels,
names, colour contrast, landmarks, headings, ARIA use, links told apart from text) on the sign-in
page, the queue, a conversation with the composer open, and the admin pages, wide and on a phone;
and the keyboard's way through a page. (On SQLite: the markup is the same on both databases.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import select

from imapdesk.domain.customers.directory import keep_in_step as keep_customers_in_step
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Customer, FolderState
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer, sign_in_page, signed_in_context

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("cheap_password_hashing")]

RULES = {
    "runOnly": {
        "type": "tag",
        "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"],
    },
    # a mail's own HTML is the sender's markup, shown in a frame that runs no script (so axe
    # cannot run in it either); the frame itself (its title) is checked
    "rules": {"frame-tested": {"enabled": False}},
}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True}


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


def problems(page: Any) -> list[str]:
    """What axe finds wrong on the page as it is now, one line per rule, and what it could not
    decide (an `incomplete` result needs a person to look: none is accepted either)."""
    found = Axe().run(page, options=RULES).response
    return [
        f"{kind} {r['id']} ({r['impact']}): {r['help']}: "
        + " | ".join(
            n["html"][:120] + " " + "; ".join(c["message"] for c in n["any"] + n["all"])
            for n in r["nodes"][:3]
        )
        for kind in ("violations", "incomplete")
        for r in found[kind]
    ]


def test_the_checker_sees_what_is_wrong(
    live_server: LiveServer, new_context: Callable[..., Any]
) -> None:
    """The checks below mean something: on our pages, under their Content-Security-Policy,
    axe runs and reports an unlabelled field and an image without a text alternative."""
    page = new_context().new_page()
    page.goto(live_server.url + "/login")
    assert problems(page) == []
    page.evaluate(
        "document.querySelector('main').insertAdjacentHTML('beforeend', "
        "'<img src=\"/static/none.png\"><input type=text name=x>')"
    )
    found = " ".join(problems(page))
    assert "violations image-alt" in found and "violations label" in found


@pytest.mark.parametrize("screen", ["wide", "phone"])
def test_the_main_pages_pass_wcag_aa(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    screen: str,
) -> None:
    kwargs = PHONE if screen == "phone" else {}
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "support", last_error="authentication failed: check the password")
        f.folder(s, box, "INBOX", state=FolderState.error, last_error="mailbox went away")
        fire = f.conversation(
            s,
            box,
            "Printer on fire",
            minutes=2,
            tags=("urgent",),
            customer_email="carol@customer.example",
            customer_name="Carol",
        )
        f.message(
            s,
            fire,
            text="Our printer is on fire.",
            html='<p>Our printer is <b>on fire</b>.<img src="https://tracker.example/p.gif"></p>',
            from_email="carol@customer.example",
        )
        f.conversation(s, box, "Invoice", minutes=3, assignee_id=agents["alice"])
        f.conversation(s, box, "Waiting", minutes=4, status="pending")
        f.conversation(s, box, "Toner", minutes=1, customer_email="carol@customer.example")
        keep_customers_in_step(s.connection(), [fire.id or 0])
        carol = s.exec(select(Customer.id)).one()
    seen: dict[str, list[str]] = {}

    anonymous = new_context(**kwargs).new_page()
    anonymous.goto(live_server.url + "/login")
    seen["sign-in"] = problems(anonymous)
    anonymous.fill("input[name=email]", "alice@example.com")
    anonymous.fill("input[name=password]", "not the password")
    anonymous.click("button[type=submit]")
    expect(anonymous.locator(".flash-error, .error").first).to_be_visible()
    seen["sign-in, wrong password"] = problems(anonymous)

    page = signed_in_context(
        new_context, live_server, settings, engine, agents["alice"], **kwargs
    ).new_page()
    page.goto(live_server.url + "/")
    seen["queue"] = problems(page)
    page.locator("table.conversations tbody input[type=checkbox]").first.check()
    expect(page.locator("#bulk-count")).to_have_text("1 selected:")
    seen["queue, one selected"] = problems(page)
    page.locator("body").press("?")
    expect(page.locator("dialog#help")).to_be_visible()
    seen["queue, shortcuts help"] = problems(page)
    page.goto(live_server.url + "/?q=printer")
    seen["search results"] = problems(page)

    page.goto(f"{live_server.url}/conversations/{fire.id}")
    page.click("details.formatted summary")
    expect(page.locator("[data-load-images]")).to_be_visible()
    seen["conversation"] = problems(page)
    page.locator("body").press("r")
    expect(page.locator("#composer-form")).to_be_visible()
    seen["conversation, reply composer"] = problems(page)

    for path in (
        "/saved-replies",
        "/customers",
        f"/customers/{carol}",
        "/admin/agents",
        f"/admin/agents/{agents['bob']}",
        "/admin/mailboxes",
        f"/admin/mailboxes/{box.id}",
        "/admin/mailboxes/new",
        "/admin/tokens",
        "/conversations/999999",
    ):
        page.goto(live_server.url + path)
        seen[path] = problems(page)
    assert {name: found for name, found in seen.items() if found} == {}


def test_the_keyboard_way_through_the_queue(
    live_server: LiveServer, new_context: Callable[..., Any], engine: Engine, agents: dict[str, int]
) -> None:
    with unit_of_work(engine) as s:
        f.conversation(s, f.mailbox(s, "support"), "Printer on fire", minutes=2)
    page = new_context().new_page()
    sign_in_page(page, live_server.url, "alice@example.com")

    def tab() -> str:
        page.keyboard.press("Tab")
        return str(
            page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")
        )

    # reading order: the skip link, then the header (brand, navigation, search, the
    # notifications bell, sign-out),
    # then the content, starting with the queues
    header = ["Skip to content", "imapdesk", "Mine", "Unassigned", "Conversations", "Customers",
              "Reports", "New conversation", "Admin", "top-q", "notif-bell", "Alice Agent",
              "Available", "Sign out"]  # fmt: skip
    order = [tab() for _ in range(len(header) + 1)]
    assert order[: len(header)] == header
    assert page.evaluate("document.activeElement.closest('main') !== null")
    # the skip link shows while it has the focus, the focus ring is drawn, and it leads past
    # the header straight into the content
    page.reload()
    tab()
    skip = page.locator("a.skip-link")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None and box["x"] >= 0 and box["width"] > 1
    style = skip.evaluate(
        "e => [getComputedStyle(e).outlineStyle, getComputedStyle(e).outlineWidth]"
    )
    assert style[0] != "none" and style[1] != "0px"
    page.keyboard.press("Enter")
    tab()
    assert page.evaluate("document.activeElement.closest('main') !== null")
