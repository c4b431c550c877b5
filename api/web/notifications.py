"""The agent's notifications in the browser: the list page (with what they choose to be told
of), the bell's count, marking read, opening one (read, then its conversation), and the
agents' handles for `@mention` completion in the note composer. The bell's count moves live
through the page's event stream (`event: notifications`, api/web/live.py). The rules live in
`imapdesk.domain.notifications`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from imapdesk.api.deps import IdValue, RowId, SessionDep, WriteSessionDep
from imapdesk.api.web.auth import WebAgent
from imapdesk.api.web.conversation import check_form_csrf, wants_json
from imapdesk.api.web.flash import flash, pop_flash
from imapdesk.api.web.templating import templates
from imapdesk.domain.notifications import inbox
from imapdesk.domain.notifications.mentions import handle_directory
from imapdesk.kernel.models import Notification

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 100


def _item(request: Request, row: Notification) -> dict[str, object]:
    return {
        "id": row.id,
        "kind": row.kind,
        "text": row.text,
        "read": row.read_at is not None,
        "url": request.url_for("notification_open", notification_id=row.id).path,
    }


@router.get("/notifications", name="notifications")
def notifications_page(request: Request, session: SessionDep, agent: WebAgent) -> Response:
    assert agent.id is not None
    rows = inbox.listing(session, agent.id, limit=PAGE_SIZE)
    return templates.TemplateResponse(
        request,
        "notifications/list.html",
        {
            "agent": agent,
            "flash": pop_flash(request),
            "rows": rows,
            "unread": inbox.unread_count(session, agent.id),
            "choices": inbox.choices(session, agent.id),
            "labels": inbox.CHOICE_LABELS,
        },
    )


@router.get("/notifications/unread", name="notifications_unread")
def notifications_unread(request: Request, session: SessionDep, agent: WebAgent) -> Response:
    """The bell's count and the newest unread ones."""
    assert agent.id is not None
    rows = inbox.listing(session, agent.id, unread_only=True, limit=5)
    return JSONResponse(
        {"unread": inbox.unread_count(session, agent.id), "new": [_item(request, r) for r in rows]},
        headers={"Cache-Control": "no-store"},
    )


@router.post("/notifications/read", name="notifications_read")
def notifications_read(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    ids: Annotated[list[IdValue] | None, Form(max_length=1000)] = None,
) -> Response:
    """The ids given (only the agent's own), or all of them when none are given."""
    check_form_csrf(request, csrf_token)
    assert agent.id is not None
    marked = inbox.mark_read(session, agent.id, ids or None)
    if wants_json(request):
        return JSONResponse({"marked": marked, "unread": inbox.unread_count(session, agent.id)})
    return RedirectResponse(request.url_for("notifications").path, status_code=303)


@router.get("/notifications/{notification_id}/open", name="notification_open")
def notification_open(
    request: Request, session: WriteSessionDep, agent: WebAgent, notification_id: RowId
) -> Response:
    """Read now; then its conversation (or the list)."""
    assert agent.id is not None
    row = session.get(Notification, notification_id)
    if row is None or row.agent_id != agent.id:
        return RedirectResponse(request.url_for("notifications").path, status_code=303)
    inbox.mark_read(session, agent.id, [notification_id])
    if row.conversation_id is not None:
        target = request.url_for("conversation", conversation_id=row.conversation_id).path
    else:
        target = request.url_for("notifications").path
    return RedirectResponse(target, status_code=303)


@router.post("/notifications/preferences", name="notifications_preferences")
def notifications_preferences(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    assigned: Annotated[bool, Form()] = False,
    customer_replied: Annotated[bool, Form()] = False,
    mentioned: Annotated[bool, Form()] = False,
    sla_warning: Annotated[bool, Form()] = False,
    rule_notify: Annotated[bool, Form()] = False,
    email: Annotated[bool, Form()] = False,
) -> Response:
    check_form_csrf(request, csrf_token)
    assert agent.id is not None
    inbox.set_choices(
        session,
        agent.id,
        assigned=assigned,
        customer_replied=customer_replied,
        mentioned=mentioned,
        sla_warning=sla_warning,
        rule_notify=rule_notify,
        email=email,
    )
    flash(request, "Saved your notification choices.")
    return RedirectResponse(request.url_for("notifications").path, status_code=303)


@router.get("/agents/handles", name="agent_handles")
def agent_handles(
    session: SessionDep, agent: WebAgent, q: Annotated[str, Query(max_length=32)] = ""
) -> Response:
    """Active agents whose handle or name starts with `q`: the `@mention` completion."""
    rows = handle_directory(session, q)
    return JSONResponse([{"handle": a.handle, "name": a.name} for a in rows])
