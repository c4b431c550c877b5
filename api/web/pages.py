"""The agent's pages: the conversation list and one conversation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from api.deps import SessionDep, SettingsDep
from api.downloads import attachment_response
from api.web.auth import WebAgent
from api.web.templating import templates
from core import queries
from core.errors import NotFound
from core.models import ConversationStatus

router = APIRouter()

# the sanitised mail HTML runs in a sandboxed frame with no scripts, no network, no forms
MESSAGE_BODY_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src cid: data:; "
    "frame-ancestors 'self'; sandbox"
)
PAGE_SIZE = 50


def _status(value: str | None) -> ConversationStatus | None:
    return ConversationStatus(value) if value and value in ConversationStatus.__members__ else None


@router.get("/", name="conversations")
def conversations_page(
    request: Request,
    session: SessionDep,
    agent: WebAgent,
    mailbox: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    chosen = _status(status)
    filters = queries.ConversationFilters(
        mailbox=mailbox or None, statuses=[chosen] if chosen else None, q=q or None
    )
    page = queries.list_conversations(
        session, agent, filters, limit=PAGE_SIZE, cursor=cursor or None
    )
    next_query = None
    if page.next_cursor:
        params = {"mailbox": mailbox or "", "status": chosen or "", "q": q or ""}
        next_query = {k: v for k, v in params.items() if v} | {"cursor": page.next_cursor}
    return templates.TemplateResponse(
        request,
        "conversations.html",
        {
            "agent": agent,
            "page": page,
            "mailboxes": queries.mailbox_names(session, agent),
            "statuses": list(ConversationStatus),
            "filters": {"mailbox": mailbox or "", "status": chosen or "", "q": q or ""},
            "next_query": next_query,
            "paged": bool(cursor),
        },
    )


@router.get("/conversations/{conversation_id}", name="conversation")
def conversation_page(
    request: Request,
    session: SessionDep,
    agent: WebAgent,
    conversation_id: Annotated[int, Path(ge=1)],
) -> Response:
    try:
        detail = queries.get_conversation(session, agent, conversation_id)
    except queries.ConversationMerged as exc:
        target = request.url_for("conversation", conversation_id=exc.merged_into)
        return RedirectResponse(target.path, status_code=303)
    return templates.TemplateResponse(
        request, "conversation.html", {"agent": agent, "detail": detail}
    )


@router.get("/conversations/{conversation_id}/messages/{message_id}/body", name="message_body")
def message_body(
    session: SessionDep,
    agent: WebAgent,
    conversation_id: Annotated[int, Path(ge=1)],
    message_id: Annotated[int, Path(ge=1)],
) -> Response:
    message = queries.get_message(session, agent, message_id)
    if message.conversation_id != conversation_id or message.html is None:
        raise NotFound(f"no formatted body for message {message_id} here")
    return HTMLResponse(
        message.html,
        headers={
            "Content-Security-Policy": MESSAGE_BODY_CSP,
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


@router.get("/attachments/{attachment_id}", name="attachment")
def attachment_download(
    session: SessionDep,
    settings: SettingsDep,
    agent: WebAgent,
    attachment_id: Annotated[int, Path(ge=1)],
) -> FileResponse:
    return attachment_response(settings, queries.get_attachment(session, agent, attachment_id))
