"""Read-side queries shared by the REST API and the web UI.

Every query goes through `visible_mailbox_ids`, so per-mailbox permissions change one place;
a single conversation through `visible_conversation` (the rule of
`imapdesk.domain.accounts.access`, and what a merged id answers).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, or_
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from imapdesk.domain.accounts import access
from imapdesk.domain.accounts.agents import agent_by_email
from imapdesk.domain.conversations import search
from imapdesk.domain.conversations.aggregates import resolve_merged
from imapdesk.domain.mailboxes.keywords import TagNotKept, tags_not_kept, unkept_keywords
from imapdesk.kernel.errors import ImapdeskError, InvalidInput, NotFound
from imapdesk.kernel.models import (
    Activity,
    Agent,
    Attachment,
    Conversation,
    ConversationStatus,
    ConversationTag,
    Draft,
    Folder,
    Mailbox,
    Message,
    MessageLocation,
    RawMessage,
    UnkeptKeyword,
    as_utc,
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# `assignee=none`: unassigned; `assignee=me`: the agent asking
ASSIGNEE_NONE = "none"
ASSIGNEE_ME = "me"
# statuses listed when the caller names none: everything but the bin
DEFAULT_STATUSES = tuple(s for s in ConversationStatus if s != ConversationStatus.deleted)


class ConversationMerged(ImapdeskError):
    """The conversation was merged into another; `merged_into` names the surviving one."""

    status_code = 308
    code = "conversation_merged"

    def __init__(self, conversation_id: int, merged_into: int) -> None:
        super().__init__(
            f"conversation {conversation_id} was merged into conversation {merged_into}",
            merged_into=merged_into,
        )
        self.merged_into = merged_into


# --- permissions ------------------------------------------------------------------------------


def visible_mailbox_ids(session: Session, agent: Agent) -> list[int]:
    """The mailboxes this agent may see (admins: all; see imapdesk.domain.accounts.access)."""
    return access.visible_mailbox_ids(session, agent)


# --- conversation list ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationFilters:
    mailbox: str | None = None
    # None or empty: every status except deleted
    statuses: Sequence[ConversationStatus] | None = None
    # an agent's email, ASSIGNEE_NONE or ASSIGNEE_ME
    assignee: str | None = None
    tag: str | None = None
    q: str | None = None
    # only those the agent asking has a draft on (the Drafts queue)
    my_drafts: bool = False


@dataclass(frozen=True)
class ConversationRow:
    conversation: Conversation
    mailbox: str
    assignee: str | None
    tags: list[str]
    # in a search: where it matched (imapdesk.domain.conversations.search.snippets)
    snippet: search.Snippet | None = None
    # the tags its mailbox does not hold, and why (imapdesk/domain/mailboxes/keywords.py)
    tags_not_kept: dict[str, TagNotKept] = field(default_factory=dict)


@dataclass(frozen=True)
class ConversationPage:
    items: list[ConversationRow]
    next_cursor: str | None


@dataclass(frozen=True)
class _Position:
    last_message_at: datetime | None
    id: int


def encode_cursor(conversation: Conversation) -> str:
    assert conversation.id is not None
    lma = conversation.last_message_at
    raw = json.dumps([lma.isoformat() if lma else None, conversation.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> _Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        lma, cid = json.loads(raw)
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise ValueError("id")
        when = datetime.fromisoformat(lma) if lma is not None else None
        if when is not None and when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return _Position(when, cid)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "the cursor is not one this API handed out; start again without it", field="cursor"
        ) from exc


def _mailbox_names(session: Session, ids: Iterable[int]) -> dict[int, str]:
    ids = list(ids)
    if not ids:
        return {}
    rows = session.exec(select(Mailbox.id, Mailbox.name).where(col(Mailbox.id).in_(ids)))
    return {mid: name for mid, name in rows if mid is not None}


def _agent_emails(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = session.exec(select(Agent.id, Agent.email).where(col(Agent.id).in_(wanted)))
    return {aid: email for aid, email in rows if aid is not None}


def _tags(session: Session, conversation_ids: Iterable[int]) -> dict[int, list[str]]:
    ids = list(conversation_ids)
    tags: dict[int, list[str]] = defaultdict(list)
    if ids:
        rows = session.exec(
            select(ConversationTag.conversation_id, ConversationTag.tag)
            .where(col(ConversationTag.conversation_id).in_(ids))
            .order_by(col(ConversationTag.conversation_id), col(ConversationTag.tag))
        )
        for cid, tag in rows:
            tags[cid].append(tag)
    return tags


def _rows(
    session: Session, conversations: Sequence[Conversation], names: dict[int, str]
) -> list[ConversationRow]:
    """Conversations with their mailbox name, assignee email and tags (and which of those
    their mailbox does not keep): two queries in all, three when some have tags."""
    emails = _agent_emails(session, (c.assignee_id for c in conversations))
    tags = _tags(session, (c.id for c in conversations if c.id is not None))
    unkept = tags_not_kept(
        session, [(c.id, c.mailbox_id, tags[c.id]) for c in conversations if c.id in tags]
    )
    return [
        ConversationRow(
            conversation=c,
            mailbox=names.get(c.mailbox_id, ""),
            assignee=emails.get(c.assignee_id) if c.assignee_id is not None else None,
            tags=tags.get(c.id, []) if c.id is not None else [],
            tags_not_kept=unkept.get(c.id, {}) if c.id is not None else {},
        )
        for c in conversations
    ]


def conversation_rows(
    session: Session, conversations: Sequence[Conversation]
) -> list[ConversationRow]:
    """What a list shows of each of these conversations (found, and checked visible, by the
    caller: a customer's conversations)."""
    names = _mailbox_names(session, {c.mailbox_id for c in conversations})
    return _rows(session, conversations, names)


def _filter_conditions(
    session: Session,
    agent: Agent,
    filters: ConversationFilters,
    query: search.SearchQuery | None = None,
) -> tuple[list[ColumnElement[bool]], dict[int, str]] | None:
    """The WHERE conditions and the visible mailbox names; None when nothing can match.
    `query`: `filters.q` as read already."""
    if "\x00" in (filters.tag or ""):
        return None  # no tag holds a NUL character, and PostgreSQL refuses one in a query
    names = _mailbox_names(session, visible_mailbox_ids(session, agent))
    if filters.mailbox is not None:
        names = {mid: n for mid, n in names.items() if n == filters.mailbox}
    if not names:
        return None
    conds: list[ColumnElement[bool]] = [col(Conversation.merged_into_id).is_(None)]
    # A condition that holds for every row is left out, not just for brevity: without it,
    # the planner walks the list's ordering index instead of sorting what an index on
    # mailbox or status would select (which, with no statistics, SQLite would prefer).
    ids = list(names)
    if filters.mailbox is not None or not access.sees_every_mailbox(agent):
        conds.append(
            col(Conversation.mailbox_id) == ids[0]
            if len(ids) == 1
            else col(Conversation.mailbox_id).in_(ids)
        )
    statuses = list(filters.statuses or DEFAULT_STATUSES)
    if set(statuses) == set(DEFAULT_STATUSES):
        conds.append(col(Conversation.status) != ConversationStatus.deleted)
    else:
        conds.append(
            col(Conversation.status) == statuses[0]
            if len(statuses) == 1
            else col(Conversation.status).in_(statuses)
        )
    if filters.assignee is not None:
        if filters.assignee.lower() == ASSIGNEE_NONE:
            # held by nobody: what a mail client claimed (no assignee named) is held
            conds.append(col(Conversation.assignee_id).is_(None))
            conds.append(col(Conversation.claimed).is_(False))
        else:
            if filters.assignee.lower() == ASSIGNEE_ME:
                assignee_id = agent.id
            else:
                assignee = agent_by_email(session, filters.assignee)
                assignee_id = assignee.id if assignee else None
            if assignee_id is None:
                return None
            conds.append(col(Conversation.assignee_id) == assignee_id)
    if filters.tag is not None:
        conds.append(
            col(Conversation.id).in_(
                select(ConversationTag.conversation_id).where(ConversationTag.tag == filters.tag)
            )
        )
    if filters.my_drafts:
        conds.append(
            col(Conversation.id).in_(
                select(Draft.conversation_id).where(col(Draft.agent_id) == agent.id)
            )
        )
    if filters.q:
        conds.extend(search.matching_conditions(session, query or search.parse_query(filters.q)))
    return conds, names


class SortOrder(StrEnum):
    """newest: latest message first (the default); oldest: longest-waiting first; activity:
    most recently changed first (a message, a note, an assignment, a status change)."""

    newest = "newest"
    oldest = "oldest"
    activity = "activity"


def _encode_position(key: datetime | None, conversation_id: int) -> str:
    raw = json.dumps([key.isoformat() if key else None, conversation_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def list_conversations(
    session: Session,
    agent: Agent,
    filters: ConversationFilters | None = None,
    *,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
    sort: SortOrder | str = SortOrder.newest,
) -> ConversationPage:
    """Newest `last_message_at` first (then highest id), keyset-paginated by an opaque cursor;
    `sort` may ask for the oldest first, or the most recently changed (`updated_at`).

    Conversations without any `last_message_at` come after all others. Merged conversations
    are left out. A page costs a fixed handful of queries whatever its size (visible mailboxes,
    the conversations in index order, then their tags and assignees in bulk).
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}", field="limit")
    try:
        order = SortOrder(sort)
    except ValueError as exc:
        choices = ", ".join(s.value for s in SortOrder)
        raise InvalidInput(f"sort must be one of {choices}", field="sort") from exc
    position = decode_cursor(cursor) if cursor else None
    filters = filters or ConversationFilters()
    query = search.parse_query(filters.q) if filters.q else None
    found = _filter_conditions(session, agent, filters, query)
    if found is None:
        return ConversationPage(items=[], next_cursor=None)
    conds, names = found
    key = col(
        Conversation.updated_at if order == SortOrder.activity else Conversation.last_message_at
    )
    cid = col(Conversation.id)
    descending = order != SortOrder.oldest

    def after(ts: datetime, last_id: int) -> ColumnElement[bool]:
        if descending:
            return and_(key <= ts, or_(key < ts, and_(key == ts, cid < last_id)))
        return and_(key >= ts, or_(key > ts, and_(key == ts, cid > last_id)))

    conversations: list[Conversation] = []
    # Two passes instead of NULLS LAST, which PostgreSQL cannot read off the plain index.
    if position is None or position.last_message_at is not None:
        dated: SelectOfScalar[Conversation] = select(Conversation).where(*conds, key.is_not(None))
        if position is not None and position.last_message_at is not None:
            dated = dated.where(after(position.last_message_at, position.id))
        dated = dated.order_by(
            *((key.desc(), cid.desc()) if descending else (key.asc(), cid.asc()))
        ).limit(limit + 1)
        conversations.extend(session.exec(dated))
    if len(conversations) <= limit and order != SortOrder.activity:
        undated = select(Conversation).where(*conds, key.is_(None))
        if position is not None and position.last_message_at is None:
            undated = undated.where(cid < position.id if descending else cid > position.id)
        undated = undated.order_by(cid.desc() if descending else cid.asc()).limit(
            limit + 1 - len(conversations)
        )
        conversations.extend(session.exec(undated))

    more = len(conversations) > limit
    conversations = conversations[:limit]
    next_cursor = None
    if more:
        last = conversations[-1]
        assert last.id is not None
        value = last.updated_at if order == SortOrder.activity else last.last_message_at
        next_cursor = _encode_position(as_utc(value), last.id)
    items = _rows(session, conversations, names)
    if query is not None and query.clauses:
        found_in = search.snippets(session, query, [c.id for c in conversations if c.id])
        items = [replace(r, snippet=found_in.get(r.conversation.id or 0)) for r in items]
    return ConversationPage(items=items, next_cursor=next_cursor)


# --- one conversation -------------------------------------------------------------------------


@dataclass(frozen=True)
class LocationView:
    mailbox: str
    folder: str
    uid: int
    flags: list[str]


@dataclass(frozen=True)
class MessageView:
    message: Message
    attachments: list[Attachment] = field(default_factory=list)
    locations: list[LocationView] = field(default_factory=list)


@dataclass(frozen=True)
class ConversationDetail:
    row: ConversationRow
    messages: list[MessageView]


def visible_conversation(session: Session, agent: Agent, conversation_id: int) -> Conversation:
    """The conversation, if the agent may see it: NotFound, as if it did not exist, when it
    does not or its mailbox is hidden from the agent; ConversationMerged, naming the survivor,
    when it was merged into another. What the REST API and the web UI both ask first."""
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound(f"no conversation {conversation_id}", conversation_id=conversation_id)
    access.ensure_can_see(session, agent, conversation)
    if conversation.merged_into_id is not None:
        survivor = resolve_merged(session, conversation)
        assert survivor is not None and survivor.id is not None  # a foreign key: it exists
        raise ConversationMerged(conversation_id, survivor.id)
    return conversation


def visible_conversation_id(session: Session, agent: Agent, conversation_id: int) -> int:
    """The id of the conversation the agent may see, following merges (NotFound otherwise),
    without loading its messages: where the web UI's actions on a merged id go."""
    try:
        conversation = visible_conversation(session, agent, conversation_id)
    except ConversationMerged as merged:
        return merged.merged_into
    assert conversation.id is not None
    return conversation.id


def conversation_detail(session: Session, agent: Agent, conversation_id: int) -> ConversationDetail:
    """A conversation with its messages (by date, then id), attachments, locations and tags.

    Raises NotFound, or ConversationMerged with the id of the conversation it now lives in.
    """
    conversation = visible_conversation(session, agent, conversation_id)
    names = _mailbox_names(session, [conversation.mailbox_id])
    row = _rows(session, [conversation], names)[0]

    messages = list(
        session.exec(
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(col(Message.date).is_(None), col(Message.date), col(Message.id))
        )
    )
    ids = [m.id for m in messages if m.id is not None]
    attachments: dict[int, list[Attachment]] = defaultdict(list)
    locations: dict[int, list[LocationView]] = defaultdict(list)
    if ids:
        for attachment in session.exec(
            select(Attachment)
            .where(col(Attachment.message_id).in_(ids))
            .order_by(col(Attachment.id))
        ):
            attachments[attachment.message_id].append(attachment)
        for location, folder_name, mailbox_name in session.exec(
            select(MessageLocation, Folder.name, Mailbox.name)
            .join(Folder, col(Folder.id) == col(MessageLocation.folder_id))
            .join(Mailbox, col(Mailbox.id) == col(Folder.mailbox_id))
            .where(col(MessageLocation.message_id).in_(ids))
            .order_by(col(Mailbox.name), col(Folder.name), col(MessageLocation.uid))
        ):
            locations[location.message_id].append(
                LocationView(
                    mailbox=mailbox_name,
                    folder=folder_name,
                    uid=location.uid,
                    flags=list(location.flags or []),
                )
            )
    return ConversationDetail(
        row=row,
        messages=[
            MessageView(
                message=m,
                attachments=attachments.get(m.id, []) if m.id is not None else [],
                locations=locations.get(m.id, []) if m.id is not None else [],
            )
            for m in messages
        ],
    )


def conversation_activity(session: Session, conversation_id: int) -> list[Activity]:
    """The conversation's activity log, newest first, with that of conversations merged into
    it: two index lookups (an OR with a subquery makes PostgreSQL scan the whole log)."""
    ids = [conversation_id]
    ids += [
        cid
        for cid in session.exec(
            select(Conversation.id).where(col(Conversation.merged_into_id) == conversation_id)
        )
        if cid is not None
    ]
    return list(
        session.exec(
            select(Activity)
            .where(col(Activity.conversation_id).in_(ids))
            .order_by(col(Activity.created_at).desc(), col(Activity.id).desc())
        )
    )


# --- messages and attachments -----------------------------------------------------------------


def _visible_message(session: Session, agent: Agent, message_id: int) -> Message:
    message = session.get(Message, message_id)
    if message is not None:
        visible = set(visible_mailbox_ids(session, agent))
        mailbox_ids: set[int] = set()
        if message.conversation_id is not None:
            conversation = session.get(Conversation, message.conversation_id)
            if conversation is not None:
                mailbox_ids.add(conversation.mailbox_id)
        if not mailbox_ids & visible:
            mailbox_ids.update(
                session.exec(
                    select(Folder.mailbox_id)
                    .join(MessageLocation, col(MessageLocation.folder_id) == col(Folder.id))
                    .where(MessageLocation.message_id == message_id)
                )
            )
        if mailbox_ids & visible:
            return message
    raise NotFound(f"no message {message_id}", message_id=message_id)


def get_message(session: Session, agent: Agent, message_id: int) -> Message:
    return _visible_message(session, agent, message_id)


def get_raw_message(session: Session, agent: Agent, message_id: int) -> bytes:
    """The RFC 5322 bytes of a message as fetched from the server."""
    _visible_message(session, agent, message_id)
    raw = session.get(RawMessage, message_id)
    if raw is None:
        raise NotFound(
            f"the raw source of message {message_id} is not stored", message_id=message_id
        )
    return bytes(raw.data)


def get_attachment(session: Session, agent: Agent, attachment_id: int) -> Attachment:
    attachment = session.get(Attachment, attachment_id)
    if attachment is None:
        raise NotFound(f"no attachment {attachment_id}", attachment_id=attachment_id)
    try:
        _visible_message(session, agent, attachment.message_id)
    except NotFound:
        raise NotFound(f"no attachment {attachment_id}", attachment_id=attachment_id) from None
    return attachment


# --- mailboxes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailboxView:
    mailbox: Mailbox
    folders: list[Folder]
    # keywords its folders refused or cannot keep (imapdesk/domain/mailboxes/keywords.py)
    unkept: list[UnkeptKeyword] = field(default_factory=list)


def _mailbox_views(session: Session, ids: list[int] | None) -> list[MailboxView]:
    stmt = select(Mailbox).order_by(col(Mailbox.name))
    folder_stmt = select(Folder).order_by(col(Folder.mailbox_id), col(Folder.name))
    if ids is not None:
        if not ids:
            return []
        stmt = stmt.where(col(Mailbox.id).in_(ids))
        folder_stmt = folder_stmt.where(col(Folder.mailbox_id).in_(ids))
    folders: dict[int, list[Folder]] = defaultdict(list)
    for folder in session.exec(folder_stmt):
        folders[folder.mailbox_id].append(folder)
    mailboxes = list(session.exec(stmt))
    unkept = unkept_keywords(session, (m.id for m in mailboxes if m.id is not None))
    return [
        MailboxView(
            mailbox=m,
            folders=folders.get(m.id, []) if m.id is not None else [],
            unkept=unkept.get(m.id, []) if m.id is not None else [],
        )
        for m in mailboxes
    ]


def list_mailboxes(session: Session, agent: Agent) -> list[MailboxView]:
    """The mailboxes the agent may see, by name, each with its folders and their sync state."""
    return _mailbox_views(session, visible_mailbox_ids(session, agent))


def sync_overview(session: Session) -> list[MailboxView]:
    """Every mailbox with its folders' sync state, for the readiness probe."""
    return _mailbox_views(session, None)


def mailbox_names(session: Session, agent: Agent) -> list[str]:
    """Names of the mailboxes the agent may see, for filter menus."""
    names = _mailbox_names(session, visible_mailbox_ids(session, agent))
    return sorted(names.values())
