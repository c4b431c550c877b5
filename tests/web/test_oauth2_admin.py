"""The admin's OAuth2 routes refuse what they must, on both databases: a connect without the
form's CSRF token, a callback whose state is unknown, used or too old; a provider's refusal
comes back as a message and connects nothing; a token is never sent to a server other than
the one saved; going back to a password needs one. (The whole flow, through a consent page in
a real browser: test_oauth2_admin_browser.py.)"""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.mailboxes import oauth2
from imapdesk.domain.mailboxes.config import add_mailbox
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    ImapSecurity,
    MailboxOAuth2,
    OAuth2Provider,
    OAuth2State,
    utcnow,
)
from imapdesk.kernel.settings import Settings
from tests.support.web import PASSWORD, Page, csrf

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")

AUTHORIZE = "https://login.example.invalid/oauth2/authorize"
TOKEN = "https://login.example.invalid/oauth2/token"


@pytest.fixture
def admin(app: FastAPI, engine: Engine) -> TestClient:
    with unit_of_work(engine) as s:
        create_agent(s, "admin@example.com", "Ada Admin", PASSWORD, is_admin=True)
    client = TestClient(app, follow_redirects=False)
    r = client.post(
        "/login",
        data={"email": "admin@example.com", "password": PASSWORD, "csrf_token": csrf(client)},
    )
    assert r.status_code == 303, r.text
    return client


def _oauth2_box(engine: Engine, settings: Settings, name: str = "support") -> int:
    """An OAuth2 mailbox of a provider given by its URLs (nothing is asked of it here)."""
    with unit_of_work(engine) as db:
        box = add_mailbox(
            db, settings, name=name, address=f"{name}@example.com", imap_host="imap.example.com",
            imap_port=993, imap_security=ImapSecurity.ssl, username=f"{name}@example.com",
            password="",
        )  # fmt: skip
        oauth2.configure(
            db,
            box,
            settings,
            oauth2.OAuth2Settings(
                provider=OAuth2Provider.generic,
                client_id="imapdesk",
                client_secret="s3cret",
                token_url=TOKEN,
                authorization_url=AUTHORIZE,
                scopes=("mail",),
            ),
        )
        assert box.id is not None
        return box.id


def _connect(admin: TestClient, mailbox_id: int) -> str:
    """Press "Connect": the page that moves on to the provider; its URL."""
    token = csrf(admin, f"/admin/mailboxes/{mailbox_id}")
    r = admin.post(f"/admin/mailboxes/{mailbox_id}/oauth2/connect", data={"csrf_token": token})
    assert r.status_code == 200, r.text
    found = re.search(r'content="0;url=([^"]+)"', r.text)
    assert found is not None, r.text
    return unescape(found.group(1))


def test_connect_needs_the_forms_csrf_token_and_sends_pkce(
    admin: TestClient, engine: Engine, settings: Settings
) -> None:
    mailbox_id = _oauth2_box(engine, settings)
    refused = admin.post(f"/admin/mailboxes/{mailbox_id}/oauth2/connect", data={})
    assert refused.status_code in (403, 422)
    refused = admin.post(
        f"/admin/mailboxes/{mailbox_id}/oauth2/connect", data={"csrf_token": "forged"}
    )
    assert refused.status_code == 403
    url = _connect(admin, mailbox_id)
    assert url.startswith(AUTHORIZE + "?")
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["client_id"] == ["imapdesk"] and query["scope"] == ["mail"]
    assert query["redirect_uri"] == ["http://testserver/admin/oauth2/callback"]
    assert query["login_hint"] == ["support@example.com"]
    with Session(engine) as db:
        grant = db.get(MailboxOAuth2, mailbox_id)
        assert grant is not None and grant.authorization_state_hash
        # the state is kept as its hash, the verifier encrypted
        assert query["state"][0] != grant.authorization_state_hash
        assert grant.code_verifier_encrypted and len(grant.code_verifier_encrypted) > 100


def test_a_callback_with_an_unknown_or_old_state_is_refused(
    admin: TestClient, engine: Engine, settings: Settings
) -> None:
    mailbox_id = _oauth2_box(engine, settings)
    assert admin.get("/admin/oauth2/callback?state=made-up&code=x").status_code == 404
    state = parse_qs(urlsplit(_connect(admin, mailbox_id)).query)["state"][0]
    with unit_of_work(engine) as db:
        grant = db.get(MailboxOAuth2, mailbox_id)
        assert grant is not None
        grant.authorization_started_at = utcnow() - timedelta(minutes=16)
    assert admin.get(f"/admin/oauth2/callback?state={state}&code=x").status_code == 404


def test_the_providers_refusal_is_shown_and_connects_nothing(
    admin: TestClient, engine: Engine, settings: Settings
) -> None:
    mailbox_id = _oauth2_box(engine, settings)
    state = parse_qs(urlsplit(_connect(admin, mailbox_id)).query)["state"][0]
    r = admin.get(
        f"/admin/oauth2/callback?state={state}&error=access_denied"
        "&error_description=The+user+said+no"
    )
    assert r.status_code == 303 and r.headers["location"] == f"/admin/mailboxes/{mailbox_id}"
    page = Page(admin.get(r.headers["location"]).text).all_text
    assert "The provider did not grant access (access_denied: The user said no)" in page
    with Session(engine) as db:
        grant = db.get(MailboxOAuth2, mailbox_id)
        assert grant is not None and grant.state == OAuth2State.pending
    assert "support does not sync" in page


def test_a_token_goes_only_to_the_saved_server_and_a_password_comes_back(
    admin: TestClient, engine: Engine, settings: Settings
) -> None:
    mailbox_id = _oauth2_box(engine, settings)
    form = Page(admin.get(f"/admin/mailboxes/{mailbox_id}").text).inputs
    assert form["oauth2_client_id"] == "imapdesk" and form["oauth2_token_url"] == TOKEN
    assert form["oauth2_client_secret"] == ""  # never shown
    fields = {
        "csrf_token": form["csrf_token"], "address": "support@example.com",
        "imap_host": "elsewhere.example.net", "imap_port": "993", "imap_security": "ssl",
        "username": "support@example.com", "enabled": "true", "auth": "oauth2",
        "oauth2_provider": "generic", "oauth2_client_id": "imapdesk",
        "oauth2_token_url": TOKEN, "oauth2_authorization_url": AUTHORIZE,
        "oauth2_scopes": "mail",
    }  # fmt: skip
    tested = admin.post(f"/admin/mailboxes/{mailbox_id}", data=fields | {"op": "test"})
    assert tested.status_code == 400
    assert "its token is only sent to the server and user it was saved for" in tested.text
    # back to a password: it must be typed
    back = fields | {"imap_host": "imap.example.com", "auth": "password", "op": "save"}
    refused = admin.post(f"/admin/mailboxes/{mailbox_id}", data=back)
    assert refused.status_code == 400
    assert "type the password the mailbox logs in with instead of OAuth2" in refused.text
    saved = admin.post(f"/admin/mailboxes/{mailbox_id}", data=back | {"password": "pw"})
    assert saved.status_code == 303, saved.text
    with Session(engine) as db:
        assert db.get(MailboxOAuth2, mailbox_id) is None
