"""SMTP settings on the admin mailbox page: saved (the password encrypted, never shown again,
kept when left empty, cleared on request), and the "Test SMTP" button against the real local
relay (STARTTLS + AUTH against Dovecot's users): it works, and it says what to fix for a wrong
port, a wrong password, an unverifiable certificate and the wrong security setting. Admins
only, CSRF enforced. Both databases."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.devtools.mailserver import MailAccount, free_port
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.mailboxes.servers import smtp_account
from imapdesk.kernel import crypto
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import ImapSecurity, Mailbox, SmtpSecurity
from imapdesk.kernel.settings import Settings
from tests.api.conftest import app, cheap_password_hashing  # noqa: F401  (the app on this test's database)
from tests.support.web import PASSWORD, Page, csrf

SMTP_SECRET = "smtp-secret-7c1e"

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


@pytest.fixture
def people(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        create_agent(s, "admin@example.com", "Ada Admin", PASSWORD, is_admin=True)
        create_agent(s, "bob@example.com", "Bob", PASSWORD)


def signed_in(app: FastAPI, email: str) -> TestClient:  # noqa: F811
    client = TestClient(app, follow_redirects=False)
    r = client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf(client)}
    )
    assert r.status_code == 303, r.text
    return client


def imap_fields(account: MailAccount) -> dict[str, str]:
    return {
        "address": "support@example.test",
        "imap_host": account.host,
        "imap_port": str(account.imap_port),
        "imap_security": "starttls",
        "username": account.user,
        "ca_file": str(account.ca_file),
    }


def relay_fields(relay: LocalSmtpRelay, **extra: str) -> dict[str, str]:
    return {"smtp_host": "localhost", "smtp_port": str(relay.port), "smtp_security": "starttls"} | (
        extra
    )


def add_box(engine: Engine, settings: Settings, account: MailAccount) -> int:
    from imapdesk.domain.mailboxes.config import add_mailbox

    with unit_of_work(engine) as s:
        box = add_mailbox(
            s,
            settings,
            name="support",
            address="support@example.test",
            imap_host=account.host,
            imap_port=account.imap_port,
            imap_security=ImapSecurity.starttls,
            username=account.user,
            password=account.password,
            ca_file=str(account.ca_file),
        )
        return box.id or 0


def test_smtp_settings_are_saved_with_the_password_encrypted_and_never_shown(
    app: FastAPI,  # noqa: F811
    engine: Engine,
    settings: Settings,
    people: None,
    mail_account: MailAccount,
    relay: LocalSmtpRelay,
) -> None:
    admin = signed_in(app, "admin@example.com")
    # a new mailbox: the fall-backs are shown as placeholders
    page = admin.get("/admin/mailboxes/new").text
    assert 'placeholder="none: replies cannot be sent"' in page
    assert 'placeholder="the IMAP password"' in page
    assert 'placeholder="587 (for starttls)"' in page
    form = {"csrf_token": csrf(admin, "/admin/mailboxes/new"), "name": "support"}
    form |= imap_fields(mail_account) | {"password": mail_account.password}
    form |= relay_fields(relay, smtp_username="sender@example.test", smtp_password=SMTP_SECRET)
    r = admin.post("/admin/mailboxes/new", data=form | {"op": "save"})
    assert r.status_code == 303, r.text
    with Session(engine) as s:
        box = s.exec(select(Mailbox).where(Mailbox.name == "support")).one()
        box_id = box.id
        assert (box.smtp_host, box.smtp_port) == ("localhost", relay.port)
        assert box.smtp_security == SmtpSecurity.starttls
        assert box.smtp_username == "sender@example.test"
        assert box.smtp_password_encrypted and SMTP_SECRET not in box.smtp_password_encrypted
        assert crypto.decrypt_secret(box.smtp_password_encrypted, settings.secret_key) == (
            SMTP_SECRET
        )
    url = f"/admin/mailboxes/{box_id}"
    page = admin.get(url).text
    assert SMTP_SECRET not in page and mail_account.password not in page
    inputs = Page(page).inputs
    assert inputs["smtp_password"] == "" and inputs["smtp_host"] == "localhost"
    assert 'placeholder="a password is stored"' in page and "smtp_clear_password" in page
    token = csrf(admin, url)

    # saved again with the password left empty: the stored one stays
    edit = {"csrf_token": token, "op": "save", "enabled": "true"} | imap_fields(mail_account)
    edit |= relay_fields(relay, smtp_username="sender@example.test")
    assert admin.post(url, data=edit).status_code == 303
    with Session(engine) as s:
        box = s.get(Mailbox, box_id)
        assert box is not None and box.smtp_password_encrypted
        encrypted = box.smtp_password_encrypted
        assert crypto.decrypt_secret(encrypted, settings.secret_key) == SMTP_SECRET

    # cleared: back to the IMAP login; the user name left empty falls back too
    edit |= {"smtp_username": "", "smtp_clear_password": "true"}
    assert admin.post(url, data=edit).status_code == 303
    with Session(engine) as s:
        box = s.get(Mailbox, box_id)
        assert box is not None
        assert box.smtp_password_encrypted is None and box.smtp_username is None
        account = smtp_account(box, settings)
        assert account is not None
        assert (account.username, account.password) == (mail_account.user, mail_account.password)
    page = admin.get(url).text
    assert f'placeholder="{mail_account.user} (the IMAP user name)"' in page
    assert 'placeholder="the IMAP password"' in page

    # no login at all; a port out of range is refused
    assert admin.post(url, data=edit | {"smtp_no_login": "true"}).status_code == 303
    with Session(engine) as s:
        box = s.get(Mailbox, box_id)
        assert box is not None and box.smtp_username == ""
        account = smtp_account(box, settings)
        assert account is not None and account.username is None
    assert 'name="smtp_no_login" value="true" checked' in admin.get(url).text
    r = admin.post(url, data=edit | {"smtp_port": "99999"})
    assert r.status_code == 400 and "SMTP port" in Page(r.text).all_text


def test_the_smtp_test_against_the_relay(
    app: FastAPI,  # noqa: F811
    engine: Engine,
    settings: Settings,
    people: None,
    mail_account: MailAccount,
    running_relay: LocalSmtpRelay,
) -> None:
    relay = running_relay
    admin = signed_in(app, "admin@example.com")
    # a new mailbox, nothing saved: the SMTP login falls back to the IMAP one
    form = {"csrf_token": csrf(admin, "/admin/mailboxes/new"), "name": "support", "op": "smtp"}
    form |= imap_fields(mail_account) | {"password": mail_account.password}
    r = admin.post("/admin/mailboxes/new", data=form | relay_fields(relay))
    text = Page(r.text).all_text
    assert r.status_code == 200 and "SMTP works" in text, text
    assert f"logged in as {mail_account.user}" in text and "TLS verified" in text
    assert "Connection works" not in text  # the IMAP test did not run

    # a saved mailbox without SMTP: its stored password goes to no SMTP server the form names
    box_id = add_box(engine, settings, mail_account)
    url = f"/admin/mailboxes/{box_id}"
    edit = {"csrf_token": csrf(admin, url), "op": "smtp"} | imap_fields(mail_account)
    r = admin.post(url, data=edit | relay_fields(relay))
    text = Page(r.text).all_text
    assert r.status_code == 400 and "type the password to test another server" in text
    assert "SMTP works" not in text
    typed = edit | {"password": mail_account.password}
    r = admin.post(url, data=typed | relay_fields(relay))
    assert "SMTP works" in Page(r.text).all_text

    # saved with the relay: the stored password is used there; then each mistake named
    with unit_of_work(engine) as s:
        box = s.get(Mailbox, box_id)
        assert box is not None
        box.smtp_host, box.smtp_port = "localhost", relay.port
        box.smtp_security = SmtpSecurity.starttls
    r = admin.post(url, data=edit | relay_fields(relay))
    assert "SMTP works" in Page(r.text).all_text

    wrong_port = admin.post(url, data=typed | relay_fields(relay, smtp_port=str(free_port())))
    text = Page(wrong_port.text).all_text
    assert "SMTP failed" in text and "cannot reach localhost:" in text
    assert "check the SMTP host and port" in text

    wrong_password = admin.post(url, data=edit | relay_fields(relay, smtp_password="nope"))
    text = Page(wrong_password.text).all_text
    assert "SMTP failed" in text and f"refused the login of {mail_account.user}" in text
    assert "check the SMTP user name and password" in text and "nope" not in wrong_password.text

    no_ca = admin.post(url, data=edit | relay_fields(relay) | {"ca_file": ""})
    text = Page(no_ca.text).all_text
    assert "TLS verification failed for localhost:" in text and "CA file" in text

    implicit_tls = admin.post(url, data=edit | relay_fields(relay, smtp_security="ssl"))
    text = Page(implicit_tls.text).all_text
    assert "SMTP failed" in text and "security setting" in text

    no_host = admin.post(url, data=edit | relay_fields(relay, smtp_host=""))
    assert "no SMTP host is set" in Page(no_host.text).all_text
    # testing saves nothing
    with Session(engine) as s:
        box = s.get(Mailbox, box_id)
        assert box is not None and (box.smtp_host, box.smtp_port) == ("localhost", relay.port)
        assert box.smtp_security == SmtpSecurity.starttls and box.ca_file


def test_only_admins_and_only_with_the_csrf_token(
    app: FastAPI,  # noqa: F811
    engine: Engine,
    settings: Settings,
    people: None,
    mail_account: MailAccount,
    relay: LocalSmtpRelay,
) -> None:
    box_id = add_box(engine, settings, mail_account)
    url = f"/admin/mailboxes/{box_id}"
    fields = imap_fields(mail_account) | relay_fields(relay, smtp_password=SMTP_SECRET)
    bob = signed_in(app, "bob@example.com")
    token = csrf(bob, "/")
    for op in ("smtp", "save"):
        assert bob.post(url, data=fields | {"csrf_token": token, "op": op}).status_code == 403
        r = bob.post("/admin/mailboxes/new", data=fields | {"csrf_token": token, "op": op})
        assert r.status_code == 403
    admin = signed_in(app, "admin@example.com")
    for op in ("smtp", "save"):
        assert admin.post(url, data=fields | {"op": op}).status_code == 403
        assert admin.post(url, data=fields | {"op": op, "csrf_token": "x" * 40}).status_code == 403
    with Session(engine) as s:
        box = s.get(Mailbox, box_id)
        assert box is not None and box.smtp_host is None and box.smtp_password_encrypted is None
