"""GET /api/v1/messages/{id}/raw and GET /api/v1/attachments/{id}."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.settings import Settings
from tests.support import factories as f

RAW = (
    b"Message-ID: <raw-1@example.com>\r\n"
    b"Subject: =?iso-2022-jp?B?GyRCJUYlOSVIGyhC?=\r\n"
    b"Content-Type: text/plain; charset=latin-1\r\n\r\n"
    b"caf\xe9 \xff\x00 end\r\n"
)


def test_raw_message_is_the_exact_bytes(api: TestClient, engine: Engine) -> None:
    with unit_of_work(engine) as s:
        msg = f.message(s, f.conversation(s, f.mailbox(s)), raw=RAW)
    r = api.get(f"/api/v1/messages/{msg.id}/raw")
    assert r.status_code == 200
    assert r.headers["content-type"] == "message/rfc822"
    assert r.content == RAW
    assert r.headers["content-disposition"].startswith("attachment")
    assert r.headers["x-content-type-options"] == "nosniff"


def test_raw_of_unknown_message_is_404(api: TestClient) -> None:
    r = api.get("/api/v1/messages/424242/raw")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_message_without_a_conversation_is_reachable_through_its_folder(
    api: TestClient, engine: Engine
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        conv = f.conversation(s, box)
        msg = f.message(s, conv, raw=RAW)
        f.location(s, msg, f.folder(s, box), uid=1)
        msg.conversation_id = None
        s.add(msg)
    assert api.get(f"/api/v1/messages/{msg.id}/raw").content == RAW


def test_attachment_download(api: TestClient, engine: Engine, settings: Settings) -> None:
    content = b"%PDF-1.4\n" + bytes(range(256)) * 4
    with unit_of_work(engine) as s:
        msg = f.message(s, f.conversation(s, f.mailbox(s)))
        att = f.attachment(s, msg, settings.data_dir, content, filename="Résumé 2024.pdf")
    r = api.get(f"/api/v1/attachments/{att.id}")
    assert r.status_code == 200
    assert r.content == content
    assert r.headers["content-type"] == "application/pdf"
    disposition = r.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "R%C3%A9sum%C3%A9%202024.pdf" in disposition
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in r.headers["content-security-policy"]


def test_html_attachment_is_a_download_not_a_page(
    api: TestClient, engine: Engine, settings: Settings
) -> None:
    with unit_of_work(engine) as s:
        msg = f.message(s, f.conversation(s, f.mailbox(s)))
        att = f.attachment(
            s, msg, settings.data_dir, b"<script>alert(1)</script>", "x.html", "text/html"
        )
        odd = f.attachment(s, msg, settings.data_dir, b"data", "y.bin", "not a type\r\nX: y")
    r = api.get(f"/api/v1/attachments/{att.id}")
    assert r.headers["content-disposition"].startswith("attachment;")
    assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"
    r = api.get(f"/api/v1/attachments/{odd.id}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"


def test_attachment_whose_file_is_gone_is_404(
    api: TestClient, engine: Engine, settings: Settings
) -> None:
    with unit_of_work(engine) as s:
        msg = f.message(s, f.conversation(s, f.mailbox(s)))
        att = f.attachment(s, msg, settings.data_dir, b"short-lived")
    (settings.attachments_dir / att.sha256[:2] / att.sha256).unlink()
    r = api.get(f"/api/v1/attachments/{att.id}")
    assert r.status_code == 404 and r.json()["error"]["attachment_id"] == att.id
    assert api.get("/api/v1/attachments/999999").status_code == 404
