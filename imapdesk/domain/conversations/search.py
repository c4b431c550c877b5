"""Full-text search over conversations: subject, people (names and addresses) and body text.

SQLite: two contentless FTS5 tables, `message_fts` (subject, people, body of each message,
rowid = message.id) and `conversation_fts` (subject and customer, rowid = conversation.id),
kept up to date by triggers. PostgreSQL: GIN indexes on `to_tsvector('simple', ...)` of the
same text, so nothing needs keeping up to date. Both are made by migration 0004.

A query is split into words (letters and digits); every word must match a whole word of the
conversation's subject or customer, or all of one of its messages; the last word, when the query
ends with it and has two characters or more, matches the start of a word (so results follow
typing). The 'simple' configuration (no stemming) suits mail in many languages, names and
addresses alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    any_,
    column,
    false,
    literal,
    literal_column,
    text,
)
from sqlmodel import Session, col

from imapdesk.kernel.models import Conversation

SEARCH_TABLES = frozenset({"message_fts", "conversation_fts"})
SEARCH_INDEXES = frozenset({"ix_message_search", "ix_conversation_search"})
_FTS5_SHADOWS = ("_data", "_idx", "_docsize", "_config", "_content")
MAX_WORDS = 8
# PostgreSQL's tsvector holds at most 1 MB: index the first 100,000 characters of a message
PG_TEXT_LIMIT = 100_000
# more matches than this and a search filters the list's index walk instead of reading them
# by key (see matching_conversations)
FEW_MATCHES = 1000
_WORD = re.compile(r"[^\W_]+")

# the text PostgreSQL indexes; the same expressions appear in migration 0004's indexes
PG_MESSAGE_DOCUMENT = (
    # '@', '.', '/' and ':' become spaces, so PostgreSQL's parser splits addresses, hosts,
    # numbers and paths into words as the query does (and as SQLite's FTS5 does)
    "to_tsvector('simple'::regconfig, translate(left("
    "coalesce(subject, '') || ' ' || coalesce(from_name, '') || ' ' || "
    "coalesce(from_email, '') || ' ' || replace(replace("
    "coalesce(\"to\"::text, '') || ' ' || coalesce(cc::text, ''), "
    "'\"name\":', ' '), '\"email\":', ' ') || ' ' || coalesce(text, ''), "
    f"{PG_TEXT_LIMIT}), '@./:', '    '))"
)
PG_CONVERSATION_DOCUMENT = (
    "to_tsvector('simple'::regconfig, translate(coalesce(subject, '') || ' ' || "
    "coalesce(customer_name, '') || ' ' || coalesce(customer_email, ''), '@./:', '    '))"
)


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """For Alembic's comparison: the search tables and indexes live outside the models."""
    if not name:
        return True
    if type_ == "table":
        return not any(name == t or name.startswith(t + "_") for t in SEARCH_TABLES)
    if type_ == "index":
        return name not in SEARCH_INDEXES
    return True


@dataclass(frozen=True)
class SearchWord:
    word: str
    # the query ends with it: the agent may still be typing, so it matches as a prefix
    prefix: bool


def search_words(query: str | None) -> list[SearchWord]:
    """The words of a query, lower-cased, at most MAX_WORDS. A single letter or digit being
    typed is no prefix yet: as one it would match nearly all mail, at the cost of reading it."""
    query = query or ""
    return [
        SearchWord(m.group().lower(), prefix=m.end() == len(query) and len(m.group()) > 1)
        for m in _WORD.finditer(query)
    ][:MAX_WORDS]


def _fts5_query(words: list[SearchWord]) -> str:
    # words are letters and digits only, so quoting them is enough
    return " ".join(f'"{w.word}"' + ("*" if w.prefix else "") for w in words)


def _pg_query(words: list[SearchWord]) -> str:
    return " & ".join(w.word + (":*" if w.prefix else "") for w in words)


_SQLITE_MATCHES = (
    "SELECT rowid AS conversation_id FROM conversation_fts "
    "WHERE conversation_fts MATCH :search_q UNION ALL "
    "SELECT m.conversation_id FROM message_fts JOIN message m ON m.id = message_fts.rowid "
    "WHERE message_fts MATCH :search_q AND m.conversation_id IS NOT NULL"
)
_PG_MATCHES = (
    f"SELECT id AS conversation_id FROM conversation WHERE {PG_CONVERSATION_DOCUMENT} "
    "@@ to_tsquery('simple'::regconfig, :search_q) UNION ALL "
    f"SELECT conversation_id FROM message WHERE {PG_MESSAGE_DOCUMENT} "
    "@@ to_tsquery('simple'::regconfig, :search_q) AND conversation_id IS NOT NULL"
)


def matching_conversations(session: Session, query: str) -> ColumnElement[bool] | None:
    """A condition on Conversation: it matches `query`. None when the query is blank (no
    filter); a condition that is always false when it has no words to look for.

    Neither database's planner knows how many conversations a word matches (PostgreSQL guesses
    the same share for any prefix), so the plan is chosen here from a bounded look at the
    matches themselves. Few (a name, an order number): the list reads just those rows by
    primary key and sorts them (a rare word in 100,000 conversations: 3 ms; PostgreSQL's own
    plan walked the whole table). Many (a word in a third of all mail): the list walks its
    ordering index, keeps the rows found in a set of the matches built once, and stops at the
    page's end (PostgreSQL 30 ms, SQLite 8 ms; reading 30,000 rows by key and sorting them took
    180 and 27 ms). One IN over a UNION, never an OR of two, so the walk stays possible."""
    if not query.strip():
        return None
    words = search_words(query)
    if not words:
        return false()
    sqlite = session.get_bind().dialect.name == "sqlite"
    matches, q = (
        (_SQLITE_MATCHES, _fts5_query(words)) if sqlite else (_PG_MATCHES, _pg_query(words))
    )
    found = session.execute(text(f"{matches} LIMIT :few"), {"search_q": q, "few": FEW_MATCHES + 1})
    rows = found.scalars().all()
    # the look saw every match only if it stopped short of its limit (counting rows: a
    # conversation's many matching messages are one id, but each was a row the limit counted)
    if len(rows) <= FEW_MATCHES:
        few = sorted(set(rows))
        if sqlite:
            return col(Conversation.id).in_(few)
        return col(Conversation.id) == any_(literal(few, ARRAY(Integer)))
    every = text(matches).bindparams(search_q=q).columns(column("conversation_id"))
    if sqlite:
        # `+ 0`: the key is no index term, so SQLite filters its walk by the set of matches
        return (col(Conversation.id) + literal_column("0")).in_(every)
    # `IS TRUE`: bare, PostgreSQL turns the IN into a join, whose output it never takes as
    # ordered; this way it stays a filter over a hash of the matches
    return col(Conversation.id).in_(every).is_(True)
