"""Webhooks: the list and a new one (its secret shown once), one webhook's settings and its
delivery log with the receiver's answers, replay, secret rotation, enabling again, deleting.
The rules live in imapdesk.domain.webhooks (the same as the REST API's)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlmodel import Session

from imapdesk.api.deps import RowId, SessionDep, SettingsDep, WriteSessionDep, take_write
from imapdesk.api.web.admin.page import Csrf, redirect, render
from imapdesk.api.web.auth import WebAdmin, check_csrf
from imapdesk.api.web.flash import flash
from imapdesk.domain.webhooks import subscriptions
from imapdesk.domain.webhooks.names import PUBLIC_EVENTS
from imapdesk.kernel.errors import ImapdeskError
from imapdesk.kernel.models import Agent

router = APIRouter()

EventsChoice = Annotated[list[str] | None, Form(max_length=len(PUBLIC_EVENTS))]
DELIVERIES_SHOWN = 50


def _list_page(request: Request, session: Session, admin: Agent, **context: Any) -> Response:
    return render(
        request,
        "admin/webhooks.html",
        admin,
        section="webhooks",
        rows=subscriptions.all_subscriptions(session),
        event_names=PUBLIC_EVENTS,
        **context,
    )


def _page(
    request: Request, session: Session, admin: Agent, webhook_id: int, **context: Any
) -> Response:
    row = subscriptions.find(session, webhook_id)
    return render(
        request,
        "admin/webhook.html",
        admin,
        section="webhooks",
        w=row,
        deliveries=subscriptions.deliveries(session, webhook_id, limit=DELIVERIES_SHOWN),
        event_names=PUBLIC_EVENTS,
        **context,
    )


@router.get("/webhooks", name="admin_webhooks")
def webhooks_page(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    return _list_page(request, session, admin)


@router.post("/webhooks", name="admin_webhook_create")
def webhook_create(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: WebAdmin,
    csrf_token: Csrf = "",
    url: Annotated[str, Form(max_length=2000)] = "",
    description: Annotated[str, Form(max_length=200)] = "",
    events: EventsChoice = None,
) -> Response:
    check_csrf(request, csrf_token)
    take_write(session)
    try:
        with session.begin_nested():
            row, secret = subscriptions.create(
                session, settings, url=url, events=events or [], description=description,
                agent=admin,
            )  # fmt: skip
    except ImapdeskError as exc:
        form = {"url": url, "description": description, "events": events or []}
        return _list_page(
            request, session, admin, error=exc.message, form=form, status_code=exc.status_code
        )
    # shown in this response only: never stored in plain, never put in a redirect
    return _page(request, session, admin, row.id or 0, created=secret)


@router.get("/webhooks/{webhook_id}", name="admin_webhook")
def webhook_page(
    request: Request, session: SessionDep, admin: WebAdmin, webhook_id: RowId
) -> Response:
    return _page(request, session, admin, webhook_id)


@router.post("/webhooks/{webhook_id}", name="admin_webhook_update")
def webhook_update(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: WebAdmin,
    webhook_id: RowId,
    csrf_token: Csrf = "",
    url: Annotated[str, Form(max_length=2000)] = "",
    description: Annotated[str, Form(max_length=200)] = "",
    events: EventsChoice = None,
    enabled: Annotated[bool, Form()] = False,
) -> Response:
    check_csrf(request, csrf_token)
    take_write(session)
    try:
        with session.begin_nested():
            subscriptions.update(
                session, settings, webhook_id, url=url, events=events or [],
                description=description, enabled=enabled,
            )  # fmt: skip
    except ImapdeskError as exc:
        return _page(
            request, session, admin, webhook_id, error=exc.message, status_code=exc.status_code
        )
    flash(request, "Saved the webhook.")
    return redirect(request, "admin_webhook", webhook_id=webhook_id)


@router.post("/webhooks/{webhook_id}/rotate", name="admin_webhook_rotate")
def webhook_rotate(
    request: Request,
    session: WriteSessionDep,
    settings: SettingsDep,
    admin: WebAdmin,
    webhook_id: RowId,
    csrf_token: Csrf = "",
) -> Response:
    check_csrf(request, csrf_token)
    secret = subscriptions.rotate_secret(session, settings, webhook_id)
    return _page(request, session, admin, webhook_id, created=secret, rotated=True)


@router.post("/webhooks/{webhook_id}/delete", name="admin_webhook_delete")
def webhook_delete(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    webhook_id: RowId,
    csrf_token: Csrf = "",
) -> Response:
    check_csrf(request, csrf_token)
    subscriptions.delete(session, webhook_id)
    flash(request, f"Deleted webhook {webhook_id}.")
    return redirect(request, "admin_webhooks")


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/replay", name="admin_webhook_replay")
def webhook_replay(
    request: Request,
    session: SessionDep,
    admin: WebAdmin,
    webhook_id: RowId,
    delivery_id: RowId,
    csrf_token: Csrf = "",
) -> Response:
    check_csrf(request, csrf_token)
    take_write(session)
    try:
        with session.begin_nested():
            subscriptions.replay(session, webhook_id, delivery_id)
    except ImapdeskError as exc:
        flash(request, exc.message[:1].upper() + exc.message[1:] + ".", error=True)
        return redirect(request, "admin_webhook", webhook_id=webhook_id)
    flash(request, f"Delivery {delivery_id} will be sent again now.")
    return redirect(request, "admin_webhook", webhook_id=webhook_id)
