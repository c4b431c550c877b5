"""Images pasted into the composer and never sent are cleaned up by the worker's housekeeping
(worker/housekeeping.py, imapdesk/domain/outbound/images.py): an old upload that no draft and
no unsent reply shows goes, with its file; one a draft, a scheduled, queued or failed reply
shows stays, however old; a recent one stays; a file whose bytes a message's attachment (or
another upload) also has stays. Both databases."""

from __future__ import annotations

import os
import struct
import zlib
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.outbound import images
from imapdesk.kernel.attachment_store import blob_path, store_blob
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Agent,
    ComposeImage,
    Draft,
    OutboundMail,
    OutboundState,
    utcnow,
)
from imapdesk.kernel.settings import Settings
from imapdesk.worker.housekeeping import Housekeeping
from tests.support import factories


def _png(seed: int) -> bytes:
    """A distinct real PNG for each seed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" + bytes([seed % 256, seed // 256 % 256, 7]))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def _age(path: Path, hours: float) -> None:
    then = (utcnow() - timedelta(hours=hours)).timestamp()
    os.utime(path, (then, then))


def test_old_unreferenced_images_go_with_their_files_and_referenced_ones_stay(
    engine: Engine, settings: Settings
) -> None:
    assert settings.compose_image_max_age_hours == 24
    names = [
        "orphan",
        "in_draft",
        "scheduled",
        "queued",
        "failed",
        "sent",
        "recent",
        "shared",
        "same_bytes",
    ]
    with unit_of_work(engine) as db:
        agent = create_agent(db, "alice@example.com", "Alice", "correct horse battery")
        box = factories.mailbox(db)
        conv = factories.conversation(db, box, "Parcel")
        message = factories.message(db, conv)
        rows: dict[str, ComposeImage] = {}
        for n, name in enumerate(names):
            data = _png(0) if name == "same_bytes" else _png(n)
            rows[name] = images.upload(db, settings, agent, f"{name}.png", data)
        rows["same_bytes"].sha256 = rows["orphan"].sha256  # pasted twice: one file
        ids = {name: row.id for name, row in rows.items()}
        shas = {name: row.sha256 for name, row in rows.items()}
        # the bytes of "shared" are also an attachment of a message (a reply that went out)
        factories.attachment(
            db, message, settings.data_dir, _png(names.index("shared")), "shared.png", "image/png"
        )
        assert agent.id is not None and conv.id is not None
        db.add(
            Draft(
                conversation_id=conv.id,
                agent_id=agent.id,
                body="see the picture",
                html=f'<div>see <img src="/compose/images/{ids["in_draft"]}"></div>',
            )
        )
        for name, state in (
            ("scheduled", OutboundState.scheduled),
            ("queued", OutboundState.queued),
            ("failed", OutboundState.failed),
            ("sent", OutboundState.sent),
        ):
            db.add(
                OutboundMail(
                    mailbox_id=box.id or 0,
                    conversation_id=conv.id,
                    agent_id=agent.id,
                    kind="reply",
                    msgid=f"{name}@example.com",
                    envelope_from="support@example.com",
                    recipients=["carol@customer.example"],
                    raw=b"x",
                    state=state,
                    sent_at=utcnow() if state == OutboundState.sent else None,
                    composed_html=f'<p><img src="/prefix/compose/images/{ids[name]}"></p>',
                )
            )
        old = utcnow() - timedelta(hours=25)
        db.execute(
            update(ComposeImage).where(col(ComposeImage.id) != ids["recent"]).values(created_at=old)
        )
    for name, sha in shas.items():
        if name != "recent":
            _age(blob_path(settings.attachments_dir, sha), 25)

    removed = Housekeeping(engine, settings).run()

    with Session(engine) as db:
        left = {r.id for r in db.exec(select(ComposeImage))}
        assert db.get(Agent, agent.id) is not None
    gone = {"orphan", "sent", "shared", "same_bytes"}
    assert left == {ids[n] for n in names if n not in gone}
    files = {n: blob_path(settings.attachments_dir, shas[n]).exists() for n in names}
    assert not files["orphan"] and not files["sent"]  # their files too
    assert files["shared"]  # a message's attachment has the same bytes
    assert all(files[n] for n in names if n not in gone)
    assert removed == (4, 2)
    # nothing more to do the next time
    assert Housekeeping(engine, settings).run() == (0, 0)


def test_a_file_stored_again_lately_is_kept(engine: Engine, settings: Settings) -> None:
    """The same bytes stored again (an upload or a message being ingested, whose row may not be
    committed yet) touch the file: its old upload's row goes, the file stays."""
    data = _png(99)
    with unit_of_work(engine) as db:
        agent = create_agent(db, "alice@example.com", "Alice", "correct horse battery")
        row = images.upload(db, settings, agent, "x.png", data)
        row.created_at = utcnow() - timedelta(hours=30)
        image_id, sha = row.id, row.sha256
    path = blob_path(settings.attachments_dir, sha)
    _age(path, 30)
    assert store_blob(settings.attachments_dir, data) == sha  # a writer on its way
    assert Housekeeping(engine, settings).run() == (1, 0)
    with Session(engine) as db:
        assert db.get(ComposeImage, image_id) is None
    assert path.read_bytes() == data
