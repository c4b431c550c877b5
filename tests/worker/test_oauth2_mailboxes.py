"""OAuth2 mailboxes end to end: Dovecot's `oauth2` passdb and the SMTP relay validate the tokens
imapdesk presents at a local authorization server (Authlib) started by the tests. A mailbox
connects, syncs and sends with XOAUTH2; an access token that expires while the folders idle is
refreshed before then (the refresh token rotating) and, when the server ends the sessions as a
provider does at expiry, the worker logs in again with the new one and loses no message; a
revoked grant stops that mailbox alone, shows on its health and alerts the admins while another
mailbox keeps syncing; two processes refreshing at once ask the provider once, and a rotated
refresh token the database cannot take yet is kept and saved later; SMTP logs in with XOAUTH2
or OAUTHBEARER, whichever the server offers."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, func, update
from sqlmodel import Session, col, select

from imapdesk.api.app import SESSION_COOKIE, create_app
from imapdesk.devtools.mailserver import MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.domain.mailboxes.oauth2 import MailboxTokens
from imapdesk.kernel.crypto import decrypt_secret
from imapdesk.kernel.db import make_engine, unit_of_work
from imapdesk.kernel.models import Conversation, Mailbox, MailboxOAuth2, utcnow
from imapdesk.kernel.settings import Settings
from imapdesk.mail import smtp
from imapdesk.mail.oauth2 import FixedToken
from imapdesk.mail.smtp import SmtpAccount
from tests.support.imap import folder_messages
from tests.support.mail import customer_mail
from tests.support.oauth2 import (
    OAuth2World,
    add_oauth2_mailbox,
    client_of,
    grant_state,
    oauth2_world,
    stored_tokens,
)
from tests.support.outbound import conversation_of
from tests.support.web import PASSWORD, session_cookie
from tests.support.worker import caught_up, make_settings, running_worker, wait_for


@pytest.fixture(scope="module")
def world() -> Iterator[OAuth2World]:
    with oauth2_world() as started:
        yield started


@pytest.fixture
def auth(world: OAuth2World) -> Iterator[OAuth2World]:
    """The world, its access tokens back to an hour's life after the test."""
    yield world
    world.auth.access_token_lifetime = 3600


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        db_url,
        tmp_path / "data",
        sender_poll_seconds=0.1,
        smtp_retry_initial_seconds=0.3,
        smtp_retry_max_seconds=1.0,
    )


def _deliver(world: OAuth2World, to: MailAccount, subject: str) -> str:
    msgid, raw = customer_mail("carol@customer.example", to.user, subject)
    world.mail.deliver(to.user, raw)
    return msgid


def _logins(world: OAuth2World, user: str) -> list[str]:
    """Dovecot's log lines of this user's logins."""
    return [
        line
        for line in world.mail.log_tail(100_000).splitlines()
        if "Login:" in line and f"user=<{user}>" in line
    ]


