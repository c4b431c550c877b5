"""An admin connects an OAuth2 mailbox in a real browser: the mailbox page's "Connect" goes to
the local authorization server's consent page (authorization code with PKCE), the consent
comes back to imapdesk's callback, and the mailbox logs in to Dovecot with the token. (SQLite;
test_oauth2_admin.py covers the routes' refusals on both databases.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.domain.mailboxes.servers import imap_account
from imapdesk.kernel.models import Mailbox, MailboxOAuth2, OAuth2State
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import ImapSession
from tests.support.browser import LiveServer, signed_in_context
from tests.support.oauth2 import OAuth2World, oauth2_world

pytestmark = pytest.mark.browser


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture(scope="module")
def world() -> Iterator[OAuth2World]:
    with oauth2_world() as started:
        yield started


def test_an_admin_connects_a_mailbox_through_the_consent_page(
    world: OAuth2World,
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
) -> None:
    account = world.mail.create_account()
    callback = f"{live_server.url}/admin/oauth2/callback"
    client_id, secret = world.client(redirect_uris=[callback])
    assert secret is not None
    # the consent page is the authorization server's, on its own (private) certificate
    context = signed_in_context(
        new_context, live_server, settings, engine, agents["alice"], ignore_https_errors=True
    )
    page = context.new_page()
    page.goto(f"{live_server.url}/admin/mailboxes/new")
    page.fill("input[name=name]", "support")
    page.fill("input[name=address]", account.user)
    page.fill("input[name=imap_host]", "localhost")
    page.fill("input[name=imap_port]", str(account.imaps_port))
    page.fill("input[name=username]", account.user)
    page.fill("input[name=ca_file]", str(account.ca_file))
    page.check("input[name=auth][value=oauth2]")
    page.select_option("select[name=oauth2_provider]", "generic")
    page.fill("input[name=oauth2_client_id]", client_id)
    page.fill("input[name=oauth2_client_secret]", secret)
    page.fill("input[name=oauth2_issuer]", world.auth.issuer)
    page.fill("input[name=oauth2_scopes]", "mail")
    page.click("button[name=op][value=save]")
    # saved, not connected yet: the page says so and alerts
    expect(page.locator(".oauth2-status")).to_have_attribute("data-oauth2-state", "pending")
    expect(page.locator(".oauth2-alerts")).to_contain_text("support does not sync")
    page.click(".oauth2-status button")
    # the authorization server's consent page
    page.wait_for_url(f"{world.auth.issuer}/authorize?**")
    expect(page.locator("body")).to_contain_text(f"The application {client_id} asks")
    page.fill("input[name=user]", account.user)
    page.click("button[value=allow]")
    # back at imapdesk, connected
    expect(page.locator(".oauth2-status")).to_have_attribute("data-oauth2-state", "connected")
    expect(page.locator("body")).to_contain_text("Connected support")
    expect(page.locator(".oauth2-alerts")).to_have_count(0)
    assert world.auth.challenges == [(client_id, "S256")], "the code was asked for with PKCE"

    with Session(engine) as db:
        box = db.exec(select(Mailbox).where(Mailbox.name == "support")).one()
        grant = db.get(MailboxOAuth2, box.id)
        assert grant is not None and grant.state == OAuth2State.connected
        assert grant.authorization_state_hash is None and grant.code_verifier_encrypted is None
        login = imap_account(box, settings)
    ImapSession(login).close()  # the token opens the mailbox
    assert any(
        "Login:" in line and f"user=<{account.user}>" in line and "method=XOAUTH2" in line
        for line in world.mail.log_tail(100_000).splitlines()
    )
