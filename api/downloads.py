"""File responses shared by the REST API and the web UI."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.responses import FileResponse

from imapdesk.kernel.errors import NotFound
from imapdesk.kernel.models import Attachment
from imapdesk.kernel.settings import Settings

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
# downloads are never rendered by the browser, whatever they claim to be
DOWNLOAD_CSP = "default-src 'none'; sandbox"


def attachment_path(settings: Settings, sha256: str) -> Path:
    return settings.attachments_dir / sha256[:2] / sha256


def attachment_response(settings: Settings, attachment: Attachment) -> FileResponse:
    sha = attachment.sha256.lower()
    path = attachment_path(settings, sha) if _SHA256.match(sha) else None
    if path is None or not path.is_file():
        raise NotFound(
            f"the file of attachment {attachment.id} is missing from the store",
            attachment_id=attachment.id,
        )
    media_type = attachment.content_type.strip().lower()
    if not _MEDIA_TYPE.match(media_type):
        media_type = "application/octet-stream"
    return FileResponse(
        path,
        media_type=media_type,
        filename=attachment.filename or f"attachment-{attachment.id}",
        content_disposition_type="attachment",
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": DOWNLOAD_CSP},
    )
