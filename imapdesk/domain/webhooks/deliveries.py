"""Deliveries: the event log into one row per subscription and event (consumer `webhooks`,
in the transaction that takes the events), which are due, the claim of a sender, and what an
attempt's outcome does (delivered; retried with exponential back-off for the retry window;
failed after it; the subscription disabled after failing too long, with a notice to admins).
The HTTP itself is the worker's (worker/webhooks.py)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, update
from sqlmodel import Session, col, select

from imapdesk.domain import events
from imapdesk.domain.notifications.inbox import WEBHOOK_DISABLED, notify_admins
from imapdesk.domain.webhooks.names import public_name
from imapdesk.kernel.models import (
    Agent,
    Conversation,
    ConversationTag,
    Event,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookSubscription,
    as_utc,
    utcnow,
)
from imapdesk.kernel.settings import Settings

CONSUMER = "webhooks"
# how much of a receiver's answer is kept
RESPONSE_EXCERPT = 2000


def msg_id(event_id: int, subscription_id: int) -> str:
    return f"msg_{event_id}_{subscription_id}"


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _conversation(session: Session, conversation_id: int | None) -> dict[str, Any] | None:
    if conversation_id is None:
        return None
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        return None
    assignee = session.get(Agent, conversation.assignee_id) if conversation.assignee_id else None
    tags = session.exec(
        select(ConversationTag.tag)
        .where(col(ConversationTag.conversation_id) == conversation_id)
        .order_by(col(ConversationTag.tag))
    ).all()
    return {
        "id": conversation.id,
        "mailbox_id": conversation.mailbox_id,
        "subject": conversation.subject,
        "status": str(conversation.status),
        "assignee": assignee.email if assignee is not None else None,
        "customer_email": conversation.customer_email,
        "tags": list(tags),
    }


def body_for(session: Session, event: Event, name: str) -> str:
    """The JSON body (Standard Webhooks' `type`, `timestamp`, `data`)."""
    agent = session.get(Agent, event.agent_id) if event.agent_id else None
    data: dict[str, Any] = {
        "event_id": event.id,
        "kind": event.kind,
        "actor": event.actor,
        "agent": {"id": agent.id, "email": agent.email, "name": agent.name} if agent else None,
        "mailbox_id": event.mailbox_id,
        "conversation": _conversation(session, event.conversation_id),
        "message_id": event.message_id,
        "details": event.payload or {},
    }
    return json.dumps(
        {"type": name, "timestamp": _iso(event.created_at), "data": data},
        separators=(",", ":"),
        default=str,
    )


def fan_out(session: Session, limit: int = 200) -> tuple[int, int]:
    """Deliveries for the events waiting, in the caller's transaction, with their receipts:
    (events taken, deliveries made). Only enabled subscriptions get the events of their time."""
    pending = events.pending_events(session, CONSUMER, limit=limit)
    if not pending:
        return 0, 0
    subscriptions = list(
        session.exec(select(WebhookSubscription).where(col(WebhookSubscription.enabled)))
    )
    made = 0
    now = utcnow()
    for event in pending:
        name = public_name(event.kind)
        if name is None:
            continue
        wanted = [s for s in subscriptions if name in (s.events or [])]
        if not wanted:
            continue
        assert event.id is not None
        body = body_for(session, event, name)
        for subscription in wanted:
            assert subscription.id is not None
            session.add(
                WebhookDelivery(
                    subscription_id=subscription.id,
                    event_id=event.id,
                    event_type=name,
                    msg_id=msg_id(event.id, subscription.id),
                    body=body,
                    window_started_at=now,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
            made += 1
    events.mark_handled(session, CONSUMER, pending)
    session.flush()
    return len(pending), made


@dataclass(frozen=True)
class Due:
    id: int
    claimed_by: str | None
    claimed_until: datetime | None


def due(session: Session, limit: int = 50, now: datetime | None = None) -> list[Due]:
    """Pending deliveries of enabled subscriptions whose time has come, oldest first (with
    any claim on them: the caller judges whether its holder is gone)."""
    now = now or utcnow()
    rows = session.exec(
        select(WebhookDelivery.id, WebhookDelivery.claimed_by, WebhookDelivery.claimed_until)
        .join(
            WebhookSubscription, col(WebhookSubscription.id) == col(WebhookDelivery.subscription_id)
        )
        .where(
            col(WebhookDelivery.state) == WebhookDeliveryState.pending,
            col(WebhookDelivery.next_attempt_at) <= now,
            col(WebhookSubscription.enabled),
        )
        .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id))
        .limit(limit)
    )
    return [Due(int(i), by, as_utc(until)) for i, by, until in rows if i is not None]


def claim(
    session: Session,
    delivery_id: int,
    me: str,
    lease: timedelta,
    *,
    taking_over: str | None = None,
) -> bool:
    """Claim a pending delivery for one attempt (a conditional UPDATE: one sender wins). It
    must be unclaimed, its claim expired, or held by `taking_over` (a sender known gone)."""
    now = utcnow()
    free = or_(
        col(WebhookDelivery.claimed_by).is_(None),
        col(WebhookDelivery.claimed_until) < now,
    )
    if taking_over is not None:
        free = or_(free, col(WebhookDelivery.claimed_by) == taking_over)
    result = session.exec(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.id) == delivery_id,
            col(WebhookDelivery.state) == WebhookDeliveryState.pending,
            free,
        )
        .values(claimed_by=me, claimed_until=now + lease)
    )
    return bool(result.rowcount)


