"""The agent's queues (Mine, Unassigned, All open, Pending, Closed, per mailbox, per tag) and
their counts, within the mailboxes the agent may see.

Mine is what the agent holds that is still open or pending; per mailbox and per tag count the
open conversations. A count is a handful of indexed COUNT queries, whatever the table's size.

The counts are asked for on every list page and every live refresh of one, so a `ChangeCache`
keeps them per agent while nothing changed: every change to a conversation bumps its `version`
and `updated_at` (imapdesk/domain/live/changes.py relies on the same), so a cheap `change_stamp`
(the newest id and
`updated_at`, and the count and version sum of the rows changed within `LOOKBACK`, which catches
a commit that lands late with an older `updated_at`) tells whether they can still be right.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import bindparam, func, text
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from imapdesk.domain.conversations import reads
from imapdesk.domain.live.changes import LOOKBACK
from imapdesk.domain.outbound import drafts
from imapdesk.domain.sla import queues as sla_queues
from imapdesk.kernel.models import (
    Agent,
    Conversation,
    ConversationStatus,
    ConversationTag,
    Mailbox,
    utcnow,
)

OPEN = ConversationStatus.open
PENDING = ConversationStatus.pending
CLOSED = ConversationStatus.closed
# tags listed in the sidebar, most used first
MAX_TAGS = 30
# counting stops here ("1,000+"): a count costs at most this many index entries
COUNT_CAP = 1000
T = TypeVar("T")


@dataclass(frozen=True)
class Queue:
    name: str
    label: str
    statuses: tuple[ConversationStatus, ...] | None
    assignee: str | None = None
    # the conversations the agent has a draft on (imapdesk/domain/outbound/drafts.py)
    drafts: bool = False
    # an SLA queue (imapdesk/domain/sla/queues.py): `due_soon` or `breached`, by due time
    sla: str | None = None


QUEUES: tuple[Queue, ...] = (
    Queue("mine", "Mine", (OPEN, PENDING), reads.ASSIGNEE_ME),
    Queue("drafts", "Drafts", None, drafts=True),
    Queue("unassigned", "Unassigned", (OPEN,), reads.ASSIGNEE_NONE),
    Queue("open", "All open", (OPEN,)),
    Queue("due_soon", "Due soon", (OPEN, PENDING), sla="due_soon"),
    Queue("breached", "Breached", (OPEN, PENDING), sla="breached"),
    Queue("pending", "Pending", (PENDING,)),
    Queue("closed", "Closed", (CLOSED,)),
    Queue("all", "Everything", None),
)
QUEUE_BY_NAME = {q.name: q for q in QUEUES}
DEFAULT_QUEUE = "all"


@dataclass(frozen=True)
class QueueCounts:
    queues: dict[str, int]
    # (name, open count), by name
    mailboxes: Sequence[tuple[str, int]] = field(default_factory=list)
    # (tag, open count), most used first
    tags: Sequence[tuple[str, int]] = field(default_factory=list)


def queue_filters(
    queue: str,
    *,
    mailbox: str | None = None,
    tag: str | None = None,
    status: ConversationStatus | None = None,
    q: str | None = None,
) -> reads.ConversationFilters:
    """The list filters of a queue, narrowed to a mailbox, a tag, a status or a search."""
    chosen = QUEUE_BY_NAME.get(queue, QUEUE_BY_NAME[DEFAULT_QUEUE])
    statuses: Sequence[ConversationStatus] | None = [status] if status else chosen.statuses
    return reads.ConversationFilters(
        mailbox=mailbox,
        statuses=statuses,
        assignee=chosen.assignee,
        tag=tag,
        q=q,
        my_drafts=chosen.drafts,
    )


class Count(int):
    """A count that stopped at COUNT_CAP: shown as "1,000+"."""

    capped: bool = False

    def __str__(self) -> str:
        return f"{COUNT_CAP:,}+" if self.capped else f"{int(self):,}"


def _capped(n: int) -> Count:
    count = Count(min(n, COUNT_CAP))
    count.capped = n > COUNT_CAP
    return count


def _capped_count(where: str) -> str:
    """SQL for a count that reads at most COUNT_CAP + 1 entries of the queue index."""
    return (
        "(SELECT count(*) FROM (SELECT 1 AS one FROM conversation WHERE merged_into_id IS NULL "
        f"AND {where} LIMIT {COUNT_CAP + 1}) AS capped)"
    )


@dataclass(frozen=True)
class _Numbers:
    """The counts of one agent's queues, by mailbox id (names are looked up on every call)."""

    queues: dict[str, int]
    mailboxes: dict[int, int]
    tags: Sequence[tuple[str, int]]


