"""`imapdesk mailbox add ... --auth oauth2` as an admin types it, run as the console program on
SQLite and PostgreSQL against Dovecot's `oauth2` passdb and a local authorization server: with
a refresh token on standard input, with the device code (the command prints where to approve
it and waits), and app-only with client credentials; `imapdesk mailbox list` shows the grant."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update
from sqlmodel import select

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.domain.mailboxes.oauth2 import MailboxTokens
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Mailbox, MailboxOAuth2, OAuth2Grant, OAuth2State, utcnow
from imapdesk.kernel.settings import Settings
from tests.support.corpus import REPO
from tests.support.oauth2 import OAuth2World, oauth2_world, stored_tokens
from tests.support.worker import wait_for


@pytest.fixture(scope="module")
def world() -> Iterator[OAuth2World]:
    with oauth2_world() as started:
        yield started


def _env(db_url: str, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAPDESK_")}
    return env | {"IMAPDESK_DATABASE_URL": db_url, "IMAPDESK_DATA_DIR": str(data), "COLUMNS": "250"}


def _add_args(world: OAuth2World, account: MailAccount, client_id: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "imapdesk", "mailbox", "add", "support",
        "--address", account.user, "--imap-host", "localhost",
        "--imap-port", str(account.imaps_port), "--imap-security", "ssl",
        "--username", account.user, "--ca-file", str(account.ca_file),
        "--auth", "oauth2", "--oauth2-provider", "generic",
        "--oauth2-issuer", world.auth.issuer, "--oauth2-client-id", client_id,
        "--oauth2-scope", "mail", *extra,
    ]  # fmt: skip


def _run(
    args: list[str], db_url: str, data: Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, env=_env(db_url, data), input=stdin, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def _grant(engine: Engine) -> MailboxOAuth2:
    with unit_of_work(engine) as db:
        box = db.exec(select(Mailbox)).first()
        assert box is not None
        row = db.get(MailboxOAuth2, box.id)
        assert row is not None
        db.expunge(row)
        return row


def _logged_in_with_xoauth2(world: OAuth2World, user: str) -> bool:
    return any(
        "Login:" in line and f"user=<{user}>" in line and "method=XOAUTH2" in line
        for line in world.mail.log_tail(100_000).splitlines()
    )


def test_a_refresh_token_on_standard_input(
    world: OAuth2World, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    account = world.mail.create_account()
    client_id, secret = world.client()
    assert secret is not None
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret + "\n")
    given = world.auth.issue(client_id, account.user).refresh_token
    assert given is not None
    added = _run(
        _add_args(
            world, account, client_id,
            "--oauth2-client-secret-file", str(secret_file), "--oauth2-refresh-token-stdin",
        ),
        db_url, tmp_path, stdin=given + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    assert given not in added.stdout + added.stderr and secret not in added.stdout + added.stderr
    row = _grant(engine)
    assert row.state == OAuth2State.connected and row.grant == OAuth2Grant.refresh_token
    assert row.token_endpoint == world.auth.token_url  # discovered from the issuer
    # the refresh token given was used at once and rotated: imapdesk holds the new one
    _, held = stored_tokens(engine, Settings(database_url=db_url), row.mailbox_id)
    assert held != given and world.auth.active_refresh_tokens(account.user) == [held]
    assert _logged_in_with_xoauth2(world, account.user), "the check logged in with the token"
    listed = _run([sys.executable, "-m", "imapdesk", "mailbox", "list"], db_url, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "OAuth2 (generic): connected" in listed.stdout


def test_a_wrong_refresh_token_is_refused_and_nothing_is_saved(
    world: OAuth2World, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    account = world.mail.create_account()
    client_id, _ = world.client(public=True)
    added = _run(
        _add_args(world, account, client_id, "--oauth2-refresh-token-stdin"),
        db_url, tmp_path, stdin="not-a-token\n",
    )  # fmt: skip
    assert added.returncode == 1
    assert "refreshing the access token was refused" in added.stderr
    assert "invalid_grant" in added.stderr
    with unit_of_work(engine) as db:
        assert db.exec(select(Mailbox)).first() is None


def test_the_device_code(world: OAuth2World, db_url: str, engine: Engine, tmp_path: Path) -> None:
    account = world.mail.create_account()
    client_id, _ = world.client(public=True)  # a public client: no secret
    process = subprocess.Popen(
        _add_args(world, account, client_id, "--oauth2-device-code"),
        cwd=REPO, env=_env(db_url, tmp_path), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(process.stderr.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    try:
        shown = wait_for(
            lambda: next((line for line in lines if "enter the code" in line), None),
            timeout=60,
            what="the URL and the code",
        )
        match = re.search(r"open (\S+) and enter the code (\S+)", shown)
        assert match is not None, shown
        assert match.group(1) == f"{world.auth.issuer}/device"
        assert process.poll() is None, "it waits for the approval"
        world.auth.approve_device(match.group(2), account.user)
        assert process.wait(timeout=60) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    row = _grant(engine)
    assert row.state == OAuth2State.connected and row.refresh_token_encrypted
    assert row.client_secret_encrypted is None
    assert _logged_in_with_xoauth2(world, account.user)


def test_app_only_client_credentials(
    world: OAuth2World, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    account = world.mail.create_account()
    client_id, secret = world.client(app_user=account.user)
    assert secret is not None
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret)
    added = _run(
        _add_args(
            world, account, client_id,
            "--oauth2-client-secret-file", str(secret_file), "--oauth2-client-credentials",
        ),
        db_url, tmp_path,
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    row = _grant(engine)
    assert row.grant == OAuth2Grant.client_credentials and row.refresh_token_encrypted is None
    first, _ = stored_tokens(engine, Settings(database_url=db_url), row.mailbox_id)
    # when due, the next token is asked for the same way (there is no refresh token)
    with unit_of_work(engine) as db:
        db.connection().execute(
            update(MailboxOAuth2)
            .where(MailboxOAuth2.mailbox_id == row.mailbox_id)  # type: ignore[arg-type]
            .values(access_token_expires_at=utcnow() - timedelta(seconds=1))
        )
    settings = Settings(database_url=db_url)
    fresh = MailboxTokens.of(engine, row.mailbox_id, settings).access_token()
    assert fresh != first
    assert stored_tokens(engine, settings, row.mailbox_id)[0] == fresh
