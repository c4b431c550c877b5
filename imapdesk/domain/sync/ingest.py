"""Taking fetched mail into the database: one message per Message-ID, a location per copy.

Idempotent: replaying a batch (a worker killed before its commit) adds nothing twice, because a
location (folder, UID) and a Message-ID are each stored once.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, event, func, insert, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.instrumentation import manager_of_class
from sqlmodel import Session, SQLModel, col, select

from imapdesk.domain.customers.directory import keep_in_step as keep_customers_in_step
from imapdesk.domain.events import EventKind, record_event
from imapdesk.domain.threads import RULE_NEW, ThreadBatch, thread_message
from imapdesk.kernel.attachment_store import store_blob
from imapdesk.kernel.models import (
    Attachment,
    Direction,
    Folder,
    FolderRole,
    FolderState,
    Mailbox,
    Message,
    MessageLocation,
    RawMessage,
    as_utc,
    utcnow,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import FetchedMessage
from imapdesk.mail.parsing import ParsedAttachment, ParsedMessage, parse_message

log = logging.getLogger(__name__)

# what threading reads of a new message
_THREADING_COLUMNS = (
    "id",
    "message_id",
    "conversation_id",
    "thread_rule",
    "direction",
    "subject",
    "from_email",
    "from_name",
    "to",
    "date",
    "created_at",
    "in_reply_to",
    "references",
    "seen",
)

# One writer at a time per process: SQLite has a single write lock anyway, and threading
# decisions (which conversation a message joins) must see each other's results.
INGEST_LOCK = threading.Lock()
_PG_INGEST_LOCK_KEY = 0x1A3D_0001


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


# PostgreSQL compresses large values (raw bytes, bodies) with pglz unless told otherwise: lz4
# (where the server has it, PostgreSQL 14+) compresses four times as fast, and the values read
# back are the same; for this transaction only
_FAST_TOAST_COMPRESSION = text(
    "SELECT set_config('default_toast_compression', 'lz4', true) FROM pg_settings "
    "WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
)


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
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_FAST_TOAST_COMPRESSION)
    digests = [content_hash(f.raw) for f in fetched]
    keys = [message_key(p, d) for p, d in zip(parsed, digests, strict=True)]
    existing: dict[str, int] = {
        mid: pk
        for mid, pk in session.exec(
            select(Message.message_id, Message.id).where(col(Message.message_id).in_(set(keys)))
        ).all()
        if pk is not None
    }
    # new messages are threaded in arrival order, then inserted with their conversation (see
    # `_DeferredMessages`)
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
    rows = list(new_rows.values())
    for row, pk in zip(rows, _new_message_ids(session, len(rows)), strict=True):
        row["id"] = existing[row["message_id"]] = pk
    deferred = _DeferredMessages(session, rows)
    try:
        # what threading looks up message by message is read for the whole batch up front,
        # and the thread nodes are written together at the end
        batch = ThreadBatch(session, before_write=deferred.write_threaded)
        batch.prefetch(
            deferred.messages, mailbox.id, settings=settings, our_addresses=our_addresses
        )
        for message in deferred.messages:
            thread_message(
                session,
                message,
                mailbox.id,
                settings=settings,
                our_addresses=our_addresses,
                batch=batch,
            )
            if message.conversation_id is not None:
                result.conversation_ids.add(message.conversation_id)
        deferred.write_all()
        batch.flush()
        if folder.state == FolderState.poll:
            _record_arrivals(session, mailbox.id, deferred.messages)
    finally:
        deferred.close()
    raw_rows: list[dict[str, Any]] = []
    attachment_rows: list[dict[str, Any]] = []
    for row in rows:
        item, p = new_parts[row["message_id"]]
        raw_rows.append({"message_id": row["id"], "data": item.raw})
        attachment_rows.extend(_attachment_rows(settings, row["id"], p.attachments))
    # plain executemany (no ORM bulk insert: no objects come of them)
    connection = session.connection()
    if raw_rows:
        connection.execute(insert(_table(RawMessage)), raw_rows)
    if attachment_rows:
        connection.execute(insert(_table(Attachment)), attachment_rows)
    if placements:
        connection.execute(
            insert(_table(MessageLocation)),
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
    result.new_messages = len(rows)
    session.flush()
    # the people these conversations are with (imapdesk/domain/customers/directory.py)
    keep_customers_in_step(connection, result.conversation_ids)
    # replies sent from mail clients (new in a followed Sent), bounces of our replies
    live_sent = folder.role == FolderRole.sent and folder.state == FolderState.poll
    candidates = [
        row["id"]
        for row in rows
        if (live_sent and row["direction"] == Direction.outbound)
        or (row["auto_submitted"] and row["in_reply_to"])
    ]
    if candidates:
        from imapdesk.domain.outbound.delivery import after_ingest

        after_ingest(session, settings, mailbox, folder, candidates)
    return result


def _record_arrivals(session: Session, mailbox_id: int, messages: Sequence[Message]) -> None:
    """The events of mail taken in live (imapdesk/domain/events.py): never for a first sync
    or a rebuild, so that no rule acts on old mail."""
    for message in messages:
        if message.conversation_id is None:
            continue
        inbound = message.direction == Direction.inbound
        payload = {
            "direction": str(message.direction.value),
            "from": message.from_email,
            "subject": message.subject[:300],
            "auto_submitted": message.auto_submitted,
        }
        kinds = [EventKind.message_received]
        if message.thread_rule == RULE_NEW:
            kinds.insert(0, EventKind.conversation_created)
        elif inbound:
            kinds.insert(0, EventKind.customer_replied)
        for kind in kinds:
            record_event(
                session,
                kind,
                mailbox_id=mailbox_id,
                conversation_id=message.conversation_id,
                message_id=message.id,
                actor=message.from_email or ("customer" if inbound else "imap"),
                payload=payload,
            )


_NOTE_HEADER = re.compile(r"(?im)^x-imapdesk-note:[ \t]*1\b")


def is_note_header(headers: str) -> bool:
    """Whether a header block carries `X-Imapdesk-Note: 1` (an internal note of ours)."""
    return bool(headers) and _NOTE_HEADER.search(headers) is not None


def _table(model: type[SQLModel]) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


_MESSAGE = _table(Message)
_INSERT_MESSAGES = insert(_MESSAGE)
_MAX_MESSAGE_ID = select(func.max(_MESSAGE.c.id))
_NEXT_MESSAGE_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('message', 'id')) FROM generate_series(1, :n)"
)


def _new_message_ids(session: Session, count: int) -> list[int]:
    """The ids the database would give `count` messages inserted now, in order."""
    if not count:
        return []
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        return sorted(connection.execute(_NEXT_MESSAGE_IDS, {"n": count}).scalars())
    # SQLite: one more than the largest rowid (the table has no AUTOINCREMENT); the write
    # lock of the ingest's transaction keeps it ours
    top = connection.execute(_MAX_MESSAGE_ID).scalar() or 0
    return list(range(top + 1, top + 1 + count))


class _DeferredMessages:
    """The new messages of a batch, inserted once threading has put them in a conversation.

    Inserting the rows first and setting their conversation afterwards costs an UPDATE of
    every row (on SQLite the whole row is written again, bodies included). Until its row is
    inserted a message is an ORM object in the session as if loaded (its id allocated, only
    the columns threading reads); threading decides its conversation and rule, and the row
    goes in with them. A row is written before anything could need it: before any flush of
    the session (threading's own queries over messages autoflush, and they must see the
    messages threaded so far) and before thread nodes, which reference it, are written.
    Messages not threaded yet wait: nothing reads them (their conversation is still NULL).
    Messages are threaded in order: the ones threaded so far come first.
    """

    def __init__(self, session: Session, rows: list[dict[str, Any]]) -> None:
        self.session = session
        self.rows = rows
        self.messages = [_message_object(session, row) for row in rows]
        self._written = 0  # rows[:_written] are in the database
        event.listen(session, "before_flush", self._before_flush)

    def _before_flush(self, session: Session, context: Any, instances: Any) -> None:
        self.write_threaded()

    def write_threaded(self) -> None:
        end = self._written
        while end < len(self.messages) and self.messages[end].conversation_id is not None:
            end += 1
        self._write(end)

    def write_all(self) -> None:
        self._write(len(self.messages))

    def _write(self, end: int) -> None:
        start, self._written = self._written, max(self._written, end)
        for row, message in zip(self.rows[start:end], self.messages[start:end], strict=True):
            row["conversation_id"] = message.conversation_id
            row["thread_rule"] = message.thread_rule
            added_version = sa_inspect(message).dict.get("added_version")
            row["added_version"] = added_version
            # the row holds them now: nothing left for the flush to update
            set_committed_value(message, "conversation_id", message.conversation_id)
            set_committed_value(message, "thread_rule", message.thread_rule)
            set_committed_value(message, "added_version", added_version)
        if start < end:
            self.session.connection().execute(_INSERT_MESSAGES, self.rows[start:end])

    def close(self) -> None:
        event.remove(self.session, "before_flush", self._before_flush)


_NEW_MESSAGE_STATE = manager_of_class(Message)


def _message_object(session: Session, row: dict[str, Any]) -> Message:
    """A persistent Message for `row` as a query would load it, with the columns threading
    reads (the row is not inserted yet: nothing must load the others)."""
    message = cast(Message, _NEW_MESSAGE_STATE.new_instance())
    # as a query fills an object; then these count as loaded, the other columns as expired
    sa_inspect(message).dict.update({name: row[name] for name in _THREADING_COLUMNS})
    make_transient_to_detached(message)
    session.add(message)
    return message


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
    # an internal note: anything in Notes (a message put there by hand becomes one), or ours
    is_note = folder.role == FolderRole.notes or is_note_header(p.headers)
    parse_error = p.parse_error
    if item.truncated:
        note = (
            f"only the header was stored: the message has {item.size} bytes, over "
            f"IMAPDESK_MAX_MESSAGE_BYTES ({settings.max_message_bytes}); it stays on the server"
        )
        parse_error = f"{note}; {parse_error}" if parse_error else note
    in_reply_to, references = p.in_reply_to, p.references
    if p.is_bounce and not in_reply_to:
        # a delivery status notification joins the conversation of the message it reports on
        from imapdesk.mail.dsn import dsn_report

        original = dsn_report(item.raw).original_msgid
        if original:
            in_reply_to, references = original, [original]
    return {
        "message_id": key,
        "has_message_id": p.message_id is not None,
        "content_hash": digest,
        "conversation_id": None,
        "thread_rule": "new",
        "direction": (
            Direction.note if is_note else Direction.outbound if outbound else Direction.inbound
        ),
        "subject": p.subject,
        "from_email": p.from_email,
        "from_name": p.from_name,
        "to": p.to,
        "cc": p.cc,
        "reply_to": p.reply_to,
        "date": as_utc(p.date) or as_utc(item.internal_date),
        "in_reply_to": in_reply_to,
        "references": references,
        "headers": p.headers,
        "text": p.text,
        "html": p.html,
        "snippet": p.snippet[:300],
        "size": item.size or len(item.raw),
        "parse_error": parse_error,
        "auto_submitted": p.auto_submitted,
        "seen": "\\Seen" in item.flags,
        "created_at": utcnow(),
        "added_version": None,
    }


def _attachment_rows(
    settings: Settings, message_pk: int, attachments: Sequence[ParsedAttachment]
) -> list[dict[str, Any]]:
    rows = [_attachment_row(settings, message_pk, att) for att in attachments]
    for row, att in zip(rows, attachments, strict=True):
        # a file unpacked from a winmail.dat names the original by its content address
        if att.unpacked_from is not None and 0 <= att.unpacked_from < len(rows):
            row["unpacked_from"] = rows[att.unpacked_from]["sha256"]
    return rows


def _attachment_row(settings: Settings, message_pk: int, att: ParsedAttachment) -> dict[str, Any]:
    return {
        "message_id": message_pk,
        "filename": att.filename[:500],
        "content_type": att.content_type[:200],
        "size": len(att.data),
        "sha256": store_blob(settings.attachments_dir, att.data),
        "content_id": att.content_id[:500] if att.content_id else None,
        "inline": att.inline,
        "unpacked_from": None,
        "unpack_error": att.unpack_error,
    }
