"""Replies, forwards, new outbound conversations and internal notes.

Queuing composes the message once (the stdlib `email` package, policy SMTP: every header
encoded as RFC 2047 needs, nothing by hand), stores it as a Message of the conversation (so
everyone sees it at once) and writes an `OutboundMail` row in the caller's transaction: the
sender in the worker (`worker/sender.py`) delivers it by SMTP, appends the copy to Sent (a note:
to Notes, never sent to anyone) and then marks the answered message `\\Answered` and sets the
status the mailbox names. Nothing here commits.

Collision detection ("Traffic Cop"): every message or note that joins a conversation records
the conversation's version then (`Message.added_version`); a reply or note sent against an
older version raises `VersionConflict` with the messages and notes added since, unless forced.

Loops: nothing automatic is ever sent to a message that is itself automatic (Auto-Submitted
other than "no", a null sender, mailer-daemon, list mail); automatic mail carries
`Auto-Submitted: auto-replied` (`compose(..., automatic=True)`). Delivery status notifications
join the conversation of the message they report on (the ingest threads them by the reported
Message-ID) and flag that reply as failed with the reporting server's words.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
import html as html_lib
import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from sqlalchemy import func, text
from sqlmodel import Session, col, select

from imapdesk.domain.conversations import operations
from imapdesk.domain.conversations.aggregates import (
    add_message_to_conversation,
    conversation_token,
    find_token,
    new_conversation,
    our_addresses_for,
)
from imapdesk.domain.mailstate import FlagChange
from imapdesk.kernel.attachment_store import store_blob
from imapdesk.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    Attachment,
    Conversation,
    ConversationStatus,
    Direction,
    Folder,
    FolderRole,
    FolderState,
    Mailbox,
    Message,
    MessageLocation,
    OutboundMail,
    OutboundState,
    PendingImapAction,
    RawMessage,
    ThreadNode,
    as_utc,
    utcnow,
)
from imapdesk.kernel.settings import Settings, get_settings
from imapdesk.mail.parsing import normalize_msgid, parse_message

NOTE_HEADER = "X-Imapdesk-Note"
REPLY_KINDS = ("reply", "reply_all", "forward")
MAIL_CLIENT_REPLY = "replied from a mail client"
_PREFIX = re.compile(r"^\s*((re|aw|sv|antw|fwd?|wg|tr)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_MAX_REFERENCES = 40


@dataclass(frozen=True)
class Upload:
    """A file an agent attaches (multipart upload in the API)."""

    filename: str
    content_type: str
    data: bytes


def message_summary(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "message_id": m.message_id,
        "direction": Direction(m.direction).value,
        "from": {"email": m.from_email, "name": m.from_name},
        "date": m.date.isoformat() if m.date else None,
        "subject": m.subject,
        "text": m.text[:2000],
    }


class VersionConflict(Conflict):
    """409: newer messages or notes joined the conversation since the version the agent saw."""

    code = "version_conflict"

    def __init__(self, current_version: int, newer: list[Message]) -> None:
        super().__init__(
            f"the conversation changed since you opened it: {len(newer)} newer message(s) or "
            "note(s); read them, then send again (or send anyway with force)",
            current_version=current_version,
            newer=[message_summary(m) for m in newer],
        )
        self.current_version = current_version
        self.newer = newer


# --- composing ---------------------------------------------------------------------------------


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "imapdesk.invalid"


def new_msgid(mailbox: Mailbox) -> str:
    """A Message-ID in the mailbox's domain, without angle brackets."""
    value = normalize_msgid(make_msgid(idstring="imapdesk", domain=_domain(mailbox.address)))
    assert value is not None
    return value


def _address(email_addr: str, name: str | None = None) -> Address:
    local, _, domain = email_addr.strip().rpartition("@")
    if not local or not domain:
        raise InvalidInput(f"{email_addr!r} is not an email address", field="to")
    try:
        return Address(display_name=name or "", username=local, domain=domain)
    except (ValueError, IndexError) as exc:
        raise InvalidInput(f"{email_addr!r} is not an email address", field="to") from exc