def change_stamp(session: Session, *, now: datetime | None = None) -> tuple[object, ...]:
    """Changes whenever a conversation is added or changed (see the module's docstring).

    One statement off two indexes: the newest id and `updated_at`, and the rows changed since
    the start of the previous LOOKBACK-long slot of time (a few, unless the team is very
    busy). A commit lands at most LOOKBACK after its `updated_at`, so within the window; and
    the window moves once per slot, not with every request, so rows leaving it do not make
    every request after a burst of changes count afresh."""
    moment = (now or utcnow()).timestamp()
    slot = LOOKBACK.total_seconds()
    since = datetime.fromtimestamp(moment - moment % slot - slot, UTC)
    recent = col(Conversation.updated_at) > since
    recent_rows = sa_select(col(Conversation.version)).where(recent).subquery()
    row = session.execute(
        sa_select(
            sa_select(func.max(Conversation.id)).scalar_subquery(),
            sa_select(func.max(Conversation.updated_at)).scalar_subquery(),
            sa_select(func.count()).select_from(recent_rows).scalar_subquery(),
            sa_select(func.coalesce(func.sum(recent_rows.c.version), 0)).scalar_subquery(),
        )
    ).one()
    return tuple(row)


class ChangeCache:
    """Values made from the conversations (counts, a list's rendered parts) reused while
    `change_stamp` says nothing changed and they are younger than `max_age` seconds (a bound
    on how stale they can get should a change ever slip past the stamp); at most
    `max_entries`, least recently used first out. Shared by the threads of one API process:
    when a change invalidates what fifty open pages show, one thread makes the value afresh
    and the others wait for its result instead of making it too."""

    def __init__(self, *, max_entries: int = 512, max_age: float = 60.0) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[tuple[object, ...], float, Any]] = OrderedDict()
        self._computing: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def _fresh(self, key: Hashable, stamp: tuple[object, ...]) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is not None and entry[0] == stamp and time.monotonic() - entry[1] < self.max_age:
            self._entries.move_to_end(key)
            self.hits += 1
            return True, entry[2]
        return False, None

    def get(self, key: Hashable, stamp: tuple[object, ...], compute: Callable[[], T]) -> T:
        with self._lock:
            found, value = self._fresh(key, stamp)
            if found:
                return cast(T, value)
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                # another thread may have counted while this one waited
                found, value = self._fresh(key, stamp)
                if found:
                    return cast(T, value)
                self.misses += 1
            started = time.monotonic()
            computed = compute()
            with self._lock:
                self._entries[key] = (stamp, started, computed)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    gone, _ = self._entries.popitem(last=False)
                    self._computing.pop(gone, None)
            return computed


