"""Rows for the tests, written through the ORM (the session's caller commits)."""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session

from imapdesk.kernel.models import (
    Attachment,
    Conversation,
    ConversationTag,
    Folder,
    FolderRole,
    Mailbox,
    Message,
    MessageLocation,
    RawMessage,
)

BASE_TIME = datetime(2024, 5, 1, 9, 0, 0, tzinfo=UTC)
MAILBOX_PASSWORD_CIPHERTEXT = "gAAAAA-ciphertext-of-the-imap-password"
SMTP_PASSWORD_CIPHERTEXT = "gAAAAA-ciphertext-of-the-smtp-password"
_seq = itertools.count(1)


def _now() -> datetime:
    return datetime.now(UTC)


def mailbox(session: Session, name: str = "support", **kw: Any) -> Mailbox:
    box = Mailbox(
        name=name,
        address=f"{name}@example.com",
        imap_host="imap.example.com",
        username=f"{name}@example.com",
        password_encrypted=MAILBOX_PASSWORD_CIPHERTEXT,
        smtp_password_encrypted=SMTP_PASSWORD_CIPHERTEXT,
        created_at=_now(),
        **kw,
    )
    session.add(box)
    session.flush()
    return box


def folder(session: Session, box: Mailbox, name: str = "INBOX", **kw: Any) -> Folder:
    assert box.id is not None
    kw.setdefault("role", FolderRole.inbox if name == "INBOX" else FolderRole.other)
    row = Folder(mailbox_id=box.id, name=name, **kw)
    session.add(row)
    session.flush()
    return row


def conversation(
    session: Session,
    box: Mailbox,
    subject: str = "Help",
    *,
    minutes: int | None = 0,
    tags: tuple[str, ...] = (),
    **kw: Any,
) -> Conversation:
    """A conversation whose last message is `minutes` after BASE_TIME (None: no date)."""
    assert box.id is not None
    row = Conversation(
        mailbox_id=box.id,
        subject=subject,
        last_message_at=None if minutes is None else BASE_TIME + timedelta(minutes=minutes),
        created_at=_now(),
        updated_at=_now(),
        **kw,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    for tag in tags:
        session.add(ConversationTag(conversation_id=row.id, tag=tag))
    session.flush()
    return row


def message(
    session: Session,
    conv: Conversation,
    *,
    raw: bytes | None = None,
    minutes: int = 0,
    **kw: Any,
) -> Message:
    n = next(_seq)
    data = raw or f"Message-ID: <m{n}@example.com>\r\nSubject: test\r\n\r\nbody {n}\r\n".encode()
    kw.setdefault("message_id", f"m{n}@example.com")
    kw.setdefault("subject", conv.subject)
    kw.setdefault("date", BASE_TIME + timedelta(minutes=minutes))
    row = Message(
        conversation_id=conv.id,
        content_hash=hashlib.sha256(data).hexdigest(),
        size=len(data),
        created_at=_now(),
        **kw,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    session.add(RawMessage(message_id=row.id, data=data))
    session.flush()
    return row


def location(
    session: Session, msg: Message, box_folder: Folder, uid: int, flags: list[str] | None = None
) -> MessageLocation:
    assert msg.id is not None and box_folder.id is not None
    row = MessageLocation(
        message_id=msg.id,
        folder_id=box_folder.id,
        uid=uid,
        flags=flags or [],
        content_hash=msg.content_hash,
    )
    session.add(row)
    session.flush()
    return row


def attachment(
    session: Session,
    msg: Message,
    data_dir: Path,
    content: bytes,
    filename: str = "report.pdf",
    content_type: str = "application/pdf",
    **kw: Any,
) -> Attachment:
    """An attachment row and its file in the content-addressed store."""
    assert msg.id is not None
    sha = hashlib.sha256(content).hexdigest()
    path = data_dir / "attachments" / sha[:2] / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    row = Attachment(
        message_id=msg.id,
        filename=filename,
        content_type=content_type,
        size=len(content),
        sha256=sha,
        **kw,
    )
    session.add(row)
    session.flush()
    return row
