"""Push that keeps its promise: no news is lost between catching up and listening again, and a
server whose IDLE tells late is polled instead.

Each race is forced, not timed: a change is made exactly where it would go untold (between the
NOOP before an IDLE and the IDLE; during a catch-up), through hooks in the folder sync, with
every periodic look (IDLE refresh, folder checks, STATUS polls, flag rescans) an hour away.
Whatever reaches the database in the test's bounded wait was heard, not found later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.kernel.models import (
    Activity,
    Conversation,
    Folder,
    Mailbox,
    Message,
    MessageLocation,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import ImapSession
from imapdesk.mail.imap.push import PROBE_FOLDER
from imapdesk.worker.connections import Mode
from imapdesk.worker.folder_sync import FolderSync
from imapdesk.worker.mailbox_sync import PushListener, push_mode_for
from tests.support.mail import message_with_id
from tests.support.mapping import move_as_client
from tests.support.worker import (
    add_test_mailbox,
    caught_up,
    make_settings,
    running_worker,
    seed_conversation,
    wait_for,
)

HOUR = 3600.0
FOLLOWED = ("INBOX", "Sent", "Archive", "Junk", "Trash", "Pending", "Notes")
OTHER = "m9@example.com"  # seeded alone in its conversation, in INBOX


def quiet_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Nothing looks at a folder on a timer within the test: only what is heard is taken in."""
    values: dict[str, Any] = {
        "idle_refresh_seconds": HOUR,
        "folder_check_seconds": HOUR,
        "folder_poll_seconds": HOUR,
        "flag_rescan_seconds": HOUR,
    }
    values.update(overrides)
    return make_settings(db_url, tmp_path / "data", **values)


def mail(msgid: str) -> bytes:
    return message_with_id(msgid, subject=f"About {msgid}")


def has_message(engine: Engine, msgid: str) -> bool:
    with Session(engine) as db:
        return db.exec(select(Message.id).where(Message.message_id == msgid)).first() is not None


def flags_in_inbox(engine: Engine, msgid: str) -> list[str]:
    with Session(engine) as db:
        found = db.exec(
            select(MessageLocation.flags)
            .join(Message, col(Message.id) == col(MessageLocation.message_id))
            .join(Folder, col(Folder.id) == col(MessageLocation.folder_id))
            .where(Message.message_id == msgid, Folder.name == "INBOX")
        ).first()
        return list(found or [])


def capabilities(engine: Engine, mailbox_id: int) -> dict[str, Any]:
    with Session(engine) as db:
        mailbox = db.get(Mailbox, mailbox_id)
        assert mailbox is not None
        return dict(mailbox.capabilities or {})


def inbox_uid(colleague: IMAPClient, msgid: str) -> int:
    colleague.select_folder("INBOX")
    (uid,) = colleague.search(["HEADER", "Message-ID", f"<{msgid}>"])
    return int(uid)


class Trap:
    """A change to make once, from the worker's thread, the next time the hook is reached."""

    def __init__(self) -> None:
        self.armed = threading.Event()
        self.sprung = threading.Event()
        self.change: Callable[[], None] = lambda: None

    def arm(self, change: Callable[[], None]) -> None:
        self.change = change
        self.sprung.clear()
        self.armed.set()

    def spring(self) -> None:
        if self.armed.is_set():
            self.armed.clear()
            self.change()
            self.sprung.set()


# -- how mail is heard ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "capabilities_", "push", "mode"),
    [
        ("auto", ["IDLE", "NOTIFY"], {}, Mode.NOTIFY),
        ("auto", ["IDLE"], {}, Mode.IDLE),
        ("auto", [], {}, Mode.POLL),
        ("auto", ["IDLE"], {"mechanism": "idle", "delay_ms": 30000, "lazy": True}, Mode.POLL),
        ("auto", ["IDLE", "NOTIFY"], {"mechanism": "idle", "lazy": False}, Mode.NOTIFY),
        ("idle", ["IDLE", "NOTIFY"], {}, Mode.IDLE),
        ("notify", ["IDLE"], {}, Mode.IDLE),
        ("poll", ["IDLE", "NOTIFY"], {}, Mode.POLL),
        ("idle", ["IDLE"], {"lazy": True}, Mode.IDLE),  # as the admin asked
    ],
)
def test_how_new_mail_is_heard(
    setting: str, capabilities_: list[str], push: dict[str, Any], mode: Mode
) -> None:
    settings = Settings(imap_push=setting)  # type: ignore[arg-type]
    assert push_mode_for(settings, {"capabilities": capabilities_, "push": push}) is mode


