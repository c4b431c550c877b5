"""The rules at work: each event of the log (imapdesk/domain/events.py) sets off the enabled
rules whose trigger it is, in order, until one says "stop here"; time-based rules look at the
conversations whose time has come, and fire once per episode of waiting (see "time-based
rules" below). Everything a rule does is in the transaction that marks
its event handled (or writes its `RuleFiring`), so a crash before the commit leaves nothing
done and nothing marked, and the next run does it once.

No loops: an event caused by a rule (its actor starts with "rule ") sets off no rule. A
mailbox's default team (imapdesk/domain/teams/) gets its new conversations that no rule
assigned.

Across worker processes the rules run one at a time (an advisory lock on PostgreSQL; SQLite
serialises writers).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, col, select

from imapdesk.domain.conversations import operations as ops
from imapdesk.domain.conversations.aggregates import resolve_merged
from imapdesk.domain.events import Event, EventKind, mark_handled, pending_events
from imapdesk.domain.rules.actions import (
    Occasion,
    Skipped,
    caused_by_rule,
    describe,
    perform,
)
from imapdesk.domain.rules.conditions import Facts
from imapdesk.domain.rules.definitions import EVENT_TRIGGERS, TIME_TRIGGERS, RuleSpec
from imapdesk.domain.teams.administration import default_team_id
from imapdesk.domain.teams.assignment import next_agent
from imapdesk.domain.teams.hours import business_seconds
from imapdesk.kernel.errors import ImapdeskError
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Conversation,
    ConversationStatus,
    Direction,
    Mailbox,
    Message,
    Rule,
    RuleFiring,
    Team,
    TeamMailbox,
    as_utc,
    utcnow,
)
from imapdesk.kernel.settings import Settings

log = logging.getLogger(__name__)

CONSUMER = "rules"
_PG_LOCK_KEY = 0x1A3D_0017
TIME_BATCH = 100


def take_turn(session: Session) -> bool:
    """Whether this process may run the rules now (one process at a time on PostgreSQL)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(
        session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY}).scalar()
    )


_rules_lock = threading.Lock()
_rules_cache: dict[str, tuple[tuple[Any, ...], list[RuleSpec]]] = {}


def enabled_rules(session: Session) -> list[RuleSpec]:
    """The enabled rules in order; read again only when a rule was added, changed, moved or
    deleted (one small aggregate read decides), not for every batch of events."""
    key = tuple(
        session.exec(
            select(func.count(), func.max(Rule.updated_at), func.max(Rule.id)).select_from(Rule)
        ).one()
    )
    where = str(session.get_bind().engine.url)
    with _rules_lock:
        cached = _rules_cache.get(where)
        if cached is not None and cached[0] == key:
            return cached[1]
    rules = [
        RuleSpec.of(r)
        for r in session.exec(
            select(Rule)
            .where(col(Rule.enabled).is_(True))
            .order_by(col(Rule.position), col(Rule.id))
        )
    ]
    with _rules_lock:
        _rules_cache[where] = (key, rules)
    return rules


