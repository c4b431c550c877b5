"""Keywords a mailbox does not keep, and what that means for tags.

A refusal is a decision, not a retry: when a folder refuses a keyword (a NO to STORE naming
it), takes no new ones (PERMANENTFLAGS without `\\*`), is at the server's known number of
distinct keywords (Dovecot on Maildir 26, Cyrus 100), or does not keep one (read back without
it), the write-back records it here (one `UnkeptKeyword` per folder and keyword) and never
sends it to that folder again. The state it stands for stays in the database: a tag whose
keyword is recorded here is not taken away when the mailbox does not show it (`operations.
set_tags`), and agents see it marked "not kept in the mailbox" (`tags_not_kept`), admins see
the list (`/api/v1/mailboxes`, `/readyz`, the admin mailbox page, `imapdesk mailbox list`).

A tag is also not kept when it cannot be a keyword at all (a space, a leading `$`), and when
the server keeps no custom keywords (Exchange Online): those are not recorded, they follow
from the tag and the probe.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from imapdesk.domain.mailstate import (
    handle_from_keyword,
    keyword_to_tag,
    keywords_kept,
    tag_to_keyword,
)
from imapdesk.kernel.models import (
    Folder,
    KeywordRefusal,
    Mailbox,
    Message,
    MessageLocation,
    UnkeptKeyword,
    utcnow,
)

# why a tag is not kept when nothing was recorded: it follows from the tag or the server
NOT_A_KEYWORD = "not_a_keyword"
NO_KEYWORDS = "no_keywords"

REASON_WORDS: dict[str, str] = {
    KeywordRefusal.refused: "the server refused it",
    KeywordRefusal.folder_full: "the folder takes no new keywords",
    KeywordRefusal.limit: "the folder is at the server's limit of distinct keywords",
    KeywordRefusal.not_kept: "the server did not keep it",
    KeywordRefusal.invalid: "it is not an IMAP keyword",
    NOT_A_KEYWORD: "a tag with a space or a leading $ cannot be an IMAP keyword",
    NO_KEYWORDS: "this server keeps no custom keywords",
}
_DETAIL_MAX = 1000


@dataclass(frozen=True)
class Refusal:
    """What the write-back found for one keyword in one folder."""

    folder: str
    keyword: str
    reason: KeywordRefusal
    detail: str = ""

    def details(self) -> dict[str, str]:
        """For an Activity: the keyword, what it stands for, where and why."""
        out = {
            "keyword": self.keyword,
            "folder": self.folder,
            "reason": self.reason.value,
            "why": REASON_WORDS[self.reason],
        }
        tag = keyword_to_tag(self.keyword)
        if tag is not None:
            out["tag"] = tag
        handle = handle_from_keyword(self.keyword)
        if handle is not None:
            out["assignee"] = handle
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class TagNotKept:
    """A tag of a conversation that the mailbox does not hold, and why."""

    tag: str
    reason: str  # a KeywordRefusal, NOT_A_KEYWORD or NO_KEYWORDS
    why: str
    folder: str | None = None
    detail: str = ""


# --- the record -------------------------------------------------------------------------------


def record_refusal(db: Session, mailbox_id: int, refusal: Refusal) -> bool:
    """Record that the folder does not keep the keyword; False when it was known already
    (keywords match case-insensitively, as IMAP compares them)."""
    known = db.exec(
        select(UnkeptKeyword).where(
            UnkeptKeyword.mailbox_id == mailbox_id, UnkeptKeyword.folder == refusal.folder
        )
    ).all()
    if any(row.keyword.lower() == refusal.keyword.lower() for row in known):
        return False
    db.add(
        UnkeptKeyword(
            mailbox_id=mailbox_id,
            folder=refusal.folder[:500],
            keyword=refusal.keyword[:255],
            reason=refusal.reason,
            detail=refusal.detail[:_DETAIL_MAX],
            created_at=utcnow(),
        )
    )
    db.flush()
    return True


def unkept_keywords(db: Session, mailbox_ids: Iterable[int]) -> dict[int, list[UnkeptKeyword]]:
    """The records of these mailboxes, each list by keyword, then folder."""
    ids = sorted(set(mailbox_ids))
    out: dict[int, list[UnkeptKeyword]] = defaultdict(list)
    if not ids:
        return {}
    for row in db.exec(
        select(UnkeptKeyword)
        .where(col(UnkeptKeyword.mailbox_id).in_(ids))
        .order_by(col(UnkeptKeyword.keyword), col(UnkeptKeyword.folder))
    ):
        out[row.mailbox_id].append(row)
    return dict(out)


def unkept_by_folder(db: Session, mailbox_id: int) -> dict[str, dict[str, UnkeptKeyword]]:
    """folder -> lowercased keyword -> its record: what the write-back never sends again."""
    out: dict[str, dict[str, UnkeptKeyword]] = defaultdict(dict)
    for row in unkept_keywords(db, [mailbox_id]).get(mailbox_id, []):
        out[row.folder][row.keyword.lower()] = row
    return dict(out)


def unkept_keyword_names(db: Session, mailbox_id: int) -> set[str]:
    """Keywords (lowercased) some folder of the mailbox does not keep: a tag they stand for is
    kept in the database when the mailbox does not show it."""
    rows = db.exec(select(UnkeptKeyword.keyword).where(UnkeptKeyword.mailbox_id == mailbox_id))
    return {keyword.lower() for keyword in rows}


def describe(row: UnkeptKeyword) -> str:
    """One line for the admin: the keyword, where, why (and the server's words)."""
    text = f"{row.keyword} in {row.folder}: {REASON_WORDS[row.reason]}"
    return f"{text} ({row.detail})" if row.detail else text


# --- tags -------------------------------------------------------------------------------------


def tags_not_kept(
    db: Session, conversations: Sequence[tuple[int, int, Sequence[str]]]
) -> dict[int, dict[str, TagNotKept]]:
    """For (conversation id, mailbox id, tags): the tags the mailbox does not hold, and why.

    A tag whose keyword a folder refused counts when the conversation has a message in that
    folder, or has it on none of its messages (moved on since). No query when no
    conversation has a tag, one when no tag's keyword was refused, two when one was.
    """
    tagged = [(cid, mid, list(tags)) for cid, mid, tags in conversations if tags]
    if not tagged:
        return {}
    mailbox_ids = {mid for _cid, mid, _tags in tagged}
    capabilities: dict[int, Mapping[str, Any]] = {}
    records: dict[int, list[UnkeptKeyword]] = defaultdict(list)
    # one query: each mailbox's probe with its records (few, if any)
    for mid, caps, record in db.exec(
        select(Mailbox.id, Mailbox.capabilities, UnkeptKeyword)
        .outerjoin(UnkeptKeyword, col(UnkeptKeyword.mailbox_id) == col(Mailbox.id))
        .where(col(Mailbox.id).in_(mailbox_ids))
    ):
        if mid is None:
            continue
        capabilities[mid] = caps or {}
        if record is not None:
            records[mid].append(record)
    out: dict[int, dict[str, TagNotKept]] = {}
    refused_here: list[tuple[int, int, str, str]] = []  # conversation, mailbox, tag, keyword
    for cid, mid, tags in tagged:
        caps = capabilities.get(mid) or {}
        if not caps.get("capabilities"):
            continue  # not probed yet: nothing is known
        marks: dict[str, TagNotKept] = {}
        recorded = {r.keyword.lower() for r in records.get(mid, [])}
        for tag in tags:
            keyword = tag_to_keyword(tag)
            if keyword is None:
                marks[tag] = TagNotKept(tag, NOT_A_KEYWORD, REASON_WORDS[NOT_A_KEYWORD])
            elif not keywords_kept(caps):
                marks[tag] = TagNotKept(tag, NO_KEYWORDS, REASON_WORDS[NO_KEYWORDS])
            elif keyword.lower() in recorded:
                refused_here.append((cid, mid, tag, keyword.lower()))
        if marks:
            out[cid] = marks
    if refused_here:
        places = _places(db, {cid for cid, *_ in refused_here})
        for cid, mid, tag, keyword in refused_here:
            mark = _refused_mark(tag, keyword, records.get(mid, []), places.get(cid, []))
            if mark is not None:
                out.setdefault(cid, {})[tag] = mark
    return out


def _places(db: Session, conversation_ids: set[int]) -> dict[int, list[tuple[str, set[str]]]]:
    """Per conversation: (folder, lowercased flags) of each copy of its messages."""
    out: dict[int, list[tuple[str, set[str]]]] = defaultdict(list)
    for cid, folder, flags in db.exec(
        select(Message.conversation_id, Folder.name, MessageLocation.flags)
        .join(MessageLocation, col(MessageLocation.message_id) == col(Message.id))
        .join(Folder, col(Folder.id) == col(MessageLocation.folder_id))
        .where(col(Message.conversation_id).in_(conversation_ids))
    ):
        if cid is not None:
            out[cid].append((folder, {f.lower() for f in flags or ()}))
    return dict(out)


def _refused_mark(
    tag: str, keyword: str, records: list[UnkeptKeyword], places: list[tuple[str, set[str]]]
) -> TagNotKept | None:
    refusals = {r.folder: r for r in records if r.keyword.lower() == keyword}
    for folder, _flags in places:
        row = refusals.get(folder)
        if row is not None:
            return TagNotKept(tag, row.reason.value, REASON_WORDS[row.reason], folder, row.detail)
    if any(keyword in flags for _folder, flags in places) or not refusals:
        return None
    row = next(iter(refusals.values()))
    return TagNotKept(tag, row.reason.value, REASON_WORDS[row.reason], row.folder, row.detail)
