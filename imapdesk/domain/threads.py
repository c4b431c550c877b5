"""Which conversation a stored message belongs to.

The rules, in order (the winning one is recorded in `Message.thread_rule`):

1. "references": Message-ID links in the manner of JWZ and RFC 5256 THREAD=REFERENCES, built
   incrementally and kept as ThreadNode rows (one per Message-ID seen: a stored message or a
   ghost that others reference). A message's own headers give its parent (an explicit link: the
   last of References, or In-Reply-To when References lacks it); its References chain also links
   its ancestors to each other (inferred links). An inferred link never replaces an existing one;
   a message's own explicit parent replaces an inferred one; no link that would close a loop is
   made. A message without references keeps a parent inferred from its replies, and may get one
   later (Outlook drops References; RFC 5256 would make it a root again, depending on order).
   A message without Message-ID (a synthetic id) still follows its own In-Reply-To/References,
   as Dovecot does (imaptest `thread6`); nothing can reference it.
   The conversation of a message is the one of its tree: a message whose tree touches several
   conversations merges them into the oldest (lowest id); when a message's explicit parent takes
   it (and its replies) out of a tree it had only been inferred into, that part leaves the
   conversation, unless the rest holds no message or the part had joined by token or subject.
   The result partitions messages like Dovecot's THREAD=REFERENCES on the imaptest cases.
2. "token": `[#<conversation id>]` in the subject, for a conversation of the same mailbox.
3. "subject": a guarded form of RFC 5256 step 5 (which merges every root with the same base
   subject, whoever sent it, whenever): the most recent conversation of the same mailbox with the
   same subject key (3 characters or more), the same customer, and its last message within
   `subject_fallback_days` (0 turns it off) of this one; not when the message's references are
   in another conversation. No Re:/Fwd: prefix is required: Outlook drops References but keeps
   "RE:", and customers send again without one. Dovecot's subject merges in the imaptest cases
   (`thread3`, `thread4`) are reproduced by it.
4. "new": a conversation of its own.

Threading follows Message-IDs across mailboxes, like the ingest's dedup by Message-ID; the token
and the subject only ever match in the message's own mailbox. Nothing here commits.

Messages threaded one after the other in one transaction (the ingest's batch) can share a
`ThreadBatch`: it reads up front, in a few queries, what each message would look up on its own,
and writes the thread nodes together; the result is the one of threading them one by one.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, bindparam, or_, select, update
from sqlmodel import Session, col

from imapdesk.domain.conversations.aggregates import (
    add_message_to_conversation,
    conversation_by_id,
    conversation_subject_key,
    conversation_token,
    find_token,
    load_conversations,
    merge_conversations,
    message_customer,
    message_time,
    new_conversation,
    our_addresses_for,
    pending_conversations,
    recompute_conversation,
    resolve_merged,
)
from imapdesk.kernel.models import (
    Conversation,
    ConversationStatus,
    Direction,
    Message,
    ThreadNode,
    as_utc,
)
from imapdesk.kernel.settings import Settings

__all__ = [
    "RULE_NEW",
    "RULE_REFERENCES",
    "RULE_SUBJECT",
    "RULE_TOKEN",
    "ThreadBatch",
    "ThreadInput",
    "conversation_token",
    "find_token",
    "reference_chain",
    "thread_message",
    "thread_references",
]

RULE_REFERENCES = "references"
RULE_TOKEN = "token"
RULE_SUBJECT = "subject"
RULE_NEW = "new"

# a subject key shorter than this ("", "re", "hi") never joins by subject
SUBJECT_KEY_MIN = 3
# References longer than this keep the first (the thread's root) and the newest ones
MAX_CHAIN = 100
MAX_MSGID = 998  # ThreadNode.msgid
_LOAD_CHUNK = 500
_PREFETCH_LEVELS = 3

_NODES = cast(Table, ThreadNode.__table__)  # type: ignore[attr-defined]
# statements built once: building one costs more than running it on SQLite
_SELECT_NODES = select(
    _NODES.c.msgid,
    _NODES.c.parent_msgid,
    _NODES.c.parent_explicit,
    _NODES.c.message_id,
    _NODES.c.conversation_id,
)
# the statements every batch runs go straight to the DBAPI cursor: through SQLAlchemy they
# cost five times as much, and threading spends the ingest's budget
_SELECT_BY_MSGID_SQL = (
    f"SELECT msgid, parent_msgid, parent_explicit, message_id, conversation_id "
    f"FROM {_NODES.name} WHERE msgid IN ({{marks}})"
)
_INSERT_SQL = (
    f"INSERT INTO {_NODES.name} (msgid, parent_msgid, parent_explicit, message_id, "
    f"conversation_id) VALUES ({{m}}, {{m}}, {{m}}, {{m}}, {{m}})"
)
_UPDATE_SQL = (
    f"UPDATE {_NODES.name} SET parent_msgid = {{m}}, parent_explicit = {{m}}, "
    f"message_id = {{m}}, conversation_id = {{m}} WHERE msgid = {{m}}"
)
_NODES_BY_PARENT = _SELECT_NODES.where(_NODES.c.parent_msgid.in_(bindparam("keys", expanding=True)))
_NODES_BY_CONVERSATION = _SELECT_NODES.where(_NODES.c.conversation_id == bindparam("key"))
_GLUED = (
    select(col(Message.id))
    .where(
        col(Message.id).in_(bindparam("ids", expanding=True)),
        col(Message.thread_rule).in_((RULE_TOKEN, RULE_SUBJECT)),
    )
    .limit(1)
)


def _subject_candidates(
    customer_clause: ColumnElement[bool],
) -> Select[int | None, datetime | None]:
    return (
        select(col(Conversation.id), col(Conversation.last_message_at))
        .where(
            col(Conversation.mailbox_id) == bindparam("mailbox_id"),
            col(Conversation.subject_key) == bindparam("key"),
            col(Conversation.merged_into_id).is_(None),
            col(Conversation.status) != ConversationStatus.deleted,
            customer_clause,
            col(Conversation.last_message_at).between(bindparam("since"), bindparam("until")),
        )
        .order_by(col(Conversation.last_message_at).desc(), col(Conversation.id).desc())
        .limit(10)
    )


_SUBJECT_SAME_CUSTOMER = _subject_candidates(
    col(Conversation.customer_email) == bindparam("customer")
)
_SUBJECT_NO_CUSTOMER = _subject_candidates(col(Conversation.customer_email).is_(None))


def reference_chain(references: Sequence[str], in_reply_to: str | None, own: str) -> list[str]:
    """The ancestors a message names, oldest first; the last one is its parent.

    References in header order without repeats or the message itself; an In-Reply-To that
    References lacks goes last (the direct parent when References is truncated or broken).
    """
    chain: list[str] = []
    seen = {own}
    for msgid in references:
        msgid = msgid[:MAX_MSGID]
        if msgid and msgid not in seen:
            seen.add(msgid)
            chain.append(msgid)
    if in_reply_to and in_reply_to[:MAX_MSGID] not in seen:
        chain.append(in_reply_to[:MAX_MSGID])
    if len(chain) > MAX_CHAIN:
        chain = chain[:1] + chain[-(MAX_CHAIN - 1) :]
    return chain


# --- the forest of thread nodes ----------------------------------------------------------------


# (parent_msgid, parent_explicit, message_id, conversation_id) of a ThreadNode row
_State = tuple[str | None, bool, int | None, int | None]


class _NodeStore:
    """The ThreadNode rows of one transaction by msgid: each one read once, all written together.

    A write-back cache standing for the table: `load` reads the rows not known yet (one query
    for many msgids), `put` changes or adds a row in memory, `flush` writes the new and the
    changed rows with one executemany each. What it answers is what the table would hold had
    every `put` been written at once: a query by anything but the msgid (`select`) flushes
    first, and a bulk `UPDATE ... SET conversation_id` run elsewhere (a merge) is mirrored by
    `rename_conversation`. Rows go straight through the DBAPI cursor of the session's
    connection: through SQLAlchemy they cost five times as much.
    """

    def __init__(self, session: Session, before_write: Callable[[], None] | None = None) -> None:
        self.session = session
        self.before_write = before_write
        self.rows: dict[str, _State] = {}
        self._absent: set[str] = set()  # looked up: no such row
        self._new: dict[str, None] = {}  # rows to insert, in order
        self._changed: dict[str, None] = {}  # stored rows to update

    def _cursor(self) -> tuple[Any, str]:
        """A DBAPI cursor in the session's transaction, and the driver's placeholder."""
        connection = self.session.connection()
        mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        return connection.connection.driver_connection.cursor(), mark  # type: ignore[union-attr]

    def load(self, msgids: Iterable[str]) -> list[str]:
        """Read the rows of the msgids not known yet; the msgids of the rows found."""
        rows = self.rows
        missing = [m for m in dict.fromkeys(msgids) if m not in rows and m not in self._absent]
        if not missing:
            return []
        found: list[str] = []
        cursor, mark = self._cursor()
        try:
            for start in range(0, len(missing), _LOAD_CHUNK):
                chunk = missing[start : start + _LOAD_CHUNK]
                cursor.execute(
                    _SELECT_BY_MSGID_SQL.format(marks=", ".join([mark] * len(chunk))), chunk
                )
                for msgid, parent, explicit, message_id, conversation_id in cursor.fetchall():
                    rows[msgid] = (parent, bool(explicit), message_id, conversation_id)
                    found.append(msgid)
        finally:
            cursor.close()
        self._absent.update(m for m in missing if m not in rows)
        return found

    def load_with_ancestors(self, msgids: Iterable[str], levels: int) -> None:
        """`load`, then the parents of what it found, `levels` up (a query per level)."""
        found = self.load(msgids)
        for _ in range(levels):
            if not found:
                break
            found = self.load({p for m in found if (p := self.rows[m][0]) is not None})

    def select(self, stmt: Select[Any], params: dict[str, Any]) -> list[tuple[str, _State]]:
        """The rows a prebuilt statement finds (after writing what is pending)."""
        self.flush()
        found = []
        for msgid, parent, explicit, message_id, conversation_id in (
            self.session.connection().execute(stmt, params).all()
        ):
            state = self.rows.get(msgid)
            if state is None:
                state = self.rows[msgid] = (parent, bool(explicit), message_id, conversation_id)
                self._absent.discard(msgid)
            found.append((msgid, state))
        return found

    def put(self, msgid: str, state: _State) -> None:
        if msgid not in self.rows:
            self._new[msgid] = None
            self._absent.discard(msgid)
        elif msgid not in self._new:
            self._changed[msgid] = None
        self.rows[msgid] = state

    def rename_conversation(self, old: int, new: int) -> None:
        """Mirror `UPDATE threadnode SET conversation_id = new WHERE conversation_id = old`."""
        for msgid, state in self.rows.items():
            if state[3] == old:
                self.rows[msgid] = (*state[:3], new)

    def flush(self) -> None:
        if not self._new and not self._changed:
            return
        if self.before_write is not None:
            self.before_write()
        cursor, mark = self._cursor()
        try:
            if self._new:
                cursor.executemany(
                    _INSERT_SQL.format(m=mark), [(m, *self.rows[m]) for m in self._new]
                )
            if self._changed:
                cursor.executemany(
                    _UPDATE_SQL.format(m=mark), [(*self.rows[m], m) for m in self._changed]
                )
        finally:
            cursor.close()
        self._new.clear()
        self._changed.clear()


@dataclass(slots=True, eq=False)
class _Node:
    msgid: str
    parent: str | None = None
    explicit: bool = False
    message_id: int | None = None
    conversation_id: int | None = None
    # the row as stored (None: not stored yet), to write only what changed
    stored: _State | None = None

    def state(self) -> _State:
        return (self.parent, self.explicit, self.message_id, self.conversation_id)


class _Forest:
    """Thread nodes in memory for one message, read on demand from the store (if there is one)."""

    def __init__(self, store: _NodeStore | None) -> None:
        self.store = store
        self.nodes: dict[str, _Node] = {}
        self._parents_now: set[str] = set()  # nodes that got a child in this round

    # loading

    def load(self, msgids: Iterable[str]) -> None:
        if self.store is None:
            return
        missing = [m for m in msgids if m not in self.nodes]
        if not missing:
            return
        self.store.load(missing)
        rows = self.store.rows
        for msgid in missing:
            state = rows.get(msgid)
            if state is not None and msgid not in self.nodes:
                self.nodes[msgid] = _Node(msgid, *state, stored=state)

    def load_with(self, stmt: Select[Any], key: object) -> list[_Node]:
        """The nodes a prebuilt statement finds; the in-memory version wins over the stored one."""
        assert self.store is not None
        param = "key" if isinstance(key, int | str) else "keys"
        found = []
        for msgid, state in self.store.select(stmt, {param: key}):
            node = self.nodes.get(msgid)
            if node is None:
                node = self.nodes[msgid] = _Node(msgid, *state, stored=state)
            found.append(node)
        return found

    def get(self, msgid: str) -> _Node | None:
        if msgid not in self.nodes:
            self.load([msgid])
        return self.nodes.get(msgid)

    def get_or_create(self, msgid: str) -> _Node:
        node = self.get(msgid)
        if node is None:
            node = self.nodes[msgid] = _Node(msgid)
        return node

    # structure

    def _may_have_descendants(self, node: _Node) -> bool:
        return self.store is None or node.stored is not None or node.msgid in self._parents_now

    def would_loop(self, parent_id: str, child: _Node) -> bool:
        """Whether making `child` the child of `parent_id` would close a loop."""
        if parent_id == child.msgid:
            return True
        if not self._may_have_descendants(child):
            return False
        seen: set[str] = set()
        current: str | None = parent_id
        while current is not None:
            if current == child.msgid or current in seen:
                return True
            seen.add(current)
            node = self.get(current)
            if node is None:
                return False
            current = node.parent
        return False

    def set_parent(self, child: _Node, parent_id: str) -> None:
        child.parent = parent_id
        self._parents_now.add(parent_id)

    def root_of(self, msgid: str) -> str:
        seen: set[str] = set()
        current = msgid
        while current not in seen:
            seen.add(current)
            node = self.get(current)
            if node is None or node.parent is None:
                return current
            current = node.parent
        return current

    def children_map(self) -> dict[str, list[_Node]]:
        children: dict[str, list[_Node]] = defaultdict(list)
        for node in self.nodes.values():
            if node.parent is not None:
                children[node.parent].append(node)
        return children

    def subtree(self, msgid: str, children: dict[str, list[_Node]]) -> list[_Node]:
        top = self.nodes[msgid]
        found, queue, seen = [top], deque([top]), {msgid}
        while queue:
            for child in children.get(queue.popleft().msgid, ()):
                if child.msgid not in seen:
                    seen.add(child.msgid)
                    found.append(child)
                    queue.append(child)
        return found

    def group_of(self, msgid: str) -> list[_Node]:
        """Nodes joined to `msgid` by links in memory or by sharing a conversation."""
        children = self.children_map()
        by_conversation: dict[int, list[_Node]] = defaultdict(list)
        for node in self.nodes.values():
            if node.conversation_id is not None:
                by_conversation[node.conversation_id].append(node)
        start = self.nodes[msgid]
        found, queue, seen = [start], deque([start]), {msgid}
        done_conversations: set[int] = set()
        while queue:
            node = queue.popleft()
            neighbours: list[_Node] = list(children.get(node.msgid, ()))
            if node.parent is not None and node.parent in self.nodes:
                neighbours.append(self.nodes[node.parent])
            cid = node.conversation_id
            if cid is not None and cid not in done_conversations:
                done_conversations.add(cid)
                neighbours.extend(by_conversation[cid])
            for other in neighbours:
                if other.msgid not in seen:
                    seen.add(other.msgid)
                    found.append(other)
                    queue.append(other)
        return found

    def whole_trees(self, seeds: Iterable[_Node]) -> list[_Node]:
        """Every stored node of the trees of `seeds` (walking the database)."""
        roots = {self.root_of(n.msgid) for n in seeds}
        found: dict[str, _Node] = {r: self.nodes[r] for r in roots if r in self.nodes}
        frontier = list(found)
        while frontier and self.store is not None:
            next_frontier = []
            for start in range(0, len(frontier), _LOAD_CHUNK):
                chunk = frontier[start : start + _LOAD_CHUNK]
                for child in self.load_with(_NODES_BY_PARENT, chunk):
                    if child.msgid not in found:
                        found[child.msgid] = child
                        next_frontier.append(child.msgid)
            frontier = next_frontier
        return list(found.values())

    def rename_conversation(self, old: int, new: int) -> None:
        """Mirror a bulk `UPDATE ... SET conversation_id = new WHERE conversation_id = old`."""
        for node in self.nodes.values():
            if node.conversation_id == old:
                node.conversation_id = new
            if node.stored is not None and node.stored[3] == old:
                node.stored = (*node.stored[:3], new)

    # writing

    def write(self) -> None:
        """Hand the new and changed nodes to the store (which writes them when it flushes)."""
        assert self.store is not None
        for n in self.nodes.values():
            state = n.state()
            if state != n.stored:
                self.store.put(n.msgid, state)


@dataclass(slots=True)
class _Linked:
    links: list[tuple[str, str]] = field(default_factory=list)
    # the inferred parent the message's own headers replaced (its subtree moved away from it)
    detached_from: str | None = None


def _link_message(forest: _Forest, own_id: str, chain: Sequence[str]) -> _Linked:
    """Add one message's links to the forest (RFC 5256 step 1, incrementally)."""
    forest.load([own_id, *chain])
    own = forest.get_or_create(own_id)
    for msgid in chain:
        forest.get_or_create(msgid)
    result = _Linked()
    # (B) the References chain: link each to the next unless it has a parent or it would loop
    for parent_id, child_id in pairwise(chain):
        child = forest.nodes[child_id]
        if child.parent is None and not child.explicit and not forest.would_loop(parent_id, child):
            forest.set_parent(child, parent_id)
            result.links.append((parent_id, child_id))
    # (C) the message's own parent beats one inferred from other messages' References; a
    # message without references keeps an inferred parent (Outlook drops References)
    if chain and not own.explicit:
        wanted = chain[-1]
        if own.parent is not None and own.parent != wanted:
            result.detached_from = own.parent
            own.parent = None
        if own.parent is None and not forest.would_loop(wanted, own):
            forest.set_parent(own, wanted)
            result.links.append((wanted, own_id))
        own.explicit = True
    return result


