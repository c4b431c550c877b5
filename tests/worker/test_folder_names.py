"""Folder names per mailbox, on a server that keeps every folder under `INBOX.` (as hosting
providers configure Dovecot, and as Courier and Cyrus do): a folder the server refuses is
named, with the server's words and what to set, in every place that shows a mailbox's sync
health (`imapdesk mailbox list`, `/readyz`, `/api/v1/mailboxes`, the admin page); the rest
of the mailbox syncs, a status that needs the folder fails at once instead of retrying, and a
new setting from the CLI or the admin page is taken by the running worker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from imapclient import IMAPClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.api.app import SESSION_COOKIE, create_app
from imapdesk.devtools.mailserver import MailAccount
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.domain.mailboxes.folders import folder_problems, set_folder_names
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Folder, ImapActionState, Mailbox, PendingImapAction
from imapdesk.kernel.settings import Settings
from tests.support.corpus import REPO
from tests.support.imap import where_on_server
from tests.support.mapping import CONVERSATION, INBOUND, OTHER, places
from tests.support.outbound import conversation_of
from tests.support.web import Page, session_cookie
from tests.support.worker import (
    add_test_mailbox,
    caught_up,
    make_settings,
    running_worker,
    seed_conversation,
    wait_for,
)

TIMEOUT = 45.0
# an admin used to `/` between levels names a folder the `.` server refuses
REFUSED = "Support/Waiting"


def imapdesk(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The real console program, on the test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAPDESK_")}
    env |= {
        "IMAPDESK_DATABASE_URL": settings.database_url or "",
        "IMAPDESK_DATA_DIR": str(settings.data_dir),
        "COLUMNS": "400",
    }
    return subprocess.run(
        [sys.executable, "-m", "imapdesk", *args],
        cwd=REPO, env=env, input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def problems(engine: Engine, mailbox_id: int) -> dict[str, str]:
    with Session(engine) as db:
        box = db.get(Mailbox, mailbox_id)
        assert box is not None
        return {p.role: p.folder for p in folder_problems(box.capabilities)}


def action(engine: Engine, mailbox_id: int) -> PendingImapAction | None:
    """The mailbox's newest outbox row."""
    with Session(engine) as db:
        return db.exec(
            select(PendingImapAction)
            .where(PendingImapAction.mailbox_id == mailbox_id)
            .order_by(col(PendingImapAction.id).desc())
        ).first()


def settled(engine: Engine, mailbox_id: int) -> PendingImapAction | None:
    row = action(engine, mailbox_id)
    return row if row is not None and row.state != ImapActionState.pending else None


