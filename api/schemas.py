"""What the REST API returns. Built field by field from the read-side views, so nothing that a
model gains later (a secret, say) leaks out by accident."""

from __future__ import annotations

from collections.abc import Sequence
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
from imapdesk.domain.customers.views import CustomerDetail, CustomerPage, CustomerSummary
from imapdesk.domain.mailboxes.capabilities import plain_client_notes, sync_notes
from imapdesk.domain.mailboxes.folders import folder_problems, folder_settings, problem_notes
from imapdesk.domain.mailboxes.keywords import REASON_WORDS
from imapdesk.domain.mailstate import keywords_kept
from imapdesk.domain.outbound.delivery import public_state
from imapdesk.domain.outbound.replies import outbound_for_messages
from imapdesk.domain.sla.queues import SlaView, sla_views
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
    KeywordRefusal,
    OAuth2State,
    OutboundMail,
    OutboundState,
    SmtpSecurity,
    UnkeptKeyword,
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


class TagNotKeptPublic(BaseModel):
    """A tag the conversation's mailbox does not hold: it lives in imapdesk only."""

    tag: str
    reason: str = Field(
        description="`not_a_keyword` (a space or a leading `$`: it cannot be an IMAP keyword), "
        "`no_keywords` (the server keeps no custom keywords), or why a folder does not keep "
        "its keyword: `refused` (the server said NO), `folder_full` (the folder takes no new "
        "keywords), `limit` (the folder is at the server's limit of distinct keywords), "
        "`not_kept` (read back without it), `invalid`."
    )
    why: str = Field(description="The reason in words.")
    folder: str | None = Field(default=None, description="The folder that refused it.")
    detail: str = Field(default="", description="The server's words, or what was seen.")


class SnippetPublic(BaseModel):
    """A piece of a conversation's text around what a search found."""

    text: str = Field(description="Plain text (escape it to show it as HTML).")
    highlights: list[tuple[int, int]] = Field(
        description="The found parts of `text`: [start, end) character offsets, in order."
    )


class SlaPublic(BaseModel):
    """A conversation's SLA (imapdesk/domain/sla/): due times in business hours, attainment."""

    policy: str | None = Field(description="The SLA policy that applies, by name.")
    first_response_due: UtcDatetime | None
    first_response_at: UtcDatetime | None = Field(description="When the first reply went out.")
    first_response_met: bool | None = Field(description="Null until attained.")
    next_response_due: UtcDatetime | None = Field(
        description="Set while a customer's reply waits for an answer."
    )
    resolution_due: UtcDatetime | None = Field(description="Null once closed.")
    resolved_at: UtcDatetime | None
    resolution_met: bool | None = Field(description="Null until closed.")
    breached: bool = Field(description="Whether any target of this conversation was missed.")
    paused_at: UtcDatetime | None = Field(
        default=None,
        description="Pending, the policy pausing: since when the next-response and resolution "
        "clocks stand still (their due times move later by the business time paused).",
    )


class ConversationPublic(BaseModel):
    id: int
    mailbox: str = Field(description="The mailbox's name.")
    subject: str
    status: ConversationStatus
    assignee: str | None = Field(description="The assigned agent's email, or null.")
    claimed: bool
    tags: list[str] = Field(description="Sorted.")
    tags_not_kept: list[TagNotKeptPublic] = Field(
        default_factory=list,
        description="Those of `tags` that the mailbox does not keep as keywords: colleagues on "
        "mail clients do not see them and `imapdesk rebuild` cannot restore them; imapdesk "
        "keeps them. Sorted by tag; empty when every tag is kept (or the mailbox was not "
        "probed yet).",
    )
    customer: AddressPublic
    message_count: int
    last_message_at: UtcDatetime | None
    unread: bool
    sla: SlaPublic | None = Field(
        default=None,
        description="Due times and attainment when an SLA policy applies; null otherwise.",
    )


class ConversationListItemPublic(ConversationPublic):
    snippet: SnippetPublic | None = Field(
        default=None,
        description="In a search (`q` with words): where the newest matching message matches "
        "(its text, else its subject or sender), as plain text; null otherwise.",
    )


class ConversationListPublic(BaseModel):
    items: list[ConversationListItemPublic]
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
    unpacked_from: int | None = Field(
        default=None,
        description="A file unpacked from a winmail.dat (TNEF) of the same message: the id "
        "of that attachment, which stays listed as it came.",
    )
    unpack_error: str | None = Field(
        default=None,
        description="A winmail.dat that could not be unpacked (or only in part): why.",
    )


