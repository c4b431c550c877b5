"""Messages to seed into test mailboxes, as raw RFC 5322 bytes."""

from __future__ import annotations

import email
import email.policy
import email.utils
from email.message import EmailMessage
from email.utils import make_msgid


def make_mail(
    i: int,
    *,
    subject: str | None = None,
    refs: str | None = None,
    sender: str = "customer@example.com",
    size: int = 0,
) -> bytes:
    """Customer i's "Question number i" (Message-ID `m<i>@example.com`), `size` bytes longer."""
    msg = EmailMessage()
    msg["From"] = f"Customer {i} <{sender}>"
    msg["To"] = "support@example.test"
    msg["Subject"] = subject or f"Question number {i}"
    msg["Message-ID"] = f"<m{i}@example.com>"
    msg["Date"] = email.utils.format_datetime(email.utils.localtime())
    if refs:
        msg["In-Reply-To"] = refs
        msg["References"] = refs
    msg.set_content(f"Hello, this is message {i}.\n" + "x" * size)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def message_with_id(
    msgid: str, *, subject: str, refs: str | None = None, sender: str = "customer@example.com"
) -> bytes:
    """A message with this Message-ID (without angle brackets), replying to the last of `refs`."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.test"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{msgid}>"
    msg["Date"] = email.utils.format_datetime(email.utils.localtime())
    if refs:
        msg["In-Reply-To"] = refs.split()[-1]
        msg["References"] = refs
    msg.set_content(f"This is {msgid}.\n")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def customer_mail(
    sender: str,
    to: str,
    subject: str,
    body: str = "Hello, my order has not arrived.",
    *,
    name: str = "Zoë Müller",
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[str, bytes]:
    """A customer's mail to `to`; its Message-ID without angle brackets, and its bytes."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"{name} <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msgid = make_msgid(domain="customer.example")
    msg["Message-ID"] = msgid
    msg["Date"] = email.utils.formatdate()
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msgid.strip("<>"), msg.as_bytes()
