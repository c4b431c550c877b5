"""What a rule's actions do, each through the domain's own operations, so that it is recorded
("rule <name>" as the actor), written back to the mailbox and sent like a change an agent
makes.

An automatic reply (`reply` with a saved reply) carries `Auto-Submitted: auto-replied`, goes
to a customer at most once per mailbox per `rules_auto_reply_window_hours`, and never answers
automatic mail (`imapdesk.domain.outbound.automatic`). `notify` and `webhook` record the events
`rule.notify` and `rule.webhook` that the notifications and webhooks deliver.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlmodel import Session, col, select

from imapdesk.domain.conversations import operations as ops
from imapdesk.domain.events import record_event
from imapdesk.domain.outbound import replies, saved_replies
from imapdesk.domain.outbound.automatic import is_automatic
from imapdesk.domain.rules.definitions import RuleSpec
from imapdesk.domain.teams.administration import find_team
from imapdesk.domain.teams.assignment import next_agent
from imapdesk.kernel.errors import InvalidInput, NotFound
from imapdesk.kernel.models import (
    ActivitySource,
    Agent,
    AutoReplyLog,
    Conversation,
    Direction,
    Mailbox,
    Message,
    OutboundMail,
    OutboundState,
    SavedReply,
    as_utc,
    utcnow,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail.compose import compose, mail_address, new_msgid

SOURCE = ActivitySource.system
RULE_NOTIFY = "rule.notify"
RULE_WEBHOOK = "rule.webhook"


def rule_actor(rule: RuleSpec) -> str:
    """Who made a rule's changes, in the activity log and the events ("rule <name>")."""
    return f"rule {rule.name}"


def caused_by_rule(actor: str | None) -> bool:
    """Whether an event was caused by a rule: such events set off no rule (no loops)."""
    return (actor or "").startswith("rule ")


@dataclass
class Occasion:
    """What set the rule off: the conversation, the message if any, the event's kind."""

    conversation: Conversation
    message: Message | None
    kind: str


class Skipped(Exception):
    """The action does not apply here (said in the dry run and the log, not an error)."""


def _agent(session: Session, ref: str) -> Agent:
    ref = ref.strip()
    found = session.exec(
        select(Agent).where((col(Agent.email) == ref.lower()) | (col(Agent.handle) == ref))
    ).first()
    if found is None:
        raise InvalidInput(f"no agent {ref!r}", field="agent")
    return found


def describe(action: dict[str, Any]) -> str:
    """An action in words, for the dry run."""
    kind = action["type"]
    if kind == "assign":
        return f"assign to {action['agent']}"
    if kind == "assign_team":
        return f"assign to team {action['team']}'s next agent"
    if kind in ("tag", "untag"):
        return f"{kind} {action['tag']!r}"
    if kind == "status":
        return f"set status {action['status']}"
    if kind == "snooze":
        return f"snooze for {action['hours']} h"
    if kind == "note":
        return "add a note"
    if kind == "reply":
        return f"reply with saved reply {action['saved_reply_id']}"
    if kind == "notify":
        return "notify " + ", ".join(
            [
                *(f"agent {i}" for i in action.get("agent_ids", [])),
                *(["the assignee"] if action.get("assignee") else []),
            ]
        )
    return "call the webhook"


