"""Test mailboxes as a colleague on a plain IMAP client sees them: what is where, with which
flags, and what a colleague puts there."""

from __future__ import annotations

import email
import email.policy
import email.utils
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid

from imapclient import IMAPClient

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.mail.parsing import normalize_msgid

# Message-ID -> every (folder, UID, flags) it has on the server
Found = dict[str, list[tuple[str, int, frozenset[str]]]]


def imap_client(account: MailAccount, *, ssl: bool = False, starttls: bool = False) -> IMAPClient:
    """A second, independent logged-in client: the colleague on Thunderbird."""
    return account.connect(ssl=ssl, starttls=starttls)


def snapshot_mailbox(client: IMAPClient) -> dict[str, dict[bytes, tuple[bytes, ...]]]:
    """Every folder's messages, keyed by Message-ID header and flags (to prove nothing changed)."""
    result: dict[str, dict[bytes, tuple[bytes, ...]]] = {}
    for _flags, _delim, name in client.list_folders():
        client.select_folder(name, readonly=True)
        uids = client.search("ALL")
        data = (
            client.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
        )
        per: dict[bytes, tuple[bytes, ...]] = {}
        for uid, item in data.items():
            key = _message_id_item(item).strip() or str(uid).encode()
            flags = tuple(sorted(f for f in item[b"FLAGS"] if f != b"\\Recent"))
            per[key + b"#" + str(uid).encode()] = flags
        result[name] = per
    return result


def _message_id_item(data: dict[bytes, object]) -> bytes:
    """The fetched Message-ID header, under whatever name the server gives the item: Courier
    quotes the field name (`BODY[HEADER.FIELDS ("MESSAGE-ID")]`)."""
    for key, value in data.items():
        if key.upper().startswith(b"BODY[HEADER.FIELDS") and isinstance(value, bytes):
            return value
    return b""


def where_on_server(client: IMAPClient) -> Found:
    """Message-ID -> every (folder, UID, flags) it has on the server, as a colleague sees it."""
    out: Found = {}
    for _flags, _delim, name in client.list_folders():
        client.select_folder(name, readonly=True)
        uids = client.search("ALL")
        if not uids:
            continue
        for uid, data in client.fetch(
            uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
        ).items():
            header = _message_id_item(data).decode().split(":", 1)[-1]
            msgid = normalize_msgid(header) or f"uid-{uid}"
            flags = frozenset(
                f.decode() if isinstance(f, bytes) else str(f)
                for f in data[b"FLAGS"]
                if f != b"\\Recent"
            )
            out.setdefault(msgid, []).append((name, uid, flags))
    return out


@dataclass
class Stored:
    uid: int
    flags: tuple[str, ...]
    message: EmailMessage
    raw: bytes


def folder_messages(account: MailAccount, folder: str = "INBOX") -> list[Stored]:
    """What arrived in `folder`, with headers and flags, in UID order."""
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
