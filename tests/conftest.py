"""Shared fixtures: databases built by the real migrations, on SQLite and on PostgreSQL, and a
real Dovecot with a fresh account per test."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient
from sqlalchemy import Engine

from imapdesk.devtools.mailserver import (
    LocalMailServer,
    LocalMailServerError,
    MailAccount,
    free_port,
    make_base_dir,
)
from imapdesk.kernel.db import make_engine, upgrade_database
from tests.support.databases import fresh_pg_database, pg_url
from tests.support.imap import imap_client
from tests.support.other_servers import OtherImapServer, running_server


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dbtemplate") / "template.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _pg_template() -> Iterator[str]:
    # one template per test run, so that runs side by side do not drop each other's
    with fresh_pg_database("imapdesk_test_template_") as name:
        upgrade_database(pg_url(name))
        yield name


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
    with fresh_pg_database("imapdesk_t_", template=template) as name:
        yield pg_url(name)


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
    """A second Dovecot that hides CONDSTORE, QRESYNC and MOVE, as Exchange Online hides the
    first two and older servers the third: flag changes are found by rescans, and moves are
    COPY, \\Deleted and UID EXPUNGE.

    Started only when a test asks for it.
    """
    server, base = _start_mailserver(
        "imapdesk-test-mail-nocs-", trim_capabilities=("CONDSTORE", "QRESYNC", "MOVE")
    )
    _mailservers.append((server, base))
    return server


@pytest.fixture(scope="session")
def mailserver_prefixed(_mailservers: list[tuple[LocalMailServer, Path]]) -> LocalMailServer:
    """A Dovecot configured as hosting providers do: every folder under the personal
    namespace's prefix `INBOX.` with `.` between levels (a folder outside it is refused, as on
    Courier and Cyrus), and no special-use attributes: `INBOX.Sent`, `INBOX.Trash` are known
    by their names only.

    Started only when a test asks for it.
    """
    server, base = _start_mailserver(
        "imapdesk-test-mail-pfx-", namespace_prefix="INBOX.", separator=".", special_use=False
    )
    _mailservers.append((server, base))
    return server


@pytest.fixture(scope="session")
def mailserver_limited(_mailservers: list[tuple[LocalMailServer, Path]]) -> LocalMailServer:
    """A Dovecot with its own default limit of 10 connections per user and client address
    (`mail_max_userip_connections`), as hosting providers keep it.

    Started only when a test asks for it.
    """
    server, base = _start_mailserver("imapdesk-test-mail-lim-", max_userip_connections=10)
    _mailservers.append((server, base))
    return server


@pytest.fixture(scope="session")
def mailserver_nonotify(_mailservers: list[tuple[LocalMailServer, Path]]) -> LocalMailServer:
    """A Dovecot without NOTIFY, as most servers are: new mail is heard by IDLE on INBOX.

    Started only when a test asks for it.
    """
    server, base = _start_mailserver("imapdesk-test-mail-nonf-", trim_capabilities=("NOTIFY",))
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


@pytest.fixture
def mail_account_prefixed(mailserver_prefixed: LocalMailServer) -> MailAccount:
    """A fresh user on the server with the `INBOX.` prefix and no special-use attributes."""
    return mailserver_prefixed.create_account()


@pytest.fixture(scope="session")
def cyrus_server() -> Iterator[OtherImapServer]:
    """Cyrus IMAP 3.6 from Debian's packages (tests/support/other_servers.py): every folder
    under `INBOX.` with `.` between levels, special-use folders, IDLE that polls every 60 s,
    at most 100 keywords created per folder by clients. Started only when a test asks."""
    with running_server("cyrus") as server:
        yield server


@pytest.fixture(scope="session")
def courier_server() -> Iterator[OtherImapServer]:
    """Courier-IMAP 5 from Debian's packages: Maildir++ under `INBOX.` with `.`, no
    SPECIAL-USE, MOVE or CONDSTORE, IDLE that polls every 60 s. Started only when asked."""
    with running_server("courier") as server:
        yield server


@pytest.fixture
def cyrus_account(cyrus_server: OtherImapServer) -> MailAccount:
    """A fresh user (`box-<hex>@example.test`) on `cyrus_server`."""
    return cyrus_server.create_account()


@pytest.fixture
def courier_account(courier_server: OtherImapServer) -> MailAccount:
    """A fresh user (`box-<hex>@example.test`) on `courier_server`."""
    return courier_server.create_account()


@pytest.fixture
def colleague(mail_account: MailAccount) -> Iterator[IMAPClient]:
    """An independent IMAP session on `mail_account`, logged out after the test."""
    client = imap_client(mail_account)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()
