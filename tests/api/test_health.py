"""/healthz, /readyz, the OpenAPI document and the headers every response carries."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from imapdesk.api.app import create_app
from imapdesk.kernel.db import make_engine, unit_of_work
from imapdesk.kernel.models import FolderState
from imapdesk.kernel.settings import Settings
from tests.support import factories as f


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_reports_each_mailbox(client: TestClient, engine: Engine) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "support")
        f.folder(s, box, "INBOX", state=FolderState.poll)
        f.folder(s, box, "Sent", state=FolderState.error, last_error="NO such folder")
        f.mailbox(s, "quiet")
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert [(m["name"], m["error"]) for m in body["mailboxes"]] == [
        ("quiet", False),
        ("support", True),
    ]
    assert [(x["name"], x["state"], x["error"]) for x in body["mailboxes"][1]["folders"]] == [
        ("INBOX", "poll", False),
        ("Sent", "error", True),
    ]
    # error texts stay behind authentication
    assert "NO such folder" not in r.text


def test_readyz_is_503_when_the_database_is_unreachable(settings: Settings) -> None:
    dead = make_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
    )
    try:
        with TestClient(create_app(settings=settings, engine=dead)) as c:
            r = c.get("/readyz")
            assert r.status_code == 503
            assert r.json()["status"] == "unavailable"
            assert c.get("/healthz").status_code == 200
    finally:
        dead.dispose()


def test_openapi_lists_the_api(client: TestClient) -> None:
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["info"]["title"] == "imapdesk" and doc["info"]["version"]
    paths = doc["paths"]
    for path in (
        "/api/v1/conversations",
        "/api/v1/conversations/{conversation_id}",
        "/api/v1/messages/{message_id}/raw",
        "/api/v1/attachments/{attachment_id}",
        "/api/v1/mailboxes",
        "/healthz",
        "/readyz",
    ):
        assert "get" in paths[path], path
    assert not any(p in paths for p in ("/", "/login", "/logout"))
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    message = doc["components"]["schemas"]["MessagePublic"]["properties"]
    assert "from" in message and "from_" not in message
    mailbox = doc["components"]["schemas"]["MailboxPublic"]["properties"]
    assert not any("password" in name for name in mailbox)
    assert client.get("/docs").status_code == 200


def test_security_headers(client: TestClient) -> None:
    for path in ("/healthz", "/api/v1/conversations", "/login", "/static/style.css"):
        r = client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "no-referrer", path
        assert r.headers["x-frame-options"] == "SAMEORIGIN", path
    page = client.get("/login")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'self'" in csp
    assert "content-security-policy" not in client.get("/healthz").headers
    assert page.headers["cache-control"] == "no-store"
