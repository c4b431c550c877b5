"""Shared fixtures: databases built by the real migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from core.db import make_engine, upgrade_database

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
PG_ADMIN_URL = os.environ.get(
    "IMAPDESK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
_TEMPLATE_DB = "imapdesk_test_template"


def _pg_url(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dbtemplate") / "template.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _pg_template() -> str:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {_TEMPLATE_DB} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {_TEMPLATE_DB}"))
    admin.dispose()
    upgrade_database(_pg_url(_TEMPLATE_DB))
    return _TEMPLATE_DB


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database at the newest migration, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        template = request.getfixturevalue("_sqlite_template")
        path = tmp_path / "imapdesk.db"
        shutil.copy(template, path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("_pg_template")
    name = f"imapdesk_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE {template}"))
    try:
        yield _pg_url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()