def from_address(mailbox: Mailbox, agent: Agent | None) -> Address:
    """ "Alice at Example Support <support@...>" when the mailbox says so, else its name."""
    team = mailbox.display_name or ""
    if mailbox.from_agent_name and agent is not None:
        name = f"{agent.name} at {team}" if team else agent.name
    else:
        name = team
    return _address(mailbox.address, name)


def reply_subject(subject: str, conversation_id: int | None, *, forward: bool = False) -> str:
    """ "Re: <subject> [#id]": one prefix whatever the subject had, and our token once."""
    base = _PREFIX.sub("", subject or "").strip()
    prefix = "Fwd: " if forward else "Re: "
    result = prefix + base if base else prefix.strip()
    if conversation_id is not None and find_token(result) != conversation_id:
        result = f"{result} {conversation_token(conversation_id)}"
    return result


def with_signature(body: str, *signatures: str | None) -> str:
    """The text, then "-- " and the signatures (the agent's, then the mailbox's)."""
    sigs = [sig.strip("\n") for sig in signatures if sig and sig.strip()]
    text = body.rstrip("\n")
    if sigs:
        text += "\n\n-- \n" + "\n\n".join(sigs)
    return text + "\n"


def _html_signature(html: str, *signatures: str | None) -> str:
    sigs = [sig.strip("\n") for sig in signatures if sig and sig.strip()]
    if not sigs:
        return html
    block = (
        '<div class="signature">-- <br>'
        + "<br><br>".join(
            "<br>".join(html_lib.escape(line) for line in sig.splitlines()) for sig in sigs
        )
        + "</div>"
    )
    at = html.lower().rfind("</body>")
    return html[:at] + block + html[at:] if at >= 0 else html + block


def compose(
    *,
    sender: Address,
    to: Sequence[Address],
    cc: Sequence[Address] = (),
    subject: str,
    msgid: str,
    text: str,
    html: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    attachments: Sequence[Upload] = (),
    forwarded: bytes | None = None,
    note: bool = False,
    automatic: bool = False,
    date: datetime | None = None,
) -> bytes:
    """The RFC 5322 bytes (CRLF), every header encoded by the email package."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    if to:
        msg["To"] = tuple(to)
    if cc:
        msg["Cc"] = tuple(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = f"<{msgid}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    refs = list(dict.fromkeys(r for r in references if r))
    if len(refs) > _MAX_REFERENCES:  # the first (the thread's root) and the most recent
        refs = refs[:1] + refs[-(_MAX_REFERENCES - 1) :]
    if refs:
        msg["References"] = " ".join(f"<{r}>" for r in refs)
    if note:
        msg[NOTE_HEADER] = "1"
    if automatic:
        msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    for upload in attachments:
        ctype = upload.content_type or mimetypes.guess_type(upload.filename)[0] or ""
        maintype, _, subtype = ctype.partition("/")
        if not maintype or not subtype or maintype == "multipart":
            maintype, subtype = "application", "octet-stream"
        if maintype == "text":
            msg.add_attachment(
                upload.data.decode("utf-8", "replace"), subtype=subtype, filename=upload.filename
            )
        else:
            msg.add_attachment(
                upload.data, maintype=maintype, subtype=subtype, filename=upload.filename
            )
    if forwarded is not None:
        original = email.message_from_bytes(forwarded, policy=email.policy.default)
        msg.add_attachment(original, disposition="inline")
    return msg.as_bytes(policy=email.policy.SMTP)


# --- loops -------------------------------------------------------------------------------------

_LIST_HEADER = re.compile(r"(?im)^(list-id|list-unsubscribe):|^precedence:[ \t]*(bulk|list|junk)")


def is_automatic(message: Message) -> bool:
    """Auto-Submitted other than "no", a null sender, mailer-daemon, a DSN or list mail: never
    answered automatically."""
    local = (message.from_email or "").partition("@")[0].lower()
    return bool(
        message.auto_submitted
        or not message.from_email
        or local in ("mailer-daemon", "postmaster")
        or _LIST_HEADER.search(message.headers or "")
    )


def may_send_automatically(answered: Message | None) -> bool:
    """Whether an automatic message (an acknowledgement, an auto-reply) may answer this one."""
    return answered is not None and not is_automatic(answered)


# --- delivery status notifications -------------------------------------------------------------


@dataclass
class DsnReport:
    original_msgid: str | None = None
    failed: bool = False
    recipients: list[str] | None = None
    diagnostic: str = ""


def dsn_report(raw: bytes) -> DsnReport:
    """What a multipart/report (RFC 3464) says: the Message-ID it reports on, whether delivery
    failed and the remote server's words. Never raises."""
    report = DsnReport(recipients=[])
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        for part in msg.walk():
            ctype = part.get_content_type()
            if ctype == "message/delivery-status":
                blocks = part.get_payload()
                for block in blocks if isinstance(blocks, list) else []:
                    if not isinstance(block, email.message.Message):
                        continue
                    action = str(block.get("Action", "")).strip().lower()
                    if action == "failed":
                        report.failed = True
                    rcpt = block.get("Final-Recipient") or block.get("Original-Recipient")
                    if rcpt and report.recipients is not None:
                        report.recipients.append(str(rcpt).split(";", 1)[-1].strip())
                    words = " ".join(
                        str(block.get(h, "")).strip() for h in ("Status", "Diagnostic-Code")
                    ).strip()
                    if words and not report.diagnostic:
                        report.diagnostic = " ".join(words.split())
            elif ctype in ("message/rfc822", "message/global") and report.original_msgid is None:
                inner = part.get_payload()
                if (
                    isinstance(inner, list)
                    and inner
                    and isinstance(inner[0], EmailMessage | email.message.Message)
                ):
                    report.original_msgid = normalize_msgid(str(inner[0].get("Message-ID", "")))
            elif ctype == "text/rfc822-headers" and report.original_msgid is None:
                payload = part.get_payload(decode=True) or b""
                headers = email.message_from_bytes(bytes(payload), policy=email.policy.compat32)
                report.original_msgid = normalize_msgid(str(headers.get("Message-ID", "")))
    except Exception:  # a broken report is still a message; it just tells us nothing
        return report
    return report


