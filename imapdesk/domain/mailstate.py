"""How helpdesk state lives in the mailbox (docs IMAP-MAPPING.md), as pure functions.

Shared by the domain operations (what to write back), the worker's write-back and read-back,
and `imapdesk rebuild` (what the mailbox says). Nothing here touches the database or IMAP.

Decisions, in one place:
- **Status -> folder role**: open -> inbox, pending -> pending, closed -> archive, spam -> junk,
  deleted -> trash. A watched folder without a special role counts as the inbox.
- **Claim** is `\\Flagged`; the **assignee** is the keyword `$Assigned_<handle>` (handles are
  a-z 0-9 _ -, at most 32; keywords are matched case-insensitively and handles lowercased).
- **Tags** are keywords equal to the tag, when the tag is an IMAP atom (printable ASCII without
  space and `( ) { % * " \\ ]`) and does not start with `$` (the prefix of registered and
  client-private keywords, `$Assigned_` among them) and is not a keyword other clients set for
  their own purposes (`Junk`, `NonJunk`, `NotJunk`, `Old`). Other tags stay in the database.
  The exceptions are Thunderbird's five default tags, stored the way Thunderbird stores them:
  `$label1`..`$label5` <-> "Important", "Work", "Personal", "To Do", "Later" (a colleague who
  renamed those tags in Thunderbird still sees their own names; imapdesk shows the defaults).
  Every other keyword starting with `$` (`$Forwarded`, `$MDNSent`, `$Junk`, `$NotJunk`,
  `$Phishing`, `$Important`, Apple Mail's `$MailFlagBit0..2`, ...) and every system flag is
  not a tag. So `keyword_to_tag(tag_to_keyword(t)) == t` whenever `tag_to_keyword(t)` is not
  None.
- **Status from the mailbox** (`derive_state`): every location of a message votes: a location
  marked `\\Deleted` votes deleted; the inbox or a watched folder votes open; pending, archive,
  junk and trash vote their status; Sent, Notes and unwatched folders of no role do not vote.
  A message takes its best vote (open > pending > closed > spam > deleted: a copy left in the
  Archive outweighs the original moved to Trash). The conversation is **open while any inbound
  message still sits in a watched folder** (mail in the shared inbox is work not done, and the
  contract closes a conversation only once all its messages left the watched folders);
  otherwise the **newest inbound message that votes** decides. When every inbound message has
  gone from every folder imapdesk tracks (expunged, or moved where it does not look), the
  conversation is deleted. Without inbound messages the outbound ones vote the same way; when
  nothing votes the status is None (the caller keeps what it has).
- **Claimed** when any location (not marked `\\Deleted`) is `\\Flagged`; the assignee handle is
  the `$Assigned_` keyword of the newest message that carries one, and only while claimed (a
  client that can only unflag leaves a stale keyword behind).
- **Read**: a message is seen when any of its locations is `\\Seen`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imapdesk.kernel.models import ConversationStatus, Direction, FolderRole, as_utc
from imapdesk.mail.imap.probe import UNLIMITED, keeps_keywords

SEEN = "\\Seen"
FLAGGED = "\\Flagged"
DELETED = "\\Deleted"
ANSWERED = "\\Answered"
ASSIGNED_PREFIX = "$Assigned_"
HANDLE_MAX = 32
TAG_MAX = 100

_HANDLE_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
# ATOM-CHAR (RFC 3501/9051): printable ASCII except SP ( ) { % * " \ ]
_ATOM_RE = re.compile(r"^[\x21-\x7e]+$")
_ATOM_SPECIALS = frozenset('(){%*"\\]')

ROLE_FOR_STATUS: dict[ConversationStatus, FolderRole] = {
    ConversationStatus.open: FolderRole.inbox,
    ConversationStatus.pending: FolderRole.pending,
    ConversationStatus.closed: FolderRole.archive,
    ConversationStatus.spam: FolderRole.junk,
    ConversationStatus.deleted: FolderRole.trash,
}
_STATUS_FOR_ROLE = {role: status for status, role in ROLE_FOR_STATUS.items()}
# the most active (and most recoverable) status first
STATUS_PRECEDENCE: tuple[ConversationStatus, ...] = (
    ConversationStatus.open,
    ConversationStatus.pending,
    ConversationStatus.closed,
    ConversationStatus.spam,
    ConversationStatus.deleted,
)

# Thunderbird's default tags: keyword -> the name Thunderbird shows
THUNDERBIRD_LABELS: dict[str, str] = {
    "$label1": "Important",
    "$label2": "Work",
    "$label3": "Personal",
    "$label4": "To Do",
    "$label5": "Later",
}
_LABEL_FOR_TAG = {tag: keyword for keyword, tag in THUNDERBIRD_LABELS.items()}
# keywords without `$` that other clients set for their own purposes (lowercased):
# Thunderbird and Evolution's junk marks, neomutt's "Old"
FOREIGN_KEYWORDS = frozenset({"junk", "nonjunk", "notjunk", "old"})


# --- status <-> folder role -------------------------------------------------------------------


def role_for_status(status: ConversationStatus | str) -> FolderRole:
    """The role of the folder a conversation's messages live in at this status."""
    return ROLE_FOR_STATUS[ConversationStatus(status)]


