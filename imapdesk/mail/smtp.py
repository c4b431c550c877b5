"""Sending one message over SMTP, with the point of no return made explicit.

TLS is always verified (a private CA is added with the mailbox's `ca_file`, as for IMAP);
AUTH only over TLS, unless the admin chose `none`. A login that is only the default (the IMAP
one, no SMTP user set) is skipped where the server offers no AUTH: a local Postfix or a
provider's relay takes mail from its network without one. The message goes out with MAIL, RCPT
and DATA by hand so that the caller can record, before the final "." (after which the server
may deliver it), that it is about to be sent: a crash before that point means the server got an
incomplete message and drops it (sending again is safe); after it, the message is taken as
sent, so it is never sent twice.

Every failure is an `SmtpError` subclass named for what happened (unreachable, TLS, settings,
login, sender, recipients, message) and says whether retrying can help: a 4xx reply or a
network failure is temporary, a 5xx reply (RFC 5321 4.2.1) or settings that cannot work with
this server are permanent.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imapdesk.kernel.errors import MailServerError
from imapdesk.mail.oauth2 import (
    OAuth2Error,
    TokenSource,
    sasl_error_reply,
    sasl_initial_response,
    sasl_mechanism,
)

_CRLF = re.compile(rb"\r\n|\r|\n")
_DOT = re.compile(rb"(?m)^\.")
# the port each security setting usually listens on, when the mailbox names none
DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}


class SmtpError(MailServerError):
    """The server could not be reached or refused, or the settings cannot work with it.
    `permanent`: retrying cannot help (a 5xx answer, a configuration error); `said` is the
    server's own words."""

    code = "smtp_error"

    def __init__(self, message: str, *, permanent: bool, said: str = "") -> None:
        super().__init__(message)
        self.permanent = permanent
        self.said = said


class SmtpUnreachable(SmtpError):
    """No connection (refused, no such host, no answer) or it broke: temporary."""

    code = "smtp_unreachable"


class SmtpSessionRefused(SmtpError):
    """The server answered the connection with a refusal (421 busy, 554 no service)."""

    code = "smtp_session_refused"


class SmtpTlsFailed(SmtpError):
    """TLS could not be set up: the certificate was not accepted (its complaint says why), the
    handshake failed, or STARTTLS is not offered. Configuration: permanent."""

    code = "smtp_tls_failed"


class SmtpSettingsError(SmtpError):
    """The mailbox's SMTP settings cannot work with this server (a login where it offers no
    AUTH, no AUTH mechanism in common, an unreadable CA file). Permanent; the message says
    what to change."""

    code = "smtp_settings"


class SmtpLoginRefused(SmtpError):
    """AUTH refused: 535 (wrong user or password) is permanent, 454 temporary."""

    code = "smtp_login_refused"


class SmtpSenderRefused(SmtpError):
    """MAIL FROM refused."""

    code = "smtp_sender_refused"


class SmtpRecipientsRefused(SmtpError):
    """Every recipient refused at RCPT; `refused` holds each address with the server's words."""

    code = "smtp_recipients_refused"

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        said: str = "",
        refused: dict[str, str] | None = None,
    ) -> None:
        refused = refused or {}
        super().__init__(
            message,
            permanent=permanent,
            said=said or "; ".join(f"{k}: {v}" for k, v in refused.items()),
        )
        self.refused = refused


class SmtpMessageRefused(SmtpError):
    """DATA, or the message after its final ".", refused."""

    code = "smtp_message_refused"


class SmtpCannotEncode(SmtpError):
    """The message or an address cannot be written for this server: a non-ASCII local part (or
    UTF-8 headers) where the server offers no SMTPUTF8. Permanent: sending again to the same
    server cannot help."""

    code = "smtp_cannot_encode"


class AnswerLost(SmtpError):
    """The whole message went out but the server's answer did not come back: it was most
    likely accepted, and is taken as sent (never sent twice)."""


@dataclass(frozen=True)
class SmtpAccount:
    """Where and how to send: the server, its TLS mode (ssl | starttls | none) and the login
    (none when `username` is None). `login_if_offered`: the login is only the default (the
    IMAP one), so a server that offers no AUTH gets none; an SMTP user set on purpose is
    required. The password never appears in repr or logs. With `oauth2`, the login is SASL
    XOAUTH2 or OAUTHBEARER with the token it gives, as for IMAP."""

    host: str
    port: int
    security: str  # ssl | starttls | none
    username: str | None
    password: str | None = field(repr=False)
    ca_file: str | None = None
    timeout: float = 30.0
    login_if_offered: bool = False
    oauth2: TokenSource | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        return f"{self.host}:{self.port} ({self.security})"

    @property
    def has_login(self) -> bool:
        return bool(self.username) and (self.password is not None or self.oauth2 is not None)


