"""The worker in tests: settings that retry fast, a mailbox row for a test account, the worker in
a thread, waiting for a state, and what the database holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.domain.mailboxes.config import add_mailbox
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Conversation, Folder, ImapSecurity, Message, MessageLocation
from imapdesk.kernel.settings import Settings
from imapdesk.worker.supervisor import Worker, make_worker
from tests.support.imap import snapshot_mailbox
from tests.support.mail import message_with_id

T = TypeVar("T")


def make_settings(db_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "data_dir": data_dir,
        "reconnect_initial_seconds": 0.2,
        "reconnect_max_seconds": 1.0,
        "mailbox_refresh_seconds": 0.2,
        "folder_check_seconds": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


def add_test_mailbox(
    engine: Engine,
    settings: Settings,
    account: Any,
    *,
    name: str = "support",
    address: str | None = None,
    folders: list[str] | None = None,
    password: str | None = None,
    security: ImapSecurity = ImapSecurity.ssl,
) -> int:
    port = account.imaps_port if security == ImapSecurity.ssl else account.imap_port
    with unit_of_work(engine) as db:
        mb = add_mailbox(
            db,
            settings,
            name=name,
            address=address or account.user,
            imap_host="localhost",
            imap_port=port,
            imap_security=security,
            username=account.user,
            password=password or account.password,
            ca_file=str(account.ca_file),
            folders=folders,
        )
        assert mb.id is not None
        return mb.id


@contextmanager
def running_worker(
    settings: Settings, engine: Engine, *, untouched: Sequence[Any] = ()
) -> Iterator[Worker]:
    """The worker in a thread. For each account in `untouched`, every message that was in the
    box when the worker started must still be there afterwards, in the same folder under the
    same UID with the same flags: the worker never sets \\Seen, moves or deletes."""
    before = [(acc, _snapshot(acc)) for acc in untouched]
    stop = threading.Event()
    worker = make_worker(settings, engine, stop)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=15)
        assert not thread.is_alive(), "the worker did not stop"
    for acc, snap in before:
        after = _snapshot(acc)
        for folder, messages in snap.items():
            for key, flags in messages.items():
                assert after.get(folder, {}).get(key) == flags, (
                    f"{acc.user}: {key!r} in {folder} changed from {flags} to "
                    f"{after.get(folder, {}).get(key)} (or moved) while the worker ran"
                )


def _snapshot(account: Any) -> dict[str, dict[bytes, tuple[bytes, ...]]]:
    client = account.connect()
    try:
        return snapshot_mailbox(client)
    finally:
        client.logout()


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def count_messages(engine: Engine) -> int:
    with Session(engine) as db:
        return int(db.exec(select(func.count()).select_from(Message)).one())


def count_locations(engine: Engine, folder_name: str | None = None) -> int:
    with Session(engine) as db:
        q = select(func.count()).select_from(MessageLocation)
        if folder_name:
            q = q.join(Folder, Folder.id == MessageLocation.folder_id).where(  # type: ignore[arg-type]
                Folder.name == folder_name
            )
        return int(db.exec(q).one())


def live_conversations(engine: Engine) -> list[Conversation]:
    with Session(engine) as db:
        return list(db.exec(select(Conversation).where(col(Conversation.merged_into_id).is_(None))))


def folder_state(engine: Engine, mailbox_id: int, name: str) -> Folder | None:
    with Session(engine) as db:
        return db.exec(
            select(Folder).where(Folder.mailbox_id == mailbox_id, Folder.name == name)
        ).first()


def caught_up(engine: Engine, mailbox_id: int, name: str = "INBOX") -> bool:
    f = folder_state(engine, mailbox_id, name)
    return f is not None and f.state.value == "poll"


def seed_conversation(account: MailAccount) -> None:
    """m1 and m3 from the customer in INBOX, our reply m2 in Sent (by the server's own name
    for it), and m9 (another one)."""
    server = account.server
    server.seed(
        account.user,
        account.password,
        "INBOX",
        [
            message_with_id("m1@example.com", subject="Printer on fire"),
            message_with_id(
                "m3@example.com",
                subject="Re: Printer on fire",
                refs="<m1@example.com> <m2@example.com>",
            ),
            message_with_id("m9@example.com", subject="Something else", sender="other@example.com"),
        ],
    )
    server.seed(
        account.user,
        account.password,
        server.folder("Sent"),
        [
            message_with_id(
                "m2@example.com",
                subject="Re: Printer on fire",
                refs="<m1@example.com>",
                sender=account.user,
            )
        ],
        flags=["\\Seen"],
    )
