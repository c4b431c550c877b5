"""Outgoing mail that has not gone out: send a failed one again, or take one back (undo during
its window, discard once it failed). Thin: the rules live in
`imapdesk.domain.outbound.actions`; authorised like the conversation (404 otherwise)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from imapdesk.api.deps import MAX_ROW_ID, CurrentAgent, WriteSessionDep
from imapdesk.api.schemas import ErrorPublic, OutboundPublic, outbound_public
from imapdesk.domain.outbound import actions
from imapdesk.kernel.models import ActivitySource

router = APIRouter(tags=["replies"])

OutboundId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="The outgoing message's id.")]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "No such outgoing message (or not yours to see)."},
    409: {
        "model": ErrorPublic,
        "description": "Its state does not allow it (code `delivery_state_conflict`, with "
        "`state`): it is being sent or was sent, or (retry) it has not failed.",
    },
}


class TakenBackPublic(BaseModel):
    """What was written, to open in a composer again; nothing of it was sent."""

    id: int
    conversation_id: int | None = Field(
        description="Null when the conversation went with it (a new one that held nothing else)."
    )
    kind: str = Field(description="reply, reply_all, forward or new.")
    to: list[str]
    cc: list[str]
    body: str = Field(description="The text as it was typed (without the signatures).")
    html: str | None


@router.post(
    "/outbound/{outbound_id}/retry",
    response_model=OutboundPublic,
    summary="Send a failed message again",
    description="After the cause was fixed (the server's settings, its policy): queued again, "
    "its attempts counted from zero; `delivery` shows how it goes. Only for a message whose "
    "`delivery.state` is `failed`.",
    responses=_RESPONSES,
)
def retry_outbound(
    session: WriteSessionDep, agent: CurrentAgent, outbound_id: OutboundId
) -> OutboundPublic:
    mail = actions.retry(session, agent, outbound_id, source=ActivitySource.api)
    return outbound_public(mail)


@router.post(
    "/outbound/{outbound_id}/cancel",
    response_model=TakenBackPublic,
    summary="Take a message back (undo, or discard)",
    description="Undo during its undo window (`scheduled`), or discard it while it waits "
    "(`queued`) or after it failed: it leaves the conversation and is never sent. The answer "
    "holds what was written, for a composer to open again; an undo also keeps it as your "
    "draft on the conversation (`GET /api/v1/conversations/{id}/draft`). 409 once a sender "
    "has it.",
    responses=_RESPONSES,
)
def cancel_outbound(
    session: WriteSessionDep, agent: CurrentAgent, outbound_id: OutboundId
) -> TakenBackPublic:
    taken = actions.take_back(session, agent, outbound_id, source=ActivitySource.api)
    return TakenBackPublic(
        id=taken.outbound_id,
        conversation_id=taken.conversation_id,
        kind=taken.kind,
        to=taken.to,
        cc=taken.cc,
        body=taken.body,
        html=taken.html,
    )
