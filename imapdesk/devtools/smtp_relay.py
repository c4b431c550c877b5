"""A small SMTP server on loopback that delivers into a `LocalMailServer` over LMTP: what the
demo and the tests send imapdesk's replies through.

STARTTLS (or implicit TLS) with the mail server's certificate, AUTH PLAIN/LOGIN against the
mail server's users (only over TLS; required, or with `auth="none"` not offered at all, like
a local Postfix or a provider's relay that takes mail from its network without a login), and
each accepted message handed to Dovecot's LMTP for every recipient it knows. Recipients it
does not know are refused with a permanent 550 at RCPT, as a real server would, or, with
`catch_all`, delivered to that user (the demo's box of "the customers"). `fail_next` makes it
answer the next MAIL, RCPT or DATA with a given error (for tests of temporary and permanent
refusals); `accepted` records what it delivered, and when. With `smtputf8` it offers SMTPUTF8
(RFC 6531: addresses with non-ASCII local parts, UTF-8 headers), as many providers do; without
it, like many others, it does not (set `smtputf8` and restart it to change its mind). With
`bearer_introspection` it also takes OAuth2 logins (AUTH XOAUTH2 and OAUTHBEARER, RFC 7628),
asking that RFC 7662 introspection endpoint whether the token is active and whose it is, as a
provider's submission server does.
"""

from __future__ import annotations

import base64
import binascii
import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from imapdesk.devtools.mailserver import LocalMailServer, LocalMailServerError, free_port

log = logging.getLogger(__name__)

RelaySecurity = Literal["starttls", "ssl", "none"]
# required: no mail without a login; none: EHLO lists no AUTH and anyone may send
RelayAuth = Literal["required", "none"]
FailAt = Literal["MAIL", "RCPT", "DATA"]
BEARER_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")


@dataclass(frozen=True)
class BearerIntrospection:
    """Where OAuth2 tokens are checked (RFC 7662), with the relay's client credentials, and
    the CA that signed that server's certificate."""

    url: str
    client_id: str
    client_secret: str = field(repr=False)
    ca_file: str | None = None


@dataclass
class Accepted:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    # when the final "." was answered (time.time())
    received_at: float = field(default_factory=time.time)
    # the MAIL FROM parameters (SMTPUTF8, BODY=8BITMIME, ...)
    mail_options: list[str] = field(default_factory=list)