def test_an_oauth2_mailbox_syncs_and_sends_with_its_token(
    auth: OAuth2World, settings: Settings, engine: Engine
) -> None:
    world = auth
    account = world.mail.create_account()
    customer = world.mail.create_account(prefix="customer")
    mailbox_id = add_oauth2_mailbox(engine, settings, world, account)
    with unit_of_work(engine) as db:
        box = db.get(Mailbox, mailbox_id)
        assert box is not None
        # no password is kept for it; the tokens are stored encrypted
        assert decrypt_secret(box.password_encrypted, settings.secret_key) == ""
        row = db.get(MailboxOAuth2, mailbox_id)
        assert row is not None and row.access_token_encrypted and row.refresh_token_encrypted
        access, refresh = stored_tokens(engine, settings, mailbox_id)
        assert access not in row.access_token_encrypted
        assert refresh is not None and refresh not in row.refresh_token_encrypted
        agent = create_agent(db, "alice@example.com", "Alice", PASSWORD)
        api_token = create_api_token(db, agent, name="tests")
    msgid, raw = customer_mail(customer.user, account.user, "Where is my order?")
    world.mail.deliver(account.user, raw)
    app = create_app(settings=settings, engine=engine)
    with (
        running_worker(settings, engine),
        TestClient(app, headers={"Authorization": f"Bearer {api_token}"}) as api,
    ):
        cid = wait_for(lambda: conversation_of(engine, msgid), what="the customer's mail")
        with Session(engine) as db:
            conv = db.get(Conversation, cid)
            assert conv is not None
            version = conv.version
        sent = api.post(
            f"/api/v1/conversations/{cid}/replies",
            json={"body": "It is on its way.", "version": version},
        )
        assert sent.status_code == 202, sent.text
        inbox = wait_for(lambda: folder_messages(customer), what="the reply at the customer's")
        ready = api.get("/readyz").json()
    assert inbox[0].message["Subject"].startswith("Re: Where is my order?")
    # IMAP logged in with XOAUTH2, validated by Dovecot at the authorization server; SMTP too
    assert any("method=XOAUTH2" in line for line in _logins(world, account.user))
    assert (account.user, "XOAUTH2") in world.relay.handler.bearer_logins
    assert world.auth.introspected(access) and all(
        i.active for i in world.auth.introspected(access)
    )
    (health,) = ready["mailboxes"]
    assert health["oauth2"] == "connected" and health["error"] is False


def test_a_token_expiring_mid_idle_is_refreshed_and_no_message_is_lost(
    auth: OAuth2World, settings: Settings, engine: Engine
) -> None:
    world = auth
    # refreshed when half of it is left: 8 s ahead, a margin a busy machine keeps
    world.auth.access_token_lifetime = 16
    account = world.mail.create_account()
    mailbox_id = add_oauth2_mailbox(engine, settings, world, account, smtp=False)
    first_access, first_refresh = stored_tokens(engine, settings, mailbox_id)
    (first,) = [t for t in world.auth.tokens_of(account.user) if t.access_token == first_access]
    with running_worker(settings, engine):
        wait_for(lambda: caught_up(engine, mailbox_id), what="INBOX idling")
        before = _deliver(world, account, "Before the expiry")
        wait_for(lambda: conversation_of(engine, before), what="the first message")
        # the worker refreshes before the token expires; the refresh token rotates
        wait_for(
            lambda: stored_tokens(engine, settings, mailbox_id)[0] != first_access,
            what="a refresh before the expiry",
        )
        second_access, rotated = stored_tokens(engine, settings, mailbox_id)
        (second,) = [
            t for t in world.auth.tokens_of(account.user) if t.access_token == second_access
        ]
        assert second.issued_at < first.issued_at + first.expires_in, "refreshed after expiry"
        assert rotated != first_refresh
        assert first_refresh not in world.auth.active_refresh_tokens(account.user)
        # the first token expires while the folders idle on the sessions it opened
        wait_for(first.is_expired, timeout=60, what="the first token's expiry")
        during = _deliver(world, account, "While idling past the expiry")
        wait_for(lambda: conversation_of(engine, during), what="mail on the old sessions")
        # as Microsoft does when a token expires, the server ends the sessions; mail arrives
        # before the worker is back
        seen = len(world.auth.introspections)
        world.mail.doveadm("kick", account.user)
        after = _deliver(world, account, "After the sessions ended")
        wait_for(lambda: conversation_of(engine, after), what="mail after logging in again")
        wait_for(lambda: caught_up(engine, mailbox_id), what="INBOX idling again")
    again = world.auth.introspections[seen:]
    assert again, "the worker logged in again"
    assert all(i.active for i in again), "a login was tried with an expired token"
    assert first_access not in {i.token for i in again}
    with Session(engine) as db:
        count = db.exec(
            select(func.count())
            .select_from(Conversation)
            .where(col(Conversation.mailbox_id) == mailbox_id)
        ).one()
    assert count == 3