def is_permanent(code: int) -> bool:
    """A 5xx reply means the same command cannot succeed later (RFC 5321 4.2.1); 4xx, and
    anything that is no reply code at all (-1: the connection closed), may."""
    return 500 <= code < 600


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying context (the system's CAs plus `ca_file`), made once per CA file and its
    modification time: loading the system's CAs costs ~100 ms, more than a whole send."""
    try:
        mtime = os.stat(ca_file).st_mtime_ns if ca_file else 0
    except OSError as exc:
        raise SmtpSettingsError(
            f"cannot read the CA file {ca_file!r}: {exc}", permanent=True
        ) from exc
    return _tls_context(ca_file, mtime)


@functools.lru_cache(maxsize=16)
def _tls_context(ca_file: str | None, _mtime: int) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise SmtpSettingsError(
                f"cannot read the CA file {ca_file!r}: {exc}", permanent=True
            ) from exc
    return ctx


def _said(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}".strip()


def _network(
    where: str, exc: OSError | smtplib.SMTPServerDisconnected, *, reached: bool
) -> SmtpUnreachable:
    """A network failure named for what it is; always temporary. `reached`: the connection
    was made and broke later."""
    if isinstance(exc, ConnectionRefusedError):
        reason = "connection refused"
    elif isinstance(exc, socket.gaierror):
        reason = f"host not found ({exc.strerror or exc})"
    elif isinstance(exc, TimeoutError):
        reason = "no answer in time"
    elif isinstance(exc, smtplib.SMTPServerDisconnected):
        reason = "the server closed the connection"
    else:
        reason = exc.strerror or str(exc) or type(exc).__name__
    if reached:
        return SmtpUnreachable(f"the connection to {where} broke: {reason}", permanent=False)
    return SmtpUnreachable(f"cannot reach {where}: {reason}", permanent=False)


def _tls_failed(where: str, exc: ssl.SSLError) -> SmtpTlsFailed:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SmtpTlsFailed(
            f"{where}: the certificate could not be verified ({exc.verify_message});"
            " give the CA with --ca-file",
            permanent=True,
        )
    return SmtpTlsFailed(
        f"the TLS handshake with {where} failed ({exc.reason or exc})", permanent=True
    )


def connect(account: SmtpAccount) -> smtplib.SMTP:
    """A connected, TLS-verified and (where the settings and the server call for it) logged in
    SMTP session; an SmtpError subclass otherwise."""
    where = account.describe()
    context = tls_context(account.ca_file) if account.security != "none" else None
    client: smtplib.SMTP | None = None
    try:
        if account.security == "ssl":
            client = smtplib.SMTP_SSL(
                account.host, account.port, timeout=account.timeout, context=context
            )
        else:
            client = smtplib.SMTP(account.host, account.port, timeout=account.timeout)
            if account.security == "starttls":
                client.ehlo()
                if not client.has_extn("starttls"):
                    raise SmtpTlsFailed(f"{where} does not offer STARTTLS", permanent=True)
                client.starttls(context=context)
        client.ehlo()
        _log_in(client, account)
        return client
    except SmtpError:
        close(client)
        raise
    except smtplib.SMTPAuthenticationError as exc:
        close(client)
        raise SmtpLoginRefused(
            f"{where} refused the login of {account.username}",
            permanent=is_permanent(exc.smtp_code),
            said=_said(exc.smtp_code, exc.smtp_error),
        ) from exc
    except smtplib.SMTPConnectError as exc:
        close(client)
        raise SmtpSessionRefused(
            f"{where} refused the connection",
            permanent=is_permanent(exc.smtp_code),
            said=_said(exc.smtp_code, exc.smtp_error),
        ) from exc
    except smtplib.SMTPResponseException as exc:  # STARTTLS answered with a refusal
        close(client)
        raise SmtpTlsFailed(
            f"{where} refused STARTTLS",
            permanent=is_permanent(exc.smtp_code),
            said=_said(exc.smtp_code, exc.smtp_error),
        ) from exc
    except ssl.SSLError as exc:  # before OSError: it is one
        close(client)
        raise _tls_failed(where, exc) from exc
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        close(client)
        raise _network(where, exc, reached=client is not None) from exc
    except smtplib.SMTPException as exc:  # nothing else is expected here; maybe a glitch
        close(client)
        raise SmtpUnreachable(
            f"the SMTP session with {where} failed: {exc}", permanent=False
        ) from exc


def _log_in(client: smtplib.SMTP, account: SmtpAccount) -> None:
    if not account.has_login:
        return
    where = account.describe()
    if client.has_extn("auth") and account.oauth2 is not None:
        _log_in_oauth2(client, account, account.oauth2)
        return
    if client.has_extn("auth"):
        try:
            client.login(account.username or "", account.password or "")
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPServerDisconnected):
            raise
        except smtplib.SMTPException as exc:  # no mechanism in common
            offered = " ".join(client.esmtp_features.get("auth", "").split())
            raise SmtpSettingsError(
                f"{where} offers AUTH {offered}, none of which imapdesk can use ({exc})",
                permanent=True,
            ) from exc
        return
    if account.login_if_offered:
        return  # the IMAP login was only the default: a relay that takes mail without one
    over_tls = (
        " (many servers offer AUTH only over TLS: check the security setting)"
        if account.security == "none"
        else ""
    )
    raise SmtpSettingsError(
        f"{where} offers no AUTH, so the SMTP user {account.username} cannot log in{over_tls}."
        " If the server takes mail without a login, clear the SMTP user name and password (the"
        ' IMAP login is then used only where AUTH is offered) or choose "Send without logging'
        ' in" (--smtp-username "")',
        permanent=True,
    )


