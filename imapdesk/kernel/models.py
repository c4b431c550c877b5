"""The schema. One SQLModel family per entity: Base -> table -> Public."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, overload

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Enum,
    Index,
    LargeBinary,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...


@overload
def as_utc(value: None) -> None: ...


@overload
def as_utc(value: datetime | None) -> datetime | None: ...


def as_utc(value: datetime | None) -> datetime | None:
    """Datetimes are stored timezone-aware in UTC: an aware value in UTC; a naive one is taken
    as UTC; None stays None."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ImapSecurity(StrEnum):
    ssl = "ssl"
    starttls = "starttls"
    none = "none"


class SmtpSecurity(StrEnum):
    ssl = "ssl"  # TLS from the first byte (usually port 465)
    starttls = "starttls"  # usually port 587
    none = "none"


class FolderRole(StrEnum):
    inbox = "inbox"
    sent = "sent"
    archive = "archive"
    junk = "junk"
    trash = "trash"
    pending = "pending"
    notes = "notes"
    other = "other"


class FolderState(StrEnum):
    initial = "initial"
    poll = "poll"
    uidinvalid = "uidinvalid"
    error = "error"


class ConversationStatus(StrEnum):
    open = "open"
    pending = "pending"
    closed = "closed"
    spam = "spam"
    deleted = "deleted"


class Direction(StrEnum):
    inbound = "inbound"
    outbound = "outbound"
    note = "note"


# --- agents and tokens -------------------------------------------------------------------------


class AgentBase(SQLModel):
    email: str = Field(max_length=320, unique=True, index=True)
    name: str = Field(max_length=200)
    handle: str = Field(max_length=32, unique=True)
    is_admin: bool = False
    is_active: bool = True


