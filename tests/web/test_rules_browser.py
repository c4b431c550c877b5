"""Rules and availability in Chromium: an admin adds a rule with the form, orders it and
looks at its dry run; an agent switches themselves away from the header's link."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import AgentAvailability
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer, signed_in_context

pytestmark = pytest.mark.browser


def test_an_admin_adds_a_rule_and_dry_runs_it_and_an_agent_goes_away(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        f.conversation(s, box, "Refund for order 12")
        f.conversation(s, box, "Nice product")
    page = signed_in_context(new_context, live_server, settings, engine, agents["alice"]).new_page()
    page.goto(f"{live_server.url}/admin/rules")
    page.get_by_role("link", name="Add a rule").click()
    page.locator("input[name=name]").fill("Refunds to billing")
    page.locator("select[name=trigger]").select_option("conversation.created")
    page.locator("textarea[name=conditions]").fill(
        '[{"field": "subject", "op": "matches", "value": "refund|chargeback"}]'
    )
    page.locator("textarea[name=actions]").fill('[{"type": "tag", "tag": "billing"}]')
    page.get_by_role("button", name="Save rule").click()
    row = page.locator('tr[data-rule="Refunds to billing"]')
    expect(row).to_be_visible()
    expect(page.locator(".flash")).to_contain_text("Saved the rule Refunds to billing")
    row.get_by_role("link", name="Dry run").click()
    expect(page.locator(".matched-count")).to_have_text("1")
    expect(page.locator("tr.matched")).to_contain_text("Refund for order 12")
    expect(page.locator("tr.matched")).to_contain_text("tag 'billing'")

    bob = signed_in_context(new_context, live_server, settings, engine, agents["bob"]).new_page()
    bob.goto(live_server.url)
    bob.get_by_role("link", name="Availability").click()
    expect(bob.locator(".availability-state")).to_have_text("available")
    bob.get_by_label("Available for new conversations").uncheck()
    bob.get_by_role("button", name="Save").click()
    expect(bob.locator(".availability-state")).to_have_text("away")
    with Session(engine) as s:
        row_ = s.get(AgentAvailability, agents["bob"])
        assert row_ is not None and row_.available is False
