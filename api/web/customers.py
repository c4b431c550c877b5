"""Customers: the list and its search, one customer's page with their conversations, and their
note (saved from that page or from a conversation's sidebar). The rules live in
`imapdesk.domain.customers`: who sees which customer, what a note may hold.

The note forms are plain POSTs with the CSRF token (303 back to the page); `customers.js`
sends the same forms with fetch and gets the saved note as JSON, or, when a colleague saved
first, a 409 with theirs, so that the agent's words stay in the field.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlmodel import Session

from imapdesk.api.deps import RowId, SessionDep, WriteSessionDep
from imapdesk.api.web.auth import WebAgent
from imapdesk.api.web.conversation import agent_names, check_form_csrf, wants_json
from imapdesk.api.web.templating import templates
from imapdesk.domain.conversations import reads
from imapdesk.domain.customers import notes, views
from imapdesk.kernel.errors import ImapdeskError
from imapdesk.kernel.models import ActivitySource, Agent, Customer

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50


@router.get("/customers", name="customers")
def customers_page(
    request: Request,
    session: SessionDep,
    agent: WebAgent,
    q: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    page = views.list_customers(session, agent, q, limit=PAGE_SIZE, cursor=cursor)
    return templates.TemplateResponse(
        request,
        "customers/list.html",
        {"agent": agent, "page": page, "q": q or "", "paged": cursor is not None},
    )


@router.get("/customers/{customer_id}", name="customer")
def customer_page(
    request: Request, session: SessionDep, agent: WebAgent, customer_id: RowId
) -> Response:
    detail = views.customer_detail(session, agent, customer_id)
    # the assignees by name (api/web/conversation.py)
    context = {"agent": agent, "detail": detail, "c": detail.customer}
    context["agent_names"] = agent_names(session)
    return templates.TemplateResponse(request, "customers/page.html", context)


@router.post("/customers/{customer_id}/note", name="customer_note")
def customer_note(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    customer_id: RowId,
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
    note: Annotated[str, Form(max_length=notes.NOTE_MAX * 2)] = "",
    note_version: Annotated[int | None, Form(ge=0)] = None,
) -> Response:
    check_form_csrf(request, csrf)
    customer = views.visible_customer(session, agent, customer_id)
    answer = _save(request, session, agent, customer, note, note_version)
    return answer or RedirectResponse(
        request.url_for("customer", customer_id=customer_id).path, status_code=303
    )


@router.post("/conversations/{conversation_id}/customer-note", name="conversation_customer_note")
def conversation_customer_note(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    conversation_id: RowId,
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
    note: Annotated[str, Form(max_length=notes.NOTE_MAX * 2)] = "",
    note_version: Annotated[int | None, Form(ge=0)] = None,
) -> Response:
    """The note of the conversation's customer, from its sidebar (the row is made when the
    conversation was started from the helpdesk and the ingest has not made it yet)."""
    check_form_csrf(request, csrf)
    cid = reads.visible_conversation_id(session, agent, conversation_id)
    conversation = reads.visible_conversation(session, agent, cid)
    customer = notes.customer_of_conversation(session, conversation)
    answer = _save(request, session, agent, customer, note, note_version)
    return answer or RedirectResponse(
        request.url_for("conversation", conversation_id=cid).path, status_code=303
    )


def _save(
    request: Request,
    session: Session,
    agent: Agent,
    customer: Customer,
    note: str,
    note_version: int | None,
) -> Response | None:
    """Saves the note; for fetch, the JSON answer (the saved note, or the error with the note
    as it is now); None for a form post, which is sent back to its page."""
    try:
        notes.save_note(
            session, agent, customer, note, base_version=note_version, source=ActivitySource.web
        )
    except ImapdeskError as exc:
        if not wants_json(request):
            raise
        session.rollback()
        body = {"error": {"code": exc.code, "message": exc.message, **exc.details}}
        return JSONResponse(body, status_code=exc.status_code)
    if wants_json(request):
        return JSONResponse(_note_json(session, customer))
    return None


def _note_json(session: Session, customer: Customer) -> dict[str, Any]:
    who = session.get(Agent, customer.note_updated_by_id) if customer.note_updated_by_id else None
    return {
        "customer": customer.id,
        "note": customer.note,
        "note_version": customer.note_version,
        "updated_by": who.name if who else None,
        "updated_at": customer.note_updated_at.isoformat() if customer.note_updated_at else None,
    }