def perform(
    session: Session, settings: Settings, rule: RuleSpec, action: dict[str, Any], occasion: Occasion
) -> str:
    """Do one action; what was done, in words. Raises Skipped when it does not apply."""
    actor = rule_actor(rule)
    conv = occasion.conversation
    assert conv.id is not None
    kind = action["type"]
    if kind == "assign":
        agent = _agent(session, action["agent"])
        ops.assign(session, conv, agent, source=SOURCE, actor=actor)
        return f"assigned to {agent.email}"
    if kind == "assign_team":
        team = find_team(session, action["team"])
        assert team.id is not None
        chosen = next_agent(session, team.id, conv.mailbox_id)
        if chosen is None:
            raise Skipped(f"nobody in team {team.name} is available")
        ops.assign(session, conv, chosen, source=SOURCE, actor=actor)
        return f"assigned to {chosen.email} (team {team.name})"
    if kind == "tag":
        ops.add_tag(session, conv, action["tag"], source=SOURCE, actor=actor)
        return f"tagged {action['tag']!r}"
    if kind == "untag":
        ops.remove_tag(session, conv, action["tag"], source=SOURCE, actor=actor)
        return f"untagged {action['tag']!r}"
    if kind == "status":
        ops.set_status(session, conv, action["status"], source=SOURCE, actor=actor)
        return f"status {action['status']}"
    if kind == "snooze":
        return _snooze(session, conv, float(action["hours"]), actor)
    if kind == "note":
        _note(session, settings, conv, action["text"], rule)
        return "note added"
    if kind == "reply":
        return _auto_reply(session, settings, occasion, int(action["saved_reply_id"]), rule)
    if kind == "notify":
        ids = list(action.get("agent_ids", []))
        if action.get("assignee") and conv.assignee_id is not None:
            ids.append(conv.assignee_id)
        ids = list(dict.fromkeys(ids))
        if not ids:
            raise Skipped("nobody to notify")
        record_event(
            session,
            RULE_NOTIFY,
            mailbox_id=conv.mailbox_id,
            conversation_id=conv.id,
            actor=actor,
            payload={"agent_ids": ids, "text": action["text"], "rule_id": rule.id},
        )
        return f"notified agents {ids}"
    record_event(
        session,
        RULE_WEBHOOK,
        mailbox_id=conv.mailbox_id,
        conversation_id=conv.id,
        message_id=occasion.message.id if occasion.message is not None else None,
        actor=actor,
        payload={
            "rule_id": rule.id,
            "rule": rule.name,
            "trigger": occasion.kind,
            "conversation_id": conv.id,
            **({"url": action["url"]} if action.get("url") else {}),
        },
    )
    return "webhook event recorded"


def _snooze(session: Session, conv: Conversation, hours: float, actor: str) -> str:
    until = utcnow() + timedelta(hours=hours)
    current = ops.set_status(session, conv, "pending", source=SOURCE, actor=actor)
    current.snoozed_until = until
    ops._record(
        session,
        current,
        source=SOURCE,
        agent=None,
        actor=actor,
        action="snoozed",
        details={"until": until.isoformat(timespec="minutes")},
    )
    return f"snoozed until {until.isoformat(timespec='minutes')}"