# --- the pure version, for tests and tools -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThreadInput:
    message_id: str | None
    in_reply_to: str | None = None
    references: Sequence[str] = ()


def thread_references(messages: Sequence[ThreadInput]) -> list[set[int]]:
    """The partition of `messages` (by index, taken in order) into Message-ID threads.

    The same linking rules as `thread_message` without a database and without the token and
    subject rules. A repeated Message-ID is the same message (as the ingest stores it once);
    a message without one is unique.
    """
    forest = _Forest(None)
    own_ids: list[str] = []
    for index, item in enumerate(messages):
        own_id = item.message_id or f"\x00no-message-id-{index}"
        own_ids.append(own_id)
        node = forest.nodes.get(own_id)
        if node is not None and node.message_id is not None:
            continue
        chain = reference_chain(item.references, item.in_reply_to, own_id)
        _link_message(forest, own_id, chain)
        forest.nodes[own_id].message_id = index
    groups: dict[str, set[int]] = defaultdict(set)
    for index, own_id in enumerate(own_ids):
        groups[forest.root_of(own_id)].add(index)
    return sorted(groups.values(), key=min)


# --- the database path -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SubjectScope:
    """The subject lookups a batch's prefetch can answer: these keys and customers in this
    mailbox, with windows inside [since, until]."""

    mailbox_id: int
    keys: frozenset[str]
    customers: frozenset[str | None]
    since: datetime
    until: datetime


