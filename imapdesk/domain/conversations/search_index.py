"""The search index: one document per conversation, kept in step with its messages.

One document per conversation, not per message, so that a word in most of the mail is one
index entry per conversation, and a search reads as many entries as there are conversations to
show, never every matching message. A document holds the terms
(`imapdesk.domain.conversations.search_text`) of the conversation's subject and customer and of
all its messages, notes included, in four fields: subject, sender (names and addresses),
recipient (To and Cc) and body (of a very long conversation, a bounded part of the text:
`read_documents`).

- SQLite: the FTS5 table `conversation_search` (rowid = conversation id; one column per field)
  holds the terms separated by spaces and splits them with FTS5's `ascii` tokenizer, which
  keeps every non-ASCII character in its term: the index's terms are exactly ours.
- PostgreSQL: the table `conversation_search` holds a `tsvector` written term by term (a
  field's terms once more with its mark, `PG_FIELD_MARKS`), GIN-indexed. Nothing of the
  database's text search parser or locale is used, so both databases find the same.

Kept in step by the code that changes what a conversation holds: `mark_stale` by the
aggregates (a message joining a conversation on ingest, reply or note; a merge, a split), and
a session listener for rows written through the ORM (new conversations; messages new, deleted
or changed; bulk UPDATE or DELETE of messages). Before the session commits, the documents of
the conversations marked are read again from their rows and written (`refresh`), in the same
transaction: a search never sees a message without its terms (on PostgreSQL the conversation
rows are locked first, so two writers of one conversation take turns). Deleting a
conversation deletes its document (a foreign key on PostgreSQL, a trigger on SQLite).
`rebuild_all` writes every document (migration 0014; benchmarks that seed rows directly).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    Text,
    bindparam,
    case,
    column,
    event,
    func,
    or_,
    select,
    table,
    text,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import ORMExecuteState, Session, object_session

from imapdesk.domain.conversations.search_text import index_terms
from imapdesk.kernel.models import Conversation, Message

INDEX_TABLE = "conversation_search"
INDEX_GIN = "ix_conversation_search_terms"
FIELDS = ("subject", "sender", "recipient", "body")
# PostgreSQL: a field's terms are also held with its mark ("f:alice"), at the same positions,
# for a query in that field (weights would do, but GIN cannot tell them: every match would be
# read again from the table to check its weight)
PG_FIELD_MARKS = {"subject": "s:", "sender": "f:", "recipient": "t:"}
# what of a message's text is indexed, and of a conversation's messages all together
MESSAGE_TEXT_LIMIT = 50_000
DOCUMENT_TEXT_LIMIT = 300_000
TEXT_MESSAGES = 100
_CHUNK = 500
_STALE = "imapdesk.search_stale"

# the tables as this module reads them (not the models: migration 0014 runs this code too)
_MESSAGE = table(
    "message",
    column("id", Integer),
    column("conversation_id", Integer),
    column("subject", Text),
    column("from_name", Text),
    column("from_email", Text),
    column("to", JSON),
    column("cc", JSON),
    column("text", Text),
)
_CONVERSATION = table(
    "conversation",
    column("id", Integer),
    column("merged_into_id", Integer),
    column("subject", Text),
    column("customer_name", Text),
    column("customer_email", Text),
)
_SEARCHED = (_MESSAGE.c.subject, _MESSAGE.c.from_name, _MESSAGE.c.from_email)


# --- documents ---------------------------------------------------------------------------------


@dataclass
class Document:
    """A conversation's terms by field, message by message (PostgreSQL's positions start
    again with each message)."""

    messages: list[dict[str, list[str]]] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, subject: str, senders: list[str], recipients: list[str], body: str) -> None:
        """One message's fields (its text as much of it as is to be indexed)."""
        terms: dict[str, list[str]] = {}
        # a thread repeats its subject and people: each is indexed once
        for name, values in (
            ("subject", [subject]),
            ("sender", senders),
            ("recipient", recipients),
        ):
            found: list[str] = []
            for value in values:
                if value and (name, value) not in self._seen:
                    self._seen.add((name, value))
                    found.extend(index_terms(value))
            terms[name] = found
        terms["body"] = index_terms(body) if body else []
        self.messages.append(terms)

    def column(self, name: str) -> str:
        """One field's terms for SQLite's FTS5 table, separated by spaces."""
        return " ".join([" ".join(m[name]) for m in self.messages if m[name]])


# PostgreSQL keeps positions 1 to 16,383, and 256 of them for a term: each field has a range
# of its own (a phrase never spans two), starting again with each message, and a field longer
# than its range goes round it (phrases stay found but at the turn)
_PG_RANGES = {"subject": (1, 400), "sender": (401, 400), "recipient": (801, 1200)}
_PG_RANGES["body"] = (2001, 16_383 - 2000)
_PG_MAX_POSITIONS = 256
# a tsvector holds at most 1 MB: stop adding terms well before
_PG_BYTES = 800_000