def status_for_role(role: FolderRole | str | None) -> ConversationStatus | None:
    """The status a folder of this role means; None for sent, notes, other."""
    if role is None:
        return None
    try:
        return _STATUS_FOR_ROLE.get(FolderRole(role))
    except ValueError:
        return None


# --- assignee <-> keyword ---------------------------------------------------------------------


def normalize_handle(handle: str) -> str:
    """The handle lowercased and stripped; ValueError unless a-z 0-9 _ -, 1 to 32 characters."""
    value = handle.strip().lower()
    if not _HANDLE_RE.match(value):
        raise ValueError(f"not a handle (a-z, 0-9, '_', '-'; 1 to 32 characters): {handle!r}")
    return value


def assignee_keyword(handle: str) -> str:
    """`$Assigned_<handle>`."""
    return ASSIGNED_PREFIX + normalize_handle(handle)


def is_assignee_keyword(keyword: str) -> bool:
    return keyword[: len(ASSIGNED_PREFIX)].lower() == ASSIGNED_PREFIX.lower()


def handle_from_keyword(keyword: str) -> str | None:
    """The handle in a `$Assigned_<handle>` keyword (lowercased); None for anything else."""
    if not is_assignee_keyword(keyword):
        return None
    try:
        return normalize_handle(keyword[len(ASSIGNED_PREFIX) :])
    except ValueError:
        return None


# --- tag <-> keyword --------------------------------------------------------------------------


def is_atom(value: str) -> bool:
    """Whether `value` can be sent as an IMAP atom (so as a keyword)."""
    return bool(_ATOM_RE.match(value)) and not _ATOM_SPECIALS.intersection(value)


def tag_to_keyword(tag: str) -> str | None:
    """The keyword that stores this tag in the mailbox, or None when the tag stays DB-only."""
    if tag in _LABEL_FOR_TAG:
        return _LABEL_FOR_TAG[tag]
    if not tag or len(tag) > TAG_MAX or not is_atom(tag):
        return None
    if tag.startswith("$") or tag.lower() in FOREIGN_KEYWORDS:
        return None
    return tag


def keyword_to_tag(keyword: str) -> str | None:
    """The tag a keyword stands for; None for system flags, `$...` keywords (assignee,
    registered and client-private ones) and other clients' own keywords."""
    if not keyword or keyword.startswith("\\"):
        return None
    label = THUNDERBIRD_LABELS.get(keyword.lower())
    if label is not None:
        return label
    if keyword.startswith("$") or keyword.lower() in FOREIGN_KEYWORDS:
        return None
    if len(keyword) > TAG_MAX or not is_atom(keyword):
        return None
    return keyword


def keywords_for_tag(tag: str) -> tuple[str, ...]:
    """Every keyword that reads back as this tag (what to remove when the tag goes)."""
    keywords: list[str] = []
    primary = tag_to_keyword(tag)
    if primary is not None:
        keywords.append(primary)
    # "Important" set verbatim by another client reads back as the tag too
    if tag in _LABEL_FOR_TAG and is_atom(tag) and tag.lower() not in FOREIGN_KEYWORDS:
        keywords.append(tag)
    return tuple(keywords)


def is_tag_keyword(keyword: str) -> bool:
    return keyword_to_tag(keyword) is not None


# --- what the server keeps --------------------------------------------------------------------


def keywords_kept(capabilities: Mapping[str, Any] | None) -> bool:
    """Whether the server keeps custom keywords: PERMANENTFLAGS holds `\\*`, or keywords (a
    folder at its limit lists those it keeps without `\\*`; `probe.keeps_keywords`).

    Reads `capabilities["permanent_flags"]` (stored by the worker at connect); a mailbox not
    probed that way falls back to a boolean `capabilities["keywords"]`, else False. Which
    keywords a folder refused or cannot keep is recorded apart
    (`imapdesk.domain.mailboxes.keywords`).
    """
    if not capabilities:
        return False
    permanent = capabilities.get("permanent_flags")
    if isinstance(permanent, list | tuple):
        return keeps_keywords(str(f) for f in permanent)
    return capabilities.get("keywords") is True