@dataclass(frozen=True)
class Outcome:
    """One attempt: the receiver's status and answer, or why there was none."""

    status: int | None
    body: str = ""
    duration_ms: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def retry_delay(settings: Settings, attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling from the initial
    delay up to the maximum, less up to a quarter at random (receivers are not hit at once)."""
    ceiling = min(
        settings.webhook_retry_max_seconds,
        settings.webhook_retry_initial_seconds * (2 ** max(0, attempts - 1)),
    )
    return ceiling * (0.75 + 0.25 * (rng or random).random())


def record(
    session: Session, settings: Settings, delivery_id: int, me: str, outcome: Outcome
) -> WebhookDelivery | None:
    """What an attempt leaves (only while the claim is still `me`'s); None when it is not."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.claimed_by != me:
        return None
    subscription = session.get(WebhookSubscription, delivery.subscription_id)
    now = utcnow()
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.response_status = outcome.status
    delivery.response_body = outcome.body[:RESPONSE_EXCERPT] if outcome.body else None
    delivery.duration_ms = outcome.duration_ms
    delivery.claimed_by = None
    delivery.claimed_until = None
    if outcome.ok:
        delivery.state = WebhookDeliveryState.delivered
        delivery.delivered_at = now
        delivery.last_error = None
        delivery.next_attempt_at = None
        if subscription is not None:
            subscription.failure_count = 0
            subscription.failing_since = None
            subscription.last_success_at = now
            session.add(subscription)
    else:
        error = outcome.error or f"the receiver answered {outcome.status}"
        delivery.last_error = error[:RESPONSE_EXCERPT]
        window_end = as_utc(delivery.window_started_at) + timedelta(
            seconds=settings.webhook_retry_window_seconds
        )
        next_at = now + timedelta(seconds=retry_delay(settings, delivery.attempts))
        if next_at > window_end:
            delivery.state = WebhookDeliveryState.failed
            delivery.next_attempt_at = None
        else:
            delivery.next_attempt_at = next_at
        if subscription is not None:
            _failed(session, settings, subscription, error, now)
    session.add(delivery)
    session.flush()
    return delivery


def _failed(
    session: Session,
    settings: Settings,
    subscription: WebhookSubscription,
    error: str,
    now: datetime,
) -> None:
    """One more failure in a row; disabled (once, and the admins told once) when it has failed
    long enough. Counted and switched off by statements, not read-modify-write: attempts of
    the same webhook are recorded at the same time."""
    table = WebhookSubscription
    session.exec(
        update(table)
        .where(col(table.id) == subscription.id)
        .values(
            failure_count=col(table.failure_count) + 1,
            failing_since=func.coalesce(col(table.failing_since), now),
            updated_at=now,
        )
    )
    session.refresh(subscription)
    since = as_utc(subscription.failing_since) or now
    if not (
        subscription.failure_count >= settings.webhook_disable_after_failures
        and (now - since).total_seconds() >= settings.webhook_disable_after_seconds
    ):
        return
    reason = (
        f"disabled after {subscription.failure_count} failed attempts in a row since "
        f"{since:%Y-%m-%d %H:%M} UTC; the last: {error}"
    )[:2000]
    switched = session.exec(
        update(table)
        .where(col(table.id) == subscription.id, col(table.enabled))
        .values(enabled=False, disabled_at=now, disabled_reason=reason)
    )
    if switched.rowcount:
        notify_admins(
            session,
            WEBHOOK_DISABLED,
            f"Webhook {subscription.id} ({subscription.url[:200]}) was disabled: it failed "
            f"{subscription.failure_count} times in a row. Enable it again once it answers.",
        )
    session.refresh(subscription)


# how long the log keeps a delivery that is over (delivered or failed)
KEEP_DELIVERIES = timedelta(days=30)


def prune(session: Session, now: datetime | None = None) -> int:
    """Drop the deliveries that are over and older than KEEP_DELIVERIES; how many."""
    before = (now or utcnow()) - KEEP_DELIVERIES
    result = session.exec(
        delete(WebhookDelivery).where(
            col(WebhookDelivery.state) != WebhookDeliveryState.pending,
            col(WebhookDelivery.created_at) < before,
        )
    )
    return int(result.rowcount or 0)
