"""`imapdesk mailbox add ... --auth oauth2`: the first tokens of an OAuth2 mailbox, got from the
terminal before anything is saved: a refresh token given on standard input, the device code
(the URL and the code to enter are printed; the command waits for the approval), or app-only
client credentials."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from imapdesk.cli.terminal import console, fail
from imapdesk.domain.mailboxes.oauth2 import OAuth2Settings, client_for, resolve_endpoints
from imapdesk.kernel.errors import ImapdeskError
from imapdesk.kernel.models import OAuth2Grant, OAuth2Provider
from imapdesk.mail import oauth2
from imapdesk.mail.oauth2 import Endpoints, TokenSet


class AuthMethod(StrEnum):
    password = "password"
    oauth2 = "oauth2"


@dataclass(frozen=True)
class OAuth2Login:
    """What `mailbox add` saves for an OAuth2 mailbox."""

    given: OAuth2Settings
    endpoints: Endpoints
    tokens: TokenSet


def oauth2_login(
    *,
    name: str,
    provider: OAuth2Provider | None,
    issuer: str | None,
    token_url: str | None,
    client_id: str | None,
    client_secret_file: str | None,
    refresh_token_stdin: bool,
    device_code: bool,
    client_credentials: bool,
    scopes: list[str] | None,
    ca_file: str | None,
) -> OAuth2Login:
    """The settings and the first tokens, or `fail` with what to fix."""
    if provider is None:
        fail("--auth oauth2 needs --oauth2-provider (microsoft, google or generic)")
    if not client_id:
        fail("--auth oauth2 needs --oauth2-client-id (the app registered at the provider)")
    flows = [refresh_token_stdin, device_code, client_credentials]
    if sum(flows) != 1:
        fail(
            "--auth oauth2 needs one way to get the first token: --oauth2-refresh-token-stdin, "
            "--oauth2-device-code or --oauth2-client-credentials"
        )
    secret = None
    if client_secret_file:
        try:
            secret = Path(client_secret_file).read_text().strip("\r\n") or None
        except OSError as exc:
            fail(f"cannot read the client secret file {client_secret_file}: {exc}")
    given = OAuth2Settings(
        provider=provider,
        client_id=client_id,
        client_secret=secret,
        issuer=issuer,
        token_url=token_url,
        scopes=tuple(scopes or ()),
        grant=OAuth2Grant.client_credentials if client_credentials else OAuth2Grant.refresh_token,
    )
    try:
        endpoints = resolve_endpoints(given, ca_file=ca_file)
        client = client_for(given, endpoints, ca_file=ca_file)
        if refresh_token_stdin:
            given_token = sys.stdin.readline().strip()
            if not given_token:
                fail("the refresh token on standard input is empty")
            tokens = oauth2.refresh(client, given_token)
            if not tokens.refresh_token:  # not rotated: the one given stays valid
                tokens = TokenSet(tokens.access_token, tokens.expires_at, given_token, tokens.scope)
        elif device_code:
            device = oauth2.start_device_authorization(client)
            console.print(
                f"To connect the mailbox {name}, open {device.verification_uri} and enter the "
                f"code {device.user_code}",
                soft_wrap=True,
            )
            if device.verification_uri_complete:
                console.print(f"(or open {device.verification_uri_complete})", soft_wrap=True)
            console.print("waiting for the approval...")
            tokens = oauth2.poll_device(client, device)
        else:
            tokens = oauth2.client_credentials(client)
    except ImapdeskError as exc:
        fail(exc.message)
    console.print(f"OAuth2: got an access token from {endpoints.token}")
    return OAuth2Login(given, endpoints, tokens)
