"""Attachments: downloads from the content-addressed store."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from imapdesk.api.deps import CurrentAgent, RowId, SessionDep, SettingsDep
from imapdesk.api.downloads import attachment_response
from imapdesk.api.schemas import ErrorPublic
from imapdesk.domain.conversations import reads

router = APIRouter(prefix="/attachments", tags=["attachments"])


@router.get(
    "/{attachment_id}",
    summary="Download an attachment",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file."},
        404: {"model": ErrorPublic, "description": "No such attachment, or its file is gone."},
    },
)
def download_attachment(
    session: SessionDep,
    settings: SettingsDep,
    agent: CurrentAgent,
    attachment_id: RowId,
) -> FileResponse:
    attachment = reads.get_attachment(session, agent, attachment_id)
    return attachment_response(settings, attachment)
