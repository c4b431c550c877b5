"""What the REST API returns. Built field by field from the read-side views, so nothing that a
model gains later (a secret, say) leaks out by accident."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from sqlalchemy.orm import object_session
from sqlmodel import Session

from imapdesk.domain.conversations.reads import (
    ConversationDetail,
    ConversationPage,
    ConversationRow,
    MailboxView,
)
from imapdesk.domain.mailboxes.capabilities import plain_client_notes
from imapdesk.domain.mailstate import keywords_kept
from imapdesk.domain.outbound.replies import outbound_for_messages
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Attachment,
    ConversationStatus,
    Direction,
    Folder,
    FolderRole,
    FolderState,
    ImapSecurity,
    OutboundMail,
    OutboundState,
    SmtpSecurity,
    as_utc,
)
from imapdesk.mail.parsing import sanitize_html

# a datetime the database gave back naive is UTC; the API says so explicitly
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str = Field(description="Stable machine-readable code, e.g. `not_found`.")
    message: str = Field(description="What went wrong, for people.")


class ErrorPublic(BaseModel):
    """Every error: `{"error": {"code", "message", ...details}}`."""

    error: ErrorDetail


class AddressPublic(BaseModel):
    email: str | None = None
    name: str | None = None


class ConversationPublic(BaseModel):
    id: int
    mailbox: str = Field(description="The mailbox's name.")
    subject: str
    status: ConversationStatus
    assignee: str | None = Field(description="The assigned agent's email, or null.")
    claimed: bool
    tags: list[str] = Field(description="Sorted.")
    customer: AddressPublic
    message_count: int
    last_message_at: UtcDatetime | None
    unread: bool


class ConversationListPublic(BaseModel):
    items: list[ConversationPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class AttachmentPublic(BaseModel):
    id: int
    filename: str
    content_type: str
    size: int
    inline: bool
    content_id: str | None
    url: str = Field(description="Where to download it (same authorisation).")


class MessageLocationPublic(BaseModel):
    mailbox: str
    folder: str
    uid: int
    flags: list[str]


class OutboundPublic(BaseModel):
    """A reply, forward or note imapdesk sends (or files, for a note): its delivery."""

    id: int
    conversation_id: int | None
    message: int | None = Field(description="The id of the stored message.")
    message_id: str = Field(description="Its Message-ID, without angle brackets.")
    kind: str = Field(description="reply, reply_all, forward, new or note.")
    state: OutboundState = Field(
        description="queued, sending, sent or failed (a note: sent once it is in Notes)."
    )
    recipients: list[str]
    attempts: int
    next_attempt_at: UtcDatetime | None
    sent_at: UtcDatetime | None
    smtp_response: str | None = Field(description="The SMTP server's last words.")
    last_error: str | None
    copy_folder: str | None = Field(description="Where its copy is: Sent, or Notes.")
    created_at: UtcDatetime


class MessagePublic(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    id: int
    message_id: str = Field(description="The Message-ID without angle brackets.")
    direction: Direction
    from_: AddressPublic = Field(alias="from")
    to: list[AddressPublic]
    cc: list[AddressPublic]
    date: UtcDatetime | None
    subject: str
    text: str
    html: str | None = Field(
        description="Sanitised when the message was taken in. Images from other hosts have "
        "no `src` (their `alt` stays) unless asked for with `remote_content=allow`, so that "
        "showing it loads nothing from elsewhere (no tracking pixel); the message's own "
        "images (`cid:`, `data:`) stay."
    )
    seen: bool
    attachments: list[AttachmentPublic]
    thread_rule: str = Field(description="Why the message joined this conversation.")
    parse_error: str | None
    locations: list[MessageLocationPublic] = Field(
        description="Where the message lives on the IMAP server."
    )
    delivery: OutboundPublic | None = Field(
        default=None, description="For what imapdesk sent or filed: how its delivery went."
    )


class ConversationDetailPublic(ConversationPublic):
    version: int = Field(
        default=1,
        description="Bumped by every change; send it with a reply or note to be stopped (409) "
        "when newer messages or notes arrived meanwhile.",
    )
    messages: list[MessagePublic]


TagIn = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class ConversationUpdate(BaseModel):
    """PATCH body: only the fields sent change; `assignee: null` unassigns."""

    model_config = ConfigDict(extra="forbid")
    status: ConversationStatus | None = Field(
        default=None, description="Written back as a move to the folder of that status."
    )
    assignee: str | None = Field(
        default=None,
        max_length=320,
        description="An agent's email (assigning claims it for them), or null to unassign.",
    )
    tags: list[TagIn] | None = Field(
        default=None,
        max_length=100,
        description="The complete new set of tags (1 to 100 characters each).",
    )

    @field_validator("status", "tags")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # only an explicit null gets here (defaults are not validated)
        if value is None:
            raise ValueError("must not be null; leave the field out to keep it")
        return value


class ActivityPublic(BaseModel):
    id: int
    created_at: UtcDatetime
    source: ActivitySource = Field(description="`web`, `api`, `imap` (a mail client) or `system`.")
    actor: str = Field(description="The agent's email, or who else made it (`a mail client`).")
    action: str = Field(
        description="claimed, released, assigned, unassigned, status, tagged, untagged, read, "
        "unread, ..."
    )
    details: dict[str, Any] = Field(description='What changed, e.g. `{"from": "open", "to": ...}`.')


class ActivityListPublic(BaseModel):
    items: list[ActivityPublic] = Field(description="Newest first.")


class FolderPublic(BaseModel):
    name: str
    role: FolderRole
    watched: bool
    state: FolderState
    uidvalidity: int | None
    uidnext: int
    highestmodseq: int | None
    message_count: int
    last_error: str | None
    last_sync_at: UtcDatetime | None


class MailboxPublic(BaseModel):
    id: int
    name: str
    address: str
    imap_host: str
    imap_port: int
    imap_security: ImapSecurity
    smtp_host: str | None
    smtp_port: int | None
    smtp_security: SmtpSecurity | None
    enabled: bool
    last_error: str | None
    last_connected_at: UtcDatetime | None
    capabilities: dict[str, Any]
    plain_clients: list[str] = Field(
        default_factory=list,
        description="What colleagues on plain IMAP clients will and will not see, given what "
        "this server keeps (keywords, CONDSTORE, MOVE).",
    )
    folders: list[FolderPublic]


class HealthPublic(BaseModel):
    status: str


class FolderReadiness(BaseModel):
    name: str
    state: FolderState
    last_sync_at: UtcDatetime | None
    error: bool


class MailboxReadiness(BaseModel):
    name: str
    enabled: bool
    last_connected_at: UtcDatetime | None
    error: bool = Field(description="Whether the mailbox or one of its folders reports an error.")
    keywords_kept: bool = Field(
        default=False, description="Whether the server keeps custom keywords (assignee, tags)."
    )
    plain_clients: list[str] = Field(
        default_factory=list, description="What plain IMAP clients will and will not see."
    )
    folders: list[FolderReadiness]


class ReadinessPublic(BaseModel):
    status: str
    database: str
    mailboxes: list[MailboxReadiness] = Field(default_factory=list)


# --- builders ---------------------------------------------------------------------------------


def _address(value: dict[str, str]) -> AddressPublic:
    return AddressPublic(email=value.get("email") or None, name=value.get("name") or None)


def attachment_url(attachment_id: int) -> str:
    return f"/api/v1/attachments/{attachment_id}"


def conversation_public(row: ConversationRow) -> ConversationPublic:
    c = row.conversation
    assert c.id is not None
    return ConversationPublic(
        id=c.id,
        mailbox=row.mailbox,
        subject=c.subject,
        status=c.status,
        assignee=row.assignee,
        claimed=c.claimed,
        tags=row.tags,
        customer=AddressPublic(email=c.customer_email, name=c.customer_name),
        message_count=c.message_count,
        last_message_at=c.last_message_at,
        unread=c.unread,
    )


def conversation_list_public(page: ConversationPage) -> ConversationListPublic:
    return ConversationListPublic(
        items=[conversation_public(r) for r in page.items], next_cursor=page.next_cursor
    )


def _attachment_public(a: Attachment) -> AttachmentPublic:
    assert a.id is not None
    return AttachmentPublic(
        id=a.id,
        filename=a.filename,
        content_type=a.content_type,
        size=a.size,
        inline=a.inline,
        content_id=a.content_id,
        url=attachment_url(a.id),
    )


def outbound_public(o: OutboundMail) -> OutboundPublic:
    assert o.id is not None
    return OutboundPublic(
        id=o.id,
        conversation_id=o.conversation_id,
        message=o.message_id,
        message_id=o.msgid,
        kind=o.kind,
        state=o.state,
        recipients=list(o.recipients or []),
        attempts=o.attempts,
        next_attempt_at=o.next_attempt_at,
        sent_at=o.sent_at,
        smtp_response=o.smtp_response,
        last_error=o.last_error,
        copy_folder=o.copy_folder,
        created_at=o.created_at,
    )


def _deliveries(detail: ConversationDetail) -> dict[int, OutboundMail]:
    """The outbound rows of the detail's messages, from the session that loaded them."""
    ids = [v.message.id for v in detail.messages if v.message.id is not None]
    session = object_session(detail.messages[0].message) if detail.messages else None
    if session is None or not ids:
        return {}
    return outbound_for_messages(cast(Session, session), ids)


