"""Migration 0023 on SQLite and PostgreSQL: existing SLA policies pause while pending, and a
time-based rule's existing firing keeps counting for the episode it fired in (its `fired_at`
becomes its `episode_at`, now part of the key); the downgrade keeps the newest firing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

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


FIRED = "2026-12-01 10:00:00"


def test_policies_pause_and_firings_keep_their_episode(empty_db: str) -> None:
    config = alembic_config(empty_db)
    command.upgrade(config, "0022")
    engine = create_engine(empty_db)
    with engine.begin() as conn:
        for statement in (
            "INSERT INTO mailbox (id, name, address, imap_host, imap_port, imap_security, "
            "username, enabled, password_encrypted, created_at) VALUES (1, 'support', "
            "'a@example.test', 'localhost', 993, 'ssl', 'a', false, 'x', CURRENT_TIMESTAMP)",
            "INSERT INTO conversation (id, mailbox_id, subject, subject_key, status, claimed, "
            "message_count, unread, created_at, updated_at, version) VALUES (1, 1, 's', 's', "
            "'pending', false, 1, false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)",
            "INSERT INTO rule (id, name, position, enabled, trigger, trigger_amount, match, "
            "stop, created_at, updated_at) VALUES (1, 'Chase', 1, true, 'time.pending', 2, "
            "'all', false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            f"INSERT INTO rulefiring (rule_id, conversation_id, fired_at) VALUES (1, 1, '{FIRED}')",
            "INSERT INTO slapolicy (id, name, scope, mailbox_id, warning_minutes, enabled, "
            "resolution_minutes, created_at, updated_at) VALUES (1, 'Support', 'mailbox', 1, "
            "30, true, 60, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        ):
            conn.execute(text(statement))
    command.upgrade(config, "0023")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pause_when_pending FROM slapolicy")).scalar_one()
        fired_at, episode_at = conn.execute(
            text("SELECT fired_at, episode_at FROM rulefiring")
        ).one()
        assert episode_at == fired_at
    keys = inspect(engine).get_pk_constraint("rulefiring")["constrained_columns"]
    assert keys == ["rule_id", "conversation_id", "episode_at"]
    assert [i["name"] for i in inspect(engine).get_indexes("rulefiring")] == [
        "ix_rulefiring_conversation_id"
    ]
    # a second episode may fire; the same episode twice may not
    insert = text(
        "INSERT INTO rulefiring (rule_id, conversation_id, episode_at, fired_at) "
        "VALUES (1, 1, :e, CURRENT_TIMESTAMP)"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"e": "2026-12-03 09:00:00"})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"e": "2026-12-03 09:00:00"})

    command.downgrade(config, "0022")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM rulefiring")).scalar_one() == 1
    assert "episode_at" not in {c["name"] for c in inspect(engine).get_columns("rulefiring")}
    assert "pause_when_pending" not in {c["name"] for c in inspect(engine).get_columns("slapolicy")}
    engine.dispose()