def pg_tsvector(document: Document) -> str:
    """The document as a tsvector literal."""
    positions: dict[str, list[int]] = {}

    def put(term: str, position: int) -> None:
        spots = positions.get(term)
        if spots is None:
            positions[term] = [position]
        elif len(spots) < _PG_MAX_POSITIONS:
            spots.append(position)

    for message in document.messages:
        for name in FIELDS:
            base, span = _PG_RANGES[name]
            mark = PG_FIELD_MARKS.get(name)
            for i, term in enumerate(message[name]):
                put(term, base + i % span)
                if mark:
                    put(mark + term, base + i % span)
    out: list[str] = []
    size = 0
    # terms are letters, marks and digits (search_text), and field marks: quoting them needs
    # no escapes
    for term, spots in positions.items():
        if len(spots) == 1:
            size += len(term) * 4 + 10
            out.append(f"'{term}':{spots[0]}")
        else:
            unique = sorted(set(spots))
            size += len(term) * 4 + 8 + 2 * len(unique)
            out.append(f"'{term}':" + ",".join(map(str, unique)))
        if size > _PG_BYTES:
            break
    return " ".join(out)


def _people(addresses: Any) -> list[str]:
    out: list[str] = []
    for address in addresses or []:
        if isinstance(address, dict):
            out.extend(str(address.get(k) or "") for k in ("name", "email"))
    return out


def read_documents(connection: Connection, conversation_ids: Sequence[int]) -> dict[int, Document]:
    """The documents of these conversations (none for a merged or missing one): the
    conversation's own subject and customer (found by plain words), then its messages.

    Of a conversation's text, DOCUMENT_TEXT_LIMIT characters are shared out among its
    messages (each at most MESSAGE_TEXT_LIMIT), and only the first and last TEXT_MESSAGES of
    its messages are read for it: a thread that grows without end (a daily report under one
    subject) costs a bounded read each time it grows, and stays found by its subjects and
    people."""
    c = _CONVERSATION.c
    live = select(c.id, c.subject, c.customer_name, c.customer_email).where(
        c.id.in_(conversation_ids), c.merged_into_id.is_(None)
    )
    if connection.dialect.name == "postgresql":
        # writers of one conversation take turns here: the second reads the first's messages
        live = live.order_by(c.id).with_for_update()
    documents: dict[int, Document] = {}
    for row in connection.execute(live):
        document = documents[row.id] = Document()
        customer = " ".join(v for v in (row.customer_name, row.customer_email) if v)
        document.add(row.subject or "", [], [], customer)
    if not documents:
        return documents
    m = _MESSAGE.c
    ranks = (
        select(
            m.id,
            func.row_number().over(partition_by=m.conversation_id, order_by=m.id).label("first"),
            func.row_number()
            .over(partition_by=m.conversation_id, order_by=m.id.desc())
            .label("last"),
        )
        .where(m.conversation_id.in_(list(documents)))
        .subquery()
    )
    read_text = or_(ranks.c.first <= TEXT_MESSAGES, ranks.c.last <= TEXT_MESSAGES)
    rows = connection.execute(
        select(
            m.conversation_id,
            *_SEARCHED,
            m.to,
            m.cc,
            case((read_text, func.substr(m.text, 1, MESSAGE_TEXT_LIMIT)), else_="").label("text"),
        )
        .join(ranks, ranks.c.id == m.id)
        .order_by(m.conversation_id, m.id)
    ).all()
    texts: dict[int, int] = {}
    for message in rows:
        if message.text:
            texts[message.conversation_id] = texts.get(message.conversation_id, 0) + 1
    for message in rows:
        share = DOCUMENT_TEXT_LIMIT // texts.get(message.conversation_id, 1)
        documents[message.conversation_id].add(
            message.subject or "",
            [message.from_name or "", message.from_email or ""],
            _people(message.to) + _people(message.cc),
            (message.text or "")[:share],
        )
    return documents


def refresh(
    connection: Connection, conversation_ids: Iterable[int], *, fresh: bool = False
) -> None:
    """Write the documents of these conversations again from their messages. `fresh`: the
    index holds none of them yet (a backfill), so nothing is deleted first."""
    ids = sorted(set(conversation_ids))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        documents = read_documents(connection, chunk)
        if connection.dialect.name == "postgresql":
            _write_pg(connection, chunk, documents, fresh)
        else:
            _write_sqlite(connection, chunk, documents, fresh)


