"""What the rich-text composer needs besides sending (`api/web/compose.py`): images pasted
or dropped into it (uploaded at once, shown back only to their agent), saved replies filled in
for a conversation (a preview before they are inserted), and the "New conversation" page.

Every route is the signed-in agent's (`WebAgent`); every write checks the session's CSRF token
(a form field, or the `X-CSRF-Token` header the page's script sends).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlmodel import col, select

from imapdesk.api.deps import RowId, SessionDep, SettingsDep, WriteSessionDep
from imapdesk.api.web.auth import WebAgent
from imapdesk.api.web.compose import _outbound_json
from imapdesk.api.web.conversation import check_form_csrf, wants_json
from imapdesk.api.web.templating import templates
from imapdesk.domain.accounts.access import visible_mailbox_ids
from imapdesk.domain.conversations import reads
from imapdesk.domain.outbound import images, replies, saved_replies
from imapdesk.kernel.errors import ImapdeskError, InvalidInput
from imapdesk.kernel.models import ActivitySource, Conversation, Mailbox
from imapdesk.mail.compose import recipient_entries

router = APIRouter(include_in_schema=False)


def _refused(session: WriteSessionDep | SessionDep, exc: ImapdeskError) -> JSONResponse:
    session.rollback()
    payload = {"error": {"code": exc.code, "message": exc.message, **exc.details}}
    return JSONResponse(payload, status_code=exc.status_code)


@router.post("/compose/images", name="compose_image_upload")
async def compose_image_upload(
    request: Request,
    session: WriteSessionDep,
    settings: SettingsDep,
    agent: WebAgent,
    image: Annotated[UploadFile, File()],
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
) -> Response:
    """An image pasted or dropped into the composer: its address, for the editor to show."""
    check_form_csrf(request, csrf)
    # its size was held to the upload limits as it arrived (api/limits.py); the image's own
    # limit is the domain's (with its size in the refusal)
    data = await image.read()
    try:
        row = images.upload(session, settings, agent, image.filename or "", data)
    except ImapdeskError as exc:
        return _refused(session, exc)
    assert row.id is not None
    url = request.url_for("compose_image", image_id=row.id).path
    return JSONResponse({"id": row.id, "url": url, "size": row.size, "type": row.content_type})


@router.get("/compose/images/{image_id}", name="compose_image")
def compose_image(
    session: SessionDep, settings: SettingsDep, agent: WebAgent, image_id: RowId
) -> Response:
    """One of the agent's own uploads (NotFound for another's)."""
    row = images.own_image(session, agent, image_id)
    return Response(
        images.read(settings, row),
        media_type=row.content_type,
        headers={
            "Cache-Control": "private, max-age=86400",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'",
        },
    )


@router.post(
    "/conversations/{conversation_id}/saved-replies/{saved_reply_id}/render",
    name="saved_reply_render",
)
def saved_reply_render(
    request: Request,
    session: SessionDep,
    agent: WebAgent,
    conversation_id: RowId,
    saved_reply_id: RowId,
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
) -> Response:
    """The saved reply filled in for this conversation and agent: the composer's preview,
    then what it inserts. An unknown variable: 422 naming it."""
    check_form_csrf(request, csrf)
    cid = reads.visible_conversation_id(session, agent, conversation_id)
    conversation = session.get(Conversation, cid)
    assert conversation is not None
    try:
        text = saved_replies.render_saved(session, saved_reply_id, conversation, agent)
    except ImapdeskError as exc:
        return _refused(session, exc)
    return JSONResponse({"text": text}, headers={"Cache-Control": "no-store"})


def _mailboxes(session: SessionDep | WriteSessionDep, agent: WebAgent) -> list[Mailbox]:
    ids = visible_mailbox_ids(session, agent)
    if not ids:
        return []
    return list(
        session.exec(select(Mailbox).where(col(Mailbox.id).in_(ids)).order_by(col(Mailbox.name)))
    )


def _new_page(
    request: Request,
    session: SessionDep | WriteSessionDep,
    agent: WebAgent,
    *,
    values: dict[str, str] | None = None,
    error: str = "",
    status_code: int = 200,
) -> Response:
    return templates.TemplateResponse(
        request,
        "conversation/new.html",
        {
            "agent": agent,
            "mailboxes": [m for m in _mailboxes(session, agent) if m.smtp_host],
            "values": values or {},
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/new-conversation", name="new_conversation")
def new_conversation_page(request: Request, session: SessionDep, agent: WebAgent) -> Response:
    return _new_page(request, session, agent)


@router.post("/new-conversation", name="new_conversation_send")
async def new_conversation_send(
    request: Request,
    session: WriteSessionDep,
    settings: SettingsDep,
    agent: WebAgent,
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
    mailbox: Annotated[str, Form(max_length=200)] = "",
    to: Annotated[str, Form(max_length=4000)] = "",
    cc: Annotated[str, Form(max_length=4000)] = "",
    subject: Annotated[str, Form(max_length=2000)] = "",
    body: Annotated[str, Form(max_length=1_000_000)] = "",
    html: Annotated[str, Form(max_length=1_000_000)] = "",
    idempotency_key: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """A new conversation that starts with our message; then its page."""
    check_form_csrf(request, csrf)
    # given back with an error: the editor opens with what was written, formatting and all
    values = {
        "mailbox": mailbox, "to": to, "cc": cc, "subject": subject, "body": body, "html": html,
    }  # fmt: skip
    try:
        if mailbox not in {m.name for m in _mailboxes(session, agent)}:
            raise InvalidInput("choose one of your mailboxes", field="mailbox")
        mail = replies.start_conversation(
            session,
            agent,
            mailbox,
            to=recipient_entries(to),
            cc=recipient_entries(cc) or None,
            subject=subject,
            body=body,
            composed_html=html if html.strip() else None,
            idempotency_key=idempotency_key or None,
            source=ActivitySource.web,
            settings=settings,
            undo_seconds=max(0, agent.undo_send_seconds),
        )
        session.flush()
    except ImapdeskError as exc:
        if wants_json(request):
            return _refused(session, exc)
        session.rollback()
        field = str(exc.details.get("field") or "")
        message = f"{field}: {exc.message}" if field and field not in exc.message else exc.message
        return _new_page(
            request, session, agent, values=values, error=message, status_code=exc.status_code
        )
    assert mail.conversation_id is not None
    target = request.url_for("conversation", conversation_id=mail.conversation_id).path
    if wants_json(request):
        return JSONResponse({"redirect": target, "outbound": _outbound_json(request, mail)})
    return RedirectResponse(target, status_code=303)
