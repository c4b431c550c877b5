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
    false,
    text,
    true,
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
    # how long a reply written in the web UI waits before it is sent, so that "Undo" can take
    # it back (imapdesk/domain/outbound/actions.py); 0: sent at once
    undo_send_seconds: int = Field(default=10, sa_column_kwargs={"server_default": "10"})
    # the IANA zone the web UI shows times in (imapdesk/domain/accounts/profile.py); None: UTC
    timezone: str | None = Field(default=None, max_length=64)
    # per-agent read marks (ConversationReadMark) count from here; what last changed before
    # falls back to the mailbox's shared \Seen. None: since the agent was created
    read_marks_since: datetime | None = None
    # the web composer opens as a plain text area rather than the rich-text editor (/account)
    composer_plain_text: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
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
    # whether the SMTP server offered SMTPUTF8 when the sender last connected (None: not known
    # yet): an address with a non-ASCII local part can be sent only then
    smtputf8: bool | None = None
    # opening a conversation in the web UI marks it read: `\Seen` on its messages, which
    # everyone on the box sees (imapdesk/domain/conversations/reading.py); False leaves the
    # read state to the agents' "Mark read" and to mail clients
    mark_read_on_open: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
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
    # the folder of each role the admin set ({"pending": "INBOX.Waiting", ...}); a role not
    # set is found on the server (imapdesk/mail/imap/folders.py)
    folder_names: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
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


class KeywordRefusal(StrEnum):
    """Why a folder does not keep a keyword (docs/IMAP-MAPPING.md, "Writing")."""

    refused = "refused"  # the server answered the STORE with NO, naming the keyword
    folder_full = "folder_full"  # PERMANENTFLAGS without \* and without the keyword
    limit = "limit"  # the folder is at the server's known number of distinct keywords
    not_kept = "not_kept"  # stored, but not there when read back
    invalid = "invalid"  # not an IMAP atom