class ThreadBatch:
    """What `thread_message` reads, for messages threaded one after the other in one session.

    `prefetch` reads up front, in a few queries for a whole batch, what threading its messages
    would otherwise look up message by message: the thread nodes of every Message-ID they name
    (and of a few levels of ancestors), the conversations of those nodes and of the tokens in
    their subjects, and the conversations their subject lookups could find. The thread nodes
    are kept in memory (`_NodeStore`) and written together by `flush`, which the caller runs
    before anything but `thread_message` reads them (the ingest: at the end of the batch).
    `before_write` runs before thread nodes are written: they reference their messages, and
    the ingest inserts a message's row only once it is threaded. Without a prefetch (a single
    message) everything is read on demand.
    """

    def __init__(self, session: Session, *, before_write: Callable[[], None] | None = None) -> None:
        self.session = session
        self.nodes = _NodeStore(session, before_write)
        self._subject_scope: _SubjectScope | None = None
        # conversations the subject prefetch read and those the batch created or changed,
        # by subject key (at the time) and identity
        self._by_subject: dict[str, dict[int, Conversation]] = {}

    def prefetch(
        self,
        messages: Sequence[Message],
        mailbox_id: int,
        *,
        settings: Settings,
        our_addresses: frozenset[str] = frozenset(),
    ) -> None:
        msgids: list[str] = []
        tokens: set[int] = set()
        for m in messages:
            msgids.append(m.message_id)
            msgids.extend(reference_chain(m.references or [], m.in_reply_to, m.message_id))
            number = find_token(m.subject)
            if number is not None:
                tokens.add(number)
        # a References chain names the ancestors; a few levels more cover walks up a tree
        # (loop checks) but in deep threads named by In-Reply-To alone: the rest on demand
        self.nodes.load_with_ancestors(msgids, _PREFETCH_LEVELS)
        referenced = {s[3] for s in self.nodes.rows.values() if s[3] is not None}
        load_conversations(self.session, referenced | tokens)
        self._prefetch_subjects(messages, mailbox_id, settings, our_addresses)

    def _prefetch_subjects(
        self,
        messages: Sequence[Message],
        mailbox_id: int,
        settings: Settings,
        our_addresses: frozenset[str],
    ) -> None:
        terms = [
            t
            for m in messages
            if (t := _subject_terms(self.session, m, mailbox_id, settings, our_addresses))
        ]
        if not terms:
            return
        keys = sorted({key for key, _, _, _ in terms})
        customers = {customer for _, customer, _, _ in terms}
        since = min(when - window for _, _, when, window in terms)
        until = max(when + window for _, _, when, window in terms)
        named = sorted(c for c in customers if c is not None)
        customer_clause: ColumnElement[bool] = col(Conversation.customer_email).in_(named)
        if None in customers:
            customer_clause = or_(customer_clause, col(Conversation.customer_email).is_(None))
        for start in range(0, len(keys), _LOAD_CHUNK):
            stmt = (
                select(Conversation)
                .where(
                    col(Conversation.mailbox_id) == mailbox_id,
                    col(Conversation.subject_key).in_(keys[start : start + _LOAD_CHUNK]),
                    col(Conversation.merged_into_id).is_(None),
                    col(Conversation.status) != ConversationStatus.deleted,
                    customer_clause,
                    col(Conversation.last_message_at).between(since, until),
                )
                .execution_options(autoflush=False)
            )
            for c in self.session.execute(stmt).scalars():
                self._by_subject.setdefault(c.subject_key, {})[id(c)] = c
        self._subject_scope = _SubjectScope(
            mailbox_id, frozenset(keys), frozenset(customers), since, until
        )
        # changed here before, not flushed: judged by what they are now
        for c in pending_conversations(self.session):
            self.changed(c)

    def covers_subject(
        self, mailbox_id: int, key: str, customer: str | None, since: datetime, until: datetime
    ) -> bool:
        scope = self._subject_scope
        return (
            scope is not None
            and scope.mailbox_id == mailbox_id
            and key in scope.keys
            and customer in scope.customers
            and scope.since <= since
            and until <= scope.until
        )

    def subject_conversation(
        self, mailbox_id: int, key: str, customer: str | None, when: datetime, window: timedelta
    ) -> Conversation | None:
        """`_subject_conversation` from memory, for a lookup `covers_subject` accepts.

        A conversation matching now either matched when the prefetch read it, unchanged
        since, or was created or changed by the batch (`changed`, after each message, with
        its key then): it is here under its key, and judged by its object.
        """
        best: Conversation | None = None
        best_order: tuple[datetime, int] | None = None
        for c in self._by_subject.get(key, {}).values():
            if _subject_matches(c, mailbox_id, key, customer, when, window):
                assert c.id is not None and c.last_message_at is not None
                order = (as_utc(c.last_message_at), c.id)
                if best_order is None or order > best_order:
                    best, best_order = c, order
        return best

    def changed(self, conversation: Conversation) -> None:
        """A conversation the batch created or changed (its subject, customer, last message)."""
        if self._subject_scope is not None:
            self._by_subject.setdefault(conversation.subject_key, {})[id(conversation)] = (
                conversation
            )

    def flush(self) -> None:
        """Write the thread nodes kept in memory."""
        self.nodes.flush()


