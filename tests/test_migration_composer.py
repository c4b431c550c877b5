"""Migration 0020: saved replies' old `{first_name}`-style placeholders (sent literally before)
become the variables of the new syntax, other braces are left alone, and the downgrade writes
them back; on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from alembic import command
from imapdesk.domain.outbound.saved_replies import check_variables
from imapdesk.kernel.db import alembic_config
from tests.support.databases import fresh_pg_database, pg_url

OLD = {
    "Greeting": "Hi {first_name}, this is {agent} from {mailbox} about #{number}.",
    "Plain": "Set the option to {on} or {off}; {not a placeholder} stays.",
}
NEW = {
    "Greeting": (
        "Hi {{ customer.first_name }}, this is {{ agent.name }} from {{ mailbox.name }} "
        "about #{{ conversation.number }}."
    ),
    "Plain": OLD["Plain"],
}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    with fresh_pg_database("imapdesk_mig_") as name:
        yield pg_url(name)


def _bodies(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT name, body FROM savedreply")).all())  # type: ignore[arg-type]
    finally:
        engine.dispose()


def test_old_placeholders_become_variables_and_come_back_on_downgrade(empty_db: str) -> None:
    config = alembic_config(empty_db)
    command.upgrade(config, "0019")
    engine = create_engine(empty_db)
    with engine.begin() as conn:
        for name, body in OLD.items():
            conn.execute(
                text(
                    "INSERT INTO savedreply (name, body, created_at, updated_at) "
                    "VALUES (:n, :b, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"n": name, "b": body},
            )
    engine.dispose()
    command.upgrade(config, "0020")
    assert _bodies(empty_db) == NEW
    check_variables(NEW["Greeting"])  # what it became is a valid saved reply
    engine = create_engine(empty_db)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("draft")}
        assert "html" in columns
        assert "composeimage" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    command.downgrade(config, "0019")
    assert _bodies(empty_db) == OLD
    engine = create_engine(empty_db)
    try:
        assert "composeimage" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