# --- storing -----------------------------------------------------------------------------------


def _store_message(
    session: Session,
    settings: Settings,
    conversation: Conversation,
    raw: bytes,
    *,
    direction: Direction,
    parent_msgid: str | None,
    new: bool = False,
) -> Message:
    """The composed message as a Message of `conversation` (as the ingest would store it when
    it reads the copy back: that finds it by Message-ID and only adds its place)."""
    p = parse_message(raw)
    assert p.message_id is not None
    digest = hashlib.sha256(raw).hexdigest()
    message = Message(
        message_id=p.message_id,
        has_message_id=True,
        content_hash=digest,
        conversation_id=conversation.id,
        thread_rule="new" if new else "references",
        direction=direction,
        subject=p.subject,
        from_email=p.from_email,
        from_name=p.from_name,
        to=p.to,
        cc=p.cc,
        reply_to=p.reply_to,
        date=as_utc(p.date) or utcnow(),
        in_reply_to=p.in_reply_to,
        references=p.references,
        headers=p.headers,
        text=p.text,
        html=p.html,
        snippet=p.snippet[:300],
        size=len(raw),
        seen=True,
        auto_submitted=p.auto_submitted,
        created_at=utcnow(),
    )
    session.add(message)
    session.flush()
    assert message.id is not None and conversation.id is not None
    session.add(RawMessage(message_id=message.id, data=raw))
    for att in p.attachments:
        session.add(
            Attachment(
                message_id=message.id,
                filename=att.filename[:500],
                content_type=att.content_type[:200],
                size=len(att.data),
                sha256=store_blob(settings.attachments_dir, att.data),
                content_id=att.content_id[:500] if att.content_id else None,
                inline=att.inline,
            )
        )
    node = session.exec(
        select(ThreadNode).where(col(ThreadNode.msgid) == message.message_id)
    ).first()
    if node is None:
        node = ThreadNode(msgid=message.message_id)
    node.message_id = message.id
    node.conversation_id = conversation.id
    if parent_msgid:
        node.parent_msgid = parent_msgid
        node.parent_explicit = True
    session.add(node)
    if new:
        conversation.version += 1
        message.added_version = conversation.version
        conversation.updated_at = utcnow()
        session.add(conversation)
    else:
        ours = our_addresses_for(session, conversation.mailbox_id)
        add_message_to_conversation(session, conversation, message, our_addresses=ours)
    session.flush()
    return message


