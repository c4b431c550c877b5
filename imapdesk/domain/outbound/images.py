"""Images pasted or dropped into the composer.

The page uploads each one at once (`POST /compose/images`, the agent's session and CSRF
token); it is stored as a blob (`imapdesk.kernel.attachment_store`) with a `ComposeImage`
row that only its agent can read back (`/compose/images/<id>`, which the editor and the
draft's HTML show). When the reply is queued, every upload its HTML shows becomes an inline
part of the message (`multipart/related`) referenced by `cid:` (`inline_parts`).

Only images a mail client shows are taken (PNG, JPEG, GIF, WebP), checked by their first bytes
as well as by what the browser said; each at most `Settings.max_compose_image_bytes`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from imapdesk.kernel.attachment_store import blob_path, store_blob
from imapdesk.kernel.errors import InvalidInput, NotFound
from imapdesk.kernel.models import Agent, ComposeImage
from imapdesk.kernel.settings import Settings
from imapdesk.mail.compose import InlineImage, new_msgid

_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
_EXTENSION = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}


def _sniffed(data: bytes) -> str | None:
    for ctype, magics in _MAGIC.items():
        if any(data.startswith(m) for m in magics):
            if ctype == "image/webp" and data[8:12] != b"WEBP":
                continue
            return ctype
    return None


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")


def upload(
    session: Session, settings: Settings, agent: Agent, filename: str, data: bytes
) -> ComposeImage:
    """Store an image the agent pasted; InvalidInput (field `image`) saying why when it is
    too large or not an image a mail client shows."""
    assert agent.id is not None
    limit = settings.max_compose_image_bytes
    if len(data) > limit:
        raise InvalidInput(
            f"the image has {_mb(len(data))}, more than the {_mb(limit)} an image in a reply "
            "may have: make it smaller, or attach it as a file",
            field="image",
        )
    ctype = _sniffed(data)
    if ctype is None:
        raise InvalidInput(
            "that is not a PNG, JPEG, GIF or WebP image, which is what can be pasted into a "
            "reply; attach other files instead",
            field="image",
        )
    name = (filename or "").strip().replace("/", "_").replace("\\", "_")[:200]
    if not name or name.lower() in ("image", "image.png", "blob"):
        name = f"image.{_EXTENSION[ctype]}"
    row = ComposeImage(
        agent_id=agent.id,
        filename=name,
        content_type=ctype,
        size=len(data),
        sha256=store_blob(settings.attachments_dir, data),
    )
    session.add(row)
    session.flush()
    return row


def own_image(session: Session, agent: Agent, image_id: int) -> ComposeImage:
    """The agent's own upload (NotFound for anyone else's: an id says nothing)."""
    row = session.get(ComposeImage, image_id)
    if row is None or row.agent_id != agent.id:
        raise NotFound(f"no image {image_id}")
    return row


def read(settings: Settings, image: ComposeImage) -> bytes:
    return blob_path(settings.attachments_dir, image.sha256).read_bytes()


def inline_parts(
    session: Session,
    settings: Settings,
    agent: Agent,
    image_ids: Sequence[int],
    *,
    domain_of: str,
) -> tuple[dict[int, str], list[InlineImage]]:
    """The Content-ID of each upload shown, and the inline parts; InvalidInput when the HTML
    shows an image that is not the agent's upload (one of another agent, or gone)."""
    if not image_ids:
        return {}, []
    rows = session.exec(
        select(ComposeImage).where(
            col(ComposeImage.id).in_(list(image_ids)), col(ComposeImage.agent_id) == agent.id
        )
    ).all()
    found = {r.id: r for r in rows}
    cids: dict[int, str] = {}
    parts: list[InlineImage] = []
    for image_id in image_ids:
        row = found.get(image_id)
        if row is None:
            raise InvalidInput(
                f"the text shows image {image_id}, which is not one you pasted: paste it again",
                field="body",
            )
        cid = new_msgid(domain_of)
        cids[image_id] = cid
        parts.append(InlineImage(cid, row.content_type, read(settings, row), row.filename))
    return cids, parts
