"""PostgreSQL databases of their own for tests: IMAPDESK_TEST_PG_URL names a server and a
database user allowed to create databases (scripts/test.sh sets it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get(
    "IMAPDESK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def pg_url(dbname: str) -> str:
    """The URL of database `dbname` on the test server."""
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


@contextmanager
def fresh_pg_database(prefix: str, *, template: str | None = None) -> Iterator[str]:
    """A new database named `prefix` and a random suffix (a copy of `template` when given),
    dropped afterwards even while connections remain; its name."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        )
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