def _check_agent(agent: Agent) -> None:
    if agent.id is None:
        raise ValueError("the agent has no id yet: flush it first")
    if not agent.is_active:
        raise Forbidden("this agent is deactivated")


def _conversation(session: Session, conversation_id: int) -> Conversation:
    """The conversation, row-locked: a reply's message is added under this lock, which is
    all the ingest's threading needs (a merge takes the same row lock first); not the
    ingest's own lock, which would make every reply wait for a batch of mail."""
    return operations._load(session, conversation_id, lock=True)


def newer_than(session: Session, conversation: Conversation, version: int) -> list[Message]:
    """Messages and notes that joined the conversation after `version`, oldest first."""
    return list(
        session.exec(
            select(Message)
            .where(
                col(Message.conversation_id) == conversation.id,
                col(Message.added_version) > version,
            )
            .order_by(col(Message.added_version), col(Message.id))
        )
    )


def _check_version(
    session: Session, conversation: Conversation, expected: int | None, force: bool
) -> None:
    if expected is None or force or expected >= conversation.version:
        return
    newer = newer_than(session, conversation, expected)
    if newer:
        raise VersionConflict(conversation.version, newer)


def _idempotent(session: Session, mailbox_id: int, key: str | None) -> OutboundMail | None:
    """What was queued with this key before (two requests with one key: the second waits for
    the first and gets its mail; SQLite serialises writers anyway)."""
    if not key:
        return None
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
            {"k": f"imapdesk-outbound:{mailbox_id}:{key}"},
        )
    return session.exec(
        select(OutboundMail).where(
            col(OutboundMail.mailbox_id) == mailbox_id, col(OutboundMail.idempotency_key) == key
        )
    ).first()


def _answered(session: Session, conversation: Conversation) -> Message | None:
    """The message a reply answers: the newest inbound one, else the newest of ours."""
    for direction in (Direction.inbound, Direction.outbound):
        found = session.exec(
            select(Message)
            .where(
                col(Message.conversation_id) == conversation.id,
                col(Message.direction) == direction,
            )
            .order_by(
                col(Message.date).is_(None),
                col(Message.date).desc(),
                col(Message.id).desc(),
            )
            .limit(1)
        ).first()
        if found is not None:
            return found
    return None


def _newest(session: Session, conversation: Conversation) -> Message | None:
    return session.exec(
        select(Message)
        .where(col(Message.conversation_id) == conversation.id)
        .order_by(col(Message.date).is_(None), col(Message.date).desc(), col(Message.id).desc())
        .limit(1)
    ).first()


def _dedupe(addresses: Sequence[tuple[str, str | None]], exclude: set[str]) -> list[Address]:
    seen = set(exclude)
    out = []
    for addr, name in addresses:
        key = addr.strip().lower()
        if not key or key in seen:
            continue
        seen.add(key)
        out.append(_address(addr, name))
    return out


def _pairs(values: Sequence[dict[str, str]] | None) -> list[tuple[str, str | None]]:
    return [(v.get("email") or "", v.get("name") or None) for v in values or [] if v.get("email")]


def _given(values: Sequence[str] | None) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for value in values or []:
        name, addr = email.utils.parseaddr(value)
        if not addr or "@" not in addr:
            raise InvalidInput(f"{value!r} is not an email address", field="to")
        out.append((addr, name or None))
    return out


def _check_attachments(settings: Settings, attachments: Sequence[Upload]) -> None:
    total = sum(len(a.data) for a in attachments)
    if total > settings.max_outbound_attachment_bytes:
        raise InvalidInput(
            f"the attachments have {total} bytes, more than the "
            f"{settings.max_outbound_attachment_bytes} allowed",
            field="attachments",
        )


def _mailbox_for_sending(session: Session, mailbox_id: int) -> Mailbox:
    mailbox = session.get(Mailbox, mailbox_id)
    assert mailbox is not None
    if not mailbox.smtp_host:
        raise InvalidInput(
            f"the mailbox {mailbox.name} has no SMTP server: set one with "
            "`imapdesk mailbox add ... --smtp-host`",
            field="mailbox",
        )
    return mailbox


