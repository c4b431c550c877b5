"""The SLA clock: due times kept from the event log, warnings and breaches fired once.

`handle_events` reads the log as the consumer `sla` (imapdesk/domain/events.py) and keeps each
conversation's `ConversationSla` in step:
- conversation created: first response and resolution due (from the policy, business minutes
  on its calendar, counted from the event's time); created by an agent: first response attained;
- an agent's reply (sent from imapdesk, or from a mail client): first response attained (met or
  not), next response cleared;
- the customer replied: next response due (once the first response was given);
- closed: resolution attained (met or not), nothing more due; spam or deleted: nothing due;
- reopened: resolution due again, counted from the reopening;
- tagged, untagged, assigned, unassigned: the policy chosen again, due times counted anew from
  the same starts.

Pause while pending (the policy's `pause_when_pending`, on by default): when the status turns
pending (waiting on the customer; a snooze is pending too) the next-response and resolution
clocks stand still (`paused_at`): neither counts towards the due soon or breached queues, nor
warns, nor breaches. When the conversation leaves pending (any other status, or the customer
replies), each of them takes the business time spent paused (on the policy's calendar; for a
next response that started during the pause, from its start) into `<target>_paused_seconds`,
and its due time moves later by that much. A target already past due when the pause began
stays where it was. The first response never pauses. Warnings and breaches that fired stay
fired: a warning sent before the pause is not sent again after it.
Each batch of events and their receipts is one transaction, so a crash repeats nothing.

`fire_due` looks at the conversations whose `check_at` has come: `sla.warning` the policy's
`warning_minutes` before a due time, `sla.breached` at it, each once per conversation and
target (a new customer reply starts a new next-response target, a reopening a new resolution
target): the marker is written in the transaction of the event.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain import events as event_log
from imapdesk.domain.events import EventKind, record_event
from imapdesk.domain.sla import calendars, policies
from imapdesk.domain.sla.business_hours import (
    Calendar,
    add_business_time,
    business_time_between,
)
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Conversation,
    ConversationSla,
    ConversationStatus,
    Event,
    SlaPolicy,
    as_utc,
    utcnow,
)

log = logging.getLogger(__name__)

CONSUMER = "sla"
ACTOR = "sla"
KINDS = (
    EventKind.conversation_created,
    EventKind.customer_replied,
    EventKind.message_received,
    EventKind.agent_replied,
    EventKind.reply_sent,
    EventKind.status_changed,
    EventKind.tagged,
    EventKind.untagged,
    EventKind.assigned,
    EventKind.unassigned,
)
_AGENT_REPLIES = {str(EventKind.agent_replied), str(EventKind.reply_sent)}
_REPICK = {
    str(EventKind.tagged),
    str(EventKind.untagged),
    str(EventKind.assigned),
    str(EventKind.unassigned),
}
TARGETS = policies.TARGETS
# the targets that stand still while the conversation is pending
PAUSABLE = ("next_response", "resolution")


@dataclass(frozen=True)
class Due:
    target: str
    due: datetime
    warned: bool
    breached: bool


def active_dues(row: ConversationSla) -> list[Due]:
    """The targets still running: not attained, not stopped, not paused."""
    found: list[Due] = []
    if row.resolved_at is not None:
        return found
    paused = row.paused_at is not None
    if row.first_response_due is not None and row.first_response_at is None:
        found.append(
            Due(
                "first_response",
                as_utc(row.first_response_due),
                row.first_response_warned,
                row.first_response_breached,
            )
        )
    if row.next_response_due is not None and not paused:
        found.append(
            Due(
                "next_response",
                as_utc(row.next_response_due),
                row.next_response_warned,
                row.next_response_breached,
            )
        )
    if row.resolution_due is not None and not paused:
        found.append(
            Due(
                "resolution",
                as_utc(row.resolution_due),
                row.resolution_warned,
                row.resolution_breached,
            )
        )
    return found


def _schedule(row: ConversationSla, warning_minutes: int) -> None:
    """`next_due_at` (what the queues sort by) and `check_at` (when the clock next acts)."""
    dues = active_dues(row)
    row.next_due_at = min((d.due for d in dues), default=None)
    lead = timedelta(minutes=warning_minutes)
    moments = []
    for d in dues:
        if not d.warned:
            moments.append(d.due - lead)
        elif not d.breached:
            moments.append(d.due)
    row.check_at = min(moments, default=None)
    row.updated_at = utcnow()


def _policy(session: Session, row: ConversationSla) -> SlaPolicy | None:
    return session.get(SlaPolicy, row.policy_id) if row.policy_id is not None else None


def _paused_for(row: ConversationSla, target: str) -> timedelta:
    if target not in PAUSABLE:
        return timedelta(0)
    return timedelta(seconds=getattr(row, f"{target}_paused_seconds") or 0)


def recompute(session: Session, row: ConversationSla) -> None:
    """Due times from the starts and the policy's targets on its calendar, each later by the
    business time it spent paused."""
    policy = _policy(session, row)
    calendar = calendars.load(session, policy.calendar_id if policy else None)
    for target in TARGETS:
        start = getattr(row, f"{target}_started_at")
        minutes = getattr(policy, f"{target}_minutes") if policy is not None else None
        due = (
            add_business_time(
                calendar, as_utc(start), timedelta(minutes=minutes) + _paused_for(row, target)
            )
            if start is not None and minutes
            else None
        )
        setattr(row, f"{target}_due", due)
    _schedule(row, policy.warning_minutes if policy else 0)


def _pauses(policy: SlaPolicy | None) -> bool:
    return policy is not None and policy.pause_when_pending


def pause(row: ConversationSla, at: datetime) -> None:
    """The next-response and resolution clocks stand still from `at` (call `recompute`)."""
    if row.paused_at is None and row.resolved_at is None:
        row.paused_at = at


def resume(session: Session, row: ConversationSla, at: datetime) -> None:
    """They run again from `at`: each running target takes the business time it spent paused
    (call `recompute` after)."""
    if row.paused_at is None:
        return
    since = as_utc(row.paused_at)
    row.paused_at = None
    if at <= since:
        return
    policy = _policy(session, row)
    calendar = calendars.load(session, policy.calendar_id if policy else None)
    for target in PAUSABLE:
        started, due = getattr(row, f"{target}_started_at"), getattr(row, f"{target}_due")
        if started is None or due is None:
            continue  # nothing running
        if target == "resolution" and row.resolved_at is not None:
            continue
        spent = paused_time(calendar, as_utc(started), as_utc(due), since, at)
        key = f"{target}_paused_seconds"
        setattr(row, key, (getattr(row, key) or 0) + int(spent.total_seconds()))


def paused_time(
    calendar: Calendar, started: datetime, due: datetime, since: datetime, until: datetime
) -> timedelta:
    """The business time a target (running from `started`, due at `due`) stood still in a
    pause from `since` to `until`: none for a target already past due when the pause began."""
    begin = max(since, started)
    if due <= begin:
        return timedelta(0)
    return business_time_between(calendar, begin, until)


def sync_pause(
    session: Session,
    row: ConversationSla,
    conversation: Conversation,
    at: datetime,
    *,
    start: bool = True,
) -> None:
    """After its policy changed, or a policy's setting did: a pause the policy does not want
    ends; with `start`, a pending conversation whose policy pauses pauses (call `recompute`
    after)."""
    pending = conversation.status == ConversationStatus.pending
    if row.paused_at is not None and not (pending and _pauses(_policy(session, row))):
        resume(session, row, at)
    elif start and row.paused_at is None and pending and _pauses(_policy(session, row)):
        pause(row, at)


def _row(session: Session, conversation: Conversation, at: datetime) -> ConversationSla:
    assert conversation.id is not None
    row = session.get(ConversationSla, conversation.id)
    if row is None:
        # a conversation from before the clock ran: its targets start now
        policy = policies.policy_for(session, conversation)
        row = ConversationSla(
            conversation_id=conversation.id,
            policy_id=policy.id if policy else None,
            first_response_started_at=at,
            resolution_started_at=at,
        )
        session.add(row)
    return row


def _attain_first_response(row: ConversationSla, at: datetime) -> None:
    if row.first_response_at is not None or row.resolved_at is not None:
        return
    row.first_response_at = at
    due = as_utc(row.first_response_due)
    row.first_response_met = due is None or at <= due
    if not row.first_response_met:
        row.breached = True


def _start_next_response(row: ConversationSla, at: datetime) -> None:
    row.next_response_started_at = at
    row.next_response_paused_seconds = 0
    row.next_response_warned = False
    row.next_response_breached = False


def _clear_next_response(row: ConversationSla, at: datetime) -> None:
    due = as_utc(row.next_response_due)
    if due is not None and at > due:
        row.breached = True
    row.next_response_started_at = None
    row.next_response_due = None
    row.next_response_paused_seconds = 0
    row.next_response_warned = False
    row.next_response_breached = False


def apply_event(session: Session, event: Event) -> None:
    if event.conversation_id is None:
        return
    conversation = session.get(Conversation, event.conversation_id)
    if conversation is None or conversation.id is None:
        return
    at = as_utc(event.created_at)
    kind = event.kind
    payload = event.payload or {}
    details = payload.get("details") or {}
    outbound = payload.get("direction") == "outbound"
    if kind == EventKind.message_received and not outbound:
        return  # the customer's side comes as created / customer_replied
    if payload.get("automatic") or details.get("automatic"):
        # a rule's acknowledgement is no response: its `reply.sent` says so in the payload,
        # the rule's `replied` activity (an `agent.replied` event) in its details
        return
    row = session.get(ConversationSla, conversation.id)
    if kind == EventKind.conversation_created:
        row = _row(session, conversation, at)
        if outbound:  # an agent wrote first
            _attain_first_response(row, at)
    elif kind == EventKind.customer_replied:
        row = _row(session, conversation, at)
        # the customer answered: nobody waits on them any more
        resume(session, row, at)
        if row.first_response_at is not None and row.next_response_started_at is None:
            _start_next_response(row, at)
    elif kind in _AGENT_REPLIES or kind == EventKind.message_received:
        if row is None:
            return
        _attain_first_response(row, at)
        _clear_next_response(row, at)
    elif kind == EventKind.status_changed:
        if row is None:
            return
        to = str(details.get("to", conversation.status))
        if to != "pending" and row.paused_at is not None:
            # leaving pending: the paused time moves the due times before anything is judged
            resume(session, row, at)
            recompute(session, row)
        if to in ("open", "pending"):
            if row.resolved_at is not None:  # reopened: a new resolution target
                row.resolved_at = None
                row.resolution_met = None
                row.resolution_started_at = at
                row.resolution_paused_seconds = 0
                row.resolution_warned = False
                row.resolution_breached = False
            if to == "pending" and _pauses(_policy(session, row)):
                pause(row, at)
        elif row.resolved_at is None:
            due = as_utc(row.resolution_due)
            row.resolved_at = at
            row.resolution_met = (due is None or at <= due) if to == "closed" else None
            if row.resolution_met is False:
                row.breached = True
            _clear_next_response(row, at)
    elif kind in _REPICK:
        if row is None:
            return
        policy = policies.policy_for(session, conversation)
        row.policy_id = policy.id if policy else None
        # only a change of status starts a pause (a customer who wrote may be waiting while
        # the status is still pending)
        sync_pause(session, row, conversation, at, start=False)
    else:
        return
    recompute(session, row)


def handle_events(engine: Engine, *, limit: int = 200) -> int:
    """One batch of the log, with its receipts, in one transaction: how many events."""
    with unit_of_work(engine) as session:
        batch = event_log.pending_events(
            session, CONSUMER, kinds=[str(k) for k in KINDS], limit=limit
        )
        for event in batch:
            try:
                with session.begin_nested():
                    apply_event(session, event)
            except Exception:
                # one event that cannot be read must not hold up all after it
                log.exception("SLA: cannot apply event %s (%s)", event.id, event.kind)
        event_log.mark_handled(session, CONSUMER, batch)
        return len(batch)


def start(engine: Engine) -> None:
    """Register the consumer (it starts at the end of the log)."""
    with unit_of_work(engine) as session:
        event_log.pending_events(session, CONSUMER, limit=1)


def advance(engine: Engine) -> None:
    with unit_of_work(engine) as session:
        event_log.advance_floor(session, CONSUMER, kinds=[str(k) for k in KINDS])


def _fire(session: Session, row: ConversationSla, now: datetime) -> list[str]:
    policy = _policy(session, row)
    lead = timedelta(minutes=policy.warning_minutes if policy else 0)
    fired: list[str] = []
    conversation = session.get(Conversation, row.conversation_id)
    if conversation is None or conversation.merged_into_id is not None:
        # merged into another: that one's clock is the one that counts
        row.next_due_at = row.check_at = None
        return fired
    for due in active_dues(row):
        kind: EventKind | None = None
        if not due.breached and due.due <= now:
            setattr(row, f"{due.target}_breached", True)
            setattr(row, f"{due.target}_warned", True)
            row.breached = True
            kind = EventKind.sla_breached
        elif not due.warned and due.due - lead <= now:
            setattr(row, f"{due.target}_warned", True)
            kind = EventKind.sla_warning
        if kind is None:
            continue
        record_event(
            session,
            kind,
            mailbox_id=conversation.mailbox_id,
            conversation_id=row.conversation_id,
            actor=ACTOR,
            payload={
                "target": due.target,
                "due": due.due.isoformat(),
                "policy": policy.name if policy else None,
                "policy_id": policy.id if policy else None,
            },
        )
        fired.append(f"{kind}:{due.target}")
    _schedule(row, policy.warning_minutes if policy else 0)
    return fired


def fire_due(engine: Engine, *, now: datetime | None = None, limit: int = 200) -> int:
    """Warnings and breaches whose time has come, each with its marker in one transaction."""
    moment = now or utcnow()
    with unit_of_work(engine) as session:
        query = (
            select(ConversationSla)
            .where(col(ConversationSla.check_at) <= moment)
            .order_by(col(ConversationSla.check_at))
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows: Sequence[ConversationSla] = session.exec(query).all()
        count = 0
        for row in rows:
            count += len(_fire(session, row, moment))
        return count


def refresh_policies(
    session: Session, policy_ids: list[int], *, removed: bool = False, start_pauses: bool = False
) -> int:
    """The conversations these policies hold, not resolved yet, counted anew after a change
    of their targets, calendar or pausing (`removed`: the policy is going; nothing is due any
    more). A pause the policy no longer wants ends now; `start_pauses` (pausing was switched
    on): the pending conversations pause now. Markers stay: a warning or a breach that fired
    does not fire again."""
    if not policy_ids:
        return 0
    now = utcnow()
    rows = session.exec(
        select(ConversationSla).where(
            col(ConversationSla.policy_id).in_(policy_ids),
            col(ConversationSla.resolved_at).is_(None),
        )
    ).all()
    for row in rows:
        if removed:
            resume(session, row, now)
            row.policy_id = None
        else:
            conversation = session.get(Conversation, row.conversation_id)
            if conversation is not None:
                sync_pause(session, row, conversation, now, start=start_pauses)
        recompute(session, row)
    session.flush()
    return len(rows)
