"""Outgoing webhooks (admins only): subscriptions, their deliveries, replay and secret
rotation. Thin: the rules live in `imapdesk.domain.webhooks`. A secret is shown once, in the
answer that generated it; it is never listed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field

from imapdesk.api.deps import (
    MAX_ROW_ID,
    CurrentAgent,
    SessionDep,
    SettingsDep,
    WriteSessionDep,
)
from imapdesk.api.schemas import ErrorPublic, UtcDatetime
from imapdesk.domain.webhooks import subscriptions
from imapdesk.domain.webhooks.names import PUBLIC_EVENTS
from imapdesk.kernel.errors import Forbidden
from imapdesk.kernel.models import (
    Agent,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookSubscription,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

WebhookId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="The webhook's id.")]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="The delivery's id.")]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorPublic, "description": "Only admins manage webhooks."},
    404: {"model": ErrorPublic, "description": "No such webhook (or delivery)."},
}


def current_admin(agent: CurrentAgent) -> Agent:
    if not agent.is_admin:
        raise Forbidden("only admins manage webhooks")
    return agent


CurrentAdmin = Annotated[Agent, Depends(current_admin)]

EventName = Annotated[str, Field(max_length=60)]


class WebhookCreate(BaseModel):
    url: str = Field(
        max_length=2000,
        description="http:// or https://; a public address "
        "unless IMAPDESK_WEBHOOK_ALLOW_PRIVATE=true.",
    )
    events: list[EventName] = Field(
        max_length=len(PUBLIC_EVENTS),
        description=("Public event names: " + ", ".join(f"`{e}`" for e in PUBLIC_EVENTS) + "."),
    )
    secret: str | None = Field(
        default=None,
        max_length=200,
        description=(
            "`whsec_<base64 of 24 to 64 bytes>`; left out, one is generated and shown once."
        ),
    )
    description: str = Field(default="", max_length=200)


class WebhookUpdate(BaseModel):
    url: str | None = Field(default=None, max_length=2000)
    events: list[EventName] | None = Field(default=None, max_length=len(PUBLIC_EVENTS))
    description: str | None = Field(default=None, max_length=200)
    enabled: bool | None = Field(
        default=None, description="true enables a disabled webhook again (its failures forgotten)."
    )


class WebhookPublic(BaseModel):
    id: int
    url: str
    description: str
    events: list[str]
    enabled: bool
    failure_count: int = Field(description="Failed attempts in a row.")
    failing_since: UtcDatetime | None
    disabled_reason: str | None
    disabled_at: UtcDatetime | None
    last_success_at: UtcDatetime | None
    created_at: UtcDatetime
    secret: str | None = Field(
        default=None, description="Only in the answer that generated it: shown once."
    )


class DeliveryPublic(BaseModel):
    id: int
    webhook_id: int
    event_id: int | None
    event_type: str
    msg_id: str = Field(description="The `webhook-id` header: the same for every attempt.")
    state: WebhookDeliveryState
    attempts: int
    next_attempt_at: UtcDatetime | None
    last_attempt_at: UtcDatetime | None
    delivered_at: UtcDatetime | None
    response_status: int | None
    response_body: str | None = Field(description="The start of the receiver's last answer.")
    duration_ms: int | None
    last_error: str | None
    created_at: UtcDatetime
    body: str = Field(description="The JSON body sent.")


def webhook_public(row: WebhookSubscription, secret: str | None = None) -> WebhookPublic:
    assert row.id is not None
    return WebhookPublic(
        id=row.id,
        url=row.url,
        description=row.description,
        events=list(row.events or []),
        enabled=row.enabled,
        failure_count=row.failure_count,
        failing_since=row.failing_since,
        disabled_reason=row.disabled_reason,
        disabled_at=row.disabled_at,
        last_success_at=row.last_success_at,
        created_at=row.created_at,
        secret=secret,
    )


def delivery_public(row: WebhookDelivery) -> DeliveryPublic:
    assert row.id is not None
    return DeliveryPublic(
        id=row.id,
        webhook_id=row.subscription_id,
        event_id=row.event_id,
        event_type=row.event_type,
        msg_id=row.msg_id,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_attempt_at=row.last_attempt_at,
        delivered_at=row.delivered_at,
        response_status=row.response_status,
        response_body=row.response_body,
        duration_ms=row.duration_ms,
        last_error=row.last_error,
        created_at=row.created_at,
        body=row.body,
    )


@router.get("", response_model=list[WebhookPublic], summary="List webhooks", responses=_RESPONSES)
def list_webhooks(session: SessionDep, admin: CurrentAdmin) -> list[WebhookPublic]:
    return [webhook_public(r) for r in subscriptions.all_subscriptions(session)]


@router.post(
    "",
    response_model=WebhookPublic,
    status_code=201,
    summary="Create a webhook",
    description="The secret is in this answer only when it was generated here.",
    responses={
        **_RESPONSES,
        422: {
            "model": ErrorPublic,
            "description": "Invalid URL, a private target, an unknown event or a malformed secret.",
        },
    },
)
def create_webhook(
    session: WriteSessionDep, settings: SettingsDep, admin: CurrentAdmin, data: WebhookCreate
) -> WebhookPublic:
    row, secret = subscriptions.create(
        session,
        settings,
        url=data.url,
        events=data.events,
        secret=data.secret,
        description=data.description,
        agent=admin,
    )
    return webhook_public(row, secret)


@router.get(
    "/{webhook_id}", response_model=WebhookPublic, summary="A webhook", responses=_RESPONSES
)
def get_webhook(session: SessionDep, admin: CurrentAdmin, webhook_id: WebhookId) -> WebhookPublic:
    return webhook_public(subscriptions.find(session, webhook_id))


@router.patch(
    "/{webhook_id}", response_model=WebhookPublic, summary="Change a webhook", responses=_RESPONSES
)
def update_webhook(
    session: WriteSessionDep,
    settings: SettingsDep,
    admin: CurrentAdmin,
    webhook_id: WebhookId,
    data: WebhookUpdate,
) -> WebhookPublic:
    row = subscriptions.update(session, settings, webhook_id, **data.model_dump(exclude_unset=True))
    return webhook_public(row)


@router.delete("/{webhook_id}", status_code=204, summary="Delete a webhook", responses=_RESPONSES)
def delete_webhook(
    session: WriteSessionDep, admin: CurrentAdmin, webhook_id: WebhookId
) -> Response:
    subscriptions.delete(session, webhook_id)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=WebhookPublic,
    summary="Rotate a webhook's secret",
    description="A new secret, in this answer only; the previous one signs too (a second "
    "signature in `webhook-signature`) for 24 hours.",
    responses=_RESPONSES,
)
def rotate_secret(
    session: WriteSessionDep, settings: SettingsDep, admin: CurrentAdmin, webhook_id: WebhookId
) -> WebhookPublic:
    secret = subscriptions.rotate_secret(session, settings, webhook_id)
    return webhook_public(subscriptions.find(session, webhook_id), secret)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=list[DeliveryPublic],
    summary="A webhook's deliveries, newest first",
    responses=_RESPONSES,
)
def list_deliveries(
    session: SessionDep,
    admin: CurrentAdmin,
    webhook_id: WebhookId,
    state: WebhookDeliveryState | None = None,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[DeliveryPublic]:
    rows = subscriptions.deliveries(
        session, webhook_id, limit=limit, before_id=before_id, state=state
    )
    return [delivery_public(r) for r in rows]


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/replay",
    response_model=DeliveryPublic,
    summary="Send a delivery again",
    description="The same body under the same `webhook-id`, now, with a fresh retry window. "
    "409 while the webhook is disabled.",
    responses={
        **_RESPONSES,
        409: {"model": ErrorPublic, "description": "The webhook is disabled."},
    },
)
def replay_delivery(
    session: WriteSessionDep,
    admin: CurrentAdmin,
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
) -> DeliveryPublic:
    return delivery_public(subscriptions.replay(session, webhook_id, delivery_id))
