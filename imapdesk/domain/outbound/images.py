"""Images pasted or dropped into the composer.

The page uploads each one at once (`POST /compose/images`, the agent's session and CSRF
token); it is stored as a blob (`imapdesk.kernel.attachment_store`) with a `ComposeImage`
row that only its agent can read back (`/compose/images/<id>`, which the editor and the
draft's HTML show). When the reply is queued, every upload its HTML shows becomes an inline
part of the message (`multipart/related`) referenced by `cid:` (`inline_parts`).

Only images a mail client shows are taken (PNG, JPEG, GIF, WebP), checked by their first bytes
as well as by what the browser said; each at most `Settings.max_compose_image_bytes`.

An image pasted and never sent (the draft discarded, the tab closed) is removed by the worker's
housekeeping (`worker/housekeeping.py`) once it is `Settings.compose_image_max_age_hours` old
and no draft and no unsent reply shows it (`prune`); its file goes too unless other rows (an
attachment of a message, another upload of the same bytes) still use it (`remove_unused_blob`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, col, select

from imapdesk.kernel.attachment_store import blob_path, store_blob
from imapdesk.kernel.errors import InvalidInput, NotFound
from imapdesk.kernel.models import (
    Agent,
    Attachment,
    ComposeImage,
    Draft,
    OutboundMail,
    OutboundState,
    utcnow,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail.compose import InlineImage, new_msgid
from imapdesk.mail.compose_html import cid_references, sanitize_composed, uploaded_image_ids

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


def image_type(data: bytes) -> str | None:
    """The type of an image a mail client shows, by its first bytes; None for anything else."""
    return _sniffed(data)


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


def checked_draft_html(session: Session, agent: Agent, html: str, *, field: str) -> str:
    """A draft's HTML given through the API, sanitised as the composer's is when sent;
    InvalidInput naming `field` when it shows an image that is not one of the agent's uploads,
    or a `cid:` (a draft holds no files for one to name)."""
    clean = sanitize_composed(html)
    refs = cid_references(clean)
    if refs:
        raise InvalidInput(
            f"the HTML shows cid:{refs[0]}, which a draft cannot hold (it has no files): show "
            "a pasted image by its /compose/images/<id> address",
            field=field,
        )
    ids = uploaded_image_ids(clean)
    if ids:
        own = set(
            session.exec(
                select(ComposeImage.id).where(
                    col(ComposeImage.id).in_(ids), col(ComposeImage.agent_id) == agent.id
                )
            )
        )
        missing = [i for i in ids if i not in own]
        if missing:
            raise InvalidInput(
                f"the HTML shows image {missing[0]}, which is not one you pasted", field=field
            )
    return clean


def read(settings: Settings, image: ComposeImage) -> bytes:
    return blob_path(settings.attachments_dir, image.sha256).read_bytes()


def inline_parts(
    session: Session,
    settings: Settings,
    agent: Agent,
    image_ids: Sequence[int],
    *,
    domain_of: str,
    field: str = "body",
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
                field=field,
            )
        cid = new_msgid(domain_of)
        cids[image_id] = cid
        parts.append(InlineImage(cid, row.content_type, read(settings, row), row.filename))
    return cids, parts


# --- housekeeping: images pasted and never sent ------------------------------------------------

# any mention of an upload's address counts (a draft's HTML is kept as the editor wrote it)
_MENTION = re.compile(r"compose/images/(\d{1,18})")
PRUNE_BATCH = 500


def mentioned_ids(texts: Iterable[str | None]) -> set[int]:
    """The uploads these HTML texts show (or mention at all)."""
    return {int(m) for text in texts if text for m in _MENTION.findall(text)}


def still_shown(session: Session) -> set[int]:
    """The uploads a draft or an unsent reply (scheduled, queued, sending, failed: Undo, Edit
    and resend put its HTML back in the editor) still shows."""
    drafts = session.exec(select(Draft.html).where(col(Draft.html).is_not(None)))
    unsent = session.exec(
        select(OutboundMail.composed_html).where(
            col(OutboundMail.composed_html).is_not(None),
            col(OutboundMail.sent_at).is_(None),
            col(OutboundMail.state) != OutboundState.sent,
        )
    )
    return mentioned_ids([*drafts, *unsent])


def prune(
    session: Session, settings: Settings, *, now: datetime | None = None, limit: int = PRUNE_BATCH
) -> list[str]:
    """Delete the uploads older than `compose_image_max_age_hours` that no draft and no unsent
    reply shows (at most `limit`, oldest first); the digest of the file of each one deleted,
    for `remove_unused_blob` once this transaction is committed."""
    cutoff = (now or utcnow()) - timedelta(hours=settings.compose_image_max_age_hours)
    kept = still_shown(session)
    old = session.exec(
        select(ComposeImage.id, ComposeImage.sha256)
        .where(col(ComposeImage.created_at) < cutoff)
        .order_by(col(ComposeImage.created_at), col(ComposeImage.id))
    )
    gone: list[tuple[int, str]] = []
    for image_id, sha256 in old:
        if image_id is not None and image_id not in kept:
            gone.append((image_id, sha256))
            if len(gone) >= limit:
                break
    if not gone:
        return []
    session.execute(delete(ComposeImage).where(col(ComposeImage.id).in_([i for i, _ in gone])))
    return [sha for _, sha in gone]


def _blob_used(session: Session, sha256: str) -> bool:
    upload = select(ComposeImage.id).where(col(ComposeImage.sha256) == sha256).limit(1)
    attachment = select(Attachment.id).where(col(Attachment.sha256) == sha256).limit(1)
    return session.exec(upload).first() is not None or session.exec(attachment).first() is not None


def remove_unused_blob(
    session: Session, settings: Settings, sha256: str, *, now: datetime | None = None
) -> bool:
    """Remove the file of a pruned upload when no row uses those bytes (the store is shared
    with attachments, by content) and nothing stored them lately (`store_blob` touches a file
    it finds already there); whether it was removed. Should a row that uses them be committed
    meanwhile, the file is put back. `session` only reads; it is rolled back between looks."""
    path = blob_path(settings.attachments_dir, sha256)
    cutoff = (now or utcnow()) - timedelta(hours=settings.compose_image_max_age_hours)
    try:
        if _blob_used(session, sha256):
            return False
        if datetime.fromtimestamp(path.stat().st_mtime, cutoff.tzinfo) >= cutoff:
            return False  # the same bytes were stored lately: a row for them may be on its way
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    finally:
        session.rollback()
    path.unlink(missing_ok=True)
    if _blob_used(session, sha256):  # committed since the first look: the bytes come back
        store_blob(settings.attachments_dir, data)
        session.rollback()
        return False
    session.rollback()
    return True
