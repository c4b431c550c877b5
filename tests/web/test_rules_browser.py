"""Rules and availability in Chromium: an admin builds a rule with the form's rows (adds a
condition and an action with the buttons, removes the blank ones, the value's input follows
the field), orders it and looks at its dry run; an agent switches themselves away and back
with the header's switch, on whatever page they are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import AgentAvailability, Rule
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer, signed_in_context

pytestmark = pytest.mark.browser


def test_an_admin_builds_a_rule_with_rows_and_dry_runs_it(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        box_id = box.id
        f.conversation(s, box, "Refund for order 12")
        f.conversation(s, box, "Nice product")
    page = signed_in_context(new_context, live_server, settings, engine, agents["alice"]).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))  # rules_form.js's errors
    page.on(
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(f"{live_server.url}/admin/rules")
    page.get_by_role("link", name="Add a rule").click()
    page.locator("input[name=name]").fill("Refunds to billing")
    # N only for the time-based triggers, with its unit
    trigger_amount = page.locator("[data-trigger-amount]")
    expect(trigger_amount).to_be_hidden()
    page.locator("select[name=trigger]").select_option("time.pending")
    expect(trigger_amount).to_be_visible()
    expect(trigger_amount).to_contain_text("days")
    page.locator("select[name=trigger]").select_option("conversation.created")
    expect(trigger_amount).to_be_hidden()

    conditions = page.locator('[data-rows="condition"] > [data-rule-row]')
    actions = page.locator('[data-rows="action"] > [data-rule-row]')
    expect(conditions).to_have_count(1)  # the blank row
    expect(actions).to_have_count(1)
    page.get_by_role("button", name="Add a condition").click()
    page.get_by_role("button", name="Add a condition").click()
    expect(conditions).to_have_count(3)
    # the blank row goes
    conditions.nth(0).get_by_role("button", name="Remove this condition").click()
    expect(conditions).to_have_count(2)
    subject = conditions.nth(0)
    subject.locator("[data-field]").select_option("subject")
    expect(subject.locator("[data-op] option")).to_have_count(5)
    subject.locator("[data-op]").select_option("matches")
    subject.locator("[data-value] input").fill("refund|chargeback")
    # a mailbox is chosen from a list of mailboxes
    mailbox = conditions.nth(1)
    mailbox.locator("[data-field]").select_option("mailbox")
    expect(mailbox.locator("[data-op] option")).to_have_count(2)
    expect(mailbox.locator("[data-value] input")).to_have_count(0)
    mailbox.locator("[data-value] select").select_option(str(box_id))

    page.get_by_role("button", name="Add an action").click()
    expect(actions).to_have_count(2)
    actions.nth(0).get_by_role("button", name="Remove this action").click()
    expect(actions).to_have_count(1)
    tag = actions.nth(0)
    expect(tag.locator("input[name$=-tag]")).to_be_hidden()
    tag.locator("[data-type]").select_option("tag")
    expect(tag.locator("input[name$=-tag]")).to_be_visible()
    expect(tag.locator("select[name$=-agent]")).to_be_hidden()
    tag.locator("input[name$=-tag]").fill("billing")
    page.get_by_role("button", name="Save rule").click()

    row = page.locator('tr[data-rule="Refunds to billing"]')
    expect(row).to_be_visible()
    expect(page.locator(".flash")).to_contain_text("Saved the rule Refunds to billing")
    with Session(engine) as s:
        rule = s.exec(select(Rule).where(col(Rule.name) == "Refunds to billing")).one()
        assert rule.conditions == [
            {"field": "subject", "op": "matches", "value": "refund|chargeback"},
            {"field": "mailbox", "op": "is", "value": box_id},
        ]
        assert rule.actions == [{"type": "tag", "tag": "billing"}]
    row.get_by_role("link", name="Dry run").click()
    expect(page.locator(".matched-count")).to_have_text("1")
    expect(page.locator("tr.matched")).to_contain_text("Refund for order 12")
    expect(page.locator("tr.matched")).to_contain_text("tag 'billing'")

    # the edit page: the rows as saved; an error comes back beside its row, input kept
    page.get_by_role("link", name="Refunds to billing").click()
    expect(conditions).to_have_count(3)  # two and the blank one
    expect(conditions.nth(1).locator("[data-value] select")).to_have_value(str(box_id))
    conditions.nth(0).locator("[data-value] input").fill("refund(")
    page.get_by_role("button", name="Save rule").click()
    expect(conditions.nth(0).locator(".row-error")).to_contain_text(
        "Not a valid regular expression"
    )
    expect(conditions.nth(0).locator("[data-value] input")).to_have_value("refund(")
    expect(actions.nth(0).locator("input[name$=-tag]")).to_have_value("billing")
    assert errors == []


def test_an_agent_switches_away_and_back_from_the_header(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    bob = signed_in_context(new_context, live_server, settings, engine, agents["bob"]).new_page()
    bob.goto(f"{live_server.url}/customers")
    switch = bob.locator(".availability-toggle button")
    expect(switch).to_have_text("Available")
    switch.click()
    expect(switch).to_have_text("Away")
    assert bob.url == f"{live_server.url}/customers"
    with Session(engine) as s:
        row = s.get(AgentAvailability, agents["bob"])
        assert row is not None and row.available is False
    # every page shows it; the availability page agrees
    bob.goto(f"{live_server.url}/account/availability")
    expect(switch).to_have_text("Away")
    expect(bob.locator(".availability-state")).to_have_text("away")
    switch.click()
    expect(bob.locator(".availability-state")).to_have_text("available")
    expect(switch).to_have_text("Available")
    with Session(engine) as s:
        row = s.get(AgentAvailability, agents["bob"])
        assert row is not None and row.available is True
