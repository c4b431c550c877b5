"""A local OAuth2 authorization server for the tests, built with Authlib's server components
(RFC 6749 authorization code and refresh tokens, RFC 7636 PKCE, RFC 8628 device code, client
credentials, RFC 7009 revocation, RFC 7662 introspection, RFC 8414 metadata) on a small Flask
app served over HTTPS with the test mail server's certificate.

Dovecot's `oauth2` passdb and the test SMTP relay validate the tokens imapdesk presents at its
introspection endpoint, as the client `introspector`. Refresh tokens rotate: each refresh
issues a new one and revokes the old. The consent page (`/authorize`) asks which mail user
grants access; the device page (`/device`) takes a user code. What happened is recorded for
the tests to look at: every token issued, and every introspection with its answer.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc8628 import (
    DeviceAuthorizationEndpoint,
    DeviceCodeGrant,
    DeviceCredentialDict,
)
from flask import Flask, request
from markupsafe import escape
from werkzeug.serving import BaseWSGIServer, make_server

from imapdesk.devtools.mailserver import free_port

INTROSPECTOR = "introspector"


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str | None
    redirect_uris: list[str]
    grant_types: list[str]
    scope: str = "mail"
    # the mailbox an app-only token (client credentials) may open, as an Exchange application
    # access policy grants one
    app_user: str | None = None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str) -> str:
        if not scope:
            return ""
        allowed = set(self.scope.split())
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and secrets.compare_digest(
            self.client_secret, client_secret
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.client_secret is None:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass
class Token:
    client_id: str
    user: str | None
    scope: str
    access_token: str
    refresh_token: str | None
    expires_in: int
    issued_at: float = field(default_factory=time.time)
    revoked: bool = False  # the access token
    refresh_revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str | None:
        return self.user

    def get_client(self) -> Client:
        raise NotImplementedError


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    code_challenge: str | None
    code_challenge_method: str | None
    issued_at: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> None:
        return None

    def get_auth_time(self) -> int:
        return int(self.issued_at)


@dataclass
class Introspection:
    token: str
    active: bool
    username: str | None


class LocalOAuth2Server:
    """The authorization server on https://127.0.0.1:<port>; `issuer` is its base URL."""

    def __init__(
        self,
        cert_path: str,
        key_path: str,
        *,
        port: int | None = None,
        introspector_secret: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.issuer = f"https://127.0.0.1:{self.port}"
        self.introspector_secret = introspector_secret or secrets.token_urlsafe(16)
        self.access_token_lifetime = 3600
        self.lock = threading.RLock()
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.tokens: list[Token] = []
        self.devices: dict[str, DeviceCredentialDict] = {}  # by device code
        self.device_grants: dict[str, tuple[str, bool]] = {}  # user code -> (user, approved)
        self.introspections: list[Introspection] = []
        # (client id, code_challenge_method) of every authorization code issued
        self.challenges: list[tuple[str, str | None]] = []
        self.add_client(INTROSPECTOR, self.introspector_secret, grant_types=[])
        self._app = self._make_app()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", self.port, self._app, threaded=True, ssl_context=context
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="oauth2-server", daemon=True
        )

    # -- running ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)

    @property
    def introspection_url(self) -> str:
        return f"{self.issuer}/introspect"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    @property
    def revocation_url(self) -> str:
        return f"{self.issuer}/revoke"

    # -- what the tests arrange -----------------------------------------------------------
    def add_client(
        self,
        client_id: str,
        secret: str | None,
        *,
        redirect_uris: list[str] | None = None,
        grant_types: list[str] | None = None,
        app_user: str | None = None,
    ) -> Client:
        client = Client(
            client_id,
            secret,
            list(redirect_uris or []),
            list(
                grant_types
                if grant_types is not None
                else [
                    "authorization_code",
                    "refresh_token",
                    DeviceCodeGrant.GRANT_TYPE,
                    "client_credentials",
                ]
            ),
            app_user=app_user,
        )
        with self.lock:
            self.clients[client_id] = client
        return client

    def issue(self, client_id: str, user: str, scope: str = "mail") -> Token:
        """A grant made outside of any flow (as an admin would copy a refresh token from a
        provider's tool): an access and a refresh token."""
        token = Token(
            client_id,
            user,
            scope,
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
            self.access_token_lifetime,
        )
        with self.lock:
            self.tokens.append(token)
        return token

    def approve_device(self, user_code: str, user: str) -> None:
        with self.lock:
            self.device_grants[user_code] = (user, True)

    def active_refresh_tokens(self, user: str) -> list[str]:
        with self.lock:
            return [
                t.refresh_token
                for t in self.tokens
                if t.user == user and t.refresh_token and not t.refresh_revoked
            ]

    def tokens_of(self, user: str) -> list[Token]:
        with self.lock:
            return [t for t in self.tokens if t.user == user]

    def introspected(self, token: str) -> list[Introspection]:
        with self.lock:
            return [i for i in self.introspections if i.token == token]

    # -- the token store ------------------------------------------------------------------
    def _save_token(self, data: dict[str, Any], req: Any) -> None:
        client = req.client
        user = req.user or client.app_user
        token = Token(
            client.client_id,
            user,
            data.get("scope", ""),
            data["access_token"],
            data.get("refresh_token"),
            int(data["expires_in"]),
        )
        with self.lock:
            self.tokens.append(token)

    def _by_access(self, value: str) -> Token | None:
        with self.lock:
            return next((t for t in self.tokens if t.access_token == value), None)

    def _by_refresh(self, value: str) -> Token | None:
        with self.lock:
            return next((t for t in self.tokens if t.refresh_token == value), None)

    # -- the app ----------------------------------------------------------------------------
    def _make_app(self) -> Flask:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        app = Flask("imapdesk-test-oauth2")
        owner = self
        server = AuthorizationServer(
            app, query_client=lambda cid: owner.clients.get(cid), save_token=self._save_token
        )
        server.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: secrets.token_urlsafe(32),
                refresh_token_generator=lambda **_: secrets.token_urlsafe(32),
                expires_generator=lambda client, grant_type: owner.access_token_lifetime,
            ),
        )

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

            def save_authorization_code(self, code: str, req: Any) -> None:
                with owner.lock:
                    owner.challenges.append(
                        (req.client.client_id, req.payload.data.get("code_challenge_method"))
                    )
                    owner.codes[code] = AuthorizationCode(
                        code,
                        req.client.client_id,
                        req.payload.redirect_uri,
                        req.payload.scope or "",
                        req.user,
                        req.payload.data.get("code_challenge"),
                        req.payload.data.get("code_challenge_method"),
                    )

            def query_authorization_code(self, code: str, client: Client) -> Any:
                with owner.lock:
                    found = owner.codes.get(code)
                if found and found.client_id == client.client_id:
                    return found
                return None

            def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
                with owner.lock:
                    owner.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: AuthorizationCode) -> str:
                return authorization_code.user

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
            INCLUDE_NEW_REFRESH_TOKEN = True  # rotation

            def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
                token = owner._by_refresh(refresh_token)
                if token is None or token.refresh_revoked:
                    return None
                return token

            def authenticate_user(self, refresh_token: Token) -> str | None:
                return refresh_token.user

            def revoke_old_credential(self, refresh_token: Token) -> None:
                with owner.lock:
                    refresh_token.refresh_revoked = True

        class ClientCredentialsGrant(grants.ClientCredentialsGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        class DeviceGrant(DeviceCodeGrant):
            def query_device_credential(self, device_code: str) -> Any:
                with owner.lock:
                    return owner.devices.get(device_code)

            def query_user_grant(self, user_code: str) -> tuple[str, bool] | None:
                with owner.lock:
                    return owner.device_grants.get(user_code)

            def should_slow_down(self, credential: Any) -> bool:
                return False

        class DeviceEndpoint(DeviceAuthorizationEndpoint):
            def get_verification_uri(self) -> str:
                return f"{owner.issuer}/device"

            def save_device_credential(self, client_id: str, scope: str, data: Any) -> None:
                credential = DeviceCredentialDict(
                    client_id=client_id,
                    scope=scope,
                    expires_at=int(time.time()) + int(data.get("expires_in", 1800)),
                    **data,
                )
                with owner.lock:
                    owner.devices[data["device_code"]] = credential

        class Revocation(RevocationEndpoint):
            def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
                return owner._by_refresh(token_string) or owner._by_access(token_string)

            def revoke_token(self, token: Token, req: Any) -> None:
                # the whole grant (RFC 7009 2.1): every token of this client for this user,
                # the rotated ones too
                with owner.lock:
                    for other in owner.tokens:
                        if other.client_id == token.client_id and other.user == token.user:
                            other.revoked = True
                            other.refresh_revoked = True

        class Introspect(IntrospectionEndpoint):
            CLIENT_AUTH_METHODS = ["client_secret_basic"]

            def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
                token = owner._by_access(token_string)
                if token is None:
                    with owner.lock:
                        owner.introspections.append(Introspection(token_string, False, None))
                return token

            def check_permission(self, token: Token, client: Client, req: Any) -> bool:
                return client.client_id == INTROSPECTOR

            def introspect_token(self, token: Token) -> dict[str, Any]:
                return {
                    "active": True,
                    "client_id": token.client_id,
                    "token_type": "Bearer",
                    "username": token.user,
                    "scope": token.scope,
                    "exp": int(token.issued_at + token.expires_in),
                    "iat": int(token.issued_at),
                    "iss": owner.issuer,
                }

            def create_introspection_payload(self, token: Token | None) -> dict[str, Any]:
                payload: dict[str, Any] = super().create_introspection_payload(token)
                if token is not None:
                    with owner.lock:
                        owner.introspections.append(
                            Introspection(
                                token.access_token, bool(payload.get("active")), token.user
                            )
                        )
                return payload

        server.register_grant(CodeGrant, [CodeChallenge(required=True)])
        server.register_grant(RefreshGrant)
        server.register_grant(ClientCredentialsGrant)
        server.register_grant(DeviceGrant)
        server.register_endpoint(DeviceEndpoint(server))
        server.register_endpoint(Revocation)
        server.register_endpoint(Introspect)

        @app.get("/.well-known/oauth-authorization-server")
        def metadata() -> dict[str, Any]:
            return {
                "issuer": owner.issuer,
                "authorization_endpoint": f"{owner.issuer}/authorize",
                "token_endpoint": f"{owner.issuer}/token",
                "device_authorization_endpoint": f"{owner.issuer}/device_authorization",
                "revocation_endpoint": f"{owner.issuer}/revoke",
                "introspection_endpoint": f"{owner.issuer}/introspect",
                "response_types_supported": ["code"],
                "grant_types_supported": [
                    "authorization_code",
                    "refresh_token",
                    "client_credentials",
                    DeviceCodeGrant.GRANT_TYPE,
                ],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["mail"],
            }

        @app.route("/authorize", methods=["GET", "POST"])
        def authorize() -> Any:
            if request.method == "GET":
                grant = server.get_consent_grant(end_user=None)
                client_id = grant.client.client_id
                action = escape("/authorize?" + request.query_string.decode())
                return (
                    "<!doctype html><title>Consent</title><h1>Grant access</h1>"
                    f"<p>The application {escape(client_id)} asks to read and send your"
                    f" mail ({escape(grant.request.payload.scope or '')}).</p>"
                    f'<form method="post" action="{action}">'
                    '<label>Mail user <input name="user" required></label>'
                    '<button name="decision" value="allow">Allow</button>'
                    '<button name="decision" value="deny">Deny</button></form>'
                )
            user = request.form.get("user", "").strip().lower()
            allowed = request.form.get("decision") == "allow" and user
            grant = server.get_consent_grant(end_user=user or None)
            return server.create_authorization_response(
                grant=grant, grant_user=user if allowed else None
            )

        @app.post("/token")
        def issue_token() -> Any:
            return server.create_token_response()

        @app.post("/device_authorization")
        def device_authorization() -> Any:
            return server.create_endpoint_response(DeviceEndpoint.ENDPOINT_NAME)

        @app.post("/revoke")
        def revoke() -> Any:
            return server.create_endpoint_response(Revocation.ENDPOINT_NAME)

        @app.post("/introspect")
        def introspect() -> Any:
            return server.create_endpoint_response(Introspect.ENDPOINT_NAME)

        return app