@dataclass
class Outcome:
    """What a rule did (or would do) to a conversation."""

    rule_id: int
    rule: str
    conversation_id: int
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def run_actions(
    session: Session, settings: Settings, rule: RuleSpec, occasion: Occasion
) -> Outcome:
    """Each action in its own savepoint: one that fails or does not apply leaves the others."""
    assert rule.id is not None and occasion.conversation.id is not None
    outcome = Outcome(rule.id, rule.name, occasion.conversation.id)
    for action in rule.actions or []:
        try:
            with session.begin_nested():
                outcome.done.append(perform(session, settings, rule, action, occasion))
        except Skipped as exc:
            outcome.skipped.append(f"{describe(action)}: {exc}")
        except ImapdeskError as exc:
            outcome.skipped.append(f"{describe(action)}: {exc.message}")
            log.warning(
                "rule %r: %s on conversation %s failed: %s",
                rule.name,
                action["type"],
                occasion.conversation.id,
                exc.message,
            )
        except DBAPIError as exc:
            if exc.connection_invalidated or isinstance(exc, OperationalError):
                raise  # the database is away: the whole batch again, later
            outcome.skipped.append(f"{describe(action)}: failed")
            log.exception("rule %r: %s failed", rule.name, action["type"])
        except Exception:
            # one broken action must not hold back every event after it
            outcome.skipped.append(f"{describe(action)}: failed")
            log.exception("rule %r: %s failed", rule.name, action["type"])
        # the conversation as the action left it, for the next one
        session.refresh(occasion.conversation)
    log.info(
        "rule %r on conversation %s: %s",
        rule.name,
        occasion.conversation.id,
        "; ".join(outcome.done + outcome.skipped) or "nothing",
    )
    return outcome


def _conversation(session: Session, conversation_id: int | None) -> Conversation | None:
    if conversation_id is None:
        return None
    found = resolve_merged(session, session.get(Conversation, conversation_id))
    if found is None or found.merged_into_id is not None:
        return None
    return found


def _automatic_reply_sent(event: Event) -> bool:
    """A reply sent that no agent wrote: only rules queue those (a rule's acknowledgement)."""
    return event.kind == EventKind.reply_sent and event.agent_id is None and event.actor == "system"


def _sets_off(event: Event, kinds: set[str]) -> bool:
    return (
        event.kind in kinds
        and event.conversation_id is not None
        and not caused_by_rule(event.actor)
        and not _automatic_reply_sent(event)
    )


def apply_event(
    session: Session,
    settings: Settings,
    rules: Sequence[RuleSpec],
    event: Event,
    team_defaults: dict[int, int] | None = None,
) -> list[Outcome]:
    """The rules this event sets off, in order until one stops; then the mailbox's default
    team (`team_defaults`: mailbox -> team, else read) for a new conversation nobody holds."""
    if caused_by_rule(event.actor) or _automatic_reply_sent(event):
        return []
    conv = _conversation(session, event.conversation_id)
    if conv is None:
        return []
    message = session.get(Message, event.message_id) if event.message_id is not None else None
    outcomes = []
    facts = Facts(session, conv, message)
    for rule in rules:
        if event.kind not in EVENT_TRIGGERS.get(rule.trigger, ()):
            continue
        if not rule.check(facts):
            continue
        outcomes.append(run_actions(session, settings, rule, Occasion(conv, message, event.kind)))
        facts = Facts(session, conv, message)  # what the rule changed
        if rule.stop:
            break
    if event.kind == EventKind.conversation_created:
        _team_default(session, conv, team_defaults)
    return outcomes


def _team_default(
    session: Session, conv: Conversation, team_defaults: dict[int, int] | None
) -> None:
    if conv.assignee_id is not None or conv.claimed:
        return
    if team_defaults is None:
        team_id = default_team_id(session, conv.mailbox_id)
    else:
        team_id = team_defaults.get(conv.mailbox_id)
    if team_id is None:
        return
    agent = next_agent(session, team_id, conv.mailbox_id)
    team = session.get(Team, team_id)
    if agent is None or team is None:
        return
    ops.assign(session, conv, agent, source=ActivitySource.system, actor=f"team {team.name}")