def _without_remote_images(html: str | None) -> str | None:
    # the one sanitiser, as strict as the web UI's frame (whose CSP blocks them)
    return sanitize_html(html, remote_images=False) if html else html


def conversation_detail_public(
    detail: ConversationDetail, *, remote_images: bool = False
) -> ConversationDetailPublic:
    """The conversation with its messages; their HTML without images from elsewhere unless
    `remote_images` (as the web UI shows it until the agent asks)."""
    base = conversation_public(detail.row)
    deliveries = _deliveries(detail)
    messages = []
    for view in detail.messages:
        m = view.message
        assert m.id is not None
        messages.append(
            MessagePublic(
                id=m.id,
                message_id=m.message_id,
                direction=m.direction,
                from_=AddressPublic(email=m.from_email, name=m.from_name),
                to=[_address(a) for a in m.to or []],
                cc=[_address(a) for a in m.cc or []],
                date=m.date,
                subject=m.subject,
                text=m.text,
                html=m.html if remote_images else _without_remote_images(m.html),
                seen=m.seen,
                attachments=[_attachment_public(a) for a in view.attachments],
                thread_rule=m.thread_rule,
                parse_error=m.parse_error,
                locations=[
                    MessageLocationPublic(
                        mailbox=loc.mailbox, folder=loc.folder, uid=loc.uid, flags=loc.flags
                    )
                    for loc in view.locations
                ],
                delivery=(outbound_public(deliveries[m.id]) if m.id in deliveries else None),
            )
        )
    return ConversationDetailPublic(
        **base.model_dump(), version=detail.row.conversation.version, messages=messages
    )