def _outbound(
    session: Session,
    *,
    mailbox: Mailbox,
    conversation: Conversation,
    message: Message,
    agent: Agent,
    source: ActivitySource,
    kind: str,
    raw: bytes,
    recipients: list[str],
    answered: Message | None = None,
    idempotency_key: str | None = None,
) -> OutboundMail:
    outbound = OutboundMail(
        mailbox_id=mailbox.id,  # type: ignore[arg-type]
        conversation_id=conversation.id,
        message_id=message.id,
        answered_message_id=answered.id if answered is not None else None,
        agent_id=agent.id,
        source=source,
        kind=kind,
        msgid=message.message_id,
        idempotency_key=idempotency_key or None,
        envelope_from=mailbox.address,
        recipients=recipients,
        raw=raw,
        state=OutboundState.queued,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    session.add(outbound)
    session.flush()
    return outbound


def _record_by_agent(
    session: Session,
    conversation: Conversation,
    agent: Agent,
    source: ActivitySource,
    action: str,
    details: dict[str, Any],
) -> None:
    """The activity of what an agent queued (the conversation's version is not bumped)."""
    operations._record(
        session,
        conversation,
        source=source,
        agent=agent,
        actor="",
        action=action,
        details=details,
        bump=False,
    )


def queue_reply(
    session: Session,
    agent: Agent,
    conversation_id: int,
    *,
    kind: str = "reply",
    body: str,
    html: str | None = None,
    to: list[str] | None = None,
    cc: list[str] | None = None,
    attachments: Sequence[Upload] = (),
    expected_version: int | None = None,
    force: bool = False,
    idempotency_key: str | None = None,
    source: ActivitySource,
    settings: Settings | None = None,
) -> OutboundMail:
    """Queue a reply, reply-all or forward; the worker sends it. Same `idempotency_key`: the
    mail queued the first time, nothing new."""
    settings = settings or get_settings()
    source = ActivitySource(source)
    _check_agent(agent)
    if kind not in REPLY_KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(REPLY_KINDS)}", field="kind")
    if not body.strip() and not (html or "").strip():
        raise InvalidInput("the reply has no text", field="body")
    _check_attachments(settings, attachments)
    conversation = _conversation(session, conversation_id)
    done = _idempotent(session, conversation.mailbox_id, idempotency_key)
    if done is not None:
        return done
    _check_version(session, conversation, expected_version, force)
    mailbox = _mailbox_for_sending(session, conversation.mailbox_id)
    assert conversation.id is not None
    answered = _answered(session, conversation)
    ours = set(our_addresses_for(session, mailbox.id or 0))
    if kind == "forward":
        if not to:
            raise InvalidInput("a forward needs `to`", field="to")
        to_addrs = _dedupe(_given(to), set())
        cc_addrs = _dedupe(_given(cc), {a.addr_spec.lower() for a in to_addrs})
    else:
        if to:
            to_addrs = _dedupe(_given(to), set())
        elif answered is None:
            raise InvalidInput("nobody to reply to: give `to`", field="to")
        elif answered.direction == Direction.inbound:
            target = _pairs(answered.reply_to) or [(answered.from_email or "", answered.from_name)]
            to_addrs = _dedupe(target, ours)
        else:  # our own message was the last: write to its recipients again
            to_addrs = _dedupe(_pairs(answered.to), ours)
        taken = ours | {a.addr_spec.lower() for a in to_addrs}
        if cc is not None:
            cc_addrs = _dedupe(_given(cc), taken)
        elif kind == "reply_all" and answered is not None:
            extra = _pairs(answered.to) + _pairs(answered.cc)
            if answered.direction == Direction.inbound and answered.reply_to:
                extra.append((answered.from_email or "", answered.from_name))
            cc_addrs = _dedupe(extra, taken)
        else:
            cc_addrs = []
        if not to_addrs:
            raise InvalidInput("nobody to reply to: give `to`", field="to")
    msgid = new_msgid(mailbox)
    base_subject = (answered.subject if answered is not None else "") or conversation.subject
    chain: list[str] = []
    if answered is not None:
        chain = [*(answered.references or []), answered.message_id]
        if answered.in_reply_to and answered.in_reply_to not in chain:
            chain.insert(len(chain) - 1, answered.in_reply_to)
    raw = compose(
        sender=from_address(mailbox, agent),
        to=to_addrs,
        cc=cc_addrs,
        subject=reply_subject(base_subject, conversation.id, forward=kind == "forward"),
        msgid=msgid,
        text=with_signature(body, agent.signature, mailbox.signature),
        html=_html_signature(html, agent.signature, mailbox.signature) if html else None,
        in_reply_to=answered.message_id if answered is not None and kind != "forward" else None,
        references=chain,
        attachments=attachments,
        forwarded=_raw_of(session, answered) if kind == "forward" else None,
    )
    message = _store_message(
        session,
        settings,
        conversation,
        raw,
        direction=Direction.outbound,
        parent_msgid=answered.message_id if answered is not None else None,
    )
    recipients = [a.addr_spec for a in (*to_addrs, *cc_addrs)]
    outbound = _outbound(
        session,
        mailbox=mailbox,
        conversation=conversation,
        message=message,
        answered=answered if kind != "forward" else None,
        agent=agent,
        source=source,
        kind=kind,
        raw=raw,
        recipients=recipients,
        idempotency_key=idempotency_key,
    )
    _record_by_agent(
        session,
        conversation,
        agent,
        source,
        "forwarded" if kind == "forward" else "replied",
        {"outbound_id": outbound.id, "message_id": message.id, "kind": kind, "to": recipients},
    )
    return outbound