def run_events(session: Session, settings: Settings, *, limit: int = 200) -> int:
    """Handle the pending events (in the caller's transaction); how many there were."""
    if not take_turn(session):
        return 0
    found = pending_events(session, CONSUMER, limit=limit)
    if not found:
        return 0
    rules = enabled_rules(session)
    team_defaults = {row.mailbox_id: row.team_id for row in session.exec(select(TeamMailbox)).all()}
    # the kinds anything reacts to; the other events are only marked handled
    kinds = {k for r in rules for k in EVENT_TRIGGERS.get(r.trigger, ())}
    if team_defaults:
        kinds.add(EventKind.conversation_created)
    relevant = [e for e in found if _sets_off(e, kinds)]
    # the batch's conversations and messages in two reads, not two per event; held here, as
    # the session's identity map holds them only weakly
    held: list[Any] = []
    if relevant:
        conv_ids = {e.conversation_id for e in relevant}
        held += session.exec(select(Conversation).where(col(Conversation.id).in_(conv_ids)))
        msg_ids = {e.message_id for e in relevant if e.message_id is not None}
        if msg_ids:
            held += session.exec(select(Message).where(col(Message.id).in_(msg_ids)))
        held += session.exec(select(Mailbox))
    for event in relevant:
        apply_event(session, settings, rules, event, team_defaults)
    mark_handled(session, CONSUMER, found)
    return len(found)


# --- time-based rules ---------------------------------------------------------------------------
#
# A time-based rule fires once per conversation and *episode* of waiting: an episode begins
# when the wait does (no reply: the customer's newest message; pending: the last change of
# status, else the conversation's creation), and the `RuleFiring` is keyed by that moment
# (`episode_at`). A new wait (the customer writes again, the conversation goes pending again)
# is a new episode that may fire again; the same episode never fires twice, whatever the
# worker does, as its firing is committed with the rule's actions. A firing counts for every
# episode that began at or before its `episode_at` (firings from before episodes were kept
# carry their `fired_at` there, which is after the start of the episode they fired in).


@dataclass(frozen=True)
class Due:
    """A conversation whose wait has lasted long enough, and when that wait began."""

    conversation: Conversation
    episode_at: datetime


def _not_fired(rule: RuleSpec, episode_start: Any) -> Any:
    """No firing of this rule for the conversation in the episode that began at
    `episode_start` (a column or an expression of the conversation's row)."""
    return ~exists(
        select(RuleFiring.rule_id).where(
            col(RuleFiring.rule_id) == rule.id,
            col(RuleFiring.conversation_id) == col(Conversation.id),
            col(RuleFiring.episode_at) >= episode_start,
        )
    )


def _no_reply_due(session: Session, rule: RuleSpec, now: datetime, limit: int) -> list[Due]:
    """Open conversations whose newest message is the customer's and older than N business
    hours (counted in the calendar of the mailbox's default team, if any). The episode: the
    customer's newest message (`last_message_at`)."""
    hours = rule.trigger_amount or 0
    cutoff = now - timedelta(hours=hours)  # N business hours are at least N hours
    answered_since = exists(
        select(Message.id).where(
            col(Message.conversation_id) == col(Conversation.id),
            col(Message.direction) == Direction.outbound,
            col(Message.date) >= col(Conversation.last_message_at),
        )
    )
    rows = session.exec(
        select(Conversation)
        .where(
            col(Conversation.status) == ConversationStatus.open,
            col(Conversation.merged_into_id).is_(None),
            col(Conversation.last_message_at) <= cutoff,
            ~answered_since,
            _not_fired(rule, col(Conversation.last_message_at)),
        )
        .order_by(col(Conversation.last_message_at))
        .limit(limit)
    ).all()
    due = []
    for conv in rows:
        team_id = default_team_id(session, conv.mailbox_id)
        team = session.get(Team, team_id) if team_id is not None else None
        since = as_utc(conv.last_message_at)
        if since is None:
            continue
        if (
            business_seconds(session, team.calendar_id if team else None, since, now)
            >= hours * 3600
        ):
            due.append(Due(conv, since))
    return due


