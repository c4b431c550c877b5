"""Managing webhook subscriptions (REST and the admin page share these): create with a secret
(generated and shown once, or given), change, enable again, rotate the secret, delete, and
replay a delivery. Services flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from imapdesk.domain.webhooks import signing, targets
from imapdesk.domain.webhooks.names import PUBLIC_EVENTS
from imapdesk.kernel.crypto import decrypt_secret, encrypt_secret
from imapdesk.kernel.errors import Conflict, InvalidInput, NotFound
from imapdesk.kernel.models import (
    Agent,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookSubscription,
    as_utc,
    utcnow,
)
from imapdesk.kernel.settings import Settings

# how long the previous secret still signs after a rotation (receivers move to the new one)
ROTATION_OVERLAP = timedelta(hours=24)
MAX_DESCRIPTION = 200


def check_events(events: Sequence[str]) -> list[str]:
    if not events:
        raise InvalidInput("choose at least one event", field="events")
    unknown = [e for e in events if e not in PUBLIC_EVENTS]
    if unknown:
        raise InvalidInput(
            f"unknown event {unknown[0]!r}; the events are: {', '.join(PUBLIC_EVENTS)}",
            field="events",
        )
    return [e for e in PUBLIC_EVENTS if e in set(events)]


def _description(text: str) -> str:
    text = text.strip()
    if len(text) > MAX_DESCRIPTION:
        raise InvalidInput(f"the description is longer than {MAX_DESCRIPTION}", field="description")
    return text


def find(session: Session, subscription_id: int) -> WebhookSubscription:
    row = session.get(WebhookSubscription, subscription_id)
    if row is None:
        raise NotFound(f"no webhook {subscription_id}")
    return row


def all_subscriptions(session: Session) -> list[WebhookSubscription]:
    return list(session.exec(select(WebhookSubscription).order_by(col(WebhookSubscription.id))))


def create(
    session: Session,
    settings: Settings,
    *,
    url: str,
    events: Sequence[str],
    secret: str | None = None,
    description: str = "",
    agent: Agent | None = None,
) -> tuple[WebhookSubscription, str | None]:
    """The new subscription, and its secret when it was generated here (shown once)."""
    target = targets.resolve(url, allow_private=settings.webhook_allow_private)
    chosen = check_events(events)
    generated = None
    if secret:
        signing.secret_key(secret)
    else:
        secret = generated = signing.new_secret()
    row = WebhookSubscription(
        url=target.url,
        description=_description(description),
        events=chosen,
        secret_encrypted=encrypt_secret(secret, settings.secret_key),
        created_by_id=agent.id if agent is not None else None,
    )
    session.add(row)
    session.flush()
    return row, generated


def update(
    session: Session,
    settings: Settings,
    subscription_id: int,
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> WebhookSubscription:
    row = find(session, subscription_id)
    if url is not None:
        row.url = targets.resolve(url, allow_private=settings.webhook_allow_private).url
    if events is not None:
        row.events = check_events(events)
    if description is not None:
        row.description = _description(description)
    if enabled is True and not row.enabled:
        enable(session, row)
    elif enabled is False and row.enabled:
        row.enabled = False
        row.disabled_at = utcnow()
        row.disabled_reason = "disabled by an admin"
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return row


def enable(session: Session, row: WebhookSubscription) -> None:
    """On again: its failures forgotten, and what waited while it was off is sent now (each
    with a fresh retry window)."""
    now = utcnow()
    row.enabled = True
    row.failure_count = 0
    row.failing_since = None
    row.disabled_reason = None
    row.disabled_at = None
    for delivery in session.exec(
        select(WebhookDelivery).where(
            col(WebhookDelivery.subscription_id) == row.id,
            col(WebhookDelivery.state) == WebhookDeliveryState.pending,
        )
    ):
        delivery.window_started_at = now
        delivery.next_attempt_at = now
        session.add(delivery)


def delete(session: Session, subscription_id: int) -> None:
    row = find(session, subscription_id)
    session.delete(row)
    session.flush()


def rotate_secret(session: Session, settings: Settings, subscription_id: int) -> str:
    """A new secret (returned: shown once); the previous one signs too for ROTATION_OVERLAP."""
    row = find(session, subscription_id)
    secret = signing.new_secret()
    row.previous_secret_encrypted = row.secret_encrypted
    row.previous_until = utcnow() + ROTATION_OVERLAP
    row.secret_encrypted = encrypt_secret(secret, settings.secret_key)
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return secret


def signing_secrets(
    row: WebhookSubscription, settings: Settings, now: datetime | None = None
) -> list[str]:
    """The secrets that sign an attempt now: the current one, and the previous one while its
    overlap lasts."""
    found = [decrypt_secret(row.secret_encrypted, settings.secret_key)]
    until = as_utc(row.previous_until)
    if row.previous_secret_encrypted and until is not None and until > (now or utcnow()):
        found.append(decrypt_secret(row.previous_secret_encrypted, settings.secret_key))
    return found


def find_delivery(session: Session, subscription_id: int, delivery_id: int) -> WebhookDelivery:
    row = session.get(WebhookDelivery, delivery_id)
    if row is None or row.subscription_id != subscription_id:
        raise NotFound(f"no delivery {delivery_id} of webhook {subscription_id}")
    return row


def deliveries(
    session: Session,
    subscription_id: int,
    *,
    limit: int = 50,
    before_id: int | None = None,
    state: WebhookDeliveryState | None = None,
) -> list[WebhookDelivery]:
    """The subscription's deliveries, newest first."""
    find(session, subscription_id)
    query = select(WebhookDelivery).where(col(WebhookDelivery.subscription_id) == subscription_id)
    if before_id is not None:
        query = query.where(col(WebhookDelivery.id) < before_id)
    if state is not None:
        query = query.where(col(WebhookDelivery.state) == state)
    return list(session.exec(query.order_by(col(WebhookDelivery.id).desc()).limit(limit)))


def replay(session: Session, subscription_id: int, delivery_id: int) -> WebhookDelivery:
    """Send a delivery again (the same body under the same `webhook-id`), with a fresh retry
    window; the subscription must be enabled."""
    subscription = find(session, subscription_id)
    if not subscription.enabled:
        raise Conflict("the webhook is disabled; enable it before replaying a delivery")
    row = find_delivery(session, subscription_id, delivery_id)
    now = utcnow()
    row.state = WebhookDeliveryState.pending
    row.window_started_at = now
    row.next_attempt_at = now
    row.claimed_by = None
    row.claimed_until = None
    session.add(row)
    session.flush()
    return row
