"""Reading test mailboxes: what arrived where, with which headers and flags."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid

from imapdesk.devtools.mailserver import MailAccount


@dataclass
class Stored:
    uid: int
    flags: tuple[str, ...]
    message: EmailMessage
    raw: bytes


def folder_messages(account: MailAccount, folder: str = "INBOX") -> list[Stored]:
    client = account.connect()
    try:
        if not client.folder_exists(folder):
            return []
        client.select_folder(folder, readonly=True)
        uids = client.search("ALL")
        out = []
        for uid, item in sorted(client.fetch(uids, ["FLAGS", "BODY.PEEK[]"]).items()):
            raw = item[b"BODY[]"]
            flags = tuple(f.decode() if isinstance(f, bytes) else str(f) for f in item[b"FLAGS"])
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            out.append(Stored(uid, flags, msg, raw))
        return out
    finally:
        client.logout()


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


def colleague_append(
    account: MailAccount,
    folder: str,
    subject: str,
    body: str,
    *,
    in_reply_to: str,
    to: str | None = None,
    references: list[str] | None = None,
) -> str:
    """A message a colleague writes in their mail client and puts into `folder` (\\Seen), as
    Bob; its Message-ID without angle brackets."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"Bob <{account.user}>"
    if to:
        msg["To"] = to
    msg["Subject"] = subject
    msgid = make_msgid(domain="example.test")
    msg["Message-ID"] = msgid
    msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    msg["Date"] = email.utils.formatdate()
    msg.set_content(body)
    client = account.connect()
    client.append(folder, msg.as_bytes(), flags=[b"\\Seen"])
    client.logout()
    return msgid.strip("<>")
