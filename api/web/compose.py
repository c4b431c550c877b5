"""The composer: reply, reply-all, forward and internal notes, with attachments.

The form carries the conversation version the agent opened it at; when newer messages or notes
arrived since, the reply service raises VersionConflict (`imapdesk.domain.outbound.collisions`)
and the page shows them with a "send anyway" button (which posts again with `force`). The commit
wakes the mailbox's sender (`imapdesk.kernel.wakeups`).
"""

from __future__ import annotations

from typing import Annotated

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
from imapdesk.domain.outbound import replies
from imapdesk.domain.outbound.collisions import VersionConflict
from imapdesk.kernel.errors import ImapdeskError, InvalidInput
from imapdesk.kernel.models import ActivitySource
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
    to: Annotated[str, Form(max_length=4000)] = "",
    cc: Annotated[str, Form(max_length=4000)] = "",
    expected_version: Annotated[int | None, Form()] = None,
    force: Annotated[bool, Form()] = False,
    idempotency_key: Annotated[str, Form(max_length=200)] = "",
    attachments: Annotated[list[UploadFile] | None, File()] = None,
) -> Response:
    check_form_csrf(request, csrf)
    cid = reads.visible_conversation_id(session, agent, conversation_id)
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
                attachments=uploads,
                expected_version=expected_version,
                force=force,
                source=ActivitySource.web,
                settings=settings,
            )
        else:
            replies.queue_reply(
                session,
                agent,
                cid,
                kind=kind,
                body=body,
                to=_addresses(to),
                cc=_addresses(cc),
                attachments=uploads,
                expected_version=expected_version,
                force=force,
                idempotency_key=idempotency_key or None,
                source=ActivitySource.web,
                settings=settings,
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
        return JSONResponse({**parts, "sent": kind})
    target = request.url_for("conversation", conversation_id=cid)
    return RedirectResponse(target.path, status_code=303)