def activity_list_public(activities: list[Activity], actors: dict[int, str]) -> ActivityListPublic:
    """`actors`: the label of each activity by id (see
    `imapdesk.domain.conversations.operations.activity_actor`)."""
    items = []
    for a in activities:
        assert a.id is not None
        items.append(
            ActivityPublic(
                id=a.id,
                created_at=a.created_at,
                source=a.source,
                actor=actors.get(a.id, a.actor),
                action=a.action,
                details=dict(a.details or {}),
            )
        )
    return ActivityListPublic(items=items)


def _folder_public(f: Folder) -> FolderPublic:
    return FolderPublic(
        name=f.name,
        role=f.role,
        watched=f.watched,
        state=f.state,
        uidvalidity=f.uidvalidity,
        uidnext=f.uidnext,
        highestmodseq=f.highestmodseq,
        message_count=f.message_count,
        last_error=f.last_error,
        last_sync_at=f.last_sync_at,
    )


def mailbox_public(view: MailboxView) -> MailboxPublic:
    m = view.mailbox
    assert m.id is not None
    return MailboxPublic(
        id=m.id,
        name=m.name,
        address=m.address,
        imap_host=m.imap_host,
        imap_port=m.imap_port,
        imap_security=m.imap_security,
        smtp_host=m.smtp_host,
        smtp_port=m.smtp_port,
        smtp_security=m.smtp_security,
        enabled=m.enabled,
        last_error=m.last_error,
        last_connected_at=m.last_connected_at,
        capabilities=dict(m.capabilities or {}),
        plain_clients=plain_client_notes(m.capabilities),
        folders=[_folder_public(f) for f in view.folders],
    )


def mailbox_readiness(view: MailboxView) -> MailboxReadiness:
    m = view.mailbox
    folders = [
        FolderReadiness(
            name=f.name,
            state=f.state,
            last_sync_at=f.last_sync_at,
            error=bool(f.last_error) or f.state == FolderState.error,
        )
        for f in view.folders
    ]
    return MailboxReadiness(
        name=m.name,
        enabled=m.enabled,
        last_connected_at=m.last_connected_at,
        error=bool(m.last_error) or any(f.error for f in folders),
        keywords_kept=keywords_kept(m.capabilities),
        plain_clients=plain_client_notes(m.capabilities),
        folders=folders,
    )