@dataclass
class _Handler:
    server: LocalMailServer
    # unknown recipients go to this user (the demo's "customers" box) instead of a 550
    catch_all: str | None = None
    offer_auth: bool = True
    accepted: list[Accepted] = field(default_factory=list)
    # (command, reply): replies to give instead of the usual one, first come first served
    fail_next: list[tuple[FailAt, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    bearer: BearerIntrospection | None = None
    # the users each OAuth2 login was made as, with the mechanism (for the tests to see)
    bearer_logins: list[tuple[str, str]] = field(default_factory=list)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer_login(server, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer_login(server, args, "OAUTHBEARER")

    async def _bearer_login(self, server: SMTP, args: list[str], mechanism: str) -> AuthResult:
        """The client's initial response (`user=...^Aauth=Bearer ...^A^A`, or for OAUTHBEARER
        a GS2 header naming the user first), the token checked at the introspection endpoint.
        A refusal is the error challenge of RFC 7628 3.2.2 and then 535."""
        if len(args) > 1:
            blob = args[1].encode()
        else:
            answer = await server.challenge_auth("", encode_to_b64=False)
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=True)
            blob = base64.b64encode(answer)
        try:
            text = base64.b64decode(blob, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            await server.push("501 5.5.2 Can't decode base64")
            return AuthResult(success=False, handled=True)
        user, token = _bearer_fields(text, mechanism)
        if user and token and await self._active(user, token):
            with self.lock:
                self.bearer_logins.append((user, mechanism))
            return AuthResult(success=True, auth_data=user)
        status = '{"status":"invalid_token","schemes":"bearer","scope":"mail"}'
        await server.challenge_auth(status)  # the client answers ^A (or nothing) to end it
        return AuthResult(success=False, handled=False)

    async def _active(self, user: str, token: str) -> bool:
        if self.bearer is None:
            return False
        verify: ssl.SSLContext | bool = True
        if self.bearer.ca_file:
            verify = ssl.create_default_context(cafile=self.bearer.ca_file)
        try:
            async with httpx.AsyncClient(verify=verify, timeout=10) as http:
                response = await http.post(
                    self.bearer.url,
                    data={"token": token, "token_type_hint": "access_token"},
                    auth=(self.bearer.client_id, self.bearer.client_secret),
                )
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("relay: token introspection failed: %s", exc)
            return False
        return (
            isinstance(answer, dict)
            and answer.get("active") is True
            and str(answer.get("username", "")).lower() == user.lower()
        )

    def _failure(self, command: FailAt) -> str | None:
        with self.lock:
            for i, (at, reply) in enumerate(self.fail_next):
                if at == command:
                    del self.fail_next[i]
                    return reply
        return None

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> list[str]:
        session.host_name = hostname  # this hook's job, once it exists
        if self.offer_auth:
            return list(responses)
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        failure = self._failure("MAIL")
        if failure is not None:
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        failure = self._failure("RCPT")
        if failure is not None:
            return failure
        if address.strip().lower() not in self.server.users() and not self.catch_all:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        failure = self._failure("DATA")
        if failure is not None:
            return failure
        data = envelope.original_content or b""
        if isinstance(data, str):
            data = data.encode()
        users = self.server.users()
        targets = {
            rcpt if rcpt.strip().lower() in users else (self.catch_all or rcpt)
            for rcpt in envelope.rcpt_tos
        }
        for rcpt in sorted(targets):
            try:
                self.server.deliver(rcpt, data, sender=envelope.mail_from or "")
            except (LocalMailServerError, OSError) as exc:
                log.warning("relay: LMTP delivery to %s failed: %s", rcpt, exc)
                return "451 4.3.0 Local delivery failed, try again later"
        with self.lock:
            self.accepted.append(
                Accepted(
                    envelope.mail_from or "",
                    list(envelope.rcpt_tos),
                    bytes(data),
                    mail_options=list(envelope.mail_options),
                )
            )
        return "250 2.0.0 OK: queued"


def _bearer_fields(text: str, mechanism: str) -> tuple[str, str]:
    """(user, token) of an XOAUTH2 or OAUTHBEARER initial response; blanks where missing."""
    user = ""
    pairs = text.split("\x01")
    if mechanism == "OAUTHBEARER":
        for part in pairs[0].split(","):
            if part.startswith("a="):
                user = part[2:].replace("=2C", ",").replace("=3D", "=")
        pairs = pairs[1:]
    fields = dict(p.split("=", 1) for p in pairs if "=" in p)
    user = fields.get("user", user)
    scheme, _, token = fields.get("auth", "").partition(" ")
    return user, token if scheme.lower() == "bearer" else ""


class LocalSmtpRelay:
    """aiosmtpd on 127.0.0.1 in a thread; `start()`/`stop()` may be called repeatedly (the
    port stays the same, so a client configured once reaches it again after a restart)."""

    def __init__(
        self,
        server: LocalMailServer,
        *,
        port: int | None = None,
        security: RelaySecurity = "starttls",
        auth: RelayAuth = "required",
        catch_all: str | None = None,
        smtputf8: bool = False,
        bearer_introspection: BearerIntrospection | None = None,
        bearer_mechanisms: tuple[str, ...] = BEARER_MECHANISMS,
    ) -> None:
        self.server = server
        self.port = port or free_port()
        self.security = security
        self.auth = auth
        self.smtputf8 = smtputf8
        self.handler = _Handler(
            server, catch_all=catch_all, offer_auth=auth != "none", bearer=bearer_introspection
        )
        # the OAuth2 mechanisms offered: none without an introspection endpoint
        self.bearer_mechanisms = bearer_mechanisms if bearer_introspection else ()
        self._controller: Controller | None = None

    @property
    def accepted(self) -> list[Accepted]:
        return self.handler.accepted

    def fail_next(self, reply: str, *, at: FailAt = "DATA") -> None:
        """Answer the next `at` command (MAIL, RCPT, or DATA: the message after its final
        ".") with `reply`, e.g. "451 4.7.1 Try again later"."""
        with self.handler.lock:
            self.handler.fail_next.append((at, reply))

    def _tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.server.cert_path), str(self.server.key_path))
        return ctx

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = data.login.decode("utf-8", "replace").strip().lower()
        password = data.password.decode("utf-8", "replace")
        ok = self.server.users().get(user) == password
        return AuthResult(success=ok, handled=False)

    def start(self) -> None:
        if self._controller is not None:
            return
        kwargs: dict[str, Any] = {
            "hostname": "127.0.0.1",
            "port": self.port,
            "server_hostname": "localhost",
            "auth_required": self.auth == "required",
            "auth_require_tls": self.security != "none",
            "ident": "imapdesk local relay",
            "enable_SMTPUTF8": self.smtputf8,
        }
        if self.auth == "none":
            # AUTH is then neither listed nor accepted: every mechanism is left out
            kwargs["auth_exclude_mechanism"] = ["LOGIN", "PLAIN", *BEARER_MECHANISMS]
        else:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_exclude_mechanism"] = [
                m for m in BEARER_MECHANISMS if m not in self.bearer_mechanisms
            ]
        if self.security == "ssl":
            kwargs["ssl_context"] = self._tls()
        elif self.security == "starttls":
            kwargs["tls_context"] = self._tls()
            kwargs["require_starttls"] = True
        # aiosmtpd warns about its own deprecated attribute at every AUTH
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        controller = Controller(self.handler, **kwargs)
        controller.start()
        self._controller = controller
        log.info(
            "local SMTP relay on 127.0.0.1:%d (%s, AUTH %s%s)",
            self.port,
            self.security,
            self.auth,
            ", SMTPUTF8" if self.smtputf8 else "",
        )

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None