@dataclass(slots=True)
class _Split:
    source: Conversation
    moved_message_ids: list[int]


def thread_message(
    session: Session,
    message: Message,
    mailbox_id: int,
    *,
    settings: Settings,
    our_addresses: frozenset[str] = frozenset(),
    batch: ThreadBatch | None = None,
) -> Conversation:
    """Put a just-stored message (flushed, no conversation yet) into its conversation.

    Sets `message.conversation_id` and `message.thread_rule`, writes the ThreadNode rows,
    updates the conversation's aggregates (merging conversations the message connects) and
    returns the conversation. Never commits; thread nodes and new conversations are written
    at once on the session's connection, the rest waits for the caller's flush.

    With a `batch` (messages threaded one after the other in the same session), what the
    batch read up front answers instead of the database, and the thread nodes are written
    when the caller calls `batch.flush()`; the result is the same. The message's row may then
    be written later too, provided that it is before any flush and before the batch writes
    thread nodes (`ThreadBatch.before_write`): the ingest does so.
    """
    assert message.id is not None, "the message must be flushed first"
    context = batch if batch is not None else ThreadBatch(session)
    own_id = message.message_id
    chain = reference_chain(message.references or [], message.in_reply_to, own_id)
    forest = _Forest(context.nodes)
    linked = _link_message(forest, own_id, chain)
    own = forest.nodes[own_id]
    own.message_id = message.id

    split: _Split | None = None
    if linked.detached_from is not None and own.conversation_id is not None:
        split = _split_off(session, forest, own, linked.detached_from)

    group = forest.group_of(own_id)
    found_ids = sorted({n.conversation_id for n in group if n.conversation_id is not None})
    found: dict[int, Conversation] = {}
    for cid in found_ids:
        # nodes follow merges; this only guards against a merge made elsewhere
        resolved = resolve_merged(session, conversation_by_id(session, cid))
        if resolved is not None and resolved.id is not None:
            found.setdefault(resolved.id, resolved)
    conversation: Conversation | None = None
    created = merged = False
    if found:
        rule = RULE_REFERENCES
        conversation = found[min(found)]
        others = [c for cid, c in sorted(found.items()) if c is not conversation]
        stale = [cid for cid in found_ids if cid not in found]
        assert conversation.id is not None
        if others:
            # counted in by the recompute that ends the merge
            message.conversation_id = conversation.id
            merge_conversations(session, conversation, others, our_addresses=our_addresses)
            merged = True
            for other in others:
                assert other.id is not None
                context.nodes.rename_conversation(other.id, conversation.id)
        for old_id in [*(c.id for c in others), *stale]:
            assert old_id is not None
            forest.rename_conversation(old_id, conversation.id)
    else:
        rule = RULE_TOKEN
        conversation = _token_conversation(session, message, mailbox_id)
        if conversation is None:
            rule = RULE_SUBJECT
            conversation = _subject_conversation(
                session, message, mailbox_id, settings, our_addresses, context
            )
            # References into another conversation contradict the subject
            referenced = {forest.nodes[m].conversation_id for m in chain} - {None}
            if conversation is not None and referenced - {conversation.id}:
                conversation = None
        if conversation is None:
            rule = RULE_NEW
            created = True
            conversation = new_conversation(
                session,
                mailbox_id,
                message,
                our_addresses=our_addresses,
                like=split.source if split else None,
            )
    assert conversation.id is not None
    cid = conversation.id

    # a tree that a split left without messages has no conversation: take all of it along
    orphans = [n for n in group if n.stored is not None and n.stored[3] is None]
    if orphans:
        group = list({n.msgid: n for n in (*group, *forest.whole_trees(orphans))}.values())
    for node in group:
        node.conversation_id = cid
    message.conversation_id = cid
    message.thread_rule = rule
    if split is not None and split.moved_message_ids:
        session.execute(
            update(Message)
            .where(col(Message.id).in_(split.moved_message_ids))
            .values(conversation_id=cid)
            .execution_options(synchronize_session="evaluate")
        )
    forest.write()
    if batch is None:
        context.flush()

    if split is not None:
        recompute_conversation(session, conversation, our_addresses=our_addresses)
        if split.source is not conversation:
            recompute_conversation(session, split.source, our_addresses=our_addresses)
    elif not created and not merged:
        add_message_to_conversation(session, conversation, message, our_addresses=our_addresses)
    # the conversations this message created or changed (a merge leaves the others merged)
    context.changed(conversation)
    if split is not None:
        context.changed(split.source)
    return conversation