def _log_in_oauth2(client: smtplib.SMTP, account: SmtpAccount, tokens: TokenSource) -> None:
    """AUTH XOAUTH2 or OAUTHBEARER (whichever the server offers, as for IMAP) with the mailbox's
    token; a refused token is given back and a fresh one tried once. No token to be had is a
    refused login: temporary, since an admin can connect the mailbox again."""
    mechanism = sasl_mechanism(client.esmtp_features.get("auth", "").split())
    user = account.username or ""
    token = _oauth2_token(tokens, account)
    try:
        _authenticate(client, mechanism, user, token)
        return
    except smtplib.SMTPAuthenticationError:
        tokens.refused(token)
        fresh = _oauth2_token(tokens, account)
        if fresh == token:
            raise
    _authenticate(client, mechanism, user, fresh)


def _oauth2_token(tokens: TokenSource, account: SmtpAccount) -> str:
    try:
        return tokens.access_token()
    except OAuth2Error as exc:
        raise SmtpLoginRefused(
            f"{account.describe()}: no OAuth2 token to log in with: {exc.message}",
            permanent=False,
        ) from exc


def _authenticate(client: smtplib.SMTP, mechanism: str, user: str, token: str) -> None:
    client.auth(
        mechanism, functools.partial(_sasl_answer, mechanism, user, token), initial_response_ok=True
    )


def _sasl_answer(mechanism: str, user: str, token: str, challenge: bytes | None = None) -> str:
    """smtplib's authobject: the initial response, then (to the server's error challenge) the
    reply that lets it end the exchange."""
    if challenge is None:
        return sasl_initial_response(mechanism, user, token)
    return sasl_error_reply(mechanism)


@dataclass
class SendResult:
    said: str  # the server's answer to the final "."
    refused: dict[str, str]  # recipients refused at RCPT, with the server's words


def send_message(
    client: smtplib.SMTP,
    envelope_from: str,
    recipients: Sequence[str],
    raw: bytes,
    *,
    before_final_dot: Callable[[], None],
    where: str = "the SMTP server",
) -> SendResult:
    """MAIL, RCPT, DATA; `before_final_dot()` runs when only the final "." is left to send.
    `where` names the server in errors. What needs SMTPUTF8 (`_utf8_needed`) goes only to a
    server that offers it, else SmtpCannotEncode before anything is sent."""
    utf8 = _utf8_needed(client, envelope_from, recipients, raw, where)
    client.command_encoding = "utf-8" if utf8 else "ascii"  # a reused connection's is reset
    try:
        code, msg = client.mail(envelope_from, ["SMTPUTF8"] if utf8 else [])
        if code != 250:
            wants_login = " (it takes mail only after a login)" if code == 530 else ""
            raise SmtpSenderRefused(
                f"{where} refused the sender {envelope_from}{wants_login}",
                permanent=is_permanent(code),
                said=_said(code, msg),
            )
        refused: dict[str, str] = {}
        refusal_codes: list[int] = []
        for rcpt in recipients:
            code, msg = client.rcpt(rcpt)
            if code not in (250, 251):
                refused[rcpt] = _said(code, msg)
                refusal_codes.append(code)
        if len(refused) == len(recipients):
            client.rset()
            plural = "s" if len(refused) > 1 else ""
            raise SmtpRecipientsRefused(
                f"{where} refused the recipient{plural} {', '.join(refused)}",
                # retried if any refusal is temporary: none of them got the message
                permanent=all(is_permanent(c) for c in refusal_codes),
                refused=refused,
            )
        code, msg = client.docmd("DATA")
        if code != 354:
            raise SmtpMessageRefused(
                f"{where} refused to take the message (DATA)",
                permanent=is_permanent(code),
                said=_said(code, msg),
            )
        body = _DOT.sub(b"..", _CRLF.sub(b"\r\n", raw))
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        client.send(body)
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        raise _network(where, exc, reached=True) from exc
    except UnicodeError as exc:  # what slipped past `_utf8_needed`: it would fail every time
        raise SmtpCannotEncode(
            f"the message cannot be written for {where}: {exc}", permanent=True
        ) from exc
    except smtplib.SMTPException as exc:
        raise SmtpUnreachable(f"sending to {where} failed: {exc}", permanent=False) from exc
    before_final_dot()
    try:
        client.send(b".\r\n")
        code, msg = client.getreply()
    except (OSError, smtplib.SMTPException) as exc:
        raise AnswerLost(
            f"the answer of {where} to the message was lost ({exc})", permanent=False
        ) from exc
    if code != 250:
        raise SmtpMessageRefused(
            f"{where} refused the message", permanent=is_permanent(code), said=_said(code, msg)
        )
    return SendResult(said=_said(code, msg), refused=refused)


