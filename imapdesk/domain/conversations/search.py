"""Search: what a query matches (conditions on the list's query) and where (snippets).

The query language is read by `search_query.parse_query`; words are found in the index of
`search_index` (one document per conversation; SQLite FTS5, PostgreSQL tsvector + GIN), with
the terms of `search_text` (words of any script; Chinese, Japanese, Korean and Thai by pairs of
characters). Operators that are no text (`is:unread`, `tag:`, `has:attachment`, `before:`,
`after:`) are conditions on the conversation's own row and tables.

Neither database's planner knows how many conversations a word matches (PostgreSQL is given
no statistics of the documents: migration 0014 says why), so the plan is chosen here from a
bounded look at the matches themselves: few (a name, an order number) are read by primary key
and sorted; many (a word in most of the mail) filter the list's walk down its ordering index,
which stops at the page's end (`_text_condition`).

Snippets (`snippets`) are made here from the page's messages, as plain text in parts marked
found or not: the page escapes them as any text, so mail never becomes markup.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    and_,
    any_,
    bindparam,
    column,
    exists,
    false,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlmodel import Session, col

from imapdesk.domain.conversations import search_index
from imapdesk.domain.conversations.search_query import (
    SearchField,
    SearchQuery,
    TextClause,
    parse_query,
)
from imapdesk.domain.conversations.search_text import Term, find_phrases
from imapdesk.kernel.models import Attachment, Conversation, ConversationTag, Message

__all__ = [
    "SEARCH_INDEXES",
    "SEARCH_TABLES",
    "SearchQuery",
    "Snippet",
    "include_name",
    "matching_conditions",
    "parse_query",
    "snippets",
]

SEARCH_TABLES = frozenset({search_index.INDEX_TABLE})
SEARCH_INDEXES = frozenset({search_index.INDEX_GIN})
# more matches than this and a search filters the list's index walk instead of reading them
# by key (see `_text_condition`)
FEW_MATCHES = 1000


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """For Alembic's comparison: the search index lives outside the models (an FTS5 table
    and its shadow tables on SQLite, a tsvector table on PostgreSQL)."""
    if not name:
        return True
    if type_ == "table":
        return not any(name == t or name.startswith(t + "_") for t in SEARCH_TABLES)
    if type_ == "index":
        return name not in SEARCH_INDEXES
    return True


# --- the index's query languages -------------------------------------------------------------


def fts5_query(clauses: Sequence[TextClause]) -> str:
    """An FTS5 MATCH expression: every clause a phrase (in its column), all of them AND-ed.
    Terms are letters, marks and digits only, so quoting them is enough."""
    parts = []
    for clause in clauses:
        phrase = '"' + " ".join(t.text for t in clause.terms) + '"'
        if clause.terms[-1].prefix:
            phrase += "*"
        parts.append(f"{clause.field.value} : {phrase}" if clause.field else phrase)
    return " AND ".join(parts)


def pg_tsquery(clauses: Sequence[TextClause], *, phrases: bool = True) -> str:
    """A tsquery literal: every clause a phrase (`<->`) of its terms (marked with their field:
    `search_index.PG_FIELD_MARKS`), all of them AND-ed. Without `phrases`, every term AND-ed:
    what the GIN index answers exactly (a phrase makes PostgreSQL read each candidate's
    document from the table to check its positions)."""
    parts = []
    for clause in clauses:
        mark = search_index.PG_FIELD_MARKS[clause.field.value] if clause.field else ""
        joint = " <-> " if phrases else " & "
        parts.append("(" + joint.join(_pg_term(t, mark) for t in clause.terms) + ")")
    return " & ".join(parts)


def _pg_term(term: Term, mark: str) -> str:
    # terms are letters, marks and digits: quoting them needs no escapes
    return f"'{mark}{term.text}'" + (":*" if term.prefix else "")


def bare_matches(dialect: str) -> str:
    """The index query for `:search_q` (as `fts5_query` or `pg_tsquery` make it): the ids of
    the matching conversations, in no order."""
    if dialect == "sqlite":
        return (
            f"SELECT rowid AS conversation_id FROM {search_index.INDEX_TABLE} "
            f"WHERE {search_index.INDEX_TABLE} MATCH :search_q"
        )
    return (
        f"SELECT conversation_id FROM {search_index.INDEX_TABLE} "
        "WHERE terms @@ CAST(:search_q AS tsquery)"
    )


def index_query(dialect: str, clauses: Sequence[TextClause]) -> str:
    return fts5_query(clauses) if dialect == "sqlite" else pg_tsquery(clauses)


# --- conditions ------------------------------------------------------------------------------


def matching_conditions(session: Session, query: SearchQuery) -> list[ColumnElement[bool]]:
    """Conditions on Conversation for a search: none when it asks for nothing, one that is
    always false when it had text but no word to look for (`?!`)."""
    conds: list[ColumnElement[bool]] = []
    if query.clauses:
        conds.append(_text_condition(session, query.clauses))
    elif query.asked and not query.filters:
        return [false()]
    if query.unread is not None:
        conds.append(col(Conversation.unread).is_(query.unread))
    for tag in query.tags:
        if "\x00" in tag:
            return [false()]  # no tag holds a NUL character, and PostgreSQL refuses one
        conds.append(
            col(Conversation.id).in_(
                select(col(ConversationTag.conversation_id)).where(col(ConversationTag.tag) == tag)
            )
        )
    if query.after is not None:
        conds.append(col(Conversation.last_message_at) >= query.after)
    if query.before is not None:
        conds.append(col(Conversation.last_message_at) < query.before)
    if query.has_attachment:
        conds.append(
            exists()
            .where(
                col(Message.conversation_id) == col(Conversation.id),
                col(Attachment.message_id) == col(Message.id),
                col(Attachment.inline).is_(False),
            )
            .correlate(Conversation)
        )
    return conds


def _text_condition(session: Session, clauses: Sequence[TextClause]) -> ColumnElement[bool]:
    """The conversation's document matches every clause.

    Few matches (at most FEW_MATCHES; a name, an order number): the list reads just those
    rows by primary key and sorts them. More: the list walks its ordering index and stops at
    the page's end, keeping the rows found in a set of the matches built once (one IN over
    the index query, so the walk stays possible).

    PostgreSQL keeps a document as a compressed TOAST value, so it looks at one only where it
    must: the matches are those of every term, which its GIN index answers alone, and a phrase
    is checked only on the rows the list reads. A set of the matches costs about a microsecond
    each (80,000: 80 ms), checking a row's document about 70 (a page of a word in 80% of the
    mail: 5 ms): past DENSE_SHARE of all conversations the walk checks each row instead."""
    if session.get_bind().dialect.name == "sqlite":
        return _sqlite_condition(session, fts5_query(clauses))
    phrase = pg_tsquery(clauses) if any(len(c.terms) > 1 for c in clauses) else None
    return _pg_condition(session, pg_tsquery(clauses, phrases=False), phrase)


def _sqlite_condition(session: Session, q: str) -> ColumnElement[bool]:
    matches = bare_matches("sqlite")
    found = session.execute(text(f"{matches} LIMIT :few"), {"search_q": q, "few": FEW_MATCHES + 1})
    rows = found.scalars().all()
    if len(rows) <= FEW_MATCHES:
        return col(Conversation.id).in_(sorted(rows))
    every = text(matches).bindparams(search_q=q).columns(column("conversation_id"))
    # `+ 0`: the key is no index term, so SQLite filters its walk by the set of matches
    return (col(Conversation.id) + literal_column("0")).in_(every)


# past this share of all conversations, PostgreSQL's walk checks each row's document instead of
# building a set of the matches (see `_text_condition`)
DENSE_SHARE = 0.2
_INDEX = search_index.INDEX_TABLE
# `OFFSET 0`: checked on each row the walk reads; bare, PostgreSQL may turn the EXISTS into a
# join that reads every match (it takes them for few: the documents have no statistics)
_ROW_MATCHES = (
    f"EXISTS (SELECT 1 FROM {_INDEX} WHERE {_INDEX}.conversation_id = conversation.id "
    f"AND {_INDEX}.terms @@ CAST(:search_row AS tsquery) OFFSET 0)"
)


def _pg_condition(session: Session, q: str, phrase: str | None) -> ColumnElement[bool]:
    matches = bare_matches("postgresql")
    dense = _dense_count(session)
    look = (FEW_MATCHES if dense == _NO_ESTIMATE else dense) + 1
    # one look (the GIN index's bitmap is built once): how many, up to the dense bound, and
    # the ids themselves when few
    count, few = session.execute(
        text(
            "SELECT count(*), CASE WHEN count(*) <= :few THEN array_agg(conversation_id) END "
            f"FROM ({matches} LIMIT :look) AS m"
        ),
        {"search_q": q, "few": FEW_MATCHES, "look": look},
    ).one()
    row_check = text(_ROW_MATCHES)
    condition: ColumnElement[bool]
    if count <= FEW_MATCHES:
        condition = col(Conversation.id) == any_(literal(sorted(few or []), ARRAY(Integer)))
    elif count > dense:
        return cast(ColumnElement[bool], row_check.bindparams(search_row=phrase or q))
    else:
        every = text(matches).bindparams(search_q=q).columns(column("conversation_id"))
        # `IS TRUE`: bare, PostgreSQL turns the IN into a join, whose output it never takes as
        # ordered; this way it stays a filter over a hash of the matches
        condition = col(Conversation.id).in_(every).is_(True)
    if phrase is None:
        return condition
    return and_(condition, row_check.bindparams(search_row=phrase))


def _dense_count(session: Session) -> int:
    """DENSE_SHARE of the documents, as PostgreSQL's statistics count them (never below
    FEW_MATCHES; a table not analysed since it had rows counts as too small for a walk to
    check its rows)."""
    estimate = session.execute(
        text("SELECT reltuples FROM pg_class WHERE oid = CAST(:table AS regclass)"),
        {"table": _INDEX},
    ).scalar()
    if not estimate or estimate < 0:
        return _NO_ESTIMATE
    return max(FEW_MATCHES, min(int(estimate * DENSE_SHARE), _NO_ESTIMATE))


# no estimate: no walk checks its rows one by one
_NO_ESTIMATE = 2**31 - 1


# --- snippets ----------------------------------------------------------------------------------

SNIPPET_BEFORE = 60
SNIPPET_LENGTH = 220
# what of each message the snippets look through
SNIPPET_TEXT_LIMIT = 20_000
# around where the words seem to be, this much of a text is split into terms to be sure,
# at the first few such places
_BEFORE_NEEDLE, _AFTER_NEEDLE = 80, 320
_PLACES = 8
_SPACE = re.compile(r"\s+")
_ACCENTS = re.compile(r"[\u0300-\u036f]+")


@dataclass(frozen=True)
class Snippet:
    """A piece of a conversation's text (or subject, or sender) around what the search found:
    its parts in order, each marked found or not. Plain text: a page escapes it as any text."""

    parts: tuple[tuple[str, bool], ...]

    @property
    def text(self) -> str:
        return "".join(p for p, _ in self.parts)

    @property
    def highlights(self) -> list[tuple[int, int]]:
        """(start, end) character offsets of the found parts in `text`."""
        spans, at = [], 0
        for part, found in self.parts:
            if found:
                spans.append((at, at + len(part)))
            at += len(part)
        return spans


def _fold(value: str) -> str:
    """Roughly as the index folds a text, in one pass: for finding where to look."""
    folded = value.casefold()
    if folded.isascii():
        return folded
    return unicodedata.normalize("NFKC", _ACCENTS.sub("", unicodedata.normalize("NFKD", folded)))


def _spans_near_needles(value: str, phrases: list[list[Term]]) -> list[tuple[int, int]]:
    """The matches of `phrases` in a long text: where the first term of a phrase stands in the
    text folded as the index folds it (nowhere: none in this text), the text around there is
    split into terms and compared (the first few places, then all of the text)."""
    folded = _fold(value)
    needles = {p[0].text for p in phrases if p}
    starts: list[int] = []
    for needle in needles:
        at = folded.find(needle)
        while at >= 0 and len(starts) < _PLACES * len(needles):
            starts.append(at)
            at = folded.find(needle, at + len(needle))
    if not starts:
        return []
    for near in sorted(starts)[:_PLACES]:
        start = max(0, near - _BEFORE_NEEDLE)
        spans = [
            (start + a, start + b)
            for a, b in find_phrases(value[start : near + _AFTER_NEEDLE], phrases)
            # a cut through a word (the window's edges) must not count
            if a > 0 or start == 0
        ]
        if spans:
            return spans
    return find_phrases(value, phrases)


def _snippet_of(value: str, phrases: list[list[Term]], *, whole: bool = False) -> Snippet | None:
    """The snippet of `value` around its first match of `phrases`; None when none is there."""
    if not value or not phrases:
        return None
    spans = find_phrases(value, phrases) if whole else _spans_near_needles(value, phrases)
    if not spans:
        return None
    first = spans[0][0]
    begin = 0 if whole else max(0, first - SNIPPET_BEFORE)
    if begin > 0:
        space = value.find(" ", begin, first)
        begin = space + 1 if space >= 0 else begin
    end = len(value) if whole else min(len(value), begin + SNIPPET_LENGTH)
    if end < len(value):
        space = value.rfind(" ", spans[0][1], end)
        end = space if space > 0 else end
    parts: list[tuple[str, bool]] = [("…", False)] if begin > 0 else []
    at = begin
    for a, b in spans:
        if a >= end:
            break
        if a > at:
            parts.append((_SPACE.sub(" ", value[at:a]), False))
        parts.append((_SPACE.sub(" ", value[max(a, at) : min(b, end)]), True))
        at = min(b, end)
    if at < end:
        parts.append((_SPACE.sub(" ", value[at:end]), False))
    if end < len(value):
        parts.append(("…", False))
    if parts and not parts[0][1]:
        parts[0] = (parts[0][0].lstrip(), False)
    return Snippet(tuple(p for p in parts if p[0]))


def snippets(
    session: Session, query: SearchQuery, conversation_ids: Sequence[int]
) -> dict[int, Snippet]:
    """For each conversation, where its newest message that matches does: in the text, else
    the subject, else the sender. Nothing for a search without words."""
    anywhere = [list(c.terms) for c in query.clauses if c.field is None]
    by_field = {
        f: anywhere + [list(c.terms) for c in query.clauses if c.field == f] for f in SearchField
    }
    if not conversation_ids or not query.clauses:
        return {}
    m = Message.__table__.c  # type: ignore[attr-defined]
    rows = session.execute(
        select(
            m.conversation_id,
            m.subject,
            m.from_name,
            m.from_email,
            func.substr(m.text, 1, SNIPPET_TEXT_LIMIT).label("text"),
        )
        .where(m.conversation_id.in_(bindparam("ids", expanding=True)))
        .order_by(m.conversation_id, m.id.desc()),
        {"ids": list(conversation_ids)},
    ).all()
    messages: dict[int, list[Any]] = {}
    for row in rows:
        messages.setdefault(row.conversation_id, []).append(row)
    found: dict[int, Snippet] = {}
    for cid, rows_of in messages.items():
        snippet = None
        for row in rows_of:
            snippet = _snippet_of(row.text or "", anywhere)
            if snippet:
                break
        for row in rows_of if snippet is None else ():
            snippet = _snippet_of(row.subject or "", by_field[SearchField.subject], whole=True)
            if snippet is None:
                sender = " ".join(
                    p for p in (row.from_name, f"<{row.from_email}>" if row.from_email else "") if p
                )
                snippet = _snippet_of(sender, by_field[SearchField.sender], whole=True)
            if snippet:
                break
        if snippet is not None:
            found[cid] = snippet
    return found
