"""Taking fetched mail into the database: one message per Message-ID, a location per copy.

Idempotent: replaying a batch (a worker killed before its commit) adds nothing twice, because a
location (folder, UID) and a Message-ID are each stored once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, text
from sqlmodel import Session, col, select

from core.attachments import store_blob
from core.models import (
    Attachment,
    Direction,
    Folder,
    FolderRole,
    Mailbox,
    Message,
    MessageLocation,
    RawMessage,
    as_utc,
    utcnow,
)
from core.parsing import ParsedAttachment, ParsedMessage, parse_message
from core.settings import Settings
from core.threading import thread_message

log = logging.getLogger(__name__)

# One writer at a time per process: SQLite has a single write lock anyway, and threading
# decisions (which conversation a message joins) must see each other's results.
INGEST_LOCK = threading.Lock()
_PG_INGEST_LOCK_KEY = 0x1A3D_0001


@dataclass
class FetchedMessage:
    uid: int
    raw: bytes
    flags: tuple[str, ...] = ()
    modseq: int | None = None
    internal_date: datetime | None = None
    size: int = 0
    truncated: bool = False  # only the header was fetched: the message is over the size limit


@dataclass
class IngestResult:
    new_messages: int = 0
    new_locations: int = 0
    already_known: int = 0
    conversation_ids: set[int] = field(default_factory=set)


def content_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def message_key(parsed: ParsedMessage, digest: str) -> str:
    """The identity of a message: its Message-ID, else a hash of its bytes."""
    return parsed.message_id or f"sha256-{digest}@imapdesk.invalid"


def lock_for_ingest(session: Session) -> None:
    """Serialise ingest transactions across worker processes on PostgreSQL."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_INGEST_LOCK_KEY})


def ingest_batch(
    session: Session,
    *,
    settings: Settings,
    mailbox: Mailbox,
    folder: Folder,
    fetched: Sequence[FetchedMessage],
    parsed: Sequence[ParsedMessage] | None = None,
    our_addresses: frozenset[str] = frozenset(),
) -> IngestResult:
    """Store a batch from one folder. The caller commits (with the folder checkpoint)."""
    assert folder.id is not None and mailbox.id is not None
    result = IngestResult()
    if not fetched:
        return result
    known_uids = set(
        session.exec(
            select(MessageLocation.uid).where(
                MessageLocation.folder_id == folder.id,
                col(MessageLocation.uid).in_([f.uid for f in fetched]),
            )
        ).all()
    )
    if parsed is None:
        parsed = [parse_message(f.raw) for f in fetched]
    digests = [content_hash(f.raw) for f in fetched]
    keys = [message_key(p, d) for p, d in zip(parsed, digests, strict=True)]
    existing: dict[str, int] = {
        mid: pk
        for mid, pk in session.exec(
            select(Message.message_id, Message.id).where(col(Message.message_id).in_(set(keys)))
        ).all()
        if pk is not None
    }
    # new messages are inserted together (one batched INSERT ... RETURNING that gives ORM
    # objects without the cost of constructing models), then threaded in arrival order
    new_rows: dict[str, dict[str, Any]] = {}
    new_parts: dict[str, tuple[FetchedMessage, ParsedMessage]] = {}
    placements: list[tuple[FetchedMessage, str, str]] = []
    for item, p, digest, key in zip(fetched, parsed, digests, keys, strict=True):
        if item.uid in known_uids:
            result.already_known += 1
            continue
        known_uids.add(item.uid)
        placements.append((item, digest, key))
        if key in existing or key in new_rows:
            result.already_known += 1
            continue
        new_rows[key] = _message_row(settings, folder, item, p, digest, key, our_addresses)
        new_parts[key] = (item, p)
    messages: list[Message] = []
    if new_rows:
        # a plain executemany, then one SELECT for the ORM objects: RETURNING of ORM entities
        # over many rows costs more than both together
        session.execute(insert(Message.__table__), list(new_rows.values()))  # type: ignore[attr-defined]
        loaded = {
            m.message_id: m
            for m in session.scalars(
                select(Message).where(col(Message.message_id).in_(list(new_rows)))
            )
        }
        messages = [loaded[key] for key in new_rows]
    raw_rows: list[dict[str, Any]] = []
    attachment_rows: list[dict[str, Any]] = []
    for message in messages:
        assert message.id is not None
        existing[message.message_id] = message.id
        item, p = new_parts[message.message_id]
        raw_rows.append({"message_id": message.id, "data": item.raw})
        attachment_rows.extend(_attachment_row(settings, message.id, a) for a in p.attachments)
    if raw_rows:
        session.execute(insert(RawMessage), raw_rows)
    if attachment_rows:
        session.execute(insert(Attachment), attachment_rows)
    if placements:
        session.execute(
            insert(MessageLocation),
            [
                {
                    "message_id": existing[key],
                    "folder_id": folder.id,
                    "uid": item.uid,
                    "flags": list(item.flags),
                    "modseq": item.modseq,
                    "content_hash": digest,
                    "internal_date": as_utc(item.internal_date),
                }
                for item, digest, key in placements
            ],
        )
    result.new_locations = len(placements)
    for message in messages:
        thread_message(session, message, mailbox.id, settings=settings, our_addresses=our_addresses)
        if message.conversation_id is not None:
            result.conversation_ids.add(message.conversation_id)
    result.new_messages = len(messages)
    session.flush()
    return result


def _message_row(
    settings: Settings,
    folder: Folder,
    item: FetchedMessage,
    p: ParsedMessage,
    digest: str,
    key: str,
    our_addresses: frozenset[str],
) -> dict[str, Any]:
    outbound = folder.role == FolderRole.sent or (
        p.from_email is not None and p.from_email in our_addresses
    )
    parse_error = p.parse_error
    if item.truncated:
        note = (
            f"only the header was stored: the message has {item.size} bytes, over "
            f"IMAPDESK_MAX_MESSAGE_BYTES ({settings.max_message_bytes}); it stays on the server"
        )
        parse_error = f"{note}; {parse_error}" if parse_error else note
    return {
        "message_id": key,
        "has_message_id": p.message_id is not None,
        "content_hash": digest,
        "conversation_id": None,
        "thread_rule": "new",
        "direction": Direction.outbound if outbound else Direction.inbound,
        "subject": p.subject,
        "from_email": p.from_email,
        "from_name": p.from_name,
        "to": p.to,
        "cc": p.cc,
        "reply_to": p.reply_to,
        "date": as_utc(p.date) or as_utc(item.internal_date),
        "in_reply_to": p.in_reply_to,
        "references": p.references,
        "headers": p.headers,
        "text": p.text,
        "html": p.html,
        "snippet": p.snippet[:300],
        "size": item.size or len(item.raw),
        "parse_error": parse_error,
        "auto_submitted": p.auto_submitted,
        "seen": "\\Seen" in item.flags,
        "created_at": utcnow(),
    }


def _attachment_row(settings: Settings, message_pk: int, att: ParsedAttachment) -> dict[str, Any]:
    return {
        "message_id": message_pk,
        "filename": att.filename[:500],
        "content_type": att.content_type[:200],
        "size": len(att.data),
        "sha256": store_blob(settings.attachments_dir, att.data),
        "content_id": att.content_id[:500] if att.content_id else None,
        "inline": att.inline,
    }