def _split_off(session: Session, forest: _Forest, own: _Node, old_parent: str) -> _Split | None:
    """The message's own parent took it (and its replies) out of the tree it was inferred into.

    That subtree leaves the conversation unless the rest of the tree holds no message, or a
    message of the subtree had joined the conversation by token or subject (on its own merit).
    """
    source_id = own.conversation_id
    assert source_id is not None
    if forest.root_of(own.msgid) == forest.root_of(old_parent):
        return None  # its own parent is elsewhere in the same tree
    forest.load_with(_NODES_BY_CONVERSATION, source_id)
    children = forest.children_map()
    moving = forest.subtree(own.msgid, children)
    remaining = forest.subtree(forest.root_of(old_parent), children)
    if not any(n.message_id is not None for n in remaining):
        for node in remaining:
            node.conversation_id = None
        return None
    moved_ids = [n.message_id for n in moving if n.message_id is not None and n is not own]
    if moved_ids and session.execute(_GLUED, {"ids": moved_ids}).first() is not None:
        return None
    source = conversation_by_id(session, source_id)
    if source is None:
        return None
    for node in moving:
        if node.conversation_id == source_id:
            node.conversation_id = None
    return _Split(source=source, moved_message_ids=moved_ids)


def _token_conversation(session: Session, message: Message, mailbox_id: int) -> Conversation | None:
    number = find_token(message.subject)
    if number is None:
        return None
    conversation = resolve_merged(session, conversation_by_id(session, number))
    if conversation is None or conversation.mailbox_id != mailbox_id:
        return None
    return conversation