class MessageLocationPublic(BaseModel):
    mailbox: str
    folder: str
    uid: int
    flags: list[str]


class DeliveryPublic(BaseModel):
    """How the sending of an outgoing message goes, as the web UI shows it live."""

    state: OutboundState = Field(
        description="`scheduled` (held for the agent's undo window, until `not_before`; "
        "`POST /api/v1/outbound/{id}/cancel` takes it back), `queued` (waiting for the "
        "sender, or for its next attempt after a temporary failure), `sending`, `sent` (the "
        "SMTP server took it), `failed` (refused for good, or it cannot be sent: "
        "`POST /api/v1/outbound/{id}/retry` after fixing the cause, or cancel to discard it)."
    )
    last_error: str | None = Field(description="Why the last attempt did not send it.")
    smtp_response: str | None = Field(description="The SMTP server's last words.")
    attempts: int
    not_before: UtcDatetime | None = Field(
        description="Scheduled: when the undo window ends; queued: the next attempt."
    )
    sent_at: UtcDatetime | None


class OutboundPublic(BaseModel):
    """A reply, forward or note imapdesk sends (or files, for a note): its delivery."""

    id: int
    conversation_id: int | None
    message: int | None = Field(description="The id of the stored message.")
    message_id: str = Field(description="Its Message-ID, without angle brackets.")
    kind: str = Field(description="reply, reply_all, forward, new or note.")
    state: OutboundState = Field(
        description="scheduled, queued, sending, sent or failed (a note: sent once it is in "
        "Notes); as `delivery.state`."
    )
    delivery: DeliveryPublic
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
    keywords_not_kept: list[KeywordNotKeptPublic] = Field(
        default_factory=list,
        description="Keywords a folder of this mailbox refused or cannot keep, and why.",
    )
    sync: list[str] = Field(
        default_factory=list,
        description="How the worker keeps the mailbox in step: its IMAP connections, how it "
        "hears of new mail, what the server refused (in its words) and how soon it tells.",
    )
    folder_names: dict[str, str] = Field(
        default_factory=dict,
        description="The folder an admin set for a role (pending, archive, junk, trash, notes, "
        "sent); a role not set is found on the server.",
    )
    folder_problems: list[str] = Field(
        default_factory=list,
        description="Folders of the mapping the server would not create, the server's words "
        "and what to set; the mailbox's other folders sync all the same.",
    )
    folders: list[FolderPublic]


class HealthPublic(BaseModel):
    status: str


class FolderReadiness(BaseModel):
    name: str
    state: FolderState
    last_sync_at: UtcDatetime | None
    error: bool


class KeywordNotKeptPublic(BaseModel):
    """A keyword a folder of the mailbox refused or cannot keep; imapdesk never sends it to
    that folder again and keeps what it stands for (a tag, an assignee) in its database."""

    keyword: str
    folder: str
    reason: KeywordRefusal = Field(
        description="`refused` (the server said NO), `folder_full` (PERMANENTFLAGS without "
        "`\\*`), `limit` (the server's limit of distinct keywords per folder), `not_kept` "
        "(read back without it), `invalid` (not an IMAP atom)."
    )
    why: str = Field(description="The reason in words.")
    detail: str | None = Field(
        default=None, description="The server's words, or what was seen (not in `/readyz`)."
    )
    since: UtcDatetime


class ConnectionsReadiness(BaseModel):
    """The IMAP connections a mailbox's worker runs on (worker/connections.py)."""

    open: int = Field(description="Connections open.")
    max: int = Field(description="Connections allowed by the settings.")
    allowed: int = Field(description="Connections the server allows now (fewer after a refusal).")
    push: str = Field(description="How new mail is heard: `notify`, `idle` or `poll`.")
    refused: bool = Field(
        description="Whether the server refused a connection as one too many: the parts of "
        "the worker share those open, writes wait their turn."
    )
    push_delay_ms: int | None = Field(
        default=None, description="How soon the server told of an APPEND, as the probe measured."
    )


