"""OAuth2 for mail servers: the token requests a mailbox needs and the SASL mechanisms that log
in with a token (XOAUTH2, and OAUTHBEARER from RFC 7628).

The protocol is Authlib's (`authlib.integrations.httpx_client.OAuth2Client`: RFC 6749 token
requests and error responses, RFC 7636 PKCE, client authentication; RFC 8414 for the
metadata's address), over httpx, which imapdesk uses already. This module only chooses what to
ask for and turns every failure into one of two errors: `OAuth2Refused` (the provider said no:
a refresh token revoked or expired, a client unknown or its secret wrong; retrying cannot help,
an admin must act) or `OAuth2Unavailable` (no answer, a server error: retried later).

Providers: Microsoft (Entra ID's v2.0 endpoints, for a tenant), Google, and any other by its
issuer (discovery at `/.well-known/openid-configuration`, then RFC 8414's
`/.well-known/oauth-authorization-server`) or by an explicit token endpoint. Every endpoint
must be HTTPS, verified (a private CA is added with the mailbox's CA file, as for IMAP).

Knows nothing of the database: `TokenSource` is what a session asks for a token.
"""

from __future__ import annotations

import logging
import ssl
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.integrations.base_client import OAuthError
from authlib.oauth2.rfc8414 import get_well_known_url

with warnings.catch_warnings():
    # Authlib prefers httpx2 and says so when it finds only httpx, which imapdesk uses: the
    # client below works on either, and its errors are caught for both (`_HTTP_ERRORS`)
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

try:
    import httpx2

    _HTTP_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, httpx2.HTTPError)
    _STATUS_ERRORS: tuple[type[Exception], ...] = (
        httpx.HTTPStatusError,
        httpx2.HTTPStatusError,
    )
except ImportError:
    _HTTP_ERRORS = (httpx.HTTPError,)
    _STATUS_ERRORS = (httpx.HTTPStatusError,)

from imapdesk.kernel.errors import MailServerError

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 20.0
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# an answer without expires_in is taken to last this long (RFC 6749 leaves it to the server)
DEFAULT_LIFETIME = timedelta(hours=1)
# errors that say "later", not "no" (RFC 6749 4.1.2.1, RFC 8628 3.5)
_TEMPORARY_ERRORS = {"temporarily_unavailable", "server_error", "slow_down"}

MICROSOFT_LOGIN = "https://login.microsoftonline.com"
# delegated access to a mailbox (IMAP and SMTP) and a refresh token; app-only access asks for
# the resource's `.default` scope
MICROSOFT_SCOPES = (
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
    "offline_access",
)
MICROSOFT_APP_SCOPES = ("https://outlook.office365.com/.default",)
GOOGLE_SCOPES = ("https://mail.google.com/",)


class OAuth2Error(MailServerError):
    """An OAuth2 request failed; `permanent`: only an admin can mend it. `error` is the
    provider's error code (RFC 6749 5.2), where it sent one."""

    code = "oauth2_error"
    permanent = False

    def __init__(self, message: str, *, error: str = "", description: str = "") -> None:
        super().__init__(message)
        self.error = error
        self.description = description


class OAuth2Refused(OAuth2Error):
    """The provider refused (invalid_grant, invalid_client, access_denied...): the grant must be
    made again, or the client's settings mended."""

    code = "oauth2_refused"
    permanent = True


class OAuth2Unavailable(OAuth2Error):
    """No usable answer (network, timeout, a server error): temporary."""

    code = "oauth2_unavailable"


@dataclass(frozen=True)
class Endpoints:
    """Where a provider takes requests: tokens always; the browser's consent page
    (authorization code) and device authorization when the provider has them."""

    token: str
    authorization: str | None = None
    device_authorization: str | None = None
    issuer: str | None = None


@dataclass(frozen=True)
class ClientSettings:
    """The client imapdesk is at the provider: its id, its secret (None: a public client, as an
    app registered for the device code or PKCE may be) and the scopes it asks for."""

    endpoints: Endpoints
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] = ()
    ca_file: str | None = None


@dataclass(frozen=True)
class TokenSet:
    """What a token endpoint answered. `refresh_token` is None when it sent none (then the one
    used keeps working, RFC 6749 6)."""

    access_token: str = field(repr=False)
    expires_at: datetime
    refresh_token: str | None = field(default=None, repr=False)
    scope: str = ""


