"""Helpers for worker tests: a mailbox row for a test account, a worker in a thread, waiting."""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

from imapclient import IMAPClient
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.domain.mailboxes.config import add_mailbox
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Conversation, Folder, ImapSecurity, Message, MessageLocation
from imapdesk.kernel.settings import Settings
from imapdesk.mail.parsing import normalize_msgid
from imapdesk.worker.supervisor import Worker, make_worker

Found = dict[str, list[tuple[str, int, frozenset[str]]]]
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
    timeout: float = 20.0,
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


def snapshot_mailbox(client: IMAPClient) -> dict[str, dict[bytes, tuple[bytes, ...]]]:
    """Every folder's messages, keyed by Message-ID header and flags (to prove nothing changed)."""
    result: dict[str, dict[bytes, tuple[bytes, ...]]] = {}
    for _flags, _delim, name in client.list_folders():
        client.select_folder(name, readonly=True)
        uids = client.search("ALL")
        data = (
            client.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
        )
        per: dict[bytes, tuple[bytes, ...]] = {}
        for uid, item in data.items():
            key = item.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]", b"").strip() or str(uid).encode()
            flags = tuple(sorted(f for f in item[b"FLAGS"] if f != b"\\Recent"))
            per[key + b"#" + str(uid).encode()] = flags
        result[name] = per
    return result


# -- a small conversation --------------------------------------------------------------------


def make_mail(
    name: str, *, subject: str, refs: str | None = None, sender: str = "customer@example.com"
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.test"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{name}>"
    msg["Date"] = email.utils.format_datetime(email.utils.localtime())
    if refs:
        msg["In-Reply-To"] = refs.split()[-1]
        msg["References"] = refs
    msg.set_content(f"This is {name}.\n")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def seed_conversation(account: MailAccount) -> None:
    """m1 and m3 from the customer in INBOX, our reply m2 in Sent, and m9 (another one)."""
    server = account.server
    server.seed(
        account.user,
        account.password,
        "INBOX",
        [
            make_mail("m1@example.com", subject="Printer on fire"),
            make_mail(
                "m3@example.com",
                subject="Re: Printer on fire",
                refs="<m1@example.com> <m2@example.com>",
            ),
            make_mail("m9@example.com", subject="Something else", sender="other@example.com"),
        ],
    )
    server.seed(
        account.user,
        account.password,
        "Sent",
        [
            make_mail(
                "m2@example.com",
                subject="Re: Printer on fire",
                refs="<m1@example.com>",
                sender=account.user,
            )
        ],
        flags=["\\Seen"],
    )


def where_on_server(client: IMAPClient) -> Found:
    """Message-ID -> every (folder, UID, flags) it has on the server, as a colleague sees it."""
    out: Found = {}
    for _flags, _delim, name in client.list_folders():
        client.select_folder(name, readonly=True)
        uids = client.search("ALL")
        if not uids:
            continue
        for uid, data in client.fetch(
            uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
        ).items():
            header = data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().split(":", 1)[-1]
            msgid = normalize_msgid(header) or f"uid-{uid}"
            flags = frozenset(
                f.decode() if isinstance(f, bytes) else str(f)
                for f in data[b"FLAGS"]
                if f != b"\\Recent"
            )
            out.setdefault(msgid, []).append((name, uid, flags))
    return out