def _raw_of(session: Session, message: Message | None) -> bytes | None:
    if message is None or message.id is None:
        return None
    raw = session.get(RawMessage, message.id)
    return raw.data if raw is not None else None


def start_conversation(
    session: Session,
    agent: Agent,
    mailbox_name: str,
    *,
    to: list[str],
    subject: str,
    body: str,
    html: str | None = None,
    cc: list[str] | None = None,
    attachments: Sequence[Upload] = (),
    idempotency_key: str | None = None,
    source: ActivitySource,
    settings: Settings | None = None,
) -> OutboundMail:
    """A new conversation that starts with our message to `to`."""
    settings = settings or get_settings()
    source = ActivitySource(source)
    _check_agent(agent)
    if not to:
        raise InvalidInput("a new conversation needs `to`", field="to")
    if not subject.strip():
        raise InvalidInput("a new conversation needs a subject", field="subject")
    _check_attachments(settings, attachments)
    mailbox = session.exec(select(Mailbox).where(col(Mailbox.name) == mailbox_name)).first()
    if mailbox is None or mailbox.id is None:
        raise NotFound(f"no mailbox named {mailbox_name!r}", field="mailbox")
    done = _idempotent(session, mailbox.id, idempotency_key)
    if done is not None:
        return done
    _mailbox_for_sending(session, mailbox.id)
    to_addrs = _dedupe(_given(to), set())
    cc_addrs = _dedupe(_given(cc), {a.addr_spec.lower() for a in to_addrs})
    msgid = new_msgid(mailbox)
    # the conversation first, for the token in the subject
    placeholder = Message(
        message_id=msgid,
        content_hash="",
        direction=Direction.outbound,
        subject=subject.strip(),
        to=[{"email": a.addr_spec, "name": a.display_name} for a in to_addrs],
        date=utcnow(),
        created_at=utcnow(),
    )
    conversation = new_conversation(
        session,
        mailbox.id,
        placeholder,
        our_addresses=our_addresses_for(session, mailbox.id),
    )
    assert conversation.id is not None
    full_subject = f"{subject.strip()} {conversation_token(conversation.id)}"
    raw = compose(
        sender=from_address(mailbox, agent),
        to=to_addrs,
        cc=cc_addrs,
        subject=full_subject,
        msgid=msgid,
        text=with_signature(body, agent.signature, mailbox.signature),
        html=_html_signature(html, agent.signature, mailbox.signature) if html else None,
        attachments=attachments,
    )
    message = _store_message(
        session,
        settings,
        conversation,
        raw,
        direction=Direction.outbound,
        parent_msgid=None,
        new=True,
    )
    outbound = _outbound(
        session,
        mailbox=mailbox,
        conversation=conversation,
        message=message,
        agent=agent,
        source=source,
        kind="new",
        raw=raw,
        recipients=[a.addr_spec for a in (*to_addrs, *cc_addrs)],
        idempotency_key=idempotency_key,
    )
    _record_by_agent(
        session,
        conversation,
        agent,
        source,
        "started",
        {"outbound_id": outbound.id, "message_id": message.id, "to": outbound.recipients},
    )
    return outbound


