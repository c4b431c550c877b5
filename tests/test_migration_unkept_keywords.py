"""Migration 0010: what the write-back recorded in `mailbox.capabilities["keywords_dropped"]`
becomes `unkeptkeyword` rows, on SQLite and on PostgreSQL, and the downgrade drops the table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from alembic import command
from imapdesk.kernel.db import alembic_config
from tests.support.databases import fresh_pg_database, pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    with fresh_pg_database("imapdesk_mig_") as name:
        yield pg_url(name)


def test_recorded_keywords_move_into_their_table(empty_db: str) -> None:
    config = alembic_config(empty_db)
    # a mailbox as 0008 knew it (0009 changes mailboxes too: it takes this row along)
    command.upgrade(config, "0008")
    caps = {
        "keywords": True,
        "keyword_limit": 26,
        "keywords_dropped": [
            {"folder": "INBOX", "keyword": "tag27", "reason": "the folder has 26 keywords, the "
             "server keeps 26", "at": "2026-01-01T00:00:00"},
            {"folder": "INBOX", "keyword": "TAG27", "reason": "not kept by the server"},
            {"folder": "Sent", "keyword": "late", "reason": "not kept by the server"},
            {"folder": "INBOX", "keyword": "x y", "reason": "not an IMAP keyword"},
            "garbage",
        ],
    }  # fmt: skip
    engine = create_engine(empty_db)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO mailbox (name, address, imap_host, imap_port, imap_security, "
                "username, enabled, password_encrypted, from_agent_name, status_after_reply, "
                "watched_folders, capabilities, created_at) VALUES ('support', 'a@example.test', "
                "'localhost', 993, 'ssl', 'a', true, 'x', false, 'pending', '[]', :caps, "
                "CURRENT_TIMESTAMP)"
            ),
            {"caps": json.dumps(caps)},
        )
    command.upgrade(config, "0010")
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT folder, keyword, reason, detail FROM unkeptkeyword ORDER BY id")
        ).all()
        stored = conn.execute(text("SELECT capabilities FROM mailbox")).scalar_one()
    assert [tuple(r) for r in rows] == [
        ("INBOX", "tag27", "limit", "the folder has 26 keywords, the server keeps 26"),
        ("Sent", "late", "not_kept", "not kept by the server"),
        ("INBOX", "x y", "invalid", "not an IMAP keyword"),
    ]
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert stored == {"keywords": True, "keyword_limit": 26}
    command.downgrade(config, "0009")
    assert "unkeptkeyword" not in inspect(engine).get_table_names()
    engine.dispose()
