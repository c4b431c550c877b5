"""Messages: the raw RFC 5322 source."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from imapdesk.api.deps import CurrentAgent, RowId, SessionDep
from imapdesk.api.schemas import ErrorPublic
from imapdesk.domain.conversations import reads

router = APIRouter(prefix="/messages", tags=["messages"])


@router.get(
    "/{message_id}/raw",
    summary="The message as fetched from the server (RFC 5322 bytes)",
    response_class=Response,
    responses={
        200: {"content": {"message/rfc822": {}}, "description": "The raw message."},
        404: {"model": ErrorPublic, "description": "No such message, or no raw source stored."},
    },
)
def get_raw_message(session: SessionDep, agent: CurrentAgent, message_id: RowId) -> Response:
    data = reads.get_raw_message(session, agent, message_id)
    return Response(
        content=data,
        media_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="message-{message_id}.eml"'},
    )
