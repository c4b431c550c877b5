"""The customer at hand in Chromium, on both databases: the conversation page's sidebar shows
who the conversation is with and their other conversations in the agent's mailboxes, linked;
its note is saved without leaving the page and is there after a reload and on the customer's
page; a colleague's change saved meanwhile is shown beside the agent's words, which stay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import select

from imapdesk.domain.accounts import access
from imapdesk.domain.customers.directory import keep_in_step
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent, Customer
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer, signed_in_context

pytestmark = pytest.mark.browser


def test_the_sidebar_links_the_customers_conversations_and_keeps_their_note(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    with unit_of_work(engine) as s:
        support, billing = f.mailbox(s, "support"), f.mailbox(s, "billing")
        bob = s.get(Agent, agents["bob"])
        assert bob is not None
        access.set_mailbox_access(s, bob, all_mailboxes=False, mailbox_ids=[support.id or 0])
        ola = {"customer_email": "ola@nordvik.example", "customer_name": "Ola Nordmann"}
        printer = f.conversation(s, support, "Printer on fire", minutes=10, **ola)
        invoice = f.conversation(s, support, "Invoice copy", minutes=5, **ola)
        salary = f.conversation(s, billing, "Salary question", minutes=60, **ola)
        keep_in_step(s.connection(), [c.id or 0 for c in (printer, invoice, salary)])
        customer_id = s.exec(select(Customer.id)).one()

    bob_page = signed_in_context(
        new_context, live_server, settings, engine, agents["bob"]
    ).new_page()
    bob_page.goto(f"{live_server.url}/conversations/{printer.id}")
    side = bob_page.locator("#conv-customer")
    expect(side).to_be_visible()
    expect(side.locator(".customer-name")).to_have_text("Ola Nordmann")
    expect(side).to_contain_text("ola@nordvik.example")
    expect(side).to_contain_text("Organisation: nordvik.example")
    expect(side.locator("#customer-others li")).to_have_count(1)
    expect(side).not_to_contain_text("Salary question")

    # the note, saved in place
    field = side.locator("textarea[name=note]")
    field.fill("Prefers phone calls.\nPays by invoice.")
    side.get_by_role("button", name="Save note").click()
    expect(side.locator("[data-note-status]")).to_have_text("Saved by Bob Builder")
    expect(bob_page).to_have_url(f"{live_server.url}/conversations/{printer.id}")
    bob_page.reload()
    expect(side.locator("textarea[name=note]")).to_have_value(
        "Prefers phone calls.\nPays by invoice."
    )
    expect(side.locator("[data-note-status]")).to_contain_text("Saved by Bob Builder")

    # the other conversation, one click away, with the same customer and note
    side.get_by_role("link", name="Invoice copy").click()
    expect(bob_page).to_have_url(f"{live_server.url}/conversations/{invoice.id}")
    expect(bob_page.locator("#conv-customer textarea[name=note]")).to_have_value(
        "Prefers phone calls.\nPays by invoice."
    )
    expect(bob_page.locator("#conv-customer #customer-others li")).to_have_count(1)
    expect(bob_page.locator("#conv-customer #customer-others")).to_contain_text("Printer on fire")

    # Alice (every mailbox) changes the note on the customer's page meanwhile
    alice = signed_in_context(new_context, live_server, settings, engine, agents["alice"])
    alice_page = alice.new_page()
    alice_page.goto(f"{live_server.url}/customers/{customer_id}")
    expect(alice_page.locator("#customer-conversations tr")).to_have_count(3)
    expect(alice_page.locator("#customer-note")).to_have_value(
        "Prefers phone calls.\nPays by invoice."
    )
    alice_page.fill("#customer-note", "Moved to the Oslo office.")
    alice_page.get_by_role("button", name="Save note").click()
    expect(alice_page.locator("[data-note-status]")).to_have_text("Saved by Alice Agent")

    # Bob's save over the note he was shown: refused, his words stay, hers are shown
    bob_field = bob_page.locator("#conv-customer textarea[name=note]")
    bob_field.fill("Prefers e-mail now.")
    bob_page.locator("#conv-customer").get_by_role("button", name="Save note").click()
    conflict = bob_page.locator("#conv-customer [data-note-conflict]")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text("Alice Agent changed the note meanwhile")
    expect(conflict.locator("[data-note-theirs]")).to_have_text("Moved to the Oslo office.")
    expect(bob_field).to_have_value("Prefers e-mail now.")
    # saving again, having seen hers, puts his in its place
    bob_field.fill("Moved to the Oslo office. Prefers e-mail now.")
    bob_page.locator("#conv-customer").get_by_role("button", name="Save note").click()
    expect(bob_page.locator("#conv-customer [data-note-status]")).to_have_text(
        "Saved by Bob Builder"
    )
    expect(conflict).to_be_hidden()
    alice_page.reload()
    expect(alice_page.locator("#customer-note")).to_have_value(
        "Moved to the Oslo office. Prefers e-mail now."
    )
    alice_page.locator(".note-history summary").click()
    expect(alice_page.locator(".note-history li")).to_have_count(3)

    # the customers list finds them by their organisation; Bob's count is of his mailbox
    bob_page.goto(f"{live_server.url}/customers?q=nordvik")
    rows = bob_page.locator("#customer-rows tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td[data-label=Conversations]")).to_have_text("2")