def add_note(
    session: Session,
    agent: Agent,
    conversation_id: int,
    *,
    body: str,
    html: str | None = None,
    attachments: Sequence[Upload] = (),
    expected_version: int | None = None,
    force: bool = False,
    source: ActivitySource,
    settings: Settings | None = None,
) -> Message:
    """An internal note: stored at once, appended by the worker to the Notes folder (threaded
    by In-Reply-To/References, `\\Seen`, `X-Imapdesk-Note: 1`) so that a rebuild restores it.
    Never sent to anyone."""
    settings = settings or get_settings()
    source = ActivitySource(source)
    _check_agent(agent)
    if not body.strip() and not (html or "").strip():
        raise InvalidInput("the note has no text", field="body")
    _check_attachments(settings, attachments)
    conversation = _conversation(session, conversation_id)
    _check_version(session, conversation, expected_version, force)
    mailbox = session.get(Mailbox, conversation.mailbox_id)
    assert mailbox is not None and conversation.id is not None
    newest = _newest(session, conversation)
    chain: list[str] = []
    if newest is not None:
        chain = [*(newest.references or []), newest.message_id]
    sender = _address(mailbox.address, agent.name)
    raw = compose(
        sender=sender,
        to=[_address(mailbox.address, mailbox.display_name)],
        subject=f"Note: {reply_subject(conversation.subject, conversation.id)[4:]}",
        msgid=new_msgid(mailbox),
        text=body,
        html=html,
        in_reply_to=newest.message_id if newest is not None else None,
        references=chain,
        attachments=attachments,
        note=True,
    )
    message = _store_message(
        session,
        settings,
        conversation,
        raw,
        direction=Direction.note,
        parent_msgid=newest.message_id if newest is not None else None,
    )
    outbound = _outbound(
        session,
        mailbox=mailbox,
        conversation=conversation,
        message=message,
        agent=agent,
        source=source,
        kind="note",
        raw=raw,
        recipients=[],
    )
    _record_by_agent(
        session,
        conversation,
        agent,
        source,
        "note",
        {"message_id": message.id, "outbound_id": outbound.id},
    )
    return message


# --- after sending, and replies sent from mail clients -------------------------------------------


def _answered_flag(session: Session, conversation: Conversation, answered_id: int) -> None:
    """\\Answered on the answered message, written back (where it is not there yet)."""
    flags = session.exec(
        select(MessageLocation.flags).where(col(MessageLocation.message_id) == answered_id)
    ).all()
    if flags and all("\\Answered" in (f or []) for f in flags):
        return
    session.add(
        PendingImapAction(
            mailbox_id=conversation.mailbox_id,
            conversation_id=conversation.id,
            message_id=answered_id,
            kind="flags",
            payload=FlagChange.of(add=["\\Answered"]).payload(),
            created_at=utcnow(),
        )
    )


def _status_after_reply(mailbox: Mailbox) -> ConversationStatus | None:
    try:
        return ConversationStatus(mailbox.status_after_reply)
    except ValueError:
        return None


def _customer_wrote_since(session: Session, conversation: Conversation, when: datetime) -> bool:
    return (
        session.exec(
            select(func.count())
            .select_from(Message)
            .where(
                col(Message.conversation_id) == conversation.id,
                col(Message.direction) == Direction.inbound,
                col(Message.date) > when,
            )
        ).one()
        > 0
    )


def after_sent(session: Session, outbound: OutboundMail) -> None:
    """Once the SMTP server took it: \\Answered on the answered message, and the conversation
    takes the status the mailbox names (default pending), unless the customer wrote since."""
    if outbound.kind == "note" or outbound.conversation_id is None:
        return
    mailbox = session.get(Mailbox, outbound.mailbox_id)
    conversation = operations._load(session, outbound.conversation_id, lock=True)
    if mailbox is None or conversation.id is None:
        return
    if outbound.answered_message_id is not None:
        _answered_flag(session, conversation, outbound.answered_message_id)
    status = _status_after_reply(mailbox)
    if status is not None and not _customer_wrote_since(
        session, conversation, as_utc(outbound.created_at) or utcnow()
    ):
        agent = session.get(Agent, outbound.agent_id) if outbound.agent_id else None
        source = outbound.source if agent is not None else ActivitySource.system
        operations.set_status(session, conversation, status, source=source, agent=agent)