def _needs_utf8(raw: bytes) -> bool:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return any(b > 0x7F for b in head)


def _utf8_needed(
    client: smtplib.SMTP, envelope_from: str, recipients: Sequence[str], raw: bytes, where: str
) -> bool:
    """Whether this message needs SMTPUTF8 (an address with a non-ASCII local part, UTF-8
    headers); SmtpCannotEncode, naming what needs it, when the server does not offer it."""
    addresses = [a for a in (envelope_from, *recipients) if not a.isascii()]
    if not addresses and not _needs_utf8(raw):
        return False
    if client.has_extn("smtputf8"):
        return True
    what = (
        f"the address{'es' if len(addresses) > 1 else ''} {', '.join(addresses)} "
        "(non-ASCII characters before the @ have no ASCII form)"
        if addresses
        else "the message's UTF-8 headers"
    )
    raise SmtpCannotEncode(
        f"{where} does not offer SMTPUTF8, which {what} need{'' if addresses else 's'}: "
        "it cannot be sent through this server",
        permanent=True,
    )


def check_connection(account: SmtpAccount) -> str:
    """Connect, EHLO, STARTTLS or TLS as configured, AUTH and QUIT, exactly as the sender does;
    what worked, or SmtpError saying what to fix."""
    try:
        client = connect(account)
    except SmtpError as exc:
        raise type(exc)(_what_to_fix(account, exc), permanent=exc.permanent, said=exc.said) from (
            exc
        )
    offers_auth = client.has_extn("auth")
    close(client)
    tls = "without TLS" if account.security == "none" else "TLS verified"
    if not account.has_login:
        login = "no login configured"
    elif offers_auth:
        login = f"logged in as {account.username}"
    else:
        login = "no login: the server offers no AUTH and none was set for SMTP"
    return f"Connected to {account.describe()}, {tls}, {login}."


def _what_to_fix(account: SmtpAccount, exc: SmtpError) -> str:
    where = account.describe()
    cause = exc.__cause__
    said = f" (the server said: {exc.said})" if exc.said else ""
    if isinstance(exc, SmtpLoginRefused) and account.oauth2 is not None:
        return exc.message + said
    if isinstance(exc, SmtpLoginRefused):
        return (
            f"{where} refused the login of {account.username}{said}: "
            "check the SMTP user name and password"
        )
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"TLS verification failed for {where} ({cause.verify_message}): check the host "
            "name, or give the CA file of a private CA"
        )
    if isinstance(cause, ssl.SSLError):
        return (
            f"the TLS handshake with {where} failed ({cause.reason or cause}): check the "
            "security setting (ssl is usually port 465, starttls 587)"
        )
    if isinstance(exc, SmtpTlsFailed) and cause is None:
        return f"{where} does not offer STARTTLS: choose ssl, or the port that offers it"
    if isinstance(cause, TimeoutError | smtplib.SMTPServerDisconnected):
        return (
            f"no SMTP answer from {where} ({cause or 'closed'}): check the host, the port and "
            "the security setting (ssl on a starttls port, or the reverse, waits for nothing)"
        )
    if isinstance(exc, SmtpUnreachable) and isinstance(cause, OSError):
        return f"cannot reach {where} ({cause}): check the SMTP host and port"
    return exc.message + said


def close(client: smtplib.SMTP | None) -> None:
    if client is None:
        return
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        with contextlib.suppress(OSError):
            client.close()


__all__ = [
    "DEFAULT_PORTS",
    "AnswerLost",
    "SendResult",
    "SmtpAccount",
    "SmtpCannotEncode",
    "SmtpError",
    "SmtpLoginRefused",
    "SmtpMessageRefused",
    "SmtpRecipientsRefused",
    "SmtpSenderRefused",
    "SmtpSessionRefused",
    "SmtpSettingsError",
    "SmtpTlsFailed",
    "SmtpUnreachable",
    "check_connection",
    "close",
    "connect",
    "is_permanent",
    "send_message",
]
