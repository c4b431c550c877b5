"""GET /api/v1/mailboxes: configuration and sync state, never secrets."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import FolderRole, FolderState
from tests.support import factories as f


def test_mailboxes_with_folder_state_and_no_secrets(api: TestClient, engine: Engine) -> None:
    with unit_of_work(engine) as s:
        support = f.mailbox(
            s, "support", capabilities={"capabilities": ["IMAP4rev1", "IDLE"], "keywords": True},
            last_connected_at=datetime(2024, 5, 1, 8, 0, tzinfo=UTC), smtp_host="smtp.example.com",
            smtp_port=587, smtp_username="support@example.com",
        )  # fmt: skip
        f.folder(
            s, support, "INBOX", watched=True, state=FolderState.poll, uidvalidity=1700000000,
            uidnext=42, highestmodseq=9_000_000_000, message_count=41,
            last_sync_at=datetime(2024, 5, 1, 8, 1, tzinfo=UTC),
        )  # fmt: skip
        f.folder(s, support, "Archive", role=FolderRole.archive, last_error="NO [ALERT]")
        f.mailbox(s, "billing", enabled=False, last_error="authentication failed")

    r = api.get("/api/v1/mailboxes")
    assert r.status_code == 200
    lowered = r.text.lower()
    assert "password" not in lowered and "secret" not in lowered
    assert "ciphertext" not in lowered and "gaaaaa" not in lowered
    body = r.json()
    assert [m["name"] for m in body] == ["billing", "support"]
    billing, sup = body
    assert billing["enabled"] is False and billing["last_error"] == "authentication failed"
    assert billing["folders"] == []
    assert {k: sup[k] for k in ("address", "imap_host", "imap_port", "imap_security")} == {
        "address": "support@example.com",
        "imap_host": "imap.example.com",
        "imap_port": 993,
        "imap_security": "ssl",
    }
    assert sup["capabilities"] == {"capabilities": ["IMAP4rev1", "IDLE"], "keywords": True}
    assert sup["last_connected_at"] == "2024-05-01T08:00:00Z"
    assert [x["name"] for x in sup["folders"]] == ["Archive", "INBOX"]
    assert sup["folders"][1] == {
        "name": "INBOX",
        "role": "inbox",
        "watched": True,
        "state": "poll",
        "uidvalidity": 1700000000,
        "uidnext": 42,
        "highestmodseq": 9_000_000_000,
        "message_count": 41,
        "last_error": None,
        "last_sync_at": "2024-05-01T08:01:00Z",
    }
    assert sup["folders"][0]["last_error"] == "NO [ALERT]"
