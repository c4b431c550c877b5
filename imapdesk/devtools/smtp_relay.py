"""A small SMTP server on loopback that delivers into a `LocalMailServer` over LMTP: what the
demo and the tests send imapdesk's replies through.

STARTTLS (or implicit TLS) with the mail server's certificate, AUTH PLAIN/LOGIN against the
mail server's users (only over TLS; required, or with `auth="none"` not offered at all, like
a local Postfix or a provider's relay that takes mail from its network without a login), and
each accepted message handed to Dovecot's LMTP for every recipient it knows. Recipients it
does not know are refused with a permanent 550 at RCPT, as a real server would, or, with
`catch_all`, delivered to that user (the demo's box of "the customers"). `fail_next` makes it
answer the next MAIL, RCPT or DATA with a given error (for tests of temporary and permanent
refusals); `accepted` records what it delivered.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from imapdesk.devtools.mailserver import LocalMailServer, LocalMailServerError, free_port

log = logging.getLogger(__name__)

RelaySecurity = Literal["starttls", "ssl", "none"]
# required: no mail without a login; none: EHLO lists no AUTH and anyone may send
RelayAuth = Literal["required", "none"]
FailAt = Literal["MAIL", "RCPT", "DATA"]


@dataclass
class Accepted:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


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
                Accepted(envelope.mail_from or "", list(envelope.rcpt_tos), bytes(data))
            )
        return "250 2.0.0 OK: queued"


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
    ) -> None:
        self.server = server
        self.port = port or free_port()
        self.security = security
        self.auth = auth
        self.handler = _Handler(server, catch_all=catch_all, offer_auth=auth != "none")
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
        }
        if self.auth == "none":
            # AUTH is then neither listed nor accepted: every mechanism is left out
            kwargs["auth_exclude_mechanism"] = ["LOGIN", "PLAIN"]
        else:
            kwargs["authenticator"] = self._authenticate
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
            "local SMTP relay on 127.0.0.1:%d (%s, AUTH %s)", self.port, self.security, self.auth
        )

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None