class MailboxReadiness(BaseModel):
    name: str
    enabled: bool
    last_connected_at: UtcDatetime | None
    error: bool = Field(description="Whether the mailbox or one of its folders reports an error.")
    oauth2: str | None = Field(
        default=None,
        description="An OAuth2 mailbox's grant: `connected`; `pending` (not connected yet) or "
        "`failed` (the provider refused it), both waiting for an admin to connect it, the "
        "mailbox not syncing meanwhile. Null: it logs in with a password.",
    )
    keywords_kept: bool = Field(
        default=False, description="Whether the server keeps custom keywords (assignee, tags)."
    )
    plain_clients: list[str] = Field(
        default_factory=list, description="What plain IMAP clients will and will not see."
    )
    keyword_limit: int | str | None = Field(
        default=None,
        description="Distinct keywords a folder of this server keeps: a number (Dovecot on "
        'Maildir 26, Cyrus 100), `"unlimited"`, or null when not known.',
    )
    keywords_not_kept: int = Field(
        default=0,
        description="How many keywords (tags, assignees) a folder refused or cannot keep: "
        "which, and why, only in the authenticated `/api/v1/mailboxes` (a keyword names a tag "
        "or an agent).",
    )
    missing_folders: list[str] = Field(
        default_factory=list,
        description="Roles of the mapping (pending, archive, junk, trash, notes, sent) whose "
        "folder the server would not create: the messages are in the authenticated "
        "`/api/v1/mailboxes`.",
    )
    connections: ConnectionsReadiness | None = Field(
        default=None, description="Null until the worker has connected."
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
        tags_not_kept=[
            TagNotKeptPublic(
                tag=mark.tag,
                reason=mark.reason,
                why=mark.why,
                folder=mark.folder,
                detail=mark.detail,
            )
            for _tag, mark in sorted(row.tags_not_kept.items())
        ],
        customer=AddressPublic(email=c.customer_email, name=c.customer_name),
        message_count=c.message_count,
        last_message_at=c.last_message_at,
        unread=c.unread,
    )


def sla_public(view: SlaView) -> SlaPublic:
    return SlaPublic(
        policy=view.policy,
        first_response_due=view.first_response_due,
        first_response_at=view.first_response_at,
        first_response_met=view.first_response_met,
        next_response_due=view.next_response_due,
        resolution_due=view.resolution_due,
        resolved_at=view.resolved_at,
        resolution_met=view.resolution_met,
        breached=view.breached,
        paused_at=view.paused_at,
    )


def with_sla(session: Session, items: Sequence[ConversationPublic]) -> None:
    """Fill in each conversation's `sla` (one query for them all)."""
    views = sla_views(session, [item.id for item in items])
    for item in items:
        view = views.get(item.id)
        item.sla = sla_public(view) if view is not None else None


def conversation_list_item_public(row: ConversationRow) -> ConversationListItemPublic:
    snippet = row.snippet
    return ConversationListItemPublic(
        **dict(conversation_public(row)),
        snippet=SnippetPublic(text=snippet.text, highlights=snippet.highlights)
        if snippet
        else None,
    )


def conversation_list_public(page: ConversationPage) -> ConversationListPublic:
    return ConversationListPublic(
        items=[conversation_list_item_public(r) for r in page.items],
        next_cursor=page.next_cursor,
    )


def _attachment_public(a: Attachment, containers: dict[str, int] | None = None) -> AttachmentPublic:
    assert a.id is not None
    return AttachmentPublic(
        id=a.id,
        filename=a.filename,
        content_type=a.content_type,
        size=a.size,
        inline=a.inline,
        content_id=a.content_id,
        url=attachment_url(a.id),
        unpacked_from=(containers or {}).get(a.unpacked_from) if a.unpacked_from else None,
        unpack_error=a.unpack_error,
    )


def attachments_public(attachments: list[Attachment]) -> list[AttachmentPublic]:
    """A message's attachments; a file unpacked from a winmail.dat names that one's id."""
    containers: dict[str, int] = {}
    for a in attachments:
        if a.id is not None and not a.unpacked_from:
            containers.setdefault(a.sha256, a.id)
    return [_attachment_public(a, containers) for a in attachments]


def outbound_public(o: OutboundMail) -> OutboundPublic:
    assert o.id is not None
    state = public_state(o)
    return OutboundPublic(
        id=o.id,
        conversation_id=o.conversation_id,
        message=o.message_id,
        message_id=o.msgid,
        kind=o.kind,
        state=state,
        delivery=DeliveryPublic(
            state=state,
            last_error=o.last_error,
            smtp_response=o.smtp_response,
            attempts=o.attempts,
            not_before=o.next_attempt_at
            if state in (OutboundState.scheduled, OutboundState.queued)
            else None,
            sent_at=o.sent_at,
        ),
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
                attachments=attachments_public(view.attachments),
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
        plain_clients=plain_client_notes(m.capabilities, view.unkept),
        keywords_not_kept=[_keyword_not_kept(row) for row in view.unkept],
        sync=sync_notes(m.capabilities),
        folder_names=folder_settings(m),
        folder_problems=problem_notes(m),
        folders=[_folder_public(f) for f in view.folders],
    )


