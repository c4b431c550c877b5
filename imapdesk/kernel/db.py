"""Engine and unit of work. Services never commit; the boundary (request, worker step) does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool
from sqlmodel import Session

from imapdesk.kernel import wakeups  # noqa: F401  (its listeners wake the worker after commits)
from imapdesk.kernel.settings import Settings, get_settings


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def pool_options(settings: Settings) -> dict[str, Any]:
    """The connection pool's size, and how long a checkout waits for a connection before it
    raises (sqlalchemy.exc.TimeoutError: a 503 with Retry-After in the API)."""
    return {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_wait_seconds,
    }


def pool_capacity(engine: Engine) -> int:
    """How many connections the engine's pool hands out at most at once."""
    pool = engine.pool
    if isinstance(pool, QueuePool):
        return pool.size() + max(pool._max_overflow, 0)
    return 1


def make_engine(url: str, *, settings: Settings | None = None, **kwargs: Any) -> Engine:
    """An engine for `url`, its pool sized by `settings` (by default the settings' defaults,
    not the environment's: the process-wide engine is `get_engine`)."""
    parsed = make_url(url)
    in_memory = parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")
    if not in_memory:
        for key, value in pool_options(settings or Settings.model_construct()).items():
            kwargs.setdefault(key, value)
    if parsed.get_backend_name() == "sqlite":
        if not in_memory:
            assert parsed.database is not None
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # a pool of connections, as for a server (SQLAlchemy's default for a file)
            kwargs.setdefault("poolclass", QueuePool)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the API read while the worker writes; foreign keys are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A unit of work writes: BEGIN IMMEDIATE takes the write lock up front (waiting
            # for it with busy_timeout), where a deferred read that later writes would fail
            # at once with "database is locked" if another writer committed meanwhile.
            immediate = conn.get_execution_options().get("sqlite_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        # pysqlite's own transaction handling is replaced by the explicit BEGIN above.
        @event.listens_for(engine, "connect", insert=True)
        def _sqlite_autocommit(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    return make_engine(settings.database_url, settings=settings)


@contextmanager
def unit_of_work(engine: Engine | None = None) -> Iterator[Session]:
    """One transaction: commits when the block ends, rolls back if it raises."""
    with Session(engine or get_engine(), expire_on_commit=False) as session:
        try:
            session.connection(execution_options={"sqlite_immediate": True})
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def upgrade_database(url: str | None = None) -> None:
    """Bring the schema to the newest migration (what `imapdesk db upgrade` runs)."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")


def alembic_config(url: str | None = None) -> Any:
    from alembic.config import Config

    # The migrations travel inside the package (imapdesk/migrations, the repository's alembic/).
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent.parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return cfg
