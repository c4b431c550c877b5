"""The composer: reply, reply-all, forward and internal notes, with attachments; and what
follows a send: Undo during the agent's undo window, Retry, Edit and resend, or Discard once a
reply failed (`imapdesk.domain.outbound.actions`).

The form carries the conversation version the agent opened it at; when newer messages or notes
arrived since, the reply service raises VersionConflict (`imapdesk.domain.outbound.collisions`)
and the page shows them with a "send anyway" button (which posts again with `force`). A reply
waits for the agent's undo window (`Agent.undo_send_seconds`) in state `scheduled`; the commit
wakes the mailbox's sender (`imapdesk.kernel.wakeups`), which sends it once the window is over.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, Response

from imapdesk.api.deps import RowId, SettingsDep, WriteSessionDep
from imapdesk.api.web.auth import WebAgent
from imapdesk.api.web.conversation import (
    check_form_csrf,
    page_context,
    render_parts,
    wants_json,
)
from imapdesk.api.web.templating import templates
from imapdesk.domain.conversations import reads
from imapdesk.domain.outbound import actions, replies
from imapdesk.domain.outbound.collisions import VersionConflict
from imapdesk.domain.outbound.delivery import public_state
from imapdesk.kernel.errors import ImapdeskError, InvalidInput
from imapdesk.kernel.models import ActivitySource, OutboundMail, OutboundState, as_utc, utcnow
from imapdesk.mail.compose import Upload, recipient_entries

router = APIRouter(include_in_schema=False)

KINDS = ("reply", "reply_all", "forward", "note")


def _addresses(value: str) -> list[str] | None:
    found = recipient_entries(value)
    return found or None


@router.post("/conversations/{conversation_id}/compose", name="conversation_compose")
async def conversation_compose(
    request: Request,
    session: WriteSessionDep,
    settings: SettingsDep,
    agent: WebAgent,
    conversation_id: RowId,
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
    kind: Annotated[str, Form(max_length=20)] = "reply",
    body: Annotated[str, Form(max_length=1_000_000)] = "",
    # the rich-text editor's HTML (compose.js); empty: the plain text area (no script)
    html: Annotated[str, Form(max_length=1_000_000)] = "",
    to: Annotated[str, Form(max_length=4000)] = "",
    cc: Annotated[str, Form(max_length=4000)] = "",
    expected_version: Annotated[int | None, Form()] = None,
    force: Annotated[bool, Form()] = False,
    idempotency_key: Annotated[str, Form(max_length=200)] = "",
    attachments: Annotated[list[UploadFile] | None, File()] = None,
) -> Response:
    check_form_csrf(request, csrf)
    cid = reads.visible_conversation_id(session, agent, conversation_id)
    mail: OutboundMail | None = None
    try:
        if kind not in KINDS:
            raise InvalidInput("kind is reply, reply_all, forward or note", field="kind")
        # their number and total size were held to the limits as they arrived (api/limits.py)
        files = [a for a in (attachments or []) if a.filename]
        uploads = [
            Upload(
                filename=a.filename or "attachment",
                content_type=a.content_type or "application/octet-stream",
                data=await a.read(),
            )
            for a in files
        ]
        if kind == "note":
            replies.add_note(
                session,
                agent,
                cid,
                body=body,
                composed_html=html if html.strip() else None,
                attachments=uploads,
                expected_version=expected_version,
                force=force,
                source=ActivitySource.web,
                settings=settings,
            )
        else:
            mail = replies.queue_reply(
                session,
                agent,
                cid,
                kind=kind,
                body=body,
                composed_html=html if html.strip() else None,
                to=_addresses(to),
                cc=_addresses(cc),
                attachments=uploads,
                expected_version=expected_version,
                force=force,
                idempotency_key=idempotency_key or None,
                source=ActivitySource.web,
                settings=settings,
                undo_seconds=max(0, agent.undo_send_seconds),
            )
        session.flush()
    except VersionConflict as exc:
        session.rollback()
        newer = templates.get_template("conversation/newer.html").render({"newer": exc.newer})
        payload = {
            "error": {"code": exc.code, "message": exc.message},
            "current_version": exc.current_version,
            "newer_html": newer,
        }
        return JSONResponse(payload, status_code=409)
    except ImapdeskError as exc:
        if not wants_json(request):
            raise
        session.rollback()
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status_code
        )
    if wants_json(request):
        parts = render_parts(page_context(request, session, agent, cid))
        sent = _outbound_json(request, mail) if mail is not None else None
        return JSONResponse({**parts, "sent": kind, "outbound": sent})
    target = request.url_for("conversation", conversation_id=cid)
    return RedirectResponse(target.path, status_code=303)


def _outbound_json(request: Request, mail: OutboundMail) -> dict[str, Any]:
    """What the page's undo toast needs of the mail just queued."""
    assert mail.id is not None
    due = as_utc(mail.next_attempt_at)
    state = public_state(mail)
    return {
        "id": mail.id,
        "state": state.value,
        "not_before": due.isoformat() if due else None,
        # the page counts down from here, whatever its own clock says
        "seconds_left": (due - utcnow()).total_seconds()
        if due and state == OutboundState.scheduled
        else None,
        "cancel_url": request.url_for("outbound_cancel", outbound_id=mail.id).path,
    }


def _refused(request: Request, session: WriteSessionDep, exc: ImapdeskError) -> Response:
    if not wants_json(request):
        raise exc
    session.rollback()
    payload = {"error": {"code": exc.code, "message": exc.message, **exc.details}}
    return JSONResponse(payload, status_code=exc.status_code)


@router.post("/outbound/{outbound_id}/cancel", name="outbound_cancel")
def outbound_cancel(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    outbound_id: RowId,
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
) -> Response:
    """Undo (in the undo window) or Discard (a failed reply): it leaves the conversation; the
    page gets what was written back, for Undo and Edit and resend to open the composer."""
    check_form_csrf(request, csrf)
    try:
        taken = actions.take_back(session, agent, outbound_id, source=ActivitySource.web)
        session.flush()
    except ImapdeskError as exc:
        return _refused(request, session, exc)
    written = asdict(taken)
    if taken.conversation_id is None:  # a new conversation that went with it
        listing = request.url_for("conversations").path
        if wants_json(request):
            return JSONResponse({"redirect": listing, "taken_back": written})
        return RedirectResponse(listing, status_code=303)
    if wants_json(request):
        parts = render_parts(page_context(request, session, agent, taken.conversation_id))
        return JSONResponse({**parts, "taken_back": written})
    target = request.url_for("conversation", conversation_id=taken.conversation_id)
    return RedirectResponse(target.path, status_code=303)


@router.post("/outbound/{outbound_id}/retry", name="outbound_retry")
def outbound_retry(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    outbound_id: RowId,
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
) -> Response:
    """Send a failed reply again (after its cause was fixed)."""
    check_form_csrf(request, csrf)
    try:
        mail = actions.retry(session, agent, outbound_id, source=ActivitySource.web)
        session.flush()
    except ImapdeskError as exc:
        return _refused(request, session, exc)
    assert mail.conversation_id is not None
    cid = reads.visible_conversation_id(session, agent, mail.conversation_id)
    if wants_json(request):
        return JSONResponse(render_parts(page_context(request, session, agent, cid)))
    target = request.url_for("conversation", conversation_id=cid)
    return RedirectResponse(target.path, status_code=303)