def _pending_due(session: Session, rule: RuleSpec, now: datetime, limit: int) -> list[Due]:
    """Conversations pending for N days (since their last change of status). The episode:
    that change of status (none: the conversation's creation)."""
    cutoff = now - timedelta(days=rule.trigger_amount or 0)
    last_status = (
        select(func.max(Activity.created_at))
        .where(
            col(Activity.conversation_id) == col(Conversation.id), col(Activity.action) == "status"
        )
        .scalar_subquery()
    )
    since = func.coalesce(last_status, col(Conversation.created_at))
    rows = session.exec(
        select(Conversation, last_status)
        .where(
            col(Conversation.status) == ConversationStatus.pending,
            col(Conversation.merged_into_id).is_(None),
            or_(
                last_status <= cutoff,
                and_(last_status.is_(None), col(Conversation.created_at) <= cutoff),
            ),
            _not_fired(rule, since),
        )
        .order_by(col(Conversation.id))
        .limit(limit)
    ).all()
    return [
        Due(conv, as_utc(changed) if changed is not None else as_utc(conv.created_at))
        for conv, changed in rows
    ]


def due_conversations(
    session: Session, rule: RuleSpec, now: datetime, limit: int = TIME_BATCH
) -> list[Due]:
    if rule.trigger == "time.no_reply":
        return _no_reply_due(session, rule, now, limit)
    if rule.trigger == "time.pending":
        return _pending_due(session, rule, now, limit)
    return []


def run_time_rules(session: Session, settings: Settings, *, now: datetime | None = None) -> int:
    """Fire the time-based rules whose time has come, once per conversation, rule and episode
    of waiting (the `RuleFiring` row is written with the actions). How many fired."""
    if not take_turn(session):
        return 0
    now = now or utcnow()
    fired = 0
    for rule in enabled_rules(session):
        if rule.trigger not in TIME_TRIGGERS:
            continue
        for due in due_conversations(session, rule, now):
            conv = due.conversation
            assert rule.id is not None and conv.id is not None
            session.add(
                RuleFiring(
                    rule_id=rule.id,
                    conversation_id=conv.id,
                    episode_at=due.episode_at,
                    fired_at=now,
                )
            )
            session.flush()
            if rule.check(Facts(session, conv, None, now=now)):
                run_actions(session, settings, rule, Occasion(conv, None, rule.trigger))
                fired += 1
    return fired


# --- the dry run --------------------------------------------------------------------------------


@dataclass
class DryRunRow:
    conversation_id: int
    subject: str
    matched: bool
    actions: list[str]


def dry_run(session: Session, stored: Rule, *, limit: int = 100) -> list[DryRunRow]:
    """What the rule would have done to the last `limit` conversations (newest first), read
    only: conditions judged on each conversation and its newest customer message; a time-based
    rule also needs its time to have come (and not to have fired)."""
    rule = RuleSpec.of(stored)
    now = utcnow()
    recent = list(
        session.exec(
            select(Conversation)
            .where(col(Conversation.merged_into_id).is_(None))
            .order_by(col(Conversation.created_at).desc(), col(Conversation.id).desc())
            .limit(limit)
        ).all()
    )
    due: set[int] | None = None
    if rule.trigger in TIME_TRIGGERS:
        due = {
            d.conversation.id
            for d in due_conversations(session, rule, now, limit=10_000)
            if d.conversation.id
        }
    rows = []
    for conv in recent:
        assert conv.id is not None
        matched = (due is None or conv.id in due) and rule.check(
            Facts(session, conv, None, now=now)
        )
        actions = [_preview(session, a, conv) for a in rule.actions or []] if matched else []
        rows.append(DryRunRow(conv.id, conv.subject, matched, actions))
    return rows


def _preview(session: Session, action: dict[str, Any], conv: Conversation) -> str:
    words = describe(action)
    if action["type"] == "assign_team":
        from imapdesk.domain.teams.administration import find_team

        try:
            team = find_team(session, action["team"])
        except ImapdeskError as exc:
            return f"{words}: {exc.message}"
        assert team.id is not None
        agent = next_agent(session, team.id, conv.mailbox_id, move=False)
        return f"{words} (now: {agent.email if agent else 'nobody available'})"
    return words
