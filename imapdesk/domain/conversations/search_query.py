"""The search box's language, read in one place for the REST API and the web UI.

    words            every word must be found (in the subject, the people or the text)
    "a phrase"       these words one after the other
    from:alice       in the senders' names and addresses (from:"Alice Martin", from:example.com)
    to:bob           in the recipients' (To and Cc; cc: says the same)
    subject:refund   in the subjects
    has:attachment   a message has a file attached (not an image shown in its text)
    is:unread        unread (is:read: read)
    tag:vip          tagged so (exactly, as the tag filter)
    before:2024-05-31, after:2024-05-01
                     the last message came before that day began, or on that day or later
                     (UTC)

A name before a colon that is none of these is text (`re:`, `https:`). Words of any script;
the last word, when the query ends with it, also matches as the start of a word (results
follow typing). A value that cannot be read (`before:May`, `is:urgent`) is an error that says
what the operator takes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum

from imapdesk.domain.conversations.search_text import Term, phrase_terms
from imapdesk.kernel.errors import InvalidInput

# at most so many words or phrases are looked for, each of at most so many terms
MAX_CLAUSES = 8
MAX_TERMS = 32


class SearchField(StrEnum):
    subject = "subject"
    sender = "sender"
    recipient = "recipient"


_TEXT_OPERATORS = {
    "from": SearchField.sender,
    "to": SearchField.recipient,
    "cc": SearchField.recipient,
    "subject": SearchField.subject,
}
_OPERATORS = frozenset({*_TEXT_OPERATORS, "has", "is", "tag", "before", "after"})

# one part of a query: an optional `name:`, then a "quoted phrase" (the closing quote may be
# missing while it is typed) or a run of anything but space and quotes
_PART = re.compile(r'(?:(?P<op>[A-Za-z]+):)?(?:"(?P<quoted>[^"]*)(?P<closed>"?)|(?P<bare>[^\s"]+))')


@dataclass(frozen=True)
class TextClause:
    """Terms found one after the other, in one field or any."""

    terms: tuple[Term, ...]
    field: SearchField | None = None


@dataclass(frozen=True)
class SearchQuery:
    clauses: tuple[TextClause, ...] = ()
    has_attachment: bool = False
    unread: bool | None = None
    tags: tuple[str, ...] = ()
    # aware UTC datetimes: the day's start
    before: datetime | None = None
    after: datetime | None = None
    # the query had something to look for (text, even if no term could be read from it, or an
    # operator with a value), not only operators still being typed
    asked: bool = False

    @property
    def filters(self) -> bool:
        """Whether it asks for anything but text."""
        return bool(
            self.has_attachment or self.unread is not None or self.tags or self.before or self.after
        )


def parse_query(query: str | None) -> SearchQuery:
    """Read a search; InvalidInput names the operator whose value cannot be read."""
    raw = (query or "").strip()
    if not raw:
        return SearchQuery()
    clauses: list[TextClause] = []
    has_attachment = False
    unread: bool | None = None
    tags: list[str] = []
    before: datetime | None = None
    after: datetime | None = None
    # the query as given ends with a word, not a space: it may still be typed
    ends_open = not (query or "")[-1:].isspace()
    asked = False
    parts = list(_PART.finditer(raw))
    for n, part in enumerate(parts):
        op = (part.group("op") or "").lower()
        quoted, bare = part.group("quoted"), part.group("bare")
        if not op and bare and bare[-1] == ":" and bare[:-1].lower() in _OPERATORS:
            continue  # an operator still being typed: `tag:`
        value = quoted if quoted is not None else bare or ""
        at_end = n == len(parts) - 1 and part.end() == len(raw)
        if op and op not in _OPERATORS:
            # not ours: the whole part is text ("re:", "https://...")
            value, op = part.group(), ""
            quoted = None
        if op in _TEXT_OPERATORS or not op:
            # a phrase in quotes is finished once closed; a bare word at the end may be typed
            open_end = at_end and ends_open and (quoted is None or not part.group("closed"))
            terms = phrase_terms(value, open_end=open_end)[:MAX_TERMS]
            asked = True
            if terms and len(clauses) < MAX_CLAUSES:
                clauses.append(TextClause(tuple(terms), _TEXT_OPERATORS.get(op)))
            continue
        word = value.strip().lower()
        if not word:
            continue  # an operator still being typed: `tag:""`
        asked = True
        if op == "has":
            if word not in ("attachment", "attachments"):
                raise _invalid("has: takes attachment (has:attachment)")
            has_attachment = True
        elif op == "is":
            if word not in ("unread", "read"):
                raise _invalid("is: takes unread or read (is:unread)")
            unread = word == "unread"
        elif op == "tag":
            tags.append(value.strip())
        elif op == "before":
            before = _day(value, "before")
        elif op == "after":
            after = _day(value, "after")
    return SearchQuery(
        clauses=tuple(clauses),
        has_attachment=has_attachment,
        unread=unread,
        tags=tuple(dict.fromkeys(tags)),
        before=before,
        after=after,
        asked=asked,
    )


def _day(value: str, op: str) -> datetime:
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise _invalid(f"{op}: takes a date as YYYY-MM-DD ({op}:2024-05-31)") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(f"search: {message}", field="q")
