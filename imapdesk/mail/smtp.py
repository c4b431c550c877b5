"""Sending one message over SMTP, with the point of no return made explicit.

TLS is always verified (a private CA is added with the mailbox's `ca_file`, as for IMAP);
AUTH only over TLS, unless the admin chose `none`. The message goes out with MAIL, RCPT and
DATA by hand so that the caller can record, before the final "." (after which the server may
deliver it), that it is about to be sent: a crash before that point means the server got an
incomplete message and drops it (sending again is safe); after it, the message is taken as
sent, so it is never sent twice.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import smtplib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imapdesk.kernel.errors import MailServerError

_CRLF = re.compile(rb"\r\n|\r|\n")
_DOT = re.compile(rb"(?m)^\.")
# the port each security setting usually listens on, when the mailbox names none
DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}


class SmtpError(MailServerError):
    """The server refused the message or could not be reached. `permanent` for a 5xx answer
    (retrying cannot help); `said` is the server's own words."""

    code = "smtp_error"

    def __init__(self, message: str, *, permanent: bool, said: str = "") -> None:
        super().__init__(message)
        self.permanent = permanent
        self.said = said


class AnswerLost(SmtpError):
    """The whole message went out but the server's answer did not come back: it was most
    likely accepted, and is taken as sent (never sent twice)."""


@dataclass(frozen=True)
class SmtpAccount:
    """Where and how to send: the server, its TLS mode (ssl | starttls | none) and the login
    (none when `username` is None). The password never appears in repr or logs."""

    host: str
    port: int
    security: str  # ssl | starttls | none
    username: str | None
    password: str | None = field(repr=False)
    ca_file: str | None = None
    timeout: float = 30.0

    def describe(self) -> str:
        return f"{self.host}:{self.port} ({self.security})"


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying context (the system's CAs plus `ca_file`), made once per CA file and its
    modification time: loading the system's CAs costs ~100 ms, more than a whole send."""
    try:
        mtime = os.stat(ca_file).st_mtime_ns if ca_file else 0
    except OSError as exc:
        raise SmtpError(f"cannot read the CA file {ca_file!r}: {exc}", permanent=True) from exc
    return _tls_context(ca_file, mtime)


@functools.lru_cache(maxsize=16)
def _tls_context(ca_file: str | None, _mtime: int) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise SmtpError(f"cannot read the CA file {ca_file!r}: {exc}", permanent=True) from exc
    return ctx


def _said(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}".strip()


def connect(account: SmtpAccount) -> smtplib.SMTP:
    """A connected, TLS-verified and authenticated SMTP session; SmtpError otherwise."""
    try:
        if account.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                account.host,
                account.port,
                timeout=account.timeout,
                context=tls_context(account.ca_file),
            )
        else:
            client = smtplib.SMTP(account.host, account.port, timeout=account.timeout)
            if account.security == "starttls":
                client.ehlo()
                client.starttls(context=tls_context(account.ca_file))
        client.ehlo()
        if account.username and account.password is not None:
            client.login(account.username, account.password)
        return client
    except smtplib.SMTPAuthenticationError as exc:
        raise SmtpError(
            f"{account.describe()} refused the login of {account.username}",
            permanent=True,
            said=_said(exc.smtp_code, exc.smtp_error),
        ) from exc
    except ssl.SSLCertVerificationError as exc:
        raise SmtpError(
            f"{account.describe()}: the certificate could not be verified ({exc.verify_message});"
            " give the CA with --ca-file",
            permanent=False,
        ) from exc
    except smtplib.SMTPResponseException as exc:
        raise SmtpError(
            f"{account.describe()} refused the connection",
            permanent=False,
            said=_said(exc.smtp_code, exc.smtp_error),
        ) from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise SmtpError(f"cannot reach {account.describe()}: {exc}", permanent=False) from exc


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
) -> SendResult:
    """MAIL, RCPT, DATA; `before_final_dot()` runs when only the final "." is left to send."""
    try:
        code, msg = client.mail(envelope_from, ["SMTPUTF8"] if _needs_utf8(raw) else [])
        if code != 250:
            raise SmtpError(
                f"the server refused the sender {envelope_from}",
                permanent=500 <= code < 600,
                said=_said(code, msg),
            )
        refused: dict[str, str] = {}
        for rcpt in recipients:
            code, msg = client.rcpt(rcpt)
            if code not in (250, 251):
                refused[rcpt] = _said(code, msg)
        if len(refused) == len(recipients):
            client.rset()
            permanent = all(v.startswith("5") for v in refused.values())
            raise SmtpError(
                "the server refused every recipient: " + "; ".join(refused.values()),
                permanent=permanent,
                said="; ".join(f"{k}: {v}" for k, v in refused.items()),
            )
        code, msg = client.docmd("DATA")
        if code != 354:
            raise SmtpError(
                "the server refused DATA", permanent=500 <= code < 600, said=_said(code, msg)
            )
        body = _DOT.sub(b"..", _CRLF.sub(b"\r\n", raw))
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        client.send(body)
    except smtplib.SMTPServerDisconnected as exc:
        raise SmtpError(f"the server closed the connection: {exc}", permanent=False) from exc
    except (OSError, smtplib.SMTPException) as exc:
        if isinstance(exc, SmtpError):
            raise
        raise SmtpError(f"sending failed: {exc}", permanent=False) from exc
    before_final_dot()
    try:
        client.send(b".\r\n")
        code, msg = client.getreply()
    except (OSError, smtplib.SMTPException) as exc:
        raise AnswerLost(
            f"the server's answer to the message was lost ({exc})", permanent=False
        ) from exc
    if code != 250:
        raise SmtpError(
            "the server refused the message", permanent=500 <= code < 600, said=_said(code, msg)
        )
    return SendResult(said=_said(code, msg), refused=refused)


def _needs_utf8(raw: bytes) -> bool:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return any(b > 0x7F for b in head)


def check_connection(account: SmtpAccount) -> str:
    """Connect, EHLO, STARTTLS or TLS as configured, AUTH and QUIT, exactly as the sender does;
    what worked, or SmtpError saying what to fix."""
    try:
        client = connect(account)
    except SmtpError as exc:
        raise SmtpError(_what_to_fix(account, exc), permanent=exc.permanent, said=exc.said) from exc
    close(client)
    tls = "without TLS" if account.security == "none" else "TLS verified"
    login = (
        f"logged in as {account.username}"
        if account.username and account.password is not None
        else "no login configured"
    )
    return f"Connected to {account.describe()}, {tls}, {login}."


def _what_to_fix(account: SmtpAccount, exc: SmtpError) -> str:
    where = account.describe()
    cause = exc.__cause__
    said = f" (the server said: {exc.said})" if exc.said else ""
    if isinstance(cause, smtplib.SMTPAuthenticationError):
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
    if isinstance(cause, smtplib.SMTPNotSupportedError):
        if "STARTTLS" in str(cause).upper():
            return f"{where} does not offer STARTTLS: choose ssl, or the port that offers it"
        return (
            f"{where} does not offer AUTH{said}: most servers offer it only over TLS; "
            "check the security setting, or send without login"
        )
    if isinstance(cause, TimeoutError | smtplib.SMTPServerDisconnected):
        return (
            f"no SMTP answer from {where} ({cause or 'closed'}): check the host, the port and "
            "the security setting (ssl on a starttls port, or the reverse, waits for nothing)"
        )
    if isinstance(cause, OSError):
        return f"cannot reach {where} ({cause}): check the SMTP host and port"
    return exc.message


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
    "SmtpError",
    "check_connection",
    "close",
    "connect",
    "send_message",
]
