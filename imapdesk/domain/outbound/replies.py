"""Replies, forwards, new outbound conversations and internal notes: the reply service.

Queuing composes the message once (`imapdesk.mail.compose`), stores it as a Message of the
conversation (so everyone sees it at once) and writes an `OutboundMail` row in the caller's
transaction: the sender in the worker (`worker/sender.py`) delivers it by SMTP, appends the copy
to Sent (a note: to Notes, never sent to anyone) and then marks the answered message
`\\Answered` and sets the status the mailbox names (`imapdesk.domain.outbound.delivery`). The
commit wakes the mailbox's sender (`imapdesk.kernel.wakeups`). Nothing here commits.

A reply or note sent against an older version of the conversation raises `VersionConflict`
("Traffic Cop", `imapdesk.domain.outbound.collisions`), unless forced. The same
`idempotency_key` queues nothing new: it returns the mail queued the first time.

What the agent typed is checked before anything is locked or queued (`_checked_input`): a
subject or recipient that cannot become a header is refused with the field named, and a
recipient is taken exactly as written or not at all (`imapdesk.mail.compose.parse_recipient`).
An international domain is written in its IDNA form; an address with a non-ASCII local part
is refused when the mailbox's SMTP server is known not to offer SMTPUTF8 (`_check_sendable`).

With `undo_seconds`, the mail is `scheduled` until then (the undo window): the sender leaves
it alone, and `imapdesk.domain.outbound.actions.take_back` can still take it back.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import timedelta
from email.headerregistry import Address
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select

from imapdesk.domain.conversations import operations, read_marks
from imapdesk.domain.conversations.aggregates import (
    add_message_to_conversation,
    conversation_token,
    find_token,
    new_conversation,
    our_addresses_for,
)
from imapdesk.domain.mailboxes.config import our_addresses
from imapdesk.domain.outbound import drafts, images
from imapdesk.domain.outbound.collisions import check_version
from imapdesk.kernel.attachment_store import store_blob
from imapdesk.kernel.errors import Forbidden, InvalidInput, NotFound
from imapdesk.kernel.models import (
    ActivitySource,
    Agent,
    Attachment,
    Conversation,
    Direction,
    Mailbox,
    Message,
    OutboundMail,
    OutboundState,
    RawMessage,
    ThreadNode,
    as_utc,
    utcnow,
)
from imapdesk.kernel.settings import Settings, get_settings
from imapdesk.mail.compose import (
    MAX_FILENAME,
    MAX_SUBJECT,
    InlineImage,
    Upload,
    check_header_text,
    check_text,
    compose,
    header_safe,
    html_with_signature,
    mail_address,
    needs_smtputf8,
    new_msgid,
    parse_recipient,
    with_signature,
)
from imapdesk.mail.compose_html import (
    cid_references,
    document,
    has_content,
    sanitize_composed,
    text_alternative,
    uploaded_image_ids,
    with_cids,
    with_content_ids,
)
from imapdesk.mail.parsing import parse_message

REPLY_KINDS = ("reply", "reply_all", "forward")
# the longest undo window: a short wait, not a way to schedule mail
MAX_UNDO_SECONDS = 60
_PREFIX = re.compile(r"^\s*((re|aw|sv|antw|fwd?|wg|tr)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)


def from_address(mailbox: Mailbox, agent: Agent | None) -> Address:
    """ "Alice at Example Support <support@...>" when the mailbox says so, else its name."""
    team = mailbox.display_name or ""
    if mailbox.from_agent_name and agent is not None:
        name = f"{agent.name} at {team}" if team else agent.name
    else:
        name = team
    return mail_address(mailbox.address, name, field="mailbox")


def reply_subject(subject: str, conversation_id: int | None, *, forward: bool = False) -> str:
    """ "Re: <subject> [#id]": one prefix whatever the subject had, and our token once. The
    subject comes from stored mail: what no header can hold becomes a space."""
    base = _PREFIX.sub("", header_safe(subject)).strip()
    prefix = "Fwd: " if forward else "Re: "
    result = prefix + base if base else prefix.strip()
    if conversation_id is not None and find_token(result) != conversation_id:
        result = f"{result} {conversation_token(conversation_id)}"
    return result


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


# --- queuing -----------------------------------------------------------------------------------


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


def _dedupe(addresses: Sequence[Address], exclude: set[str]) -> list[Address]:
    seen = set(exclude)
    out = []
    for address in addresses:
        key = address.addr_spec.lower()
        if key in seen:
            continue
        seen.add(key)
        out.append(address)
    return out


def _stored(values: Sequence[dict[str, str]] | None, field: str) -> list[Address]:
    """Addresses from a stored message (its sender, its recipients) as header addresses."""
    return [
        mail_address(v["email"], v.get("name") or None, field=field)
        for v in values or []
        if v.get("email")
    ]


def _sender_of(message: Message) -> list[dict[str, str]]:
    return [{"email": message.from_email or "", "name": message.from_name or ""}]


def _given(values: Sequence[str] | None, field: str) -> list[Address]:
    """The recipients the agent typed, one address per entry, exactly as written."""
    return [parse_recipient(value, field=field) for value in values or []]


def _checked_input(
    *,
    to: Sequence[str] | None = None,
    cc: Sequence[str] | None = None,
    subject: str | None = None,
    body: str,
    html: str | None,
    attachments: Sequence[Upload],
) -> tuple[list[Address] | None, list[Address] | None]:
    """The recipients typed in `to` and `cc` (None: none given), parsed; refuses (InvalidInput
    naming the field) what cannot be written into the message: a subject or recipient with a
    line break or control character, a recipient entry that is not exactly one address, an
    attachment name that cannot be a header parameter."""
    if subject is not None:
        check_header_text(subject, field="subject", max_length=MAX_SUBJECT)
    check_text(body, field="body")
    if html is not None:
        check_text(html, field="html")
    for upload in attachments:
        check_header_text(upload.filename, field="attachments", max_length=MAX_FILENAME)
    return (_given(to, "to") if to else None, _given(cc, "cc") if cc is not None else None)


def _check_attachments(settings: Settings, attachments: Sequence[Upload]) -> None:
    total = sum(len(a.data) for a in attachments)
    if total > settings.max_outbound_attachment_bytes:
        raise InvalidInput(
            f"the attachments have {total} bytes, more than the "
            f"{settings.max_outbound_attachment_bytes} allowed",
            field="attachments",
        )


def _check_sendable(mailbox: Mailbox, addresses: Sequence[tuple[str, Sequence[Address]]]) -> None:
    """InvalidInput naming the field when an address has a non-ASCII local part (which has no
    ASCII form) and the mailbox's SMTP server is known not to offer SMTPUTF8. Not known yet
    (never connected): queued, and the sender says at once if it cannot go out."""
    if mailbox.smtputf8 is not False:
        return
    for field, found in addresses:
        for address in found:
            if needs_smtputf8(address):
                raise InvalidInput(
                    f"{address.addr_spec} in {field} cannot be sent: it has non-ASCII "
                    f"characters before the @, and the SMTP server of {mailbox.name} does not "
                    "offer SMTPUTF8, which such an address needs; write to another address",
                    field=field,
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
    undo_seconds: int = 0,
    composed_html: str | None = None,
) -> OutboundMail:
    """The ledger row; `scheduled` until the undo window ends when there is one."""
    now = utcnow()
    undo_seconds = min(undo_seconds, MAX_UNDO_SECONDS)
    held = kind != "note" and undo_seconds > 0
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
        envelope_from=mail_address(mailbox.address, field="mailbox").addr_spec,
        recipients=recipients,
        raw=raw,
        state=OutboundState.scheduled if held else OutboundState.queued,
        next_attempt_at=now + timedelta(seconds=undo_seconds) if held else None,
        composed_html=composed_html,
        created_at=now,
        updated_at=now,
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


def _written(
    session: Session, agent: Agent, conversation: Conversation, source: ActivitySource
) -> None:
    """What follows a reply or note the agent wrote: their draft of it ends
    (`imapdesk.domain.outbound.drafts`), and the conversation is read (whatever the mailbox's
    `mark_read_on_open`: an answered conversation is a read one), for the agent too."""
    assert agent.id is not None and conversation.id is not None
    drafts.forget(session, agent.id, conversation.id)
    # their own words are nothing new to them (a colleague's marks stay)
    read_marks.mark_read_for(session, agent.id, conversation.id)
    if conversation.unread:
        operations.mark_read(session, conversation, True, source=source, agent=agent)


def _composed(
    session: Session,
    settings: Settings,
    agent: Agent,
    mailbox: Mailbox,
    composed_html: str,
    attachments: Sequence[Upload],
    *,
    note: bool = False,
    field: str = "body",
) -> tuple[str, str, list[InlineImage], list[Upload], str]:
    """What the rich-text composer wrote (or a REST client's `html`, `field`), as it goes out:
    the HTML sanitised (the agent's signature is in it already, the composer put it there; the
    mailbox's follows), the text alternative rendered from it, the pasted images as inline
    `cid:` parts, the attachments left (an attached image the HTML shows as `cid:<its file
    name>` is an inline part instead), and the sanitised HTML as composed (what Undo puts back).
    InvalidInput naming `field` for a `cid:` that is none of the attached images."""
    check_text(composed_html, field=field)
    clean = sanitize_composed(composed_html)
    if not has_content(clean):
        raise InvalidInput("the message has no text", field=field)
    cids, inline = images.inline_parts(
        session,
        settings,
        agent,
        uploaded_image_ids(clean),
        domain_of=mailbox.address,
        field=field,
    )
    left = list(attachments)
    by_ref: dict[str, str] = {}
    for ref in cid_references(clean):
        found = next(
            (a for a in left if a.filename == ref and images.image_type(a.data) is not None),
            None,
        )
        if found is None:
            raise InvalidInput(
                f"the HTML shows cid:{ref}, which is none of the attached images: attach the "
                "image in the same request with that file name (PNG, JPEG, GIF or WebP)",
                field=field,
            )
        left.remove(found)
        by_ref[ref] = new_msgid(mailbox.address)
        inline.append(
            InlineImage(
                by_ref[ref], images.image_type(found.data) or "", found.data, found.filename
            )
        )
    _check_attachments(settings, [*left, *(Upload("", "", i.data) for i in inline)])
    # the web composer put the agent's signature in the HTML; a REST client's gets it here
    signatures = (
        ()
        if note
        else (mailbox.signature,)
        if field == "body"
        else (agent.signature, mailbox.signature)
    )
    html = html_with_signature(
        document(with_content_ids(with_cids(clean, cids), by_ref)), *signatures
    )
    text = with_signature(text_alternative(clean), *signatures)
    return text, html, inline, left, clean


def queue_reply(
    session: Session,
    agent: Agent,
    conversation_id: int,
    *,
    kind: str = "reply",
    body: str,
    html: str | None = None,
    composed_html: str | None = None,
    composed_field: str = "body",
    to: list[str] | None = None,
    cc: list[str] | None = None,
    attachments: Sequence[Upload] = (),
    expected_version: int | None = None,
    force: bool = False,
    idempotency_key: str | None = None,
    source: ActivitySource,
    settings: Settings | None = None,
    undo_seconds: int = 0,
) -> OutboundMail:
    """Queue a reply, reply-all or forward; the worker sends it (after `undo_seconds`: the
    undo window). Same `idempotency_key`: the mail queued the first time, nothing new."""
    settings = settings or get_settings()
    source = ActivitySource(source)
    _check_agent(agent)
    if kind not in REPLY_KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(REPLY_KINDS)}", field="kind")
    if not body.strip() and not (html or "").strip() and not (composed_html or "").strip():
        raise InvalidInput("the reply has no text", field="body")
    typed_to, typed_cc = _checked_input(to=to, cc=cc, body=body, html=html, attachments=attachments)
    _check_attachments(settings, attachments)
    conversation = _conversation(session, conversation_id)
    done = _idempotent(session, conversation.mailbox_id, idempotency_key)
    if done is not None:
        return done
    check_version(session, conversation, expected_version, force)
    mailbox = _mailbox_for_sending(session, conversation.mailbox_id)
    assert conversation.id is not None
    answered = _answered(session, conversation)
    # every shared address of ours (this mailbox's and the others'): a reply-all never
    # copies one of them (a copy would land in our own inbox as new mail)
    ours = set(our_addresses_for(session, mailbox.id or 0, our_addresses(session)))
    if kind == "forward":
        if typed_to is None:
            raise InvalidInput("a forward needs `to`", field="to")
        to_addrs = _dedupe(typed_to, set())
        cc_addrs = _dedupe(typed_cc or [], {a.addr_spec.lower() for a in to_addrs})
    else:
        if typed_to is not None:
            to_addrs = _dedupe(typed_to, set())
        elif answered is None:
            raise InvalidInput("nobody to reply to: give `to`", field="to")
        elif answered.direction == Direction.inbound:
            target = _stored(answered.reply_to, "to") or _stored(_sender_of(answered), "to")
            to_addrs = _dedupe(target, ours)
        else:  # our own message was the last: write to its recipients again
            to_addrs = _dedupe(_stored(answered.to, "to"), ours)
        taken = ours | {a.addr_spec.lower() for a in to_addrs}
        if typed_cc is not None:
            cc_addrs = _dedupe(typed_cc, taken)
        elif kind == "reply_all" and answered is not None:
            extra = _stored(answered.to, "cc") + _stored(answered.cc, "cc")
            if answered.direction == Direction.inbound and answered.reply_to:
                extra += _stored(_sender_of(answered), "cc")
            cc_addrs = _dedupe(extra, taken)
        else:
            cc_addrs = []
        if not to_addrs:
            raise InvalidInput("nobody to reply to: give `to`", field="to")
    _check_sendable(mailbox, [("to", to_addrs), ("cc", cc_addrs)])
    text_body = with_signature(body, agent.signature, mailbox.signature)
    html_body = html_with_signature(html, agent.signature, mailbox.signature) if html else None
    inline: list[InlineImage] = []
    composed: str | None = None
    if composed_html is not None:
        text_body, html_body, inline, attachments, composed = _composed(
            session, settings, agent, mailbox, composed_html, attachments, field=composed_field
        )
    msgid = new_msgid(mailbox.address)
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
        text=text_body,
        html=html_body,
        in_reply_to=answered.message_id if answered is not None and kind != "forward" else None,
        references=chain,
        attachments=attachments,
        inline_images=inline,
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
        undo_seconds=undo_seconds,
        composed_html=composed,
    )
    _record_by_agent(
        session,
        conversation,
        agent,
        source,
        "forwarded" if kind == "forward" else "replied",
        {"outbound_id": outbound.id, "message_id": message.id, "kind": kind, "to": recipients},
    )
    _written(session, agent, conversation, source)
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
    composed_html: str | None = None,
    composed_field: str = "body",
    cc: list[str] | None = None,
    attachments: Sequence[Upload] = (),
    idempotency_key: str | None = None,
    source: ActivitySource,
    settings: Settings | None = None,
    undo_seconds: int = 0,
) -> OutboundMail:
    """A new conversation that starts with our message to `to` (sent after `undo_seconds`)."""
    settings = settings or get_settings()
    source = ActivitySource(source)
    _check_agent(agent)
    if not to:
        raise InvalidInput("a new conversation needs `to`", field="to")
    if not subject.strip():
        raise InvalidInput("a new conversation needs a subject", field="subject")
    typed_to, typed_cc = _checked_input(
        to=to, cc=cc, subject=subject.strip(), body=body, html=html, attachments=attachments
    )
    _check_attachments(settings, attachments)
    mailbox = session.exec(select(Mailbox).where(col(Mailbox.name) == mailbox_name)).first()
    if mailbox is None or mailbox.id is None:
        raise NotFound(f"no mailbox named {mailbox_name!r}", field="mailbox")
    done = _idempotent(session, mailbox.id, idempotency_key)
    if done is not None:
        return done
    _mailbox_for_sending(session, mailbox.id)
    to_addrs = _dedupe(typed_to or [], set())
    cc_addrs = _dedupe(typed_cc or [], {a.addr_spec.lower() for a in to_addrs})
    _check_sendable(mailbox, [("to", to_addrs), ("cc", cc_addrs)])
    text_body = with_signature(body, agent.signature, mailbox.signature)
    html_body = html_with_signature(html, agent.signature, mailbox.signature) if html else None
    inline: list[InlineImage] = []
    composed: str | None = None
    if composed_html is not None:
        text_body, html_body, inline, attachments, composed = _composed(
            session, settings, agent, mailbox, composed_html, attachments, field=composed_field
        )
    msgid = new_msgid(mailbox.address)
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
        text=text_body,
        html=html_body,
        attachments=attachments,
        inline_images=inline,
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
        undo_seconds=undo_seconds,
        composed_html=composed,
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
    composed_html: str | None = None,
    composed_field: str = "body",
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
    if not body.strip() and not (html or "").strip() and not (composed_html or "").strip():
        raise InvalidInput("the note has no text", field="body")
    _checked_input(body=body, html=html, attachments=attachments)
    _check_attachments(settings, attachments)
    conversation = _conversation(session, conversation_id)
    check_version(session, conversation, expected_version, force)
    mailbox = session.get(Mailbox, conversation.mailbox_id)
    assert mailbox is not None and conversation.id is not None
    newest = _newest(session, conversation)
    chain: list[str] = []
    if newest is not None:
        chain = [*(newest.references or []), newest.message_id]
    sender = mail_address(mailbox.address, agent.name, field="mailbox")
    text_body, html_body = body, html
    inline: list[InlineImage] = []
    composed: str | None = None
    if composed_html is not None:
        text_body, html_body, inline, attachments, composed = _composed(
            session,
            settings,
            agent,
            mailbox,
            composed_html,
            attachments,
            note=True,
            field=composed_field,
        )
    raw = compose(
        sender=sender,
        to=[mail_address(mailbox.address, mailbox.display_name, field="mailbox")],
        subject=f"Note: {reply_subject(conversation.subject, conversation.id)[4:]}",
        msgid=new_msgid(mailbox.address),
        text=text_body,
        html=html_body,
        in_reply_to=newest.message_id if newest is not None else None,
        references=chain,
        attachments=attachments,
        inline_images=inline,
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
        composed_html=composed,
    )
    _record_by_agent(
        session,
        conversation,
        agent,
        source,
        "note",
        {"message_id": message.id, "outbound_id": outbound.id},
    )
    _written(session, agent, conversation, source)
    return message


# --- reading ---------------------------------------------------------------------------------


def outbound_for_messages(session: Session, message_ids: Sequence[int]) -> dict[int, OutboundMail]:
    """The outbound row of each of these messages that has one (its delivery), by message id."""
    if not message_ids:
        return {}
    rows = session.exec(
        select(OutboundMail).where(col(OutboundMail.message_id).in_(list(message_ids)))
    ).all()
    return {o.message_id: o for o in rows if o.message_id is not None}
