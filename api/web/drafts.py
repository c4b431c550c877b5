"""The composer's draft: saved as the agent types and when the composer loses focus
(`compose.js`, and a beacon when the page is left), discarded when the agent confirms Cancel.
Thin: the rules live in `imapdesk.domain.outbound.drafts`.

Both answer JSON to the page's script (with `X-Requested-With: fetch`) and redirect back to
the conversation otherwise; a beacon's answer is not read.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from imapdesk.api.deps import RowId, WriteSessionDep
from imapdesk.api.web.auth import WebAgent
from imapdesk.api.web.conversation import check_form_csrf, wants_json
from imapdesk.domain.outbound import drafts
from imapdesk.kernel.errors import ImapdeskError
from imapdesk.mail.compose import recipient_entries

router = APIRouter(include_in_schema=False)


def _answer(
    request: Request, conversation_id: int, body: dict[str, Any], status_code: int = 200
) -> Response:
    if wants_json(request):
        return JSONResponse(body, status_code=status_code, headers={"Cache-Control": "no-store"})
    target = request.url_for("conversation", conversation_id=conversation_id)
    return RedirectResponse(target.path, status_code=303)


def _refused(request: Request, session: WriteSessionDep, exc: ImapdeskError) -> Response:
    if not wants_json(request):
        raise exc
    session.rollback()
    return JSONResponse(
        {"error": {"code": exc.code, "message": exc.message, **exc.details}},
        status_code=exc.status_code,
    )


@router.post("/conversations/{conversation_id}/draft", name="conversation_draft")
def draft_save(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    conversation_id: RowId,
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
    kind: Annotated[str, Form(max_length=20)] = "reply",
    body: Annotated[str, Form(max_length=drafts.BODY_MAX)] = "",
    to: Annotated[str, Form(max_length=4000)] = "",
    cc: Annotated[str, Form(max_length=4000)] = "",
    html: Annotated[str, Form(max_length=drafts.BODY_MAX)] = "",
) -> Response:
    """The agent's draft becomes what the composer holds (emptied: no draft)."""
    check_form_csrf(request, csrf)
    try:
        saved = drafts.save(
            session,
            agent,
            conversation_id,
            kind=kind,
            body=body,
            to=recipient_entries(to),
            cc=recipient_entries(cc),
            html=html or None,
        )
    except ImapdeskError as exc:
        return _refused(request, session, exc)
    if saved is None:
        return _answer(request, conversation_id, {"draft": None})
    return _answer(
        request,
        saved.conversation_id,
        {"draft": {"kind": saved.kind, "updated_at": saved.updated_at.isoformat()}},
    )


@router.post("/conversations/{conversation_id}/draft/discard", name="conversation_draft_discard")
def draft_discard(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    conversation_id: RowId,
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
) -> Response:
    """The agent confirmed Cancel: the draft is gone (on every device)."""
    check_form_csrf(request, csrf)
    try:
        had = drafts.discard(session, agent, conversation_id)
    except ImapdeskError as exc:
        return _refused(request, session, exc)
    return _answer(request, conversation_id, {"discarded": had})