def _keyword_not_kept(row: UnkeptKeyword) -> KeywordNotKeptPublic:
    return KeywordNotKeptPublic(
        keyword=row.keyword,
        folder=row.folder,
        reason=row.reason,
        why=REASON_WORDS[row.reason],
        detail=row.detail,
        since=row.created_at,
    )


def _keyword_limit(capabilities: dict[str, Any] | None) -> int | str | None:
    limit = (capabilities or {}).get("keyword_limit")
    return limit if isinstance(limit, int | str) and not isinstance(limit, bool) else None


def mailbox_readiness(view: MailboxView, oauth2: OAuth2State | None = None) -> MailboxReadiness:
    m = view.mailbox
    missing = [p.role for p in folder_problems(m.capabilities)]
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
        error=bool(m.last_error)
        or any(f.error for f in folders)
        or oauth2 not in (None, OAuth2State.connected)
        or bool(missing),
        oauth2=oauth2.value if oauth2 is not None else None,
        keywords_kept=keywords_kept(m.capabilities),
        plain_clients=plain_client_notes(m.capabilities),
        keyword_limit=_keyword_limit(m.capabilities),
        keywords_not_kept=len(view.unkept),
        missing_folders=missing,
        connections=_connections_readiness(m.capabilities),
        folders=folders,
    )


def _connections_readiness(capabilities: dict[str, Any] | None) -> ConnectionsReadiness | None:
    found = (capabilities or {}).get("connections") or {}
    if not found:
        return None
    delay = ((capabilities or {}).get("push") or {}).get("delay_ms")
    return ConnectionsReadiness(
        open=int(found.get("open") or 0),
        max=int(found.get("max") or 0),
        allowed=int(found.get("allowed") or 0),
        push=str(found.get("push") or ""),
        refused=bool(found.get("refused")),
        push_delay_ms=delay if isinstance(delay, int) else None,
    )


# --- customers ---------------------------------------------------------------------------------


class CustomerPublic(BaseModel):
    """Someone conversations are with, by address. The counts and dates are of the
    conversations the caller may see: nothing of a mailbox hidden from it."""

    id: int
    email: str = Field(description="The address, lower case.")
    name: str | None = Field(description="The latest name their mail gave.")
    organisation: str | None = Field(
        description="The address's domain when it names an organisation; null for free-mail "
        "providers (gmail.com, outlook.com, ...)."
    )
    note: str = Field(description="What agents keep about them (plain text).")
    note_version: int = Field(description="Grows with every change of the note.")
    note_updated_at: UtcDatetime | None
    note_updated_by: str | None = Field(description="The email of the agent who changed it last.")
    conversation_count: int = Field(
        description="How many of their conversations the caller may see (merged ones count "
        "once, in the conversation they were merged into)."
    )
    last_message_at: UtcDatetime | None = Field(
        description="The latest message of those conversations."
    )


class CustomerListPublic(BaseModel):
    items: list[CustomerPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class CustomerDetailPublic(CustomerPublic):
    conversations: list[ConversationPublic] = Field(
        description="Their conversations the caller may see, newest first: at most 100 (the "
        "newest; `conversation_count` says how many there are)."
    )


def _customer_public(summary: CustomerSummary) -> CustomerPublic:
    c = summary.customer
    who = summary.note_updated_by
    assert c.id is not None
    return CustomerPublic(
        id=c.id,
        email=c.email,
        name=c.name,
        organisation=c.organisation,
        note=c.note,
        note_version=c.note_version,
        note_updated_at=c.note_updated_at,
        note_updated_by=who.email if who else None,
        conversation_count=summary.conversation_count,
        last_message_at=summary.last_message_at,
    )


def customer_list_public(page: CustomerPage) -> CustomerListPublic:
    return CustomerListPublic(
        items=[_customer_public(s) for s in page.items], next_cursor=page.next_cursor
    )


def customer_detail_public(detail: CustomerDetail) -> CustomerDetailPublic:
    summary = CustomerSummary(
        detail.customer,
        detail.conversation_count,
        detail.last_message_at,
        detail.note_updated_by,
    )
    base = _customer_public(summary)
    return CustomerDetailPublic(
        **base.model_dump(),
        conversations=[conversation_public(row) for row in detail.conversations],
    )