def test_a_revoked_grant_stops_its_mailbox_alone_and_alerts_the_admins(
    auth: OAuth2World,
    settings: Settings,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = auth
    world.auth.access_token_lifetime = 8
    revoked_box = world.mail.create_account()
    other_box = world.mail.create_account()
    revoked_id = add_oauth2_mailbox(engine, settings, world, revoked_box, name="revoked")
    other_id = add_oauth2_mailbox(engine, settings, world, other_box, name="other")
    with unit_of_work(engine) as db:
        admin = create_agent(db, "admin@example.com", "Admin", PASSWORD, is_admin=True)
        db.flush()
        admin_id = admin.id
    assert admin_id is not None
    app = create_app(settings=settings, engine=engine)
    caplog.set_level(logging.ERROR, logger="imapdesk.domain.mailboxes.oauth2")
    with running_worker(settings, engine) as worker, TestClient(app) as web:
        wait_for(lambda: caught_up(engine, revoked_id) and caught_up(engine, other_id))
        # the grant is revoked at the provider (RFC 7009), as an admin there or the user would
        _, refresh = stored_tokens(engine, settings, revoked_id)
        client_id, secret = client_of(engine, settings, revoked_id)
        assert secret is not None and refresh is not None
        revoked = httpx.post(
            world.auth.revocation_url,
            data={"token": refresh, "token_type_hint": "refresh_token"},
            auth=(client_id, secret),
            verify=ssl.create_default_context(cafile=str(world.mail.ca_file)),
        )
        assert revoked.status_code == 200, revoked.text
        wait_for(lambda: grant_state(engine, revoked_id) == "failed", timeout=30, what="failed")
        wait_for(lambda: revoked_id not in worker.runners, what="the mailbox stopped")
        # the other mailbox goes on
        late = _deliver(world, revoked_box, "For the stopped mailbox")
        still = _deliver(world, other_box, "For the other mailbox")
        wait_for(lambda: conversation_of(engine, still), what="the other mailbox syncing")
        assert conversation_of(engine, late) is None
        assert other_id in worker.runners and grant_state(engine, other_id) == "connected"
        # its health says so, and the admin pages alert
        health = {m["name"]: m for m in web.get("/readyz").json()["mailboxes"]}
        web.cookies.set(SESSION_COOKIE, session_cookie(settings, engine, admin_id))
        page = web.get("/admin/mailboxes").text
        box_page = web.get(f"/admin/mailboxes/{revoked_id}").text
    assert health["revoked"]["oauth2"] == "failed" and health["revoked"]["error"] is True
    assert health["other"]["oauth2"] == "connected" and health["other"]["error"] is False
    assert "Mailboxes waiting for an admin" in page
    assert 'data-mailbox="revoked"' in page and 'data-mailbox="other"' in page
    assert "revoked</a> does not sync" in page and "other</a> does not sync" not in page
    assert "invalid_grant" in box_page and 'data-oauth2-state="failed"' in box_page
    with unit_of_work(engine) as db:
        box = db.get(Mailbox, revoked_id)
        assert box is not None and box.last_error and "OAuth2 refused" in box.last_error
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("[revoked] OAuth2" in e and "stopped until an admin" in e for e in errors)
    # no token ever went into a log line
    assert refresh not in caplog.text and secret not in caplog.text


def test_two_processes_refreshing_at_once_ask_the_provider_once(
    auth: OAuth2World, settings: Settings, engine: Engine, db_url: str
) -> None:
    world = auth
    account = world.mail.create_account()
    mailbox_id = add_oauth2_mailbox(engine, settings, world, account, smtp=False)
    _, first_refresh = stored_tokens(engine, settings, mailbox_id)
    with unit_of_work(engine) as db:  # the access token is due
        db.connection().execute(
            update(MailboxOAuth2)
            .where(MailboxOAuth2.mailbox_id == mailbox_id)  # type: ignore[arg-type]
            .values(access_token_expires_at=utcnow() - timedelta(seconds=1))
        )
    issued = len(world.auth.tokens_of(account.user))
    engines = [make_engine(db_url), make_engine(db_url)]  # two processes' engines
    got: list[str] = []
    start = threading.Barrier(2)

    def refresh(process: Engine) -> None:
        start.wait()
        got.append(MailboxTokens.of(process, mailbox_id, settings).access_token())

    threads = [threading.Thread(target=refresh, args=(e,)) for e in engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        for e in engines:
            e.dispose()
    assert len(got) == 2 and got[0] == got[1]
    assert len(world.auth.tokens_of(account.user)) == issued + 1, "one refresh at the provider"
    access, refresh_token = stored_tokens(engine, settings, mailbox_id)
    assert access == got[0]
    assert world.auth.active_refresh_tokens(account.user) == [refresh_token]
    assert refresh_token != first_refresh


def test_a_rotated_refresh_token_the_database_cannot_take_yet_is_kept_and_saved_later(
    auth: OAuth2World, settings: Settings, engine: Engine
) -> None:
    world = auth
    account = world.mail.create_account()
    mailbox_id = add_oauth2_mailbox(engine, settings, world, account, smtp=False)
    old_access, old_refresh = stored_tokens(engine, settings, mailbox_id)
    with unit_of_work(engine) as db:  # the access token is due
        db.connection().execute(
            update(MailboxOAuth2)
            .where(MailboxOAuth2.mailbox_id == mailbox_id)  # type: ignore[arg-type]
            .values(access_token_expires_at=utcnow() - timedelta(seconds=1))
        )

    def saving_fails(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # the database refuses the write of the refreshed tokens (a failover, a full disk)
        if statement.lstrip().upper().startswith("UPDATE MAILBOXOAUTH2") and (
            "access_token_encrypted" in statement
        ):
            raise OSError("the database is away")

    tokens = MailboxTokens.of(engine, mailbox_id, settings)
    event.listen(engine, "before_cursor_execute", saving_fails)
    try:
        fresh = tokens.access_token()
        issued = len(world.auth.tokens_of(account.user))
        # the provider rotated the refresh token: the old one is dead, the new one only in memory
        assert world.auth.active_refresh_tokens(account.user) != [old_refresh]
        assert stored_tokens(engine, settings, mailbox_id) == (old_access, old_refresh)
        # meanwhile the token received is used, without asking the provider again
        assert tokens.access_token() == fresh
        assert len(world.auth.tokens_of(account.user)) == issued
    finally:
        event.remove(engine, "before_cursor_execute", saving_fails)
    assert tokens.access_token() == fresh  # the next turn saves it
    access, refresh = stored_tokens(engine, settings, mailbox_id)
    assert access == fresh
    assert world.auth.active_refresh_tokens(account.user) == [refresh]


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_smtp_logs_in_with_the_mechanism_the_server_offers(
    auth: OAuth2World, mechanism: str
) -> None:
    world = auth
    account = world.mail.create_account()
    client_id, _ = world.client()
    token = world.auth.issue(client_id, account.user).access_token
    assert world.relay.handler.bearer is not None
    relay = LocalSmtpRelay(
        world.mail, bearer_introspection=world.relay.handler.bearer, bearer_mechanisms=(mechanism,)
    )
    relay.start()
    try:
        login = SmtpAccount(
            "localhost", relay.port, "starttls", account.user, None,
            ca_file=str(account.ca_file), oauth2=FixedToken(token),
        )  # fmt: skip
        smtp.close(smtp.connect(login))
        wrong = SmtpAccount(
            "localhost", relay.port, "starttls", account.user, None,
            ca_file=str(account.ca_file), oauth2=FixedToken("not-a-token"),
        )  # fmt: skip
        with pytest.raises(smtp.SmtpLoginRefused) as refused:
            smtp.connect(wrong)
    finally:
        relay.stop()
    assert relay.handler.bearer_logins == [(account.user, mechanism)]
    assert refused.value.permanent and refused.value.said.startswith("535")