class UnkeptKeyword(SQLModel, table=True):
    """A keyword that a folder of the mailbox refused or cannot keep. The write-back never
    sends it to that folder again; the state it stands for (a tag, an assignee) stays in the
    database, and agents and admins are told (imapdesk/domain/mailboxes/keywords.py)."""

    __table_args__ = (UniqueConstraint("mailbox_id", "folder", "keyword"),)
    id: int | None = Field(default=None, primary_key=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", ondelete="CASCADE")
    folder: str = Field(max_length=500)
    keyword: str = Field(max_length=255)
    # stored as its name in a VARCHAR(20)
    reason: KeywordRefusal = Field(sa_type=Enum(KeywordRefusal, native_enum=False, length=20))
    # the server's words (a NO), or what was seen (the count, the read-back)
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: datetime = Field(default_factory=utcnow)


class OAuth2Provider(StrEnum):
    microsoft = "microsoft"
    google = "google"
    generic = "generic"  # any other: its issuer's discovery, or endpoints given


class OAuth2Grant(StrEnum):
    """How an OAuth2 mailbox gets its access tokens."""

    refresh_token = "refresh_token"  # delegated (consent, device code, a refresh token given)
    client_credentials = "client_credentials"  # app-only (Microsoft): asked for again each time


class OAuth2State(StrEnum):
    pending = "pending"  # set up, no token yet: an admin connects it
    connected = "connected"
    failed = "failed"  # the provider refused the grant: an admin connects it again


class MailboxOAuth2(SQLModel, table=True):
    """A mailbox that logs in with OAuth2 (SASL XOAUTH2 or OAUTHBEARER) rather than a password
    (imapdesk/domain/mailboxes/oauth2.py): its provider's endpoints, the client, and the tokens,
    encrypted at rest. `token_version` grows with every token saved: one process at a time
    refreshes (`refreshing_until`), and saves only over the version it started from."""

    mailbox_id: int = Field(foreign_key="mailbox.id", primary_key=True, ondelete="CASCADE")
    provider: OAuth2Provider = Field(sa_type=Enum(OAuth2Provider, native_enum=False, length=20))
    issuer: str | None = Field(default=None, max_length=1000)
    authorization_endpoint: str | None = Field(default=None, max_length=1000)
    token_endpoint: str = Field(max_length=1000)
    device_authorization_endpoint: str | None = Field(default=None, max_length=1000)
    client_id: str = Field(max_length=500)
    client_secret_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    grant: OAuth2Grant = Field(
        default=OAuth2Grant.refresh_token,
        sa_type=Enum(OAuth2Grant, native_enum=False, length=30),
    )
    state: OAuth2State = Field(
        default=OAuth2State.pending, sa_type=Enum(OAuth2State, native_enum=False, length=20)
    )
    access_token_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    access_token_expires_at: datetime | None = None
    refresh_token_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    token_version: int = 0
    refreshing_until: datetime | None = None
    refreshed_at: datetime | None = None
    # why the provider refused (state failed), in its words
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    failed_at: datetime | None = None
    # an authorization under way in an admin's browser (code with PKCE): the hash of its
    # `state`, the code verifier, the redirect URI and when it started
    authorization_state_hash: str | None = Field(default=None, max_length=64, unique=True)
    code_verifier_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    authorization_redirect_uri: str | None = Field(default=None, max_length=1000)
    authorization_started_at: datetime | None = None


# --- messages --------------------------------------------------------------------------------


class Conversation(SQLModel, table=True):
    __table_args__ = (
        Index("ix_conversation_mailbox_last", "mailbox_id", "last_message_at"),
        # the guarded subject fallback: same mailbox and subject key, last message in a window
        Index("ix_conversation_subject", "mailbox_id", "subject_key", "last_message_at"),
        # the live updates poll what changed lately (imapdesk/domain/live/changes.py)
        Index("ix_conversation_updated_at", "updated_at"),
        # the queue counts and lists read this index alone (imapdesk/domain/conversations/queues.py;
        # Unassigned leaves out what a mail client claimed: `claimed`)
        Index(
            "ix_conversation_queue",
            "status",
            "mailbox_id",
            "assignee_id",
            "merged_into_id",
            "claimed",
        ),
        # Unassigned (open, no assignee) and Mine (the agent's), read in list order
        # the lists read in order: All open, Pending, Closed (status); Unassigned (open, no
        # assignee); Mine (the agent's)
        Index("ix_conversation_status_last", "status", "last_message_at"),
        Index("ix_conversation_status_assignee_last", "status", "assignee_id", "last_message_at"),
        Index("ix_conversation_assignee_last", "assignee_id", "last_message_at"),
        # a customer's conversations in the mailboxes an agent may see
        # (imapdesk/domain/customers/views.py); the address alone for threading
        Index("ix_conversation_customer", "customer_email", "mailbox_id"),
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
    customer_email: str | None = Field(default=None, max_length=320)
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
    # a file unpacked from another attachment of the message (a winmail.dat): that one's
    # sha256 (imapdesk/mail/tnef.py); the original stays an attachment of its own
    unpacked_from: str | None = Field(default=None, max_length=64)
    # a winmail.dat that could not be unpacked: why (it stays as it came)
    unpack_error: str | None = Field(default=None, sa_column=Column(Text))


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


class Draft(SQLModel, table=True):
    """What an agent is writing in a conversation, saved as they type and when the composer
    loses focus (imapdesk/domain/outbound/drafts.py): one per agent and conversation, the
    same on every device, gone once sent or discarded. Colleagues see that it exists, never
    its text."""

    __table_args__ = (Index("ix_draft_agent_created", "agent_id", "created_at"),)
    conversation_id: int = Field(
        foreign_key="conversation.id", primary_key=True, ondelete="CASCADE"
    )
    agent_id: int = Field(foreign_key="agent.id", primary_key=True, ondelete="CASCADE")
    # reply, reply_all, forward, note
    kind: str = Field(default="reply", max_length=20)
    body: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # the recipients as typed (entries, not yet checked: a draft may hold half an address)
    to: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    cc: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    # what the rich-text composer holds (as typed, sanitised when sent); None: plain text only
    html: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


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
    # held for the agent's undo window: not sent before `next_attempt_at`
    scheduled = "scheduled"
    queued = "queued"
    sending = "sending"
    sent = "sent"
    failed = "failed"


class OutboundMail(SQLModel, table=True):
    """One message imapdesk sends (or, kind `note`, only appends to Notes): the ledger of the
    sender (worker/sender.py). The bytes are composed once, when it is queued, so that every
    attempt sends the same message with the same Message-ID.

    scheduled (the undo window, until `next_attempt_at`; taken back by deleting it) -> queued
    -> sending (claimed by a sender; `final_dot_at` once the whole message but the
    final "." went to the SMTP server) -> sent (the server said 250) -> `copy_uid` once the
    copy is in Sent (or the note in Notes); failed when the server refused it for good (or it
    cannot be sent at all), until an agent retries (queued again) or discards it.
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
    # what the rich-text composer held (sanitised, its images as `/compose/images/<id>`): what
    # Undo puts back in the editor, and what keeps those images from being cleaned up
    composed_html: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


# --- customers: the people conversations are with ----------------------------------------------


class Customer(SQLModel, table=True):
    """One per address a conversation is with (`Conversation.customer_email`), kept in step by
    the ingest, with what agents note about them (imapdesk/domain/customers/). Their
    conversations are found by address, so a customer spans mailboxes; who sees what of them
    follows the mailboxes an agent may see."""

    id: int | None = Field(default=None, primary_key=True)
    # lower case, as `Conversation.customer_email`
    email: str = Field(max_length=320, unique=True)
    name: str | None = Field(default=None, max_length=300)
    # the address's domain when it names an organisation (not a free-mail provider's)
    organisation: str | None = Field(default=None, max_length=255, index=True)
    # the name (casefolded) and the address: what the customer search looks in
    search_key: str = Field(default="", max_length=700)
    note: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # grows with every change of the note: an edit made on an older note is refused
    note_version: int = 0
    note_updated_at: datetime | None = None
    note_updated_by_id: int | None = Field(
        default=None, foreign_key="agent.id", ondelete="SET NULL"
    )
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class CustomerNoteEdit(SQLModel, table=True):
    """Each change of a customer's note: who made it, from where, and the note it left."""

    __table_args__ = (Index("ix_customernoteedit_customer_created", "customer_id", "created_at"),)
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", ondelete="CASCADE")
    agent_id: int | None = Field(default=None, foreign_key="agent.id", ondelete="SET NULL")
    # stored as its name in a VARCHAR(20)
    source: ActivitySource = Field(sa_type=Enum(ActivitySource, native_enum=False, length=20))
    note: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: datetime = Field(default_factory=utcnow)


# --- the domain event log: what rules, webhooks and notifications react to ---------------------


class Event(SQLModel, table=True):
    """One thing that happened, written in the same transaction as the change itself
    (imapdesk/domain/events.py): conversation created, message received, status changed,
    assigned, tagged, note added, reply sent or failed, SLA warning or breach. Consumers
    (automation rules, webhooks, notifications) each read the log in id order and keep a
    receipt per event they handled, in the transaction of what they did with it."""

    __table_args__ = (
        Index("ix_event_created", "created_at"),
        # a conversation's events in order (the reports' response and resolution times)
        Index("ix_event_conversation_created", "conversation_id", "created_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    # a dotted name, e.g. `conversation.created` (imapdesk.domain.events.EventKind)
    kind: str = Field(max_length=60)
    created_at: datetime = Field(default_factory=utcnow)
    mailbox_id: int | None = Field(default=None, foreign_key="mailbox.id", ondelete="CASCADE")
    conversation_id: int | None = Field(
        default=None, foreign_key="conversation.id", ondelete="CASCADE"
    )
    message_id: int | None = Field(default=None, foreign_key="message.id", ondelete="SET NULL")
    # the agent who made the change (none for customers, mail clients and the worker)
    agent_id: int | None = Field(default=None, foreign_key="agent.id", ondelete="SET NULL")
    # who or what made it: `agent`, `customer`, `imap` (a mail client), `rule <name>`, `system`
    actor: str = Field(default="", max_length=320)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class EventConsumer(SQLModel, table=True):
    """A consumer of the event log: every event up to `floor_id` is handled (or was older than
    the consumer's start); above it, the receipts say which are."""

    name: str = Field(primary_key=True, max_length=40)
    floor_id: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class EventReceipt(SQLModel, table=True):
    """A consumer handled an event (written with what it did, so nothing is done twice)."""

    consumer: str = Field(primary_key=True, max_length=40)
    event_id: int = Field(primary_key=True, foreign_key="event.id", ondelete="CASCADE")


# --- teams and automation rules (imapdesk/domain/teams/, imapdesk/domain/rules/) ---------------


class Team(SQLModel, table=True):
    """Agents who share work; new work goes to its members by `strategy` (`round_robin` or
    `least_busy`, imapdesk/domain/teams/assignment.py), within business hours when it has a
    calendar."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    strategy: str = Field(default="round_robin", max_length=20)
    # a business-hours calendar (imapdesk/domain/sla/business_hours.py); no FK: a later table
    calendar_id: int | None = None
    # round robin: the member who got the last conversation (the next one goes to the next)
    last_agent_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class TeamMember(SQLModel, table=True):
    team_id: int = Field(foreign_key="team.id", primary_key=True, ondelete="CASCADE")
    agent_id: int = Field(foreign_key="agent.id", primary_key=True, index=True, ondelete="CASCADE")


class TeamMailbox(SQLModel, table=True):
    """A mailbox's default team: its new conversations are assigned to the team's next agent."""

    mailbox_id: int = Field(foreign_key="mailbox.id", primary_key=True, ondelete="CASCADE")
    team_id: int = Field(foreign_key="team.id", index=True, ondelete="CASCADE")


class AgentAvailability(SQLModel, table=True):
    """An agent's availability switch and capacity (open conversations at most; None: no
    limit). An agent without a row is available with no limit."""

    agent_id: int = Field(foreign_key="agent.id", primary_key=True, ondelete="CASCADE")
    available: bool = True
    capacity: int | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class Rule(SQLModel, table=True):
    """An automation rule (imapdesk/domain/rules/): when `trigger` happens and the conditions
    hold (`match`: all or any), do the actions in order; `stop` ends the evaluation of the
    rules after it. Rules run in `position` order."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    position: int = Field(default=0, index=True)
    enabled: bool = True
    # an event kind (conversation.created, ...) or a time-based one (time.no_reply, ...)
    trigger: str = Field(max_length=60)
    # time-based triggers: the N (hours or days)
    trigger_amount: int | None = None
    match: str = Field(default="all", max_length=3)
    conditions: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    actions: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    stop: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class RuleFiring(SQLModel, table=True):
    """A time-based rule fired for a conversation in one episode of waiting: written with its
    actions, so it fires once per episode (`episode_at`: when the wait began, e.g. the
    customer's last message or the moment it went pending; imapdesk/domain/rules/engine.py)."""

    rule_id: int = Field(foreign_key="rule.id", primary_key=True, ondelete="CASCADE")
    conversation_id: int = Field(
        foreign_key="conversation.id", primary_key=True, index=True, ondelete="CASCADE"
    )
    episode_at: datetime = Field(primary_key=True)
    fired_at: datetime = Field(default_factory=utcnow)


class AutoReplyLog(SQLModel, table=True):
    """The last automatic reply a rule sent a customer from a mailbox (one per window)."""

    mailbox_id: int = Field(foreign_key="mailbox.id", primary_key=True, ondelete="CASCADE")
    customer_email: str = Field(max_length=320, primary_key=True)
    sent_at: datetime = Field(default_factory=utcnow)


# --- outgoing webhooks and agents' notifications (issue 14) -----------------------------------


class WebhookSubscription(SQLModel, table=True):
    """An integration's URL and the events it is sent (imapdesk/domain/webhooks/), signed in
    the Standard Webhooks manner with its secret (`whsec_...`, encrypted at rest as mailbox
    secrets are). After a rotation the previous secret signs too until `previous_until`. It is
    disabled after failing too long (`failure_count` attempts in a row since `failing_since`),
    with the reason kept, until an admin enables it again."""

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2000)
    description: str = Field(default="", max_length=200)
    # public event names (imapdesk.domain.webhooks.names.PUBLIC_EVENTS)
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    secret_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    previous_secret_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    previous_until: datetime | None = None
    enabled: bool = True
    failure_count: int = 0
    failing_since: datetime | None = None
    disabled_reason: str | None = Field(default=None, sa_column=Column(Text))
    disabled_at: datetime | None = None
    last_success_at: datetime | None = None
    created_by_id: int | None = Field(default=None, foreign_key="agent.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class WebhookDeliveryState(StrEnum):
    pending = "pending"  # to be sent at `next_attempt_at` (again, after a failure)
    delivered = "delivered"  # the receiver answered 2xx
    failed = "failed"  # still failing when its retry window ended


class WebhookDelivery(SQLModel, table=True):
    """One event for one subscription: the exact body sent (so every attempt and a replay send
    the same bytes under the same `webhook-id`), its state and the receiver's last answer.
    Written by the worker in the transaction that takes the event (worker/webhooks.py)."""

    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id"),
        Index("ix_webhookdelivery_state_due", "state", "next_attempt_at"),
        Index("ix_webhookdelivery_subscription", "subscription_id", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(foreign_key="webhooksubscription.id", ondelete="CASCADE")
    event_id: int | None = Field(default=None, foreign_key="event.id", ondelete="SET NULL")
    event_type: str = Field(max_length=60)
    # the `webhook-id` header: the same for every attempt and a replay
    msg_id: str = Field(max_length=100, unique=True)
    body: str = Field(sa_column=Column(Text, nullable=False))
    # stored as its name in a VARCHAR(20)
    state: WebhookDeliveryState = Field(
        default=WebhookDeliveryState.pending,
        sa_type=Enum(WebhookDeliveryState, native_enum=False, length=20),
    )
    attempts: int = 0
    # retried until `window_started_at` plus the retry window (a replay starts a new one)
    window_started_at: datetime = Field(default_factory=utcnow)
    next_attempt_at: datetime | None = None
    # who is sending it ("host:pid") and until when that claim holds
    claimed_by: str | None = Field(default=None, max_length=200)
    claimed_until: datetime | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    response_status: int | None = None
    response_body: str | None = Field(default=None, sa_column=Column(Text))
    duration_ms: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)


class Notification(SQLModel, table=True):
    """Something an agent is told in the app (the bell), and by email if they chose so
    (imapdesk/domain/notifications/): assigned to them, a customer replied on theirs, a
    mention in a note, an SLA warning, a rule's notice, a webhook disabled (admins)."""

    __table_args__ = (
        UniqueConstraint("agent_id", "event_id", "kind"),
        Index("ix_notification_agent_read", "agent_id", "read_at", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agent.id", ondelete="CASCADE")
    kind: str = Field(max_length=40)
    text: str = Field(max_length=500)
    conversation_id: int | None = Field(
        default=None, foreign_key="conversation.id", ondelete="CASCADE"
    )
    event_id: int | None = Field(default=None, foreign_key="event.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow)
    read_at: datetime | None = None
    # None: no email wanted; "pending", "sent", "failed" (the reason in `email_error`)
    email_state: str | None = Field(default=None, max_length=20)
    email_error: str | None = Field(default=None, sa_column=Column(Text))


class NotificationPreference(SQLModel, table=True):
    """An agent's choices of what to be notified of, and whether by email too; an agent
    without a row has the defaults (everything in the app, no email)."""

    agent_id: int = Field(foreign_key="agent.id", primary_key=True, ondelete="CASCADE")
    assigned: bool = True
    customer_replied: bool = True
    mentioned: bool = True
    sla_warning: bool = True
    rule_notify: bool = True
    email: bool = False
    updated_at: datetime = Field(default_factory=utcnow)


# --- business hours and SLAs (imapdesk/domain/sla/) -------------------------------------------


class BusinessCalendar(SQLModel, table=True):
    """Weekly opening hours, holidays and a timezone (imapdesk/domain/sla/business_hours.py):
    `hours` is {"monday": [["09:00", "17:00"], ...], ...}; `holidays` ISO dates."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    timezone: str = Field(default="UTC", max_length=64)
    hours: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    holidays: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class SlaPolicy(SQLModel, table=True):
    """Targets in business minutes for the conversations of a mailbox, a team or a tag
    (`scope`); the most specific applies: tag, then team, then mailbox
    (imapdesk/domain/sla/policies.py). No calendar: counted round the clock."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    scope: str = Field(max_length=10)
    mailbox_id: int | None = Field(
        default=None, foreign_key="mailbox.id", index=True, ondelete="CASCADE"
    )
    team_id: int | None = Field(default=None, foreign_key="team.id", index=True, ondelete="CASCADE")
    tag: str | None = Field(default=None, max_length=100, index=True)
    calendar_id: int | None = Field(default=None, foreign_key="businesscalendar.id")
    first_response_minutes: int | None = None
    next_response_minutes: int | None = None
    resolution_minutes: int | None = None
    # `sla.warning` this many minutes (wall clock) before a due time
    warning_minutes: int = 30
    # the next-response and resolution clocks stop while the conversation is pending
    pause_when_pending: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
    enabled: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ConversationSla(SQLModel, table=True):
    """A conversation's SLA clock (imapdesk/domain/sla/clock.py): when each target's time
    started, its due time, when it was attained, and whether its warning and breach fired
    (set in the transaction of the `sla.warning` / `sla.breached` event: each fires once)."""

    __table_args__ = (
        # the Due soon and Breached queues read this in order
        Index("ix_conversationsla_next_due", "next_due_at", "conversation_id"),
        Index("ix_conversationsla_check", "check_at"),
    )
    conversation_id: int = Field(
        foreign_key="conversation.id", primary_key=True, ondelete="CASCADE"
    )
    policy_id: int | None = Field(default=None, foreign_key="slapolicy.id", ondelete="SET NULL")
    first_response_started_at: datetime | None = None
    first_response_due: datetime | None = None
    first_response_at: datetime | None = None
    first_response_met: bool | None = None
    first_response_warned: bool = False
    first_response_breached: bool = False
    next_response_started_at: datetime | None = None
    next_response_due: datetime | None = None
    next_response_warned: bool = False
    next_response_breached: bool = False
    resolution_started_at: datetime | None = None
    resolution_due: datetime | None = None
    resolved_at: datetime | None = None
    resolution_met: bool | None = None
    resolution_warned: bool = False
    resolution_breached: bool = False
    # while pending (the policy's `pause_when_pending`): since when the next-response and
    # resolution clocks stand still; None: they run. Business time spent paused, per target,
    # moves its due time later
    paused_at: datetime | None = None
    next_response_paused_seconds: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    resolution_paused_seconds: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # any target of this conversation missed, ever
    breached: bool = False
    # the earliest due time not attained yet (the queues sort by it); None: nothing due
    next_due_at: datetime | None = None
    # when the clock next has a warning or a breach to fire here
    check_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class ComposeImage(SQLModel, table=True):
    """An image pasted or dropped into the composer (migration 0020): uploaded at once, shown
    to its agent from `/compose/images/{id}`, referenced from the draft's HTML and sent as an
    inline `cid:` part of the reply (imapdesk/domain/outbound/images.py)."""

    __table_args__ = (Index("ix_composeimage_agent_created", "agent_id", "created_at"),)
    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agent.id", ondelete="CASCADE")
    filename: str = Field(default="image", max_length=255)
    content_type: str = Field(max_length=100)
    size: int = 0
    sha256: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class ConversationReadMark(SQLModel, table=True):
    """When an agent last read a conversation in the web UI (per agent, in the database only:
    the mailbox's `\\Seen` is shared, docs/IMAP-MAPPING.md). It is unread for that agent
    while its last message is newer (imapdesk/domain/conversations/read_marks.py)."""

    # the agent's latest mark: what their cached list parts are stamped with
    __table_args__ = (Index("ix_conversationreadmark_agent_read", "agent_id", "read_at"),)
    agent_id: int = Field(foreign_key="agent.id", primary_key=True, ondelete="CASCADE")
    conversation_id: int = Field(
        foreign_key="conversation.id", primary_key=True, index=True, ondelete="CASCADE"
    )
    read_at: datetime = Field(default_factory=utcnow)