# -- the instant before an IDLE -------------------------------------------------------------


@pytest.mark.parametrize("change", ["new mail", "a flag"])
@pytest.mark.parametrize("heard_by", ["notify", "idle"])
def test_a_change_right_before_an_idle_begins_is_taken_in_at_once(
    heard_by: str,
    change: str,
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    imap_client: Callable[[MailAccount], IMAPClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The push connection re-issues its IDLE (every 2 s here, and after the change an hour).
    A colleague's change lands between the end of one IDLE and the start of the next: Dovecot
    tells an idler nothing of it (NOTIFY or not) until that IDLE ends, an hour away. The look
    the push listener asks for once each IDLE has begun finds it."""
    fixture = "mailserver" if heard_by == "notify" else "mailserver_nonotify"
    account = request.getfixturevalue(fixture).create_account()
    seed_conversation(account)
    colleague = imap_client(account)
    uid = inbox_uid(colleague, OTHER)
    settings = quiet_settings(db_url, tmp_path, idle_reissue_seconds=2)

    def as_colleague() -> None:
        settings.idle_reissue_seconds = HOUR  # the IDLE about to begin is the last
        if change == "new mail":
            colleague.append("INBOX", mail("gap@example.com"))
        else:
            colleague.add_flags([uid], [b"\\Flagged"])

    trap = Trap()
    monkeypatch.setattr(PushListener, "before_idle", lambda self: trap.spring())
    mailbox_id = add_test_mailbox(engine, settings, account)
    with running_worker(settings, engine):
        wait_for(lambda: all(caught_up(engine, mailbox_id, f) for f in FOLLOWED), what="caught up")
        assert capabilities(engine, mailbox_id)["connections"]["push"] == heard_by
        trap.arm(as_colleague)
        assert trap.sprung.wait(20), "the IDLE was not re-issued"
        if change == "new mail":
            wait_for(lambda: has_message(engine, "gap@example.com"), what="the mail of the gap")
        else:
            wait_for(
                lambda: "\\Flagged" in flags_in_inbox(engine, OTHER), what="the flag of the gap"
            )


# -- news that comes while the worker is busy taking in ---------------------------------------


@pytest.mark.parametrize("mode", ["notify", "idle", "poll"])
def test_mail_arriving_during_a_catch_up_is_taken_in(
    mode: str,
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    imap_client: Callable[[MailAccount], IMAPClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message arrives while the one before it is being fetched: the catch-up's search is
    behind it already. NOTIFY tells it anyway, IDLE's NOOP asks for it, polling finds it."""
    server = request.getfixturevalue("mailserver_nonotify" if mode == "idle" else "mailserver")
    account = server.create_account()
    colleague = imap_client(account)
    trap = Trap()
    fetch = FolderSync._fetch

    def fetch_then_spring(self: FolderSync, imap: ImapSession, batch: list[int], sizes: Any) -> Any:
        fetched = fetch(self, imap, batch, sizes)
        if self.folder_name == "INBOX":
            trap.spring()
        return fetched

    monkeypatch.setattr(FolderSync, "_fetch", fetch_then_spring)
    settings = quiet_settings(db_url, tmp_path, imap_push="poll" if mode == "poll" else "auto")
    mailbox_id = add_test_mailbox(engine, settings, account)
    with running_worker(settings, engine):
        wait_for(lambda: all(caught_up(engine, mailbox_id, f) for f in FOLLOWED), what="caught up")
        assert capabilities(engine, mailbox_id)["connections"]["push"] == mode
        trap.arm(lambda: colleague.append("INBOX", mail("during@example.com")))
        colleague.append("INBOX", mail("before@example.com"))
        assert trap.sprung.wait(20), "the first arrival was not fetched"
        wait_for(lambda: has_message(engine, "during@example.com"), what="the second arrival")


# -- a message that leaves a folder ---------------------------------------------------------


def test_a_message_moved_out_of_inbox_is_judged_once_the_other_folders_were_looked_at(
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    mailserver_nonotify: Any,
    imap_client: Callable[[MailAccount], IMAPClient],
) -> None:
    """Without NOTIFY the other folders are polled now and then (here: hourly). A colleague
    archives a conversation: INBOX sees it leave, the watch looks at every folder at once, and
    the conversation is closed: never taken for deleted in the meantime."""
    account = mailserver_nonotify.create_account()
    seed_conversation(account)
    colleague = imap_client(account)
    settings = quiet_settings(db_url, tmp_path)
    mailbox_id = add_test_mailbox(engine, settings, account)
    with running_worker(settings, engine):
        wait_for(lambda: all(caught_up(engine, mailbox_id, f) for f in FOLLOWED), what="caught up")
        move_as_client(colleague, [inbox_uid(colleague, OTHER)], "Archive")

        def status() -> str:
            with Session(engine) as db:
                message = db.exec(select(Message).where(Message.message_id == OTHER)).one()
                conversation = db.get(Conversation, message.conversation_id)
                assert conversation is not None
                return conversation.status.value

        wait_for(lambda: status() == "closed", what="closed by the colleague's move")
        with Session(engine) as db:
            message = db.exec(select(Message).where(Message.message_id == OTHER)).one()
            changes = [
                a.details
                for a in db.exec(
                    select(Activity).where(
                        Activity.conversation_id == message.conversation_id,
                        Activity.action == "status",
                    )
                )
            ]
        assert changes == [{"from": "open", "to": "closed"}], changes


# -- how late a server tells ----------------------------------------------------------------


def test_the_probe_measures_how_soon_the_server_tells_and_leaves_no_folder(
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    mail_account: MailAccount,
    colleague: IMAPClient,
) -> None:
    settings = make_settings(db_url, tmp_path / "data")
    mailbox_id = add_test_mailbox(engine, settings, mail_account)
    with running_worker(settings, engine):
        wait_for(lambda: caught_up(engine, mailbox_id, "INBOX"), what="INBOX caught up")
        push = wait_for(lambda: capabilities(engine, mailbox_id).get("push"), what="the delay")
    assert push["mechanism"] == "idle" and isinstance(push["delay_ms"], int), push
    assert isinstance(push["lazy"], bool), push
    assert PROBE_FOLDER not in {name for _flags, _sep, name in colleague.list_folders()}


@pytest.mark.parametrize("server", ["cyrus", "courier"])
def test_a_server_whose_idle_tells_late_is_polled(
    server: str,
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    imap_client: Callable[[MailAccount], IMAPClient],
) -> None:
    """Cyrus (`imapidlepoll` 60 s, no idled) and Courier (`IMAP_ENHANCEDIDLE=0`) as Debian
    ships them tell an idler of new mail only when they look: the probe finds it out, INBOX is
    polled, and new mail is taken in within the test's wait, far below a minute."""
    account: MailAccount = request.getfixturevalue(f"{server}_account")
    colleague = imap_client(account)
    settings = make_settings(db_url, tmp_path / "data")
    mailbox_id = add_test_mailbox(engine, settings, account)
    with running_worker(settings, engine):
        wait_for(lambda: caught_up(engine, mailbox_id, "INBOX"), timeout=60, what="caught up")
        caps = capabilities(engine, mailbox_id)
        assert caps["push"]["lazy"] is True, caps["push"]
        assert caps["connections"]["push"] == "poll", caps["connections"]
        colleague.append("INBOX", mail(f"lazy-{server}@example.com"))
        wait_for(lambda: has_message(engine, f"lazy-{server}@example.com"), what="new mail")
