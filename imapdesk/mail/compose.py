"""Composing outgoing mail: the RFC 5322 message, built with the stdlib `email` package.

Policy SMTP: every header is encoded as RFC 2047 needs, nothing by hand; lines end in CRLF.
What to write (who answers whom, which subject, which references) is the domain's
(`imapdesk.domain.outbound.replies`); this module only turns it into bytes. No database here.
"""

from __future__ import annotations

import email
import email.policy
import html as html_lib
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from imapdesk.kernel.errors import InvalidInput
from imapdesk.mail.parsing import normalize_msgid

NOTE_HEADER = "X-Imapdesk-Note"
_MAX_REFERENCES = 40


@dataclass(frozen=True)
class Upload:
    """A file an agent attaches (multipart upload in the API)."""

    filename: str
    content_type: str
    data: bytes


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "imapdesk.invalid"


def new_msgid(address: str) -> str:
    """A Message-ID in the domain of `address` (the mailbox's), without angle brackets."""
    value = normalize_msgid(make_msgid(idstring="imapdesk", domain=_domain(address)))
    assert value is not None
    return value


def mail_address(email_addr: str, name: str | None = None) -> Address:
    """`email_addr` with its display name as a header address; InvalidInput when it is none."""
    local, _, domain = email_addr.strip().rpartition("@")
    if not local or not domain:
        raise InvalidInput(f"{email_addr!r} is not an email address", field="to")
    try:
        return Address(display_name=name or "", username=local, domain=domain)
    except (ValueError, IndexError) as exc:
        raise InvalidInput(f"{email_addr!r} is not an email address", field="to") from exc


def with_signature(body: str, *signatures: str | None) -> str:
    """The text, then "-- " and the signatures (the agent's, then the mailbox's)."""
    sigs = [sig.strip("\n") for sig in signatures if sig and sig.strip()]
    text = body.rstrip("\n")
    if sigs:
        text += "\n\n-- \n" + "\n\n".join(sigs)
    return text + "\n"


def html_with_signature(html: str, *signatures: str | None) -> str:
    """The HTML with the signatures (escaped) in a "signature" block before `</body>`."""
    sigs = [sig.strip("\n") for sig in signatures if sig and sig.strip()]
    if not sigs:
        return html
    block = (
        '<div class="signature">-- <br>'
        + "<br><br>".join(
            "<br>".join(html_lib.escape(line) for line in sig.splitlines()) for sig in sigs
        )
        + "</div>"
    )
    at = html.lower().rfind("</body>")
    return html[:at] + block + html[at:] if at >= 0 else html + block


def compose(
    *,
    sender: Address,
    to: Sequence[Address],
    cc: Sequence[Address] = (),
    subject: str,
    msgid: str,
    text: str,
    html: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    attachments: Sequence[Upload] = (),
    forwarded: bytes | None = None,
    note: bool = False,
    automatic: bool = False,
    date: datetime | None = None,
) -> bytes:
    """The RFC 5322 bytes (CRLF), every header encoded by the email package."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    if to:
        msg["To"] = tuple(to)
    if cc:
        msg["Cc"] = tuple(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = f"<{msgid}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    refs = list(dict.fromkeys(r for r in references if r))
    if len(refs) > _MAX_REFERENCES:  # the first (the thread's root) and the most recent
        refs = refs[:1] + refs[-(_MAX_REFERENCES - 1) :]
    if refs:
        msg["References"] = " ".join(f"<{r}>" for r in refs)
    if note:
        msg[NOTE_HEADER] = "1"
    if automatic:
        msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    for upload in attachments:
        ctype = upload.content_type or mimetypes.guess_type(upload.filename)[0] or ""
        maintype, _, subtype = ctype.partition("/")
        if not maintype or not subtype or maintype == "multipart":
            maintype, subtype = "application", "octet-stream"
        if maintype == "text":
            msg.add_attachment(
                upload.data.decode("utf-8", "replace"), subtype=subtype, filename=upload.filename
            )
        else:
            msg.add_attachment(
                upload.data, maintype=maintype, subtype=subtype, filename=upload.filename
            )
    if forwarded is not None:
        original = email.message_from_bytes(forwarded, policy=email.policy.default)
        msg.add_attachment(original, disposition="inline")
    return msg.as_bytes(policy=email.policy.SMTP)