def after_ingest(
    session: Session, settings: Settings, mailbox: Mailbox, folder: Folder, message_ids: list[int]
) -> None:
    """Called by the ingest for the new messages of a batch: a reply that a colleague sent
    from a mail client (it appears in Sent) joins as outbound and sets the state a reply from
    imapdesk sets; a bounce of one of our replies flags it as failed."""
    live = folder.state == FolderState.poll
    messages = session.exec(select(Message).where(col(Message.id).in_(message_ids))).all()
    for m in messages:
        if m.conversation_id is None:
            continue
        if m.direction == Direction.outbound and folder.role == FolderRole.sent and live:
            _client_reply(session, mailbox, m)
        elif m.direction == Direction.inbound and m.auto_submitted and m.in_reply_to:
            _bounce(session, mailbox, m)


def _client_reply(session: Session, mailbox: Mailbox, m: Message) -> None:
    ours = session.exec(
        select(OutboundMail.id).where(col(OutboundMail.msgid) == m.message_id)
    ).first()
    if ours is not None:
        return
    conversation = operations._load(session, m.conversation_id or 0, lock=True)
    answered = None
    if m.in_reply_to:
        answered = session.exec(
            select(Message).where(
                col(Message.message_id) == m.in_reply_to,
                col(Message.conversation_id) == conversation.id,
            )
        ).first()
    operations._record(
        session,
        conversation,
        source=ActivitySource.imap,
        agent=None,
        actor=operations.MAIL_CLIENT,
        action="replied",
        details={
            "message_id": m.id,
            "via": MAIL_CLIENT_REPLY,
            "to": [a.get("email") for a in m.to],
        },
    )
    if answered is not None and answered.id is not None:
        _answered_flag(session, conversation, answered.id)
    status = _status_after_reply(mailbox)
    when = as_utc(m.date) or utcnow()
    if status is not None and not _customer_wrote_since(session, conversation, when):
        operations.set_status(
            session, conversation, status, source=ActivitySource.system, actor="imapdesk"
        )


def _bounce(session: Session, mailbox: Mailbox, m: Message) -> None:
    outbound = session.exec(
        select(OutboundMail).where(
            col(OutboundMail.msgid) == m.in_reply_to,
            col(OutboundMail.mailbox_id) == mailbox.id,
        )
    ).first()
    if outbound is None or outbound.kind == "note":
        return
    raw = session.get(RawMessage, m.id)
    report = dsn_report(raw.data) if raw is not None else DsnReport()
    if not report.failed:
        return
    words = report.diagnostic or "the message was returned as undeliverable"
    outbound.state = OutboundState.failed
    outbound.last_error = f"returned by {m.from_email or 'the mail system'}: {words}"[:2000]
    outbound.smtp_response = words[:2000]
    outbound.updated_at = utcnow()
    session.add(outbound)
    if outbound.conversation_id is not None:
        conversation = operations._load(session, outbound.conversation_id, lock=True)
        operations._record(
            session,
            conversation,
            source=ActivitySource.system,
            agent=None,
            actor="imapdesk",
            action="bounced",
            details={
                "outbound_id": outbound.id,
                "message_id": outbound.message_id,
                "bounce_message_id": m.id,
                "recipients": report.recipients or [],
                "error": words,
            },
        )


# --- reading ---------------------------------------------------------------------------------


def outbound_for_messages(session: Session, message_ids: Sequence[int]) -> dict[int, OutboundMail]:
    if not message_ids:
        return {}
    rows = session.exec(
        select(OutboundMail).where(col(OutboundMail.message_id).in_(list(message_ids)))
    ).all()
    return {o.message_id: o for o in rows if o.message_id is not None}


def outbound_activity(session: Session, conversation_id: int) -> list[Activity]:
    return list(
        session.exec(
            select(Activity).where(
                col(Activity.conversation_id) == conversation_id,
                col(Activity.action).in_(("replied", "forwarded", "started", "note", "bounced")),
            )
        )
    )
