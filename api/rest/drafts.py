"""The calling agent's draft on a conversation: what they are writing, kept on the server so
that another device (or the web UI) carries on with it. Thin: the rules live in
`imapdesk.domain.outbound.drafts`. A reply or note the agent sends ends their draft."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from imapdesk.api.deps import CurrentAgent, SessionDep, WriteSessionDep
from imapdesk.api.rest.conversations import MERGED_DESCRIPTION, ConversationId, _merged
from imapdesk.api.schemas import ErrorPublic
from imapdesk.domain.conversations import reads
from imapdesk.domain.outbound import drafts, images
from imapdesk.mail.compose_html import text_alternative

router = APIRouter(tags=["drafts"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    308: {"model": ErrorPublic, "description": "Merged; `Location` and `merged_into`."},
    404: {"model": ErrorPublic, "description": "No such conversation (or not yours to see)."},
}


class DraftIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(
        default="reply",
        pattern="^(reply|reply_all|forward|note)$",
        description="What it will be sent as: reply, reply_all, forward or note.",
    )
    body: str = Field(default="", max_length=drafts.BODY_MAX, description="The text so far.")
    to: list[str] = Field(
        default_factory=list,
        max_length=drafts.RECIPIENTS_MAX,
        description="Recipients as typed so far (checked only when it is sent); none for a note.",
    )
    cc: list[str] = Field(default_factory=list, max_length=drafts.RECIPIENTS_MAX)
    html: str | None = Field(
        default=None,
        max_length=drafts.BODY_MAX,
        description="What the rich-text composer holds, as HTML: sanitised as the web UI's "
        "(no script, style or remote image) and kept so; the web composer opens with it. "
        "Images only as your pasted uploads (`/compose/images/<id>`); a `cid:` is refused "
        "(422, field `html`: a draft holds no files). `body` empty: the text rendered from it.",
    )


class DraftPublic(BaseModel):
    conversation_id: int = Field(
        description="Where it is kept: the conversation asked for, or the one it was merged into."
    )
    kind: str
    body: str
    to: list[str]
    cc: list[str]
    html: str | None = Field(description="The rich-text composer's HTML; null: plain text.")
    updated_at: datetime


def _public(view: drafts.DraftView) -> DraftPublic:
    return DraftPublic(
        conversation_id=view.conversation_id,
        kind=view.kind,
        body=view.body,
        to=view.to,
        cc=view.cc,
        html=view.html,
        updated_at=view.updated_at,
    )


@router.get(
    "/conversations/{conversation_id}/draft",
    response_model=DraftPublic,
    summary="Your draft on a conversation",
    description="404 (code `not_found`) when you have none.\n\n" + MERGED_DESCRIPTION,
    responses=_RESPONSES,
)
def get_draft(
    request: Request, session: SessionDep, agent: CurrentAgent, conversation_id: ConversationId
) -> DraftPublic | JSONResponse:
    try:
        reads.visible_conversation(session, agent, conversation_id)
    except reads.ConversationMerged as exc:
        return _merged(request, "get_draft", exc)
    found = drafts.get(session, agent, conversation_id)
    if found is None:
        return JSONResponse(
            {"error": {"code": "not_found", "message": "you have no draft on this conversation"}},
            status_code=404,
        )
    return _public(found)


@router.put(
    "/conversations/{conversation_id}/draft",
    response_model=DraftPublic,
    summary="Save your draft on a conversation",
    description="Replaces your draft (one per conversation). A draft with no text and no "
    "recipients is deleted: the answer is then 204.\n\n" + MERGED_DESCRIPTION,
    responses={**_RESPONSES, 204: {"description": "Saved empty: there is no draft."}},
)
def put_draft(
    request: Request,
    session: WriteSessionDep,
    agent: CurrentAgent,
    conversation_id: ConversationId,
    body: DraftIn,
) -> DraftPublic | Response:
    try:
        reads.visible_conversation(session, agent, conversation_id)
    except reads.ConversationMerged as exc:
        return _merged(request, "put_draft", exc)
    text, html = body.body, None
    if body.html is not None and body.html.strip():
        html = images.checked_draft_html(session, agent, body.html, field="html")
        text = text if text.strip() else text_alternative(html).rstrip("\n")
    saved = drafts.save(
        session,
        agent,
        conversation_id,
        kind=body.kind,
        body=text,
        to=body.to,
        cc=body.cc,
        html=html,
    )
    if saved is None:
        return Response(status_code=204)
    return _public(saved)


@router.delete(
    "/conversations/{conversation_id}/draft",
    status_code=204,
    summary="Discard your draft on a conversation",
    description="204 whether or not there was one.\n\n" + MERGED_DESCRIPTION,
    responses=_RESPONSES,
)
def delete_draft(
    request: Request, session: WriteSessionDep, agent: CurrentAgent, conversation_id: ConversationId
) -> Response:
    try:
        reads.visible_conversation(session, agent, conversation_id)
    except reads.ConversationMerged as exc:
        return _merged(request, "delete_draft", exc)
    drafts.discard(session, agent, conversation_id)
    return Response(status_code=204)