def _outbound(
    session: Session,
    mailbox: Mailbox,
    conv: Conversation,
    message: Message,
    *,
    kind: str,
    raw: bytes,
    recipients: list[str],
    answered: Message | None = None,
) -> OutboundMail:
    now = utcnow()
    row = OutboundMail(
        mailbox_id=mailbox.id,  # type: ignore[arg-type]
        conversation_id=conv.id,
        message_id=message.id,
        answered_message_id=answered.id if answered is not None else None,
        agent_id=None,
        source=SOURCE,
        kind=kind,
        msgid=message.message_id,
        envelope_from=mail_address(mailbox.address, field="mailbox").addr_spec,
        recipients=recipients,
        raw=raw,
        state=OutboundState.queued,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def _note(
    session: Session, settings: Settings, conv: Conversation, text: str, rule: RuleSpec
) -> None:
    """A note as an agent's (appended to Notes by the worker), written by the rule."""
    current = replies._conversation(session, conv.id or 0)
    mailbox = session.get(Mailbox, current.mailbox_id)
    assert mailbox is not None
    newest = replies._newest(session, current)
    chain = [*(newest.references or []), newest.message_id] if newest is not None else []
    raw = compose(
        sender=mail_address(mailbox.address, rule_actor(rule), field="mailbox"),
        to=[mail_address(mailbox.address, mailbox.display_name, field="mailbox")],
        subject=f"Note: {replies.reply_subject(current.subject, current.id)[4:]}",
        msgid=new_msgid(mailbox.address),
        text=text,
        in_reply_to=newest.message_id if newest is not None else None,
        references=chain,
        note=True,
    )
    message = replies._store_message(
        session,
        settings,
        current,
        raw,
        direction=Direction.note,
        parent_msgid=newest.message_id if newest is not None else None,
    )
    out = _outbound(session, mailbox, current, message, kind="note", raw=raw, recipients=[])
    ops._record(
        session,
        current,
        source=SOURCE,
        agent=None,
        actor=rule_actor(rule),
        action="note",
        details={"message_id": message.id, "outbound_id": out.id},
        bump=False,
    )


def answerable(session: Session, occasion: Occasion) -> Message | None:
    """The customer's message an automatic reply would answer: the one that set the rule
    off if inbound, else the conversation's newest inbound one."""
    m = occasion.message
    if m is not None and m.direction == Direction.inbound:
        return m
    return replies._answered(session, occasion.conversation)


def _auto_reply(
    session: Session, settings: Settings, occasion: Occasion, saved_reply_id: int, rule: RuleSpec
) -> str:
    saved = session.get(SavedReply, saved_reply_id)
    if saved is None:
        raise NotFound(f"no saved reply {saved_reply_id}")
    answered = answerable(session, occasion)
    if answered is None or answered.direction != Direction.inbound:
        raise Skipped("no customer message to answer")
    if is_automatic(answered):
        raise Skipped("never answers automatic mail (auto-reply, list, bounce)")
    conv = replies._conversation(session, occasion.conversation.id or 0)
    mailbox = session.get(Mailbox, conv.mailbox_id)
    assert mailbox is not None and mailbox.id is not None
    if not mailbox.smtp_host:
        raise Skipped(f"the mailbox {mailbox.name} has no SMTP server")
    ours = set(replies.our_addresses_for(session, mailbox.id))
    target = replies._stored(answered.reply_to, "to") or replies._stored(
        replies._sender_of(answered), "to"
    )
    to = replies._dedupe(target, ours)
    if not to:
        raise Skipped("nobody to answer")
    customer = to[0].addr_spec.lower()[:320]
    window = timedelta(hours=settings.rules_auto_reply_window_hours)
    last = session.get(AutoReplyLog, (mailbox.id, customer))
    now = utcnow()
    if last is not None and as_utc(last.sent_at) > now - window:
        raise Skipped(f"{customer} had an automatic reply within the window")
    chain = [*(answered.references or []), answered.message_id]
    raw = compose(
        sender=replies.from_address(mailbox, None),
        to=to,
        subject=replies.reply_subject(answered.subject or conv.subject, conv.id),
        msgid=new_msgid(mailbox.address),
        # its variables filled in (an unknown one fails the rule with its name)
        text=saved_replies.render(session, saved.body, conv, None),
        in_reply_to=answered.message_id,
        references=chain,
        automatic=True,
    )
    message = replies._store_message(
        session, settings, conv, raw, direction=Direction.outbound, parent_msgid=answered.message_id
    )
    recipients = [a.addr_spec for a in to]
    out = _outbound(
        session,
        mailbox,
        conv,
        message,
        kind="reply",
        raw=raw,
        recipients=recipients,
        answered=answered,
    )
    ops._record(
        session,
        conv,
        source=SOURCE,
        agent=None,
        actor=rule_actor(rule),
        action="replied",
        details={
            "outbound_id": out.id,
            "message_id": message.id,
            "kind": "reply",
            "to": recipients,
            "automatic": True,
        },
        bump=False,
    )
    if last is None:
        session.add(AutoReplyLog(mailbox_id=mailbox.id, customer_email=customer, sent_at=now))
    else:
        last.sent_at = now
        session.add(last)
    session.flush()
    return f"automatic reply to {customer}"
