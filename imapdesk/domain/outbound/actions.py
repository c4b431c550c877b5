"""What an agent does with outgoing mail that has not gone out: take it back (Undo during its
undo window, Discard once it failed) and send it again (Retry, after the cause was fixed).

Each is one conditional statement on the `OutboundMail` row, so that a sender claiming the
same row at the same moment (worker/sender.py) either wins, and the mail is being sent (too
late: `TooLate`, 409), or finds nothing left to send. Both are authorised like the
conversation (`operations._load` with the agent: 404 for what the agent may not see).

Taking back removes the message from the conversation as if it had never been written (it
never left imapdesk: no server has it, no copy is in Sent) and hands back what was written, for
the composer to open again (an Undo keeps it as the agent's draft: `drafts.keep`); a new
conversation that held nothing else goes with it. The activity log keeps that it was written
and taken back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from imapdesk.domain.conversations import operations
from imapdesk.domain.conversations.aggregates import recompute_conversation
from imapdesk.domain.outbound import drafts
from imapdesk.domain.outbound.delivery import public_state
from imapdesk.kernel import wakeups
from imapdesk.kernel.errors import Conflict, NotFound
from imapdesk.kernel.models import (
    ActivitySource,
    Agent,
    Conversation,
    Mailbox,
    Message,
    OutboundMail,
    OutboundState,
    ThreadNode,
    utcnow,
)
from imapdesk.mail.compose import with_signature

# what can still be taken back: nothing of it reached a server
TAKE_BACK_STATES = (OutboundState.scheduled, OutboundState.queued, OutboundState.failed)


class TooLate(Conflict):
    """409: the mail is being sent (or was): it can no longer be taken back or sent again."""

    code = "delivery_state_conflict"


@dataclass(frozen=True)
class TakenBack:
    """What was written, for the composer: the typed text without the signatures."""

    outbound_id: int
    kind: str
    body: str
    html: str | None
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    # None when the conversation went with it (a new one that held nothing else)
    conversation_id: int | None = None


def _outgoing(
    session: Session, agent: Agent, outbound_id: int, source: ActivitySource
) -> tuple[OutboundMail, Conversation]:
    """The outgoing mail (not a note) and its conversation, row-locked; NotFound when the agent
    may not see the conversation."""
    outbound = session.get(OutboundMail, outbound_id)
    if outbound is None or outbound.kind == "note" or outbound.conversation_id is None:
        raise NotFound(f"no outgoing message {outbound_id}", outbound_id=outbound_id)
    try:
        conversation = operations._load(
            session, outbound.conversation_id, lock=True, agent=agent, source=source
        )
    except NotFound:
        raise NotFound(f"no outgoing message {outbound_id}", outbound_id=outbound_id) from None
    return outbound, conversation


def _typed_text(text: str, *signatures: str | None) -> str:
    """The message's text as the agent typed it: without the signature block `with_signature`
    added (when it is still the same)."""
    text = text.replace("\r\n", "\n").rstrip("\n")
    block = with_signature("", *signatures).rstrip("\n")
    if block.strip() and text.endswith(block):
        return text[: -len(block)]
    return text


def _addresses(values: list[dict[str, str]] | None) -> list[str]:
    out = []
    for v in values or []:
        email, name = v.get("email") or "", v.get("name") or ""
        if email:
            out.append(f'"{name}" <{email}>' if name else email)
    return out


def take_back(
    session: Session, agent: Agent, outbound_id: int, *, source: ActivitySource
) -> TakenBack:
    """Undo (scheduled), or discard (queued or failed): the message leaves the conversation and
    nothing is sent. TooLate when a sender has it (sending) or it went out (sent, or failed
    after the server took it: a bounce, which stays in the conversation)."""
    source = ActivitySource(source)
    outbound, conversation = _outgoing(session, agent, outbound_id, source)
    state = public_state(outbound)
    if outbound.sent_at is not None:
        raise TooLate(
            "this message went out and came back as undeliverable: it stays in the "
            "conversation (send it again, or write a new reply)",
            state=state.value,
        )
    taken = session.execute(
        delete(OutboundMail)
        .where(
            col(OutboundMail.id) == outbound_id,
            col(OutboundMail.state).in_(TAKE_BACK_STATES),
            col(OutboundMail.sent_at).is_(None),
        )
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise TooLate("too late: this message is being sent", state=OutboundState.sending.value)
    session.expunge(outbound)
    message = session.get(Message, outbound.message_id) if outbound.message_id else None
    author = session.get(Agent, outbound.agent_id) if outbound.agent_id else None
    mailbox = session.get(Mailbox, outbound.mailbox_id)
    result = TakenBack(
        outbound_id=outbound_id,
        kind=outbound.kind,
        body=_typed_text(
            message.text if message else "",
            author.signature if author else None,
            mailbox.signature if mailbox else None,
        ),
        # the rich-text composer's own HTML (its pasted images shown from the uploads, as
        # the editor had them); else the message's
        html=outbound.composed_html or (message.html if message else None),
        to=_addresses(message.to if message else []),
        cc=_addresses(message.cc if message else []),
        conversation_id=conversation.id,
    )
    if message is not None:
        session.execute(delete(ThreadNode).where(col(ThreadNode.message_id) == message.id))
        session.execute(delete(Message).where(col(Message.id) == message.id))
        session.expunge(message)
    left = session.exec(
        select(Message.id).where(col(Message.conversation_id) == conversation.id).limit(1)
    ).first()
    if outbound.kind == "new" and left is None:
        # it existed only for this message: nothing of it is anywhere else
        session.delete(conversation)
        session.flush()
        return replace(result, conversation_id=None)
    operations._record(
        session,
        conversation,
        source=source,
        agent=agent,
        actor="",
        action="taken_back",
        details={
            "outbound_id": outbound_id,
            "kind": outbound.kind,
            "to": list(outbound.recipients or []),
            "state": state.value,
            "error": outbound.last_error,
        },
        bump=False,  # the recount below moves the version
    )
    recompute_conversation(session, conversation)
    if state == OutboundState.scheduled:
        # Undo: what the composer opens with again is a draft like anything typed, which a
        # reload keeps (a failed reply discarded is thrown away; edited, its composer saves it)
        assert conversation.id is not None
        drafts.keep(
            session,
            agent,
            conversation.id,
            kind=result.kind,
            body=result.body,
            to=result.to,
            cc=result.cc,
            html=outbound.composed_html,
        )
    session.flush()
    return result


def retry(
    session: Session, agent: Agent, outbound_id: int, *, source: ActivitySource
) -> OutboundMail:
    """Send a failed message again (after its cause was fixed): queued as if new, attempts
    counted from zero. TooLate when it has not failed."""
    source = ActivitySource(source)
    outbound, conversation = _outgoing(session, agent, outbound_id, source)
    error = outbound.last_error
    again = session.execute(
        update(OutboundMail)
        .where(col(OutboundMail.id) == outbound_id, col(OutboundMail.state) == OutboundState.failed)
        .values(
            state=OutboundState.queued,
            attempts=0,
            next_attempt_at=None,
            claimed_by=None,
            final_dot_at=None,
            last_error=None,
            smtp_response=None,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if again.rowcount != 1:  # type: ignore[attr-defined]
        raise TooLate(
            f"only a message that failed can be sent again; this one is "
            f"{public_state(outbound).value}",
            state=public_state(outbound).value,
        )
    session.refresh(outbound)
    operations._record(
        session,
        conversation,
        source=source,
        agent=agent,
        actor="",
        action="send_retried",
        details={"outbound_id": outbound_id, "message_id": outbound.message_id, "error": error},
    )
    wakeups.wake_after_commit(session, wakeups.Loop.SENDER, outbound.mailbox_id)
    return outbound
