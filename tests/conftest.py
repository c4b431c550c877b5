"""Shared fixtures: databases built by the real migrations, on SQLite and on PostgreSQL, and a
real Dovecot with a fresh account per test."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient
from sqlalchemy import Engine, create_engine, text

from imapdesk.devtools.mailserver import (
    LocalMailServer,
    LocalMailServerError,
    MailAccount,
    free_port,
    make_base_dir,
)
from imapdesk.kernel.db import make_engine, upgrade_database

REPO = Path(__file__).resolve().parent.parent


def _find_corpus() -> Path:
    """The shared mail corpus (`../shared/corpus` beside the repository). A clone elsewhere (CI
    clones into a temporary directory) finds it beside the repository it was cloned from;
    IMAPDESK_TEST_CORPUS names it outright."""
    candidates = [REPO.parent / "shared" / "corpus"]
    if os.environ.get("IMAPDESK_TEST_CORPUS"):
        candidates.insert(0, Path(os.environ["IMAPDESK_TEST_CORPUS"]))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        origin = subprocess.run(
            ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if origin and Path(origin).is_dir():
            candidates.append(Path(origin).resolve().parent / "shared" / "corpus")
    return next((c for c in candidates if c.is_dir()), candidates[0])


CORPUS = _find_corpus()
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
def _pg_template() -> Iterator[str]:
    # one template per test run, so that runs side by side do not drop each other's
    name = f"{_TEMPLATE_DB}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    upgrade_database(_pg_url(name))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


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


# --- mail server ---------------------------------------------------------------------------


def _start_mailserver(prefix: str, **kwargs: Any) -> tuple[LocalMailServer, Path]:
    """A started LocalMailServer on free ports in a fresh directory (retried on a port race)."""
    last_error: LocalMailServerError | None = None
    for _ in range(3):
        base = make_base_dir(prefix)
        server = LocalMailServer(base, imap_port=free_port(), imaps_port=free_port(), **kwargs)
        try:
            server.start()
        except LocalMailServerError as exc:
            last_error = exc
            shutil.rmtree(base, ignore_errors=True)
            continue
        return server, base
    assert last_error is not None
    raise last_error


def _discard_mailserver(server: LocalMailServer, base: Path) -> None:
    server.stop()
    shutil.rmtree(base, ignore_errors=True)
    if server.run_dir.parent != base:
        shutil.rmtree(server.run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def _mailservers() -> Iterator[list[tuple[LocalMailServer, Path]]]:
    """The run's Dovecots, stopped together at the end (each takes ~3 s to exit)."""
    started: list[tuple[LocalMailServer, Path]] = []
    yield started
    with ThreadPoolExecutor() as pool:
        list(pool.map(lambda entry: _discard_mailserver(*entry), started))


@pytest.fixture(scope="session")
def mailserver(_mailservers: list[tuple[LocalMailServer, Path]]) -> LocalMailServer:
    """One Maildir Dovecot for the whole run (starts in ~0.05 s)."""
    server, base = _start_mailserver("imapdesk-test-mail-")
    _mailservers.append((server, base))
    return server


@pytest.fixture(scope="session")
def mailserver_nocondstore(_mailservers: list[tuple[LocalMailServer, Path]]) -> LocalMailServer:
    """A second Dovecot that hides CONDSTORE and QRESYNC, as Exchange Online does.

    Started only when a test asks for it.
    """
    server, base = _start_mailserver(
        "imapdesk-test-mail-nocs-", trim_capabilities=("CONDSTORE", "QRESYNC")
    )
    _mailservers.append((server, base))
    return server


@pytest.fixture
def mail_account(mailserver: LocalMailServer) -> MailAccount:
    """A fresh user (`box-<hex>@example.test`) with an empty mailbox on `mailserver`."""
    return mailserver.create_account()


@pytest.fixture
def mail_account_nocondstore(mailserver_nocondstore: LocalMailServer) -> MailAccount:
    """A fresh user on the server without CONDSTORE/QRESYNC."""
    return mailserver_nocondstore.create_account()


def imap_client(account: MailAccount, *, ssl: bool = False, starttls: bool = False) -> IMAPClient:
    """A second, independent logged-in client: the colleague on Thunderbird."""
    return account.connect(ssl=ssl, starttls=starttls)


@pytest.fixture
def colleague(mail_account: MailAccount) -> Iterator[IMAPClient]:
    """An independent IMAP session on `mail_account`, logged out after the test."""
    client = imap_client(mail_account)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()