def queue_counts(session: Session, agent: Agent, cache: ChangeCache | None = None) -> QueueCounts:
    """How many conversations each queue holds for this agent (up to COUNT_CAP); from `cache`
    when nothing changed since it counted them."""
    names = {
        mid: name
        for mid, name in session.exec(
            select(Mailbox.id, Mailbox.name).where(
                col(Mailbox.id).in_(reads.visible_mailbox_ids(session, agent))
            )
        )
        if mid is not None
    }
    if not names:
        return QueueCounts(queues={q.name: 0 for q in QUEUES})
    ids = sorted(names)
    me = agent.id or 0
    if cache is None:
        numbers, mine = _count(session, ids), _count_mine(session, me, ids)
    else:
        # what all agents who see these mailboxes share, and each one's own Mine
        stamp = change_stamp(session)
        numbers = cache.get(("queues", tuple(ids)), stamp, lambda: _count(session, ids))
        mine = cache.get(("mine", me, tuple(ids)), stamp, lambda: _count_mine(session, me, ids))
    # the agent's drafts come and go without a conversation changing: counted every time (a
    # few rows off an index of the agent's own)
    drafted = _capped(drafts.count(session, me, ids))
    # the SLA queues change with the clock, not only with the conversations: counted every time
    due = {k: _capped(n) for k, n in sla_queues.count_due(session, ids).items()}
    return QueueCounts(
        queues={"mine": mine, "drafts": drafted, **numbers.queues, **due},
        mailboxes=sorted((name, numbers.mailboxes[mid]) for mid, name in names.items()),
        tags=numbers.tags,
    )


def _count_mine(session: Session, me: int, ids: list[int]) -> Count:
    where = "mailbox_id IN :mailboxes AND status IN ('open', 'pending') AND assignee_id = :me"
    statement = text(f"SELECT {_capped_count(where)}").bindparams(
        bindparam("mailboxes", value=ids, expanding=True), me=me
    )
    return _capped(int(session.connection().execute(statement).scalar_one()))


def _count(session: Session, ids: list[int]) -> _Numbers:
    """The counts every agent who sees these mailboxes shares (all but Mine). Every count but
    the tags' is one scalar subquery of a single statement: one round trip, and no per-query
    overhead in Python, whatever the number of mailboxes."""
    # the status values are our enum's names, never input
    visible = "mailbox_id IN :mailboxes"
    columns = {
        # held by nobody: no assignee, and not claimed from a mail client either
        "unassigned": f"{visible} AND status = 'open' AND assignee_id IS NULL AND NOT claimed",
        **{s.value: f"{visible} AND status = '{s.value}'" for s in (OPEN, PENDING, CLOSED)},
        "spam": f"{visible} AND status = 'spam'",
        **{f"mailbox_{i}": f"status = 'open' AND mailbox_id = {mid}" for i, mid in enumerate(ids)},
    }
    statement = text(
        "SELECT " + ", ".join(f"{_capped_count(where)} AS {key}" for key, where in columns.items())
    ).bindparams(bindparam("mailboxes", value=ids, expanding=True))
    row = session.connection().execute(statement).one()._mapping
    got = {key: _capped(int(row[key])) for key in columns}
    statuses = [got[k] for k in ("open", "pending", "closed", "spam")]
    counts: dict[str, int] = {
        "unassigned": got["unassigned"],
        "open": got["open"],
        "pending": got["pending"],
        "closed": got["closed"],
        "all": _capped(sum(statuses) + any(c.capped for c in statuses)),
    }
    base = (col(Conversation.merged_into_id).is_(None), col(Conversation.mailbox_id).in_(ids))
    status = col(Conversation.status)
    tag_count = func.count().label("n")
    tags = [
        (tag, _capped(int(n)))
        for tag, n in session.exec(
            # IN, not a join: the open ids come off the queue index alone, no row is read
            select(ConversationTag.tag, tag_count)
            .where(
                col(ConversationTag.conversation_id).in_(
                    select(col(Conversation.id)).where(*base, status == OPEN)
                )
            )
            .group_by(ConversationTag.tag)
            .order_by(tag_count.desc(), ConversationTag.tag)
            .limit(MAX_TAGS)
        )
    ]
    return _Numbers(
        queues=counts, mailboxes={mid: got[f"mailbox_{i}"] for i, mid in enumerate(ids)}, tags=tags
    )