def _write_sqlite(
    connection: Connection, ids: list[int], documents: dict[int, Document], fresh: bool
) -> None:
    if not fresh:
        connection.execute(
            text(f"DELETE FROM {INDEX_TABLE} WHERE rowid IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        )
    rows = [
        {"id": cid, **{name: doc.column(name) for name in FIELDS}} for cid, doc in documents.items()
    ]
    if rows:
        connection.execute(
            text(
                f"INSERT INTO {INDEX_TABLE} (rowid, {', '.join(FIELDS)}) "
                f"VALUES (:id, {', '.join(':' + f for f in FIELDS)})"
            ),
            rows,
        )


def _write_pg(
    connection: Connection, ids: list[int], documents: dict[int, Document], fresh: bool
) -> None:
    rows = [{"id": cid, "terms": pg_tsvector(doc)} for cid, doc in documents.items()]
    written = {r["id"] for r in rows}
    gone = [cid for cid in ids if cid not in written]
    if gone and not fresh:
        connection.execute(
            text(f"DELETE FROM {INDEX_TABLE} WHERE conversation_id IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
            {"ids": gone},
        )
    if rows:
        connection.execute(
            text(
                f"INSERT INTO {INDEX_TABLE} (conversation_id, terms) "
                "VALUES (:id, CAST(:terms AS tsvector)) "
                "ON CONFLICT (conversation_id) DO UPDATE SET terms = EXCLUDED.terms"
            ),
            rows,
        )


def rebuild_all(connection: Connection) -> int:
    """Write the document of every conversation anew; returns how many conversations."""
    connection.execute(text(f"DELETE FROM {INDEX_TABLE}"))
    ids = list(
        connection.execute(
            select(_CONVERSATION.c.id)
            .where(_CONVERSATION.c.merged_into_id.is_(None))
            .order_by(_CONVERSATION.c.id)
        ).scalars()
    )
    refresh(connection, ids, fresh=True)
    return len(ids)


# --- keeping it in step --------------------------------------------------------------------------


def mark_stale(session: Session, *conversation_ids: int | None) -> None:
    """These conversations' messages changed: their documents are written before the commit."""
    stale: set[int] = session.info.setdefault(_STALE, set())
    stale.update(cid for cid in conversation_ids if cid is not None)


# what a document is made of: of a message, and of the conversation's own row
_INDEXED = ("conversation_id", "subject", "from_name", "from_email", "to", "cc", "text")
_INDEXED_CONVERSATION = ("subject", "customer_name", "customer_email", "merged_into_id")


# Messages and conversations written through the ORM (mapper events: only the rows a flush
# writes, whatever else the session holds)


@event.listens_for(Message, "after_insert")
@event.listens_for(Message, "after_delete")
def _message_written(_mapper: Any, _connection: Connection, message: Message) -> None:
    session = object_session(message)
    if session is not None:
        mark_stale(session, message.conversation_id)


@event.listens_for(Message, "after_update")
def _message_changed(_mapper: Any, _connection: Connection, message: Message) -> None:
    session = object_session(message)
    if session is None:
        return
    state = sa_inspect(message)
    for name in _INDEXED:
        # as the flush saw it: an attribute never loaded has no change (and is not loaded)
        history = state.attrs[name].history
        if history.has_changes():
            mark_stale(session, message.conversation_id)
            if name == "conversation_id":
                mark_stale(session, *history.deleted)


@event.listens_for(Conversation, "after_insert")
def _conversation_added(_mapper: Any, _connection: Connection, conversation: Conversation) -> None:
    session = object_session(conversation)
    if session is not None:
        mark_stale(session, conversation.id)


@event.listens_for(Conversation, "after_update")
def _conversation_changed(
    _mapper: Any, _connection: Connection, conversation: Conversation
) -> None:
    session = object_session(conversation)
    state = sa_inspect(conversation)
    if session is not None and any(
        state.attrs[name].history.has_changes() for name in _INDEXED_CONVERSATION
    ):
        mark_stale(session, conversation.id)


@event.listens_for(Session, "do_orm_execute")
def _bulk_message_writes(state: ORMExecuteState) -> None:
    """A bulk UPDATE or DELETE of messages: the conversations of the rows it touches (before)
    and the one it moves them to."""
    if not (state.is_update or state.is_delete):
        return
    statement: Any = state.statement
    if getattr(statement, "table", None) is None or statement.table.name != "message":
        return
    query = select(statement.table.c.conversation_id).distinct()
    if statement.whereclause is not None:
        query = query.where(statement.whereclause)
    # on the connection: no autoflush, and no second pass through this listener
    mark_stale(state.session, *state.session.connection().execute(query).scalars())
    if state.is_update:
        for key, value in (getattr(statement, "_values", None) or {}).items():
            if getattr(key, "key", key) == "conversation_id":
                target = getattr(value, "value", None)
                if isinstance(target, int):
                    mark_stale(state.session, target)


@event.listens_for(Session, "before_commit")
def _refresh_before_commit(session: Session) -> None:
    # the commit flushes anyway: first, so that messages still pending in the session are
    # marked (after_flush) and written before their documents are read
    session.flush()
    while session.info.get(_STALE):
        stale: set[int] = session.info.pop(_STALE)
        refresh(session.connection(), stale)
        session.flush()


def pending(session: Session) -> frozenset[int]:
    """The conversations whose documents wait for the commit (for tests and diagnostics)."""
    return frozenset(session.info.get(_STALE, ()))


__all__ = [
    "FIELDS",
    "INDEX_TABLE",
    "Document",
    "mark_stale",
    "pending",
    "read_documents",
    "rebuild_all",
    "refresh",
]
