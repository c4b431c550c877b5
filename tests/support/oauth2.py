"""OAuth2 in the tests: a Dovecot whose `oauth2` passdb validates tokens at a local
authorization server (tests/support/oauth2_server.py), an SMTP relay that validates them there
too, and OAuth2 mailboxes connected to them."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.devtools.mailserver import (
    LocalMailServer,
    MailAccount,
    free_port,
    make_base_dir,
)
from imapdesk.devtools.smtp_relay import BearerIntrospection, LocalSmtpRelay
from imapdesk.domain.mailboxes import oauth2
from imapdesk.domain.mailboxes.config import add_mailbox
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import ImapSecurity, Mailbox, OAuth2Provider, SmtpSecurity
from imapdesk.kernel.settings import Settings
from tests.support.oauth2_server import INTROSPECTOR, LocalOAuth2Server


@dataclass
class OAuth2World:
    """The mail server, the authorization server and the relay, wired to each other."""

    mail: LocalMailServer
    auth: LocalOAuth2Server
    relay: LocalSmtpRelay

    def client(
        self,
        *,
        redirect_uris: list[str] | None = None,
        public: bool = False,
        app_user: str | None = None,
    ) -> tuple[str, str | None]:
        """A new client registered at the authorization server: (id, secret)."""
        client_id = f"imapdesk-{secrets.token_hex(4)}"
        secret = None if public else secrets.token_urlsafe(24)
        self.auth.add_client(client_id, secret, redirect_uris=redirect_uris, app_user=app_user)
        return client_id, secret


@contextmanager
def oauth2_world() -> Iterator[OAuth2World]:
    """Started together (the authorization server serves with the mail server's certificate,
    Dovecot learns the authorization server's address before it starts), stopped together."""
    base = make_base_dir("imapdesk-test-oauth2-")
    port = free_port()
    secret = secrets.token_urlsafe(16)
    url = f"https://{INTROSPECTOR}:{secret}@127.0.0.1:{port}/introspect"
    mail = LocalMailServer(
        base, imap_port=free_port(), imaps_port=free_port(), oauth2_introspection_url=url
    )
    mail.start()
    auth = LocalOAuth2Server(
        str(mail.cert_path), str(mail.key_path), port=port, introspector_secret=secret
    )
    auth.start()
    relay = LocalSmtpRelay(
        mail,
        security="starttls",
        bearer_introspection=BearerIntrospection(
            auth.introspection_url, INTROSPECTOR, secret, ca_file=str(mail.ca_file)
        ),
        bearer_mechanisms=("XOAUTH2",),
    )
    relay.start()
    try:
        yield OAuth2World(mail, auth, relay)
    finally:
        relay.stop()
        auth.stop()
        mail.stop()
        shutil.rmtree(base, ignore_errors=True)
        if mail.run_dir.parent != base:
            shutil.rmtree(mail.run_dir, ignore_errors=True)


def add_oauth2_mailbox(
    engine: Engine,
    settings: Settings,
    world: OAuth2World,
    account: MailAccount,
    *,
    name: str = "support",
    smtp: bool = True,
) -> int:
    """A mailbox on `account` that logs in with OAuth2 (the generic provider, discovered from
    the local authorization server), connected with a refresh token the server issued."""
    client_id, secret = world.client()
    refresh_token = world.auth.issue(client_id, account.user).refresh_token
    assert refresh_token is not None
    given = oauth2.OAuth2Settings(
        provider=OAuth2Provider.generic,
        client_id=client_id,
        client_secret=secret,
        issuer=world.auth.issuer,
        scopes=("mail",),
    )
    endpoints = oauth2.resolve_endpoints(given, ca_file=str(account.ca_file))
    with unit_of_work(engine) as db:
        box = add_mailbox(
            db,
            settings,
            name=name,
            address=account.user,
            imap_host="localhost",
            imap_port=account.imaps_port,
            imap_security=ImapSecurity.ssl,
            username=account.user,
            password="",
            ca_file=str(account.ca_file),
            smtp_host="localhost" if smtp else None,
            smtp_port=world.relay.port if smtp else None,
            smtp_security=SmtpSecurity.starttls if smtp else None,
        )
        grant = oauth2.configure(db, box, settings, given, endpoints)
        oauth2.connect_with_refresh_token(db, box, grant, settings, refresh_token)
        assert box.id is not None
        return box.id


def stored_tokens(engine: Engine, settings: Settings, mailbox_id: int) -> tuple[str, str | None]:
    """(access token, refresh token) as imapdesk holds them, decrypted."""
    from imapdesk.kernel.crypto import decrypt_secret
    from imapdesk.kernel.models import MailboxOAuth2

    with Session(engine) as db:
        row = db.get(MailboxOAuth2, mailbox_id)
        assert row is not None and row.access_token_encrypted
        refresh = (
            decrypt_secret(row.refresh_token_encrypted, settings.secret_key)
            if row.refresh_token_encrypted
            else None
        )
        return decrypt_secret(row.access_token_encrypted, settings.secret_key), refresh


def client_of(engine: Engine, settings: Settings, mailbox_id: int) -> tuple[str, str | None]:
    """(client id, client secret) of an OAuth2 mailbox, decrypted."""
    from imapdesk.kernel.crypto import decrypt_secret
    from imapdesk.kernel.models import MailboxOAuth2

    with Session(engine) as db:
        row = db.get(MailboxOAuth2, mailbox_id)
        assert row is not None
        secret = (
            decrypt_secret(row.client_secret_encrypted, settings.secret_key)
            if row.client_secret_encrypted
            else None
        )
        return row.client_id, secret


def grant_state(engine: Engine, mailbox_id: int) -> str | None:
    from imapdesk.kernel.models import MailboxOAuth2

    with Session(engine) as db:
        row = db.get(MailboxOAuth2, mailbox_id)
        return row.state.value if row is not None else None


def mailbox_error(engine: Engine, mailbox_id: int) -> str | None:
    with Session(engine) as db:
        box = db.get(Mailbox, mailbox_id)
        return box.last_error if box is not None else None


__all__ = ["OAuth2World", "add_oauth2_mailbox", "oauth2_world", "stored_tokens"]