@dataclass(frozen=True)
class DeviceAuthorization:
    """RFC 8628 3.2: what the user is shown (`verification_uri`, `user_code`) and what the
    client polls with."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_at: float  # time.monotonic()
    interval: float


class TokenSource(Protocol):
    """What a session asks for the token it logs in with."""

    def access_token(self) -> str:
        """A token that is valid now (refreshed when due); OAuth2Error otherwise."""
        ...

    def refused(self, token: str) -> None:
        """The server refused this token: the next `access_token()` gets a new one."""
        ...


@dataclass(frozen=True)
class FixedToken:
    """One token, as it is (a login right after it was got, before anything is stored)."""

    token: str = field(repr=False)

    def access_token(self) -> str:
        return self.token

    def refused(self, token: str) -> None:
        return None


# -- endpoints --------------------------------------------------------------------------------


def require_https(url: str, what: str) -> str:
    """The URL, if it is HTTPS with a host: tokens and secrets never travel in the clear."""
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise OAuth2Refused(f"the {what} {url!r} is not an https:// URL")
    return url.strip()


def microsoft_endpoints(tenant: str = "organizations") -> Endpoints:
    """Entra ID's v2.0 endpoints for a tenant (its id or domain; `organizations` takes any work
    account, but app-only access needs the tenant itself)."""
    base = f"{MICROSOFT_LOGIN}/{tenant}/oauth2/v2.0"
    return Endpoints(
        token=f"{base}/token",
        authorization=f"{base}/authorize",
        device_authorization=f"{base}/devicecode",
        issuer=f"{MICROSOFT_LOGIN}/{tenant}/v2.0",
    )


GOOGLE_ENDPOINTS = Endpoints(
    token="https://oauth2.googleapis.com/token",
    authorization="https://accounts.google.com/o/oauth2/v2/auth",
    device_authorization="https://oauth2.googleapis.com/device/code",
    issuer="https://accounts.google.com",
)


def discover(issuer: str, *, ca_file: str | None = None) -> Endpoints:
    """The endpoints an issuer publishes: OpenID Connect discovery
    (`<issuer>/.well-known/openid-configuration`), else RFC 8414 metadata
    (`/.well-known/oauth-authorization-server` inserted before the issuer's path)."""
    issuer = require_https(issuer, "issuer").rstrip("/")
    candidates = [
        f"{issuer}/.well-known/openid-configuration",
        get_well_known_url(issuer, external=True),
    ]
    tried: list[str] = []
    with _http(ca_file) as http:
        for url in candidates:
            try:
                response = http.get(url, headers={"Accept": "application/json"})
            except httpx.HTTPError as exc:
                raise OAuth2Unavailable(f"cannot reach {url}: {_why(exc)}") from exc
            if response.status_code == 404:
                tried.append(f"{url} (404)")
                continue
            if response.status_code >= 400:
                raise OAuth2Unavailable(f"{url} answered HTTP {response.status_code}")
            try:
                meta = response.json()
            except ValueError as exc:
                raise OAuth2Refused(f"{url} did not answer with JSON metadata") from exc
            if not isinstance(meta, dict) or not meta.get("token_endpoint"):
                raise OAuth2Refused(f"the metadata at {url} names no token_endpoint")
            return Endpoints(
                token=require_https(str(meta["token_endpoint"]), "token endpoint"),
                authorization=_optional_https(meta.get("authorization_endpoint")),
                device_authorization=_optional_https(meta.get("device_authorization_endpoint")),
                issuer=str(meta.get("issuer") or issuer),
            )
    raise OAuth2Refused(
        f"no OAuth2 metadata for the issuer {issuer}: tried {', '.join(tried)}; check the issuer "
        "URL, or give the token endpoint (--oauth2-token-url)"
    )


def _optional_https(value: object) -> str | None:
    if not value:
        return None
    url = str(value)
    return url if urlsplit(url).scheme == "https" else None


# -- token requests ---------------------------------------------------------------------------


def _tls(ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise OAuth2Refused(f"cannot read the CA file {ca_file!r}: {exc}") from exc
    return ctx


def _http(ca_file: str | None) -> httpx.Client:
    return httpx.Client(verify=_tls(ca_file), timeout=HTTP_TIMEOUT, follow_redirects=False)


# providers that document the client secret in the request body; RFC 6749 2.3.1 makes HTTP
# basic authentication the one every other server must take
_SECRET_IN_BODY = ("login.microsoftonline.com", "oauth2.googleapis.com")


def _auth_method(client: ClientSettings) -> str:
    if not client.client_secret:
        return "none"
    host = urlsplit(client.endpoints.token).hostname or ""
    return "client_secret_post" if host in _SECRET_IN_BODY else "client_secret_basic"


def _session(client: ClientSettings, **kwargs: Any) -> OAuth2Client:
    return OAuth2Client(
        client_id=client.client_id,
        client_secret=client.client_secret,
        token_endpoint_auth_method=_auth_method(client),
        scope=" ".join(client.scopes) or None,
        verify=_tls(client.ca_file),
        timeout=HTTP_TIMEOUT,
        **kwargs,
    )


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _token_request(
    client: ClientSettings, what: str, call: Callable[[OAuth2Client], Any]
) -> TokenSet:
    """One request to the token endpoint, its answer as a TokenSet, its failure named."""
    where = client.endpoints.token
    try:
        with _session(client) as session:
            answer = call(session)
    except OAuthError as exc:
        error = exc.error or ""
        description = exc.description or ""
        said = f"{error}: {description}" if description else error
        if error in _TEMPORARY_ERRORS:
            raise OAuth2Unavailable(
                f"{what} at {where} failed for now ({said})", error=error, description=description
            ) from exc
        raise OAuth2Refused(
            f"{what} was refused by {where} ({said})", error=error, description=description
        ) from exc
    except _STATUS_ERRORS as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        raise OAuth2Unavailable(f"{what} at {where} failed: HTTP {status}") from exc
    except _HTTP_ERRORS as exc:
        raise OAuth2Unavailable(f"{what}: cannot reach {where}: {_why(exc)}") from exc
    except ValueError as exc:  # not JSON
        raise OAuth2Unavailable(f"{what} at {where} got no usable answer: {exc}") from exc
    return token_set(dict(answer))


def token_set(answer: dict[str, Any]) -> TokenSet:
    token = answer.get("access_token")
    if not token:
        raise OAuth2Unavailable("the token endpoint answered without an access_token")
    now = datetime.now(UTC)
    try:
        lifetime = timedelta(seconds=int(answer["expires_in"]))
    except (KeyError, TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME
    return TokenSet(
        access_token=str(token),
        expires_at=now + lifetime,
        refresh_token=str(answer["refresh_token"]) if answer.get("refresh_token") else None,
        scope=str(answer.get("scope") or ""),
    )


def refresh(client: ClientSettings, refresh_token: str) -> TokenSet:
    """A new access token for a refresh token (RFC 6749 6). The answer may carry a new refresh
    token (rotation): the caller must keep it, the old one may no longer work."""
    return _token_request(
        client,
        "refreshing the access token",
        lambda s: s.refresh_token(client.endpoints.token, refresh_token=refresh_token),
    )


def client_credentials(client: ClientSettings) -> TokenSet:
    """An app-only access token (RFC 6749 4.4; Microsoft's "application permissions")."""
    if not client.client_secret:
        raise OAuth2Refused("app-only access (client credentials) needs the client secret")
    return _token_request(
        client,
        "asking for an app-only token",
        lambda s: s.fetch_token(client.endpoints.token, grant_type="client_credentials"),
    )


def new_code_verifier() -> str:
    """A PKCE code verifier (RFC 7636 4.1: 43 to 128 unreserved characters)."""
    return generate_token(64)


def new_state() -> str:
    return generate_token(43)


def authorization_url(
    client: ClientSettings, *, redirect_uri: str, state: str, code_verifier: str, login_hint: str
) -> str:
    """Where to send the admin's browser: the provider's consent page, with PKCE (S256)."""
    if not client.endpoints.authorization:
        raise OAuth2Refused(
            "the provider has no authorization endpoint configured: give its issuer (with "
            "discovery) or its authorization URL"
        )
    extra: dict[str, str] = {}
    if login_hint:
        extra["login_hint"] = login_hint
    if client.endpoints.token.startswith(GOOGLE_ENDPOINTS.token):
        # Google gives a refresh token only for offline access, and again only on consent
        extra |= {"access_type": "offline", "prompt": "consent"}
    with _session(client, redirect_uri=redirect_uri, code_challenge_method="S256") as session:
        url, _ = session.create_authorization_url(
            client.endpoints.authorization, state=state, code_verifier=code_verifier, **extra
        )
    return str(url)


def exchange_code(
    client: ClientSettings, *, code: str, redirect_uri: str, code_verifier: str
) -> TokenSet:
    """The tokens for an authorization code (RFC 6749 4.1.3), proven with the PKCE verifier."""
    return _token_request(
        client,
        "exchanging the authorization code",
        lambda s: s.fetch_token(
            client.endpoints.token,
            grant_type="authorization_code",
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
        ),
    )


def start_device_authorization(client: ClientSettings) -> DeviceAuthorization:
    """RFC 8628 3.1: a user code for the admin to enter at the provider's verification page."""
    endpoint = client.endpoints.device_authorization
    if not endpoint:
        raise OAuth2Refused(
            "the provider has no device authorization endpoint: give its issuer (with "
            "discovery), or use --oauth2-refresh-token-stdin"
        )
    try:
        with _session(client) as session:
            response = session.post(
                endpoint,
                data={"client_id": client.client_id, "scope": " ".join(client.scopes)},
                auth=session.client_auth(session.token_endpoint_auth_method),
                headers={"Accept": "application/json"},
            )
    except _HTTP_ERRORS as exc:
        raise OAuth2Unavailable(f"cannot reach {endpoint}: {_why(exc)}") from exc
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise OAuth2Unavailable(f"{endpoint} answered HTTP {response.status_code} without JSON")
    if response.status_code >= 400 or "error" in answer:
        error = str(answer.get("error") or f"HTTP {response.status_code}")
        description = str(answer.get("error_description") or "")
        raise OAuth2Refused(
            f"the device authorization was refused by {endpoint} ({error}"
            + (f": {description})" if description else ")"),
            error=error,
            description=description,
        )
    try:
        return DeviceAuthorization(
            device_code=str(answer["device_code"]),
            user_code=str(answer["user_code"]),
            # Microsoft named it verification_url before RFC 8628
            verification_uri=str(answer.get("verification_uri") or answer["verification_url"]),
            verification_uri_complete=answer.get("verification_uri_complete"),
            expires_at=time.monotonic() + int(answer.get("expires_in", 900)),
            interval=float(answer.get("interval", 5)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise OAuth2Unavailable(f"{endpoint} answered without {exc}") from exc


def poll_device(
    client: ClientSettings,
    device: DeviceAuthorization,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> TokenSet:
    """Poll the token endpoint until the user approved (RFC 8628 3.4-3.5): pending waits the
    interval, slow_down adds 5 seconds to it; denial and expiry are refusals."""
    interval = device.interval
    while True:
        if time.monotonic() > device.expires_at:
            raise OAuth2Refused("the device code expired before it was approved; start again")
        sleep(interval)
        try:
            return _token_request(
                client,
                "the device code",
                lambda s: s.fetch_token(
                    client.endpoints.token,
                    grant_type=DEVICE_CODE_GRANT,
                    device_code=device.device_code,
                ),
            )
        except OAuth2Refused as exc:
            if exc.error != "authorization_pending":
                raise
        except OAuth2Unavailable as exc:
            if exc.error != "slow_down":
                raise
            interval += 5


# -- SASL -------------------------------------------------------------------------------------


def sasl_mechanism(offered: Iterable[str]) -> str:
    """The mechanism to log in with, among those a server offers (AUTH=... or EHLO's AUTH):
    XOAUTH2 where offered (Microsoft, Google and most servers), else OAUTHBEARER (RFC 7628),
    else XOAUTH2 all the same (the server's refusal then says what it takes)."""
    names = {m.upper().removeprefix("AUTH=") for m in offered}
    if "XOAUTH2" in names or "OAUTHBEARER" not in names:
        return "XOAUTH2"
    return "OAUTHBEARER"


def sasl_initial_response(mechanism: str, user: str, token: str) -> str:
    """The client's first message: XOAUTH2 (`user=...^Aauth=Bearer ...^A^A`) or OAUTHBEARER
    (RFC 7628 3.1: a GS2 header naming the user, then the same key-value pairs)."""
    if mechanism == "OAUTHBEARER":
        name = user.replace("=", "=3D").replace(",", "=2C")
        return f"n,a={name},\x01auth=Bearer {token}\x01\x01"
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def sasl_error_reply(mechanism: str) -> str:
    """What the client answers to the server's error challenge, so that the server ends the
    exchange with its refusal: RFC 7628 3.2.3 (a single ^A) for OAUTHBEARER, empty for XOAUTH2."""
    return "\x01" if mechanism == "OAUTHBEARER" else ""


__all__ = [
    "ClientSettings",
    "DeviceAuthorization",
    "Endpoints",
    "FixedToken",
    "OAuth2Error",
    "OAuth2Refused",
    "OAuth2Unavailable",
    "TokenSet",
    "TokenSource",
    "authorization_url",
    "client_credentials",
    "discover",
    "exchange_code",
    "microsoft_endpoints",
    "new_code_verifier",
    "new_state",
    "poll_device",
    "refresh",
    "sasl_initial_response",
    "sasl_mechanism",
    "start_device_authorization",
]