class Agent(AgentBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    password_hash: str = Field(max_length=200)
    # True: works in every mailbox; False: only in those of its AgentMailboxAccess rows
    # (admins always see every mailbox)
    all_mailboxes: bool = True
    # appended to the agent's replies (plain text; imapdesk/domain/outbound/replies.py)
    signature: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agent.id", index=True, ondelete="CASCADE")
    name: str = Field(default="", max_length=200)
    token_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class AgentMailboxAccess(SQLModel, table=True):
    """A mailbox an agent may work in, for agents without `all_mailboxes`."""

    agent_id: int = Field(foreign_key="agent.id", primary_key=True, ondelete="CASCADE")
    mailbox_id: int = Field(
        foreign_key="mailbox.id", primary_key=True, index=True, ondelete="CASCADE"
    )


class LoginAttempt(SQLModel, table=True):
    """A browser sign-in attempt, kept for a while for the rate limit (shared by every API
    process through the database)."""

    __table_args__ = (
        Index("ix_loginattempt_email_created", "email", "created_at"),
        Index("ix_loginattempt_address_created", "client_address", "created_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320)
    client_address: str = Field(max_length=64)
    succeeded: bool = False
    created_at: datetime = Field(default_factory=utcnow, index=True)


class BrowserSession(SQLModel, table=True):
    """A browser signed in as an agent (imapdesk/domain/accounts/sessions.py). The cookie
    carries a random key; only its hash is stored, so the table signs no one in. It ends when
    revoked (sign-out, deactivation, a new password), idle too long, at `expires_at`, or when
    the agent's password hash no longer has `password_stamp` (however it was changed)."""

    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agent.id", index=True, ondelete="CASCADE")
    key_hash: str = Field(max_length=64, unique=True)
    password_stamp: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked_at: datetime | None = None
    user_agent: str | None = Field(default=None, max_length=300)
    client_address: str | None = Field(default=None, max_length=64)


# --- mailboxes and folders ---------------------------------------------------------------------


class MailboxBase(SQLModel):
    name: str = Field(max_length=100, unique=True, index=True)
    address: str = Field(max_length=320)
    imap_host: str = Field(max_length=255)
    imap_port: int = 993
    imap_security: ImapSecurity = ImapSecurity.ssl
    username: str = Field(max_length=320)
    ca_file: str | None = Field(default=None, max_length=1000)
    smtp_host: str | None = Field(default=None, max_length=255)
    smtp_port: int | None = None
    smtp_security: SmtpSecurity | None = None  # None: starttls
    smtp_username: str | None = Field(default=None, max_length=320)
    enabled: bool = True


class Mailbox(MailboxBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    password_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    smtp_password_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    # outbound mail: the mailbox's signature and "Alice at <display name>" in From when
    # `from_agent_name` (imapdesk/domain/outbound/replies.py), and the status a conversation
    # takes once a reply went out (imapdesk/domain/outbound/delivery.py)
    display_name: str | None = Field(default=None, max_length=200)
    signature: str | None = Field(default=None, sa_column=Column(Text))
    from_agent_name: bool = False
    # stored as its name in a VARCHAR(20), as when it was a plain string
    status_after_reply: ConversationStatus = Field(
        default=ConversationStatus.pending,
        sa_type=Enum(ConversationStatus, native_enum=False, length=20),
    )
    # names of the watched folders; empty means INBOX plus the \Sent folder
    watched_folders: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    # capability probe at connect: {"capabilities": [...], "keywords": bool, ...}
    capabilities: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    last_connected_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Folder(SQLModel, table=True):
    """A folder of a mailbox and its sync state (the folder sync state machine's checkpoint)."""

    __table_args__ = (UniqueConstraint("mailbox_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=500)
    role: FolderRole = FolderRole.other
    watched: bool = False
    state: FolderState = FolderState.initial
    uidvalidity: int | None = Field(default=None, sa_type=BigInteger)
    # every UID below this has been taken in
    uidnext: int = Field(default=1, sa_type=BigInteger)
    highestmodseq: int | None = Field(default=None, sa_type=BigInteger)
    # UIDNEXT of the server when the initial sync started, for progress
    initial_target_uid: int | None = Field(default=None, sa_type=BigInteger)
    message_count: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    last_sync_at: datetime | None = None


# --- messages --------------------------------------------------------------------------------


class Conversation(SQLModel, table=True):
    __table_args__ = (
        Index("ix_conversation_mailbox_last", "mailbox_id", "last_message_at"),
        # the guarded subject fallback: same mailbox and subject key, last message in a window
        Index("ix_conversation_subject", "mailbox_id", "subject_key", "last_message_at"),
        # the live updates poll what changed lately (imapdesk/domain/live/changes.py)
        Index("ix_conversation_updated_at", "updated_at"),
        # the queue counts and lists read this index alone (imapdesk/domain/conversations/queues.py)
        Index("ix_conversation_queue", "status", "mailbox_id", "assignee_id", "merged_into_id"),
        # Unassigned (open, no assignee) and Mine (the agent's), read in list order
        # the lists read in order: All open, Pending, Closed (status); Unassigned (open, no
        # assignee); Mine (the agent's)
        Index("ix_conversation_status_last", "status", "last_message_at"),
        Index("ix_conversation_status_assignee_last", "status", "assignee_id", "last_message_at"),
        Index("ix_conversation_assignee_last", "assignee_id", "last_message_at"),
        # merges are rare: a partial index finds them and cannot lure a planner into reading
        # every unmerged row for "merged_into_id IS NULL"
        Index(
            "ix_conversation_merged_into_id",
            "merged_into_id",
            sqlite_where=text("merged_into_id IS NOT NULL"),
            postgresql_where=text("merged_into_id IS NOT NULL"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", index=True, ondelete="CASCADE")
    subject: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # the normalised subject (no Re:/Fwd:/[list] prefixes) for the guarded subject fallback
    subject_key: str = Field(default="", max_length=255)
    status: ConversationStatus = Field(default=ConversationStatus.open)
    assignee_id: int | None = Field(default=None, foreign_key="agent.id")
    claimed: bool = False
    customer_email: str | None = Field(default=None, max_length=320, index=True)
    customer_name: str | None = Field(default=None, max_length=300)
    message_count: int = 0
    unread: bool = True
    last_message_at: datetime | None = Field(default=None, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    version: int = 1
    # set when this conversation was merged into another (a late parent joined two threads)
    merged_into_id: int | None = Field(default=None, foreign_key="conversation.id")
    # snoozed: pending until then, when the worker reopens it
    # (imapdesk/domain/conversations/snooze.py)
    snoozed_until: datetime | None = Field(default=None, index=True)


class ConversationTag(SQLModel, table=True):
    conversation_id: int = Field(
        foreign_key="conversation.id", primary_key=True, ondelete="CASCADE"
    )
    tag: str = Field(max_length=100, primary_key=True, index=True)


class Message(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    # normalised Message-ID without angle brackets; a synthetic one when the message has none
    message_id: str = Field(max_length=998, unique=True)
    has_message_id: bool = True
    content_hash: str = Field(max_length=64, index=True)
    conversation_id: int | None = Field(
        default=None, foreign_key="conversation.id", index=True, ondelete="SET NULL"
    )
    # which threading rule joined it: references, in_reply_to, token, subject, new, ...
    thread_rule: str = Field(default="new", max_length=40)
    direction: Direction = Direction.inbound
    subject: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    from_email: str | None = Field(default=None, max_length=320)
    from_name: str | None = Field(default=None, max_length=300)
    to: list[dict[str, str]] = Field(default_factory=list, sa_column=Column(JSON))
    cc: list[dict[str, str]] = Field(default_factory=list, sa_column=Column(JSON))
    reply_to: list[dict[str, str]] = Field(default_factory=list, sa_column=Column(JSON))
    date: datetime | None = Field(default=None, index=True)
    in_reply_to: str | None = Field(default=None, sa_column=Column(Text))
    references: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    headers: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    html: str | None = Field(default=None, sa_column=Column(Text))
    snippet: str = Field(default="", max_length=300)
    size: int = 0
    parse_error: str | None = Field(default=None, sa_column=Column(Text))
    auto_submitted: bool = False
    seen: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    # the conversation's version once this message had joined it (collision detection)
    added_version: int | None = None


class RawMessage(SQLModel, table=True):
    """The RFC 5322 bytes as fetched; kept apart so message rows stay small."""

    message_id: int = Field(foreign_key="message.id", primary_key=True, ondelete="CASCADE")
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class MessageLocation(SQLModel, table=True):
    """Where a message lives on the server: folder and UID (and its flags there)."""

    __table_args__ = (UniqueConstraint("folder_id", "uid"),)
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True, ondelete="CASCADE")
    folder_id: int = Field(foreign_key="folder.id", index=True, ondelete="CASCADE")
    uid: int = Field(sa_type=BigInteger)
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    modseq: int | None = Field(default=None, sa_type=BigInteger)
    content_hash: str = Field(max_length=64)
    internal_date: datetime | None = None


class Attachment(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True, ondelete="CASCADE")
    filename: str = Field(default="", max_length=500)
    content_type: str = Field(default="application/octet-stream", max_length=200)
    size: int = 0
    # content address: the file lives at IMAPDESK_DATA_DIR/attachments/<sha256[:2]>/<sha256>
    sha256: str = Field(max_length=64, index=True)
    content_id: str | None = Field(default=None, max_length=500)
    inline: bool = False


class ThreadNode(SQLModel, table=True):
    """A Message-ID seen anywhere (a message or only a reference: a ghost) and its thread links."""

    id: int | None = Field(default=None, primary_key=True)
    msgid: str = Field(max_length=998, unique=True)
    parent_msgid: str | None = Field(default=None, max_length=998, index=True)
    # True when the parent link comes from this message's own headers, not a descendant's
    parent_explicit: bool = False
    message_id: int | None = Field(
        default=None, foreign_key="message.id", index=True, ondelete="SET NULL"
    )
    conversation_id: int | None = Field(
        default=None, foreign_key="conversation.id", index=True, ondelete="SET NULL"
    )


# --- two-way sync: the activity log and the write-back outbox -----------------------------------


class ActivitySource(StrEnum):
    web = "web"
    api = "api"
    imap = "imap"
    system = "system"


class Activity(SQLModel, table=True):
    """One change to a conversation, with where it came from and who made it."""

    __table_args__ = (Index("ix_activity_conversation_created", "conversation_id", "created_at"),)
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)
    source: ActivitySource
    # the agent, when an agent made it; else `actor` names who (e.g. "a mail client")
    agent_id: int | None = Field(default=None, foreign_key="agent.id", ondelete="SET NULL")
    actor: str = Field(default="", max_length=320)
    # claimed, released, assigned, unassigned, status, tagged, untagged, read, unread, ...
    action: str = Field(max_length=40)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class ImapActionState(StrEnum):
    pending = "pending"
    done = "done"
    failed = "failed"


class PendingImapAction(SQLModel, table=True):
    """A change to write back to the mailbox, written in the same transaction as the change
    itself (a transactional outbox) and drained in order per mailbox by the worker.

    kind `flags`: payload {"add": [...], "remove": [...]} on every location of the
    conversation's messages (or of `message_id` only); kind `move`: payload {"role": "archive"}
    moves the conversation's messages in watched/mapped folders to the folder of that role.
    """

    __table_args__ = (Index("ix_pending_imap_action_mailbox_state", "mailbox_id", "state", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", ondelete="CASCADE")
    conversation_id: int | None = Field(
        default=None, foreign_key="conversation.id", ondelete="CASCADE"
    )
    message_id: int | None = Field(default=None, foreign_key="message.id", ondelete="CASCADE")
    activity_id: int | None = Field(default=None, foreign_key="activity.id", ondelete="SET NULL")
    kind: str = Field(max_length=20)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    state: ImapActionState = ImapActionState.pending
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    next_attempt_at: datetime | None = None
    done_at: datetime | None = None


# --- the web UI: who is looking at what, saved replies ------------------------------------------


class PresenceState(StrEnum):
    viewing = "viewing"
    replying = "replying"


class Presence(SQLModel, table=True):
    """An agent has a conversation open (or is replying); kept alive by heartbeats, so every
    API process sees it (imapdesk/domain/live/presence.py)."""

    conversation_id: int = Field(
        foreign_key="conversation.id", primary_key=True, ondelete="CASCADE"
    )
    agent_id: int = Field(foreign_key="agent.id", primary_key=True, ondelete="CASCADE")
    state: PresenceState = PresenceState.viewing
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class SavedReply(SQLModel, table=True):
    """A canned answer agents insert into the composer."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    body: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_by_id: int | None = Field(default=None, foreign_key="agent.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


# --- outbound mail: replies, forwards, new conversations and internal notes ---------------------


class OutboundState(StrEnum):
    queued = "queued"
    sending = "sending"
    sent = "sent"
    failed = "failed"


class OutboundMail(SQLModel, table=True):
    """One message imapdesk sends (or, kind `note`, only appends to Notes): the ledger of the
    sender (worker/sender.py). The bytes are composed once, when it is queued, so that every
    attempt sends the same message with the same Message-ID.

    queued -> sending (claimed by a sender; `final_dot_at` once the whole message but the
    final "." went to the SMTP server) -> sent (the server said 250) -> `copy_uid` once the
    copy is in Sent (or the note in Notes); failed when the server refused it for good.
    """

    __table_args__ = (
        Index("ix_outbound_mail_mailbox_state", "mailbox_id", "state", "id"),
        UniqueConstraint("mailbox_id", "idempotency_key"),
    )
    id: int | None = Field(default=None, primary_key=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", ondelete="CASCADE")
    conversation_id: int | None = Field(
        default=None, foreign_key="conversation.id", index=True, ondelete="SET NULL"
    )
    # the stored Message (direction outbound or note)
    message_id: int | None = Field(
        default=None, foreign_key="message.id", index=True, ondelete="SET NULL"
    )
    # the message answered (gets \Answered once sent)
    answered_message_id: int | None = Field(
        default=None, foreign_key="message.id", ondelete="SET NULL"
    )
    agent_id: int | None = Field(default=None, foreign_key="agent.id", ondelete="SET NULL")
    source: ActivitySource = ActivitySource.api
    # reply, reply_all, forward, new, note
    kind: str = Field(max_length=20)
    msgid: str = Field(max_length=998, index=True)
    idempotency_key: str | None = Field(default=None, max_length=200)
    envelope_from: str = Field(max_length=320)
    recipients: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    state: OutboundState = OutboundState.queued
    attempts: int = 0
    next_attempt_at: datetime | None = None
    # who is sending it ("host:pid"), so a restarted worker knows a dead sender's rows
    claimed_by: str | None = Field(default=None, max_length=200)
    claimed_at: datetime | None = None
    final_dot_at: datetime | None = None
    sent_at: datetime | None = None
    # the SMTP server's last words (its reply on success, its refusal on failure)
    smtp_response: str | None = Field(default=None, sa_column=Column(Text))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    # where the copy went: Sent for mail, Notes for notes
    copy_folder: str | None = Field(default=None, max_length=500)
    copy_uid: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