def test_a_folder_the_server_refuses_is_named_and_the_rest_of_the_mailbox_syncs(
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    mail_account_prefixed: MailAccount,
    imap_client: Callable[[MailAccount], IMAPClient],
) -> None:
    account = mail_account_prefixed
    settings = make_settings(
        db_url,
        tmp_path / "data",
        writeback_poll_seconds=0.05,
        writeback_retry_initial_seconds=0.1,
        writeback_retry_max_seconds=0.2,
    )
    seed_conversation(account)
    mailbox_id = add_test_mailbox(engine, settings, account)
    with unit_of_work(engine) as db:
        box = db.get(Mailbox, mailbox_id)
        assert box is not None
        set_folder_names(box, {"pending": REFUSED})
        admin = create_agent(db, "admin@example.test", "Ada", "pw", is_admin=True)
        assert admin.id is not None
        admin_id, token = admin.id, create_api_token(db, admin)
    app = create_app(settings=settings, engine=engine)
    api = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    browser = TestClient(app)
    browser.cookies.set(SESSION_COOKIE, session_cookie(settings, engine, admin_id))
    colleague = imap_client(account)
    with running_worker(settings, engine):
        # INBOX, Sent (found by its name: no special-use here) and the folders it could
        # create under the prefix sync; the refused one is named
        for name in ("INBOX", "INBOX.Sent", "INBOX.Archive", "INBOX.Notes", "INBOX.Trash"):
            wait_for(lambda n=name: caught_up(engine, mailbox_id, n), timeout=TIMEOUT, what=name)
        wait_for(
            lambda: problems(engine, mailbox_id) == {"pending": f"INBOX.{REFUSED}"},
            timeout=TIMEOUT,
            what="the refused folder in the mailbox's health",
        )
        wait_for(
            lambda: all(conversation_of(engine, m) for m in (*CONVERSATION, OTHER)),
            timeout=TIMEOUT,
            what="the mail taken in",
        )
        top = {name for _f, _d, name in colleague.list_folders()}
        assert all(n == "INBOX" or n.startswith("INBOX.") for n in top), top

        # `imapdesk mailbox list`: the login worked; what failed and what to set
        listing = imapdesk(settings, "mailbox", "list")
        assert listing.returncode == 0, listing.stderr
        flat = " ".join(listing.stdout.split())
        for words in ("logged in", f"INBOX.{REFUSED}", "must not have '/'", "--pending-folder"):
            assert words in flat, (words, listing.stdout)
        assert "not probed yet" not in flat

        # /readyz: an error and the role, no server words; the REST API has the words
        ready = {m["name"]: m for m in browser.get("/readyz").json()["mailboxes"]}["support"]
        assert (ready["error"], ready["missing_folders"]) == (True, ["pending"])
        assert "must not have" not in str(ready)
        (listed,) = api.get("/api/v1/mailboxes").json()
        assert listed["folder_names"] == {"pending": REFUSED}
        assert "--pending-folder" in listed["folder_problems"][0]

        # the admin page: the problem in the sync health, the setting in its field
        page = browser.get(f"/admin/mailboxes/{mailbox_id}")
        assert page.status_code == 200
        assert "must not have" in Page(page.text).all_text
        assert Page(page.text).inputs["pending_folder"] == REFUSED

        # pending needs the folder: the move fails at once, naming it; closing works
        cid, other = conversation_of(engine, INBOUND[0]), conversation_of(engine, OTHER)
        assert cid is not None and other is not None
        assert api.patch(f"/api/v1/conversations/{cid}", json={"status": "pending"}).is_success
        failed = wait_for(
            lambda: settled(engine, mailbox_id), timeout=TIMEOUT, what="the move decided"
        )
        assert failed.state == ImapActionState.failed and failed.attempts == 1
        assert failed.last_error and f"INBOX.{REFUSED}" in failed.last_error
        assert "--pending-folder" in failed.last_error
        assert api.patch(f"/api/v1/conversations/{other}", json={"status": "closed"}).is_success
        wait_for(
            lambda: places(where_on_server(colleague), OTHER) == ["INBOX.Archive"],
            timeout=TIMEOUT,
            what="the other conversation closed into INBOX.Archive",
        )

        # the admin names a folder the server takes: the running worker connects again,
        # creates it under the prefix, and pending works
        done = imapdesk(settings, "mailbox", "folders", "support", "--pending-folder", "Waiting")
        assert done.returncode == 0, done.stderr
        wait_for(
            lambda: (
                not problems(engine, mailbox_id) and caught_up(engine, mailbox_id, "INBOX.Waiting")
            ),
            timeout=TIMEOUT,
            what="the new pending folder set up",
        )
        assert api.patch(f"/api/v1/conversations/{other}", json={"status": "pending"}).is_success
        wait_for(
            lambda: places(where_on_server(colleague), OTHER) == ["INBOX.Waiting"],
            timeout=TIMEOUT,
            what="the other conversation in INBOX.Waiting",
        )
        shown = imapdesk(settings, "mailbox", "folders", "support")
        flat = " ".join(shown.stdout.replace("│", " ").split())
        assert "Waiting INBOX.Waiting setting" in flat and "INBOX.Sent name" in flat, flat
    with Session(engine) as db:
        roles = {
            f.name: f.role.value
            for f in db.exec(select(Folder).where(Folder.mailbox_id == mailbox_id))
        }
    assert roles["INBOX.Waiting"] == "pending" and roles["INBOX.Sent"] == "sent"


