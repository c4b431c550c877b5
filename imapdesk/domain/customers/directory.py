"""Customer rows kept in step with the conversations: one per address a conversation is with.

The conversation decides who its customer is (`aggregates.message_customer`: the sender of its
first inbound message, else the first recipient not ours of its first outbound one); this
module makes sure a `customer` row exists for every such address, with the latest name the
conversations give it and the organisation its domain names. The ingest calls `keep_in_step`
for the conversations of each batch (so `imapdesk rebuild`, which reads the mailboxes again,
brings them back too); migration 0015 filled the table from the conversations there were
(`backfill`). Rows are never deleted here: a customer's note is written by agents and lives
only in the database, so it outlasts a rebuild.

Written with Core statements on the tables as this module knows them (not the models: the
migration runs this code too), and as `INSERT ... ON CONFLICT DO NOTHING`, so that the ingest
and an agent saving a note for a new address at the same moment both succeed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Integer, String, Text, column, select, table, update
from sqlalchemy.dialects import postgresql, sqlite

from imapdesk.domain.customers.organisations import organisation_of

# how many addresses or ids one statement names
_CHUNK = 500
EMAIL_MAX = 320
NAME_MAX = 300
SEARCH_KEY_MAX = 700

_CUSTOMER = table(
    "customer",
    column("id", Integer),
    column("email", String),
    column("name", String),
    column("organisation", String),
    column("search_key", String),
    column("note", Text),
    column("note_version", Integer),
    column("created_at", DateTime(timezone=True)),
    column("updated_at", DateTime(timezone=True)),
)
_CONVERSATION = table(
    "conversation",
    column("id", Integer),
    column("customer_email", String),
    column("customer_name", String),
    column("last_message_at", DateTime(timezone=True)),
    column("merged_into_id", Integer),
)


def search_key(name: str | None, email: str) -> str:
    """What the customer search looks in: the name casefolded (any script) and the address."""
    return " ".join(part for part in ((name or "").casefold(), email.casefold()) if part)[
        :SEARCH_KEY_MAX
    ]


def customer_values(email: str, name: str | None, now: datetime) -> dict[str, Any]:
    """A new customer row for an address (lower case) and the name it was given."""
    name = (name or "").strip()[:NAME_MAX] or None
    return {
        "email": email,
        "name": name,
        "organisation": organisation_of(email),
        "search_key": search_key(name, email),
        "note": "",
        "note_version": 0,
        "created_at": now,
        "updated_at": now,
    }


def _usable(email: str | None) -> str | None:
    email = (email or "").strip().lower()
    return email if email and len(email) <= EMAIL_MAX and "\x00" not in email else None


def keep_in_step(connection: Connection, conversation_ids: Iterable[int]) -> int:
    """The customers of these conversations exist, each with the latest name they gave.
    Returns how many rows were added. Two reads for a batch whatever its size (per _CHUNK),
    the conversations' addresses and the rows they have (one join would do, but PostgreSQL
    hashes the whole customer table for it), and an insert when some are new."""
    ids = sorted({i for i in conversation_ids if i is not None})
    people: dict[str, str | None] = {}
    for start in range(0, len(ids), _CHUNK):
        rows = connection.execute(
            select(_CONVERSATION.c.customer_email, _CONVERSATION.c.customer_name)
            .where(
                _CONVERSATION.c.id.in_(ids[start : start + _CHUNK]),
                _CONVERSATION.c.customer_email.is_not(None),
            )
            .order_by(_CONVERSATION.c.last_message_at.asc().nulls_first(), _CONVERSATION.c.id)
        )
        for email, name in rows:
            _remember(people, email, name)
    return save_people(connection, people)


def _remember(people: dict[str, str | None], email: str | None, name: str | None) -> None:
    """A later name wins; an address seen without a name keeps the one it had."""
    usable = _usable(email)
    if usable is None:
        return
    name = (name or "").strip() or None
    if name is not None or usable not in people:
        people[usable] = name


def save_people(connection: Connection, people: Mapping[str, str | None]) -> int:
    """Customer rows for these addresses (lower case) with these names: added when new, the
    name changed when a new one is given; an address given without a name keeps its name."""
    if not people:
        return 0
    emails = sorted(people)
    known: dict[str, str | None] = {}
    for start in range(0, len(emails), _CHUNK):
        rows = connection.execute(
            select(_CUSTOMER.c.email, _CUSTOMER.c.name).where(
                _CUSTOMER.c.email.in_(emails[start : start + _CHUNK])
            )
        )
        for email, name in rows:
            known[email] = name
    return _save(connection, people, known)


def _save(
    connection: Connection, people: Mapping[str, str | None], known: Mapping[str, str | None]
) -> int:
    """`known`: the names of those of `people` that have a row."""
    now = datetime.now(UTC)
    new = [
        customer_values(email, name, now) for email, name in people.items() if email not in known
    ]
    for start in range(0, len(new), _CHUNK):
        connection.execute(_insert_new(connection), new[start : start + _CHUNK])
    for email, name in people.items():
        name = (name or "").strip()[:NAME_MAX] or None
        if email in known and name is not None and known[email] != name:
            connection.execute(
                update(_CUSTOMER)
                .where(_CUSTOMER.c.email == email)
                .values(name=name, search_key=search_key(name, email), updated_at=now)
            )
    return len(new)


def _insert_new(connection: Connection) -> Any:
    """INSERT that leaves an address someone else added meanwhile as it is."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(_CUSTOMER).on_conflict_do_nothing(index_elements=["email"])
    if dialect == "sqlite":
        return sqlite.insert(_CUSTOMER).on_conflict_do_nothing(index_elements=["email"])
    raise NotImplementedError(f"no customer upsert for {dialect}")


def backfill(connection: Connection) -> int:
    """A customer for every address the conversations are with (migration 0015; after a
    restore of conversations without their customers). Returns how many rows were added."""
    people: dict[str, str | None] = {}
    rows = connection.execute(
        select(_CONVERSATION.c.customer_email, _CONVERSATION.c.customer_name)
        .where(
            _CONVERSATION.c.customer_email.is_not(None),
            _CONVERSATION.c.merged_into_id.is_(None),
        )
        .order_by(_CONVERSATION.c.last_message_at.asc().nulls_first(), _CONVERSATION.c.id)
    )
    for email, name in rows:
        _remember(people, email, name)
    return save_people(connection, people)