def keyword_limit(capabilities: Mapping[str, Any] | None) -> int | None:
    """How many distinct keywords a folder keeps (Dovecot Maildir: 26, Cyrus: 100), when the
    probe knows a number; None when it knows none (`keyword_limit_known` tells unlimited from
    unknown)."""
    limit = (capabilities or {}).get("keyword_limit")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def keyword_limit_known(capabilities: Mapping[str, Any] | None) -> bool:
    """Whether the probe knows how many keywords a folder keeps: a number, or UNLIMITED."""
    limit = (capabilities or {}).get("keyword_limit")
    return keyword_limit(capabilities) is not None or limit == UNLIMITED


# --- what to write ----------------------------------------------------------------------------


def _flag_order(flag: str) -> tuple[bool, str]:
    # system flags first, then keywords, each alphabetically
    return (not flag.startswith("\\"), flag)


@dataclass(frozen=True)
class FlagChange:
    """Flags and keywords to add to and remove from a message (`STORE +FLAGS` / `-FLAGS`)."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()

    @classmethod
    def of(cls, add: Iterable[str] = (), remove: Iterable[str] = ()) -> FlagChange:
        adding = set(add)
        removing = set(remove) - adding
        return cls(tuple(sorted(adding, key=_flag_order)), tuple(sorted(removing, key=_flag_order)))

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)

    def payload(self) -> dict[str, list[str]]:
        """The outbox payload of a `flags` action."""
        return {"add": list(self.add), "remove": list(self.remove)}


def claim_flags(
    handle: str | None, *, keywords: bool, known_keywords: Iterable[str] = ()
) -> FlagChange:
    """Claimed (by `handle`, or by nobody in particular): `\\Flagged`, the assignee keyword,
    and no other `$Assigned_` keyword among those known to be on the messages."""
    add = [FLAGGED]
    remove: set[str] = set()
    if keywords:
        mine = assignee_keyword(handle) if handle else None
        if mine:
            add.append(mine)
        remove = {
            k for k in known_keywords if is_assignee_keyword(k) and (mine is None or k != mine)
        }
    return FlagChange.of(add, remove)


def release_flags(*, keywords: bool, known_keywords: Iterable[str] = ()) -> FlagChange:
    """Nobody holds it: no `\\Flagged`, no `$Assigned_` keyword."""
    remove = {FLAGGED}
    if keywords:
        remove |= {k for k in known_keywords if is_assignee_keyword(k)}
    return FlagChange.of((), remove)


def tag_flags(added: Iterable[str], removed: Iterable[str], *, keywords: bool) -> FlagChange:
    """Keywords for tags added and removed (tags that cannot be keywords are left out)."""
    if not keywords:
        return FlagChange()
    add = {k for k in (tag_to_keyword(t) for t in added) if k is not None}
    remove = {k for t in removed for k in keywords_for_tag(t)}
    return FlagChange.of(add, remove)


def seen_flags(read: bool) -> FlagChange:
    return FlagChange.of((SEEN,), ()) if read else FlagChange.of((), (SEEN,))


@dataclass(frozen=True)
class WantedState:
    """What the helpdesk holds for a conversation, as far as flags and keywords show it."""

    claimed: bool = False
    assignee_handle: str | None = None
    tags: frozenset[str] = frozenset()


def desired_flags(
    state: WantedState,
    direction: Direction,
    *,
    seen: bool,
    keywords: bool,
    current: Iterable[str] = (),
) -> FlagChange:
    """What to store on one location so that it shows `state` (a full reconcile).

    Only what imapdesk manages is touched: `\\Flagged`, `\\Seen` on inbound messages (our own
    and notes are written `\\Seen` and left alone), and, where keywords are kept, `$Assigned_`
    keywords and tag keywords. Other clients' keywords and other system flags stay.
    """
    have = set(current)
    want: set[str] = set()
    managed = {FLAGGED}
    if state.claimed:
        want.add(FLAGGED)
    if direction == Direction.inbound:
        managed.add(SEEN)
        if seen:
            want.add(SEEN)
    if keywords:
        managed |= {k for k in have if is_assignee_keyword(k) or is_tag_keyword(k)}
        if state.claimed and state.assignee_handle:
            want.add(assignee_keyword(state.assignee_handle))
        for tag in state.tags:
            keyword = tag_to_keyword(tag)
            if keyword is not None:
                # a tag already there under another of its keywords is left as it is
                want |= have.intersection(keywords_for_tag(tag)) or {keyword}
        managed |= want
    return FlagChange.of(want - have, (have & managed) - want)


# --- what the mailbox says --------------------------------------------------------------------


@dataclass(frozen=True)
class LocationFacts:
    """One copy of a message in a folder imapdesk tracks."""

    role: FolderRole | str
    watched: bool = False
    flags: frozenset[str] | tuple[str, ...] = ()


@dataclass(frozen=True)
class MessageFacts:
    """A message of the conversation and every tracked location it has (none: gone)."""

    key: int
    direction: Direction
    date: datetime | None = None
    locations: tuple[LocationFacts, ...] = ()


@dataclass(frozen=True)
class DerivedState:
    # None: nothing in the mailbox says (keep what the database holds)
    status: ConversationStatus | None
    claimed: bool
    # the assignee's handle while claimed; may name no agent (shown as it is)
    assignee_handle: str | None
    # every handle found in `$Assigned_` keywords, sorted (more than one: a conflict)
    assignee_handles: tuple[str, ...]
    # tags from keywords (only meaningful where the server keeps keywords)
    tags: frozenset[str]
    # per message key, for messages with at least one location
    seen: dict[int, bool] = field(default_factory=dict)
    # whether some inbound message with a location is not seen
    unread: bool = False

    def wanted(self) -> WantedState:
        return WantedState(self.claimed, self.assignee_handle, self.tags)


def location_vote(location: LocationFacts) -> ConversationStatus | None:
    """The status one copy of a message speaks for (see the module doc)."""
    if DELETED in location.flags:
        return ConversationStatus.deleted
    status = status_for_role(location.role)
    if status is not None:
        return status
    try:
        role = FolderRole(location.role)
    except ValueError:
        role = FolderRole.other
    if location.watched and role == FolderRole.other:
        return ConversationStatus.open
    return None


def _message_vote(message: MessageFacts) -> ConversationStatus | None:
    votes = {v for v in (location_vote(loc) for loc in message.locations) if v is not None}
    return min(votes, key=STATUS_PRECEDENCE.index) if votes else None


_NO_DATE = datetime.min.replace(tzinfo=UTC)


def _newest_first(messages: Iterable[MessageFacts]) -> list[MessageFacts]:
    return sorted(messages, key=lambda m: (as_utc(m.date) or _NO_DATE, m.key), reverse=True)


def _status_from(messages: list[MessageFacts]) -> ConversationStatus | None:
    voting = [(m, v) for m in messages if (v := _message_vote(m)) is not None]
    if not voting:
        return None
    if any(v == ConversationStatus.open for _, v in voting):
        return ConversationStatus.open
    return voting[0][1]


def derive_state(messages: Iterable[MessageFacts]) -> DerivedState:
    """Status, claim, assignee, tags and read state of a conversation as its mailbox shows it."""
    ordered = _newest_first(messages)
    inbound = [m for m in ordered if m.direction == Direction.inbound]
    status = _status_from(inbound)
    if status is None and inbound and not any(m.locations for m in inbound):
        status = ConversationStatus.deleted
    if status is None and not inbound:
        status = _status_from(ordered)

    # copies in Sent claim only when the conversation has no other: a flag left on our reply
    # in Sent does not keep a conversation claimed that a colleague unflagged in INBOX
    sent_claims = all(loc.role == FolderRole.sent for m in ordered for loc in m.locations)
    claimed = False
    handles: set[str] = set()
    newest_handle: str | None = None
    tags: set[str] = set()
    seen: dict[int, bool] = {}
    for message in ordered:
        live = [loc for loc in message.locations if DELETED not in loc.flags]
        message_handles: set[str] = set()
        for loc in live:
            for flag in loc.flags:
                if flag == FLAGGED:
                    claimed = claimed or sent_claims or loc.role != FolderRole.sent
                elif (handle := handle_from_keyword(flag)) is not None:
                    message_handles.add(handle)
                elif (tag := keyword_to_tag(flag)) is not None:
                    tags.add(tag)
        if message_handles and newest_handle is None:
            newest_handle = min(message_handles)
        handles |= message_handles
        if message.locations:
            seen[message.key] = any(SEEN in loc.flags for loc in message.locations)
    unread = any(not seen[m.key] for m in inbound if m.key in seen)
    return DerivedState(
        status=status,
        claimed=claimed,
        assignee_handle=newest_handle if claimed else None,
        assignee_handles=tuple(sorted(handles)),
        tags=frozenset(tags),
        seen=seen,
        unread=unread,
    )