def test_the_admin_form_sets_and_clears_the_folder_of_each_role(
    engine: Engine, db_url: str, tmp_path: Path, mail_account: MailAccount
) -> None:
    settings = make_settings(db_url, tmp_path / "data")
    mailbox_id = add_test_mailbox(engine, settings, mail_account)
    with unit_of_work(engine) as db:
        admin = create_agent(db, "admin@example.test", "Ada", "pw", is_admin=True)
        assert admin.id is not None
        admin_id = admin.id
    browser = TestClient(create_app(settings=settings, engine=engine), follow_redirects=False)
    browser.cookies.set(SESSION_COOKIE, session_cookie(settings, engine, admin_id))
    page = Page(browser.get(f"/admin/mailboxes/{mailbox_id}").text)
    labels = ("pending", "archive", "spam", "trash", "notes", "sent")
    assert {f"{label}_folder" for label in labels} <= set(page.inputs)
    form: dict[str, Any] = {
        "csrf_token": page.inputs["csrf_token"],
        "op": "save",
        "address": mail_account.user,
        "imap_host": "localhost",
        "imap_port": str(mail_account.imaps_port),
        "imap_security": "ssl",
        "username": mail_account.user,
        "ca_file": str(mail_account.ca_file),
        "enabled": "true",
    }
    saved = browser.post(
        f"/admin/mailboxes/{mailbox_id}",
        data=form | {"archive_folder": "Done", "spam_folder": " Spam "},
    )
    assert saved.status_code == 303, saved.text
    with Session(engine) as db:
        box = db.get(Mailbox, mailbox_id)
        assert box is not None and box.folder_names == {"archive": "Done", "junk": "Spam"}
    refused = browser.post(
        f"/admin/mailboxes/{mailbox_id}",
        data=form | {"archive_folder": "Done", "trash_folder": "done"},
    )
    assert refused.status_code == 400
    assert "cannot be both the archive and the trash folder" in Page(refused.text).all_text
    # the connection test says which folder each role would get with the names typed
    tested = browser.post(
        f"/admin/mailboxes/{mailbox_id}", data=form | {"op": "test", "archive_folder": "Done"}
    )
    text = Page(tested.text).all_text
    assert "Connection works" in text, text
    for words in (
        "sent Sent (special-use)",
        "archive Done (as set, to be created)",
        "pending Pending",
    ):
        assert words in text, text
    cleared = browser.post(f"/admin/mailboxes/{mailbox_id}", data=form | {"archive_folder": "Done"})
    assert cleared.status_code == 303
    with Session(engine) as db:
        box = db.get(Mailbox, mailbox_id)
        assert box is not None and box.folder_names == {"archive": "Done"}


def test_mailbox_add_takes_the_folder_of_each_role(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(db_url, tmp_path / "data")
    base = ("mailbox", "add", "help", "--address", "help@example.test", "--imap-host")
    base += ("mail.example.test", "--username", "help", "--password-stdin", "--no-check")
    refused = imapdesk(settings, *base, "--trash-folder", "INBOX", stdin="secret\n")
    assert refused.returncode != 0
    assert "INBOX cannot be the trash folder" in refused.stdout + refused.stderr
    added = imapdesk(
        settings, *base, "--archive-folder", "INBOX.Done", "--spam-folder", "Spam", stdin="secret\n"
    )
    assert added.returncode == 0, added.stdout + added.stderr
    with Session(engine) as db:
        box = db.exec(select(Mailbox).where(Mailbox.name == "help")).one()
        assert box.folder_names == {"archive": "INBOX.Done", "junk": "Spam"}
