from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from imapdesk.cli.app import app
from imapdesk.domain.mailboxes.capabilities import plain_client_notes
from imapdesk.domain.mailboxes.config import add_mailbox
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import ImapSecurity, KeywordRefusal, Mailbox, UnkeptKeyword
from imapdesk.kernel.settings import Settings, get_settings

DOVECOT_MAILDIR = {
    "capabilities": ["IMAP4REV1", "IDLE", "CONDSTORE", "MOVE"],
    "idle": True,
    "condstore": True,
    "move": True,
    "permanent_flags": ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\*"],
    "keywords": True,
    "keyword_limit": 26,
    "keyword_limit_basis": "Dovecot on Maildir",
}
TAG27 = UnkeptKeyword(
    mailbox_id=1,
    folder="INBOX",
    keyword="tag27",
    reason=KeywordRefusal.limit,
    detail="the folder has 26 distinct keywords; the server keeps 26",
)
CYRUS_FULL = {
    "capabilities": ["IMAP4REV1", "IDLE", "CONDSTORE"],
    "idle": True,
    "condstore": True,
    # a folder that takes no new keywords lists those it keeps, without \*
    "permanent_flags": ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "kw1", "kw2"],
    "keyword_limit": 100,
}
EXCHANGE = {
    "capabilities": ["IMAP4REV1", "IDLE", "MOVE"],
    "idle": True,
    "move": True,
    "permanent_flags": ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"],
    "keywords": False,
}


def test_notes_say_what_plain_clients_will_see() -> None:
    notes = plain_client_notes(DOVECOT_MAILDIR, [TAG27])
    assert any("at most 26 distinct keywords per folder (Dovecot on Maildir)" in n for n in notes)
    assert any("tag27 in INBOX" in n and "imapdesk only" in n for n in notes)
    assert not any("tag27" in n for n in plain_client_notes(DOVECOT_MAILDIR))
    cyrus = plain_client_notes(CYRUS_FULL)
    assert any("at most 100 distinct keywords" in n for n in cyrus)
    assert not any("keeps no custom keywords" in n for n in cyrus)
    unlimited = plain_client_notes({**DOVECOT_MAILDIR, "keyword_limit": "unlimited"})
    assert any("keeps any number of keywords" in n for n in unlimited)
    unknown = plain_client_notes({**DOVECOT_MAILDIR, "keyword_limit": None})
    assert any("not known: each is read back" in n for n in unknown)
    exchange = plain_client_notes(EXCHANGE)
    assert any("keeps no custom keywords" in n for n in exchange)
    assert any("no CONDSTORE" in n for n in exchange)
    assert plain_client_notes({}) == [
        "not probed yet: the worker has not connected to this mailbox"
    ]


def test_mailbox_list_and_api_show_the_limits(
    db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from imapdesk.api.app import create_app
    from imapdesk.domain.accounts.agents import create_agent, create_api_token

    settings = Settings(database_url=db_url, data_dir=tmp_path)
    with unit_of_work(engine) as db:
        mb = add_mailbox(
            db,
            settings,
            name="support",
            address="support@example.test",
            imap_host="localhost",
            imap_port=993,
            imap_security=ImapSecurity.ssl,
            username="support",
            password="secret-pw",
        )
        mb.capabilities = DOVECOT_MAILDIR
        assert mb.id is not None
        db.add(
            UnkeptKeyword(
                mailbox_id=mb.id,
                folder="INBOX",
                keyword="tag27",
                reason=KeywordRefusal.limit,
                detail="the folder has 26 distinct keywords; the server keeps 26",
            )
        )
        token = create_api_token(
            db, create_agent(db, email="a@example.test", name="A", password="pw-a-12345")
        )
    monkeypatch.setenv("IMAPDESK_DATABASE_URL", db_url)
    monkeypatch.setenv("IMAPDESK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    from imapdesk.kernel.db import get_engine

    get_engine.cache_clear()
    try:
        result = CliRunner().invoke(app, ["mailbox", "list"], env={"COLUMNS": "250"})
    finally:
        get_settings.cache_clear()
        get_engine.cache_clear()
    assert result.exit_code == 0, result.output
    assert "at most 26 distinct" in result.output and "tag27" in result.output
    assert "secret-pw" not in result.output
    client = TestClient(create_app(settings=settings, engine=engine))
    body = client.get("/api/v1/mailboxes", headers={"Authorization": f"Bearer {token}"}).json()
    (box,) = body["items"] if isinstance(body, dict) else body
    assert any("tag27" in n for n in box["plain_clients"])
    (kept,) = box["keywords_not_kept"]
    assert kept["keyword"] == "tag27" and kept["folder"] == "INBOX" and kept["reason"] == "limit"
    assert kept["detail"] == "the folder has 26 distinct keywords; the server keeps 26"
    ready = client.get("/readyz").json()
    assert ready["mailboxes"][0]["keywords_kept"] is True
    assert ready["mailboxes"][0]["keyword_limit"] == 26
    # which keyword (a tag, an agent's handle) only behind authentication
    assert ready["mailboxes"][0]["keywords_not_kept"] == 1
    assert "tag27" not in str(ready)
    with unit_of_work(engine) as db:
        assert db.get(Mailbox, mb.id) is not None