def _subject_terms(
    session: Session,
    message: Message,
    mailbox_id: int,
    settings: Settings,
    our_addresses: frozenset[str],
) -> tuple[str, str | None, datetime, timedelta] | None:
    """(subject key, customer, time, window) of a message's subject lookup; None: no lookup."""
    days = settings.subject_fallback_days
    key = conversation_subject_key(message.subject)
    if days <= 0 or len(key) < SUBJECT_KEY_MIN or message.direction == Direction.note:
        return None
    ours = our_addresses
    if message.direction == Direction.outbound:
        ours = our_addresses_for(session, mailbox_id, our_addresses)
    customer, _ = message_customer(message, ours)
    return key, customer, message_time(message), timedelta(days=days)


def _subject_matches(
    c: Conversation,
    mailbox_id: int,
    key: str,
    customer: str | None,
    when: datetime,
    window: timedelta,
) -> bool:
    return (
        c.id is not None
        and c.last_message_at is not None
        and c.mailbox_id == mailbox_id
        and c.subject_key == key
        and c.merged_into_id is None
        and c.status != ConversationStatus.deleted
        and c.customer_email == customer
        and abs(as_utc(c.last_message_at) - when) <= window
    )


def _subject_conversation(
    session: Session,
    message: Message,
    mailbox_id: int,
    settings: Settings,
    our_addresses: frozenset[str],
    batch: ThreadBatch,
) -> Conversation | None:
    """The most recent conversation of this mailbox with the same subject key and customer
    whose last message is within `subject_fallback_days` of this one."""
    terms = _subject_terms(session, message, mailbox_id, settings, our_addresses)
    if terms is None:
        return None
    key, customer, when, window = terms
    if batch.covers_subject(mailbox_id, key, customer, when - window, when + window):
        return batch.subject_conversation(mailbox_id, key, customer, when, window)
    params = {
        "mailbox_id": mailbox_id,
        "key": key,
        "customer": customer,
        "since": when - window,
        "until": when + window,
    }
    # no customer on either side (no From:) is the same customer: imaptest thread3/thread4
    stmt = _SUBJECT_SAME_CUSTOMER if customer else _SUBJECT_NO_CUSTOMER
    # the stored rows, without flushing the caller's pending rows; conversations changed in
    # this transaction and not flushed yet are judged by their objects instead
    pending = {c.id: c for c in pending_conversations(session)}
    candidates: dict[int, datetime] = {}
    for cid, last in session.execute(stmt, params, execution_options={"autoflush": False}):
        if cid not in pending:
            candidates[cid] = as_utc(last)
    for c in pending.values():
        if c.id is not None and _subject_matches(c, mailbox_id, key, customer, when, window):
            assert c.last_message_at is not None
            candidates[c.id] = as_utc(c.last_message_at)
    if not candidates:
        return None
    best = max(candidates, key=lambda cid: (candidates[cid], cid))
    return pending.get(best) or conversation_by_id(session, best)
