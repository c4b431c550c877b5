"""Our own moves, read back while they are in flight: no echo whatever the order.

A status change is a `UID MOVE` by the write-back, which then records the new place. Meanwhile
the source folder's sync sees the message leave and the target folder's sync sees it arrive,
each on its own connection and in its own time. Whichever order these steps take, reading our
own move back is no change from a mail client (docs IMAP-MAPPING.md principle 5): no activity
from `imap`, and the database ends with one location per message, where the mailbox has it.

Each test forces one order by running one side's step inside the other's, with the folder
syncs and the write-back driven by hand (the worker is stopped), on a real Dovecot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.conversations import operations
from imapdesk.domain.mailboxes.servers import imap_account
from imapdesk.domain.sync.readback import apply_mail_changes
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    Conversation,
    Folder,
    Mailbox,
    Message,
    MessageLocation,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import ImapAccount, ImapSession
from imapdesk.worker.folder_sync import FolderSync, SyncContext
from imapdesk.worker.writeback import WriteBack
from imapdesk.worker.writeback.plan import Outcome, Plan
from tests.support.imap import where_on_server
from tests.support.worker import (
    add_test_mailbox,
    caught_up,
    make_settings,
    running_worker,
    seed_conversation,
    wait_for,
)

INBOUND = ("m1@example.com", "m3@example.com")
OTHER = "m9@example.com"  # alone in its conversation: no reply of ours in Sent


@pytest.fixture(params=["condstore", "nocondstore"])
def account(request: pytest.FixtureRequest) -> MailAccount:
    name = "mail_account" if request.param == "condstore" else "mail_account_nocondstore"
    found: MailAccount = request.getfixturevalue(name)
    return found


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    # a vanished message's judgment is due at once: the tests say when it runs
    return make_settings(db_url, tmp_path / "data", vanish_grace_seconds=0.0)


class Box:
    """The seeded mailbox, taken in by one run of the worker; its folder syncs and its
    write-back built as the worker builds them, to be driven step by step."""

    def __init__(self, engine: Engine, settings: Settings, account: MailAccount) -> None:
        self.engine = engine
        self.account = account
        seed_conversation(account)
        self.mailbox_id = add_test_mailbox(engine, settings, account)
        with running_worker(settings, engine):
            wait_for(
                lambda: all(
                    caught_up(engine, self.mailbox_id, f)
                    for f in ("INBOX", "Sent", "Archive", "Junk")
                ),
                what="the folders caught up",
            )
            wait_for(lambda: self.places(OTHER) == ["INBOX"], what="the seeded mail taken in")
        with Session(engine) as db:
            mailbox = db.get(Mailbox, self.mailbox_id)
            assert mailbox is not None
            self.imap_account: ImapAccount = imap_account(mailbox, settings)
        self.ctx = SyncContext(
            settings=settings,
            engine=engine,
            stop=threading.Event(),
            on_mail_change=apply_mail_changes,
        )
        self.writeback = WriteBack(self.ctx, self.mailbox_id, "support", self.imap_account)
        self.sessions: list[ImapSession] = []
        with unit_of_work(engine) as db:
            create_agent(db, "alice@example.test", "Alice", "pw", handle="alice")

    def conversation(self, msgid: str = INBOUND[0]) -> int:
        with Session(self.engine) as db:
            cid = db.exec(select(Message.conversation_id).where(Message.message_id == msgid)).one()
        assert cid is not None
        return cid

    def folder_sync(self, name: str) -> tuple[FolderSync, ImapSession]:
        """The folder's sync and its connection, with the folder selected as `_sync` does."""
        with Session(self.engine) as db:
            folder = db.exec(
                select(Folder).where(Folder.mailbox_id == self.mailbox_id, Folder.name == name)
            ).one()
            assert folder.id is not None
        sync = FolderSync(
            self.ctx, self.mailbox_id, folder.id, name, self.imap_account, f"support/{name}"
        )
        imap = ImapSession(self.imap_account)
        self.sessions.append(imap)
        imap.select(name, readonly=True)
        return sync, imap

    def change(self, cid: int, **change: Any) -> None:
        """What an agent does in the web UI (the outbox gets the write)."""
        with unit_of_work(self.engine) as db:
            alice = db.exec(select(Agent).where(Agent.handle == "alice")).one()
            if "status" in change:
                operations.set_status(
                    db, cid, change["status"], source=ActivitySource.web, agent=alice
                )
            if change.get("claim"):
                operations.claim(db, cid, alice, source=ActivitySource.web)

    def places(self, msgid: str) -> list[str]:
        with Session(self.engine) as db:
            return sorted(
                db.exec(
                    select(Folder.name)
                    .join(MessageLocation, col(MessageLocation.folder_id) == col(Folder.id))
                    .join(Message, col(Message.id) == col(MessageLocation.message_id))
                    .where(Message.message_id == msgid, Folder.mailbox_id == self.mailbox_id)
                ).all()
            )

    def state(self, cid: int) -> tuple[str, bool]:
        with Session(self.engine) as db:
            conversation = db.get(Conversation, cid)
            assert conversation is not None
            return conversation.status.value, conversation.claimed

    def imap_activity(self) -> list[tuple[str, dict[str, Any]]]:
        with Session(self.engine) as db:
            return [
                (a.action, a.details)
                for a in db.exec(
                    select(Activity)
                    .where(Activity.source == ActivitySource.imap)
                    .order_by(col(Activity.id))
                )
            ]

    def matches_the_server(self, *msgids: str) -> None:
        client = self.account.connect()
        try:
            on_server = where_on_server(client)
        finally:
            client.logout()
        for msgid in msgids:
            assert self.places(msgid) == sorted(f for f, _uid, _flags in on_server[msgid]), msgid

    def close(self) -> None:
        for imap in self.sessions:
            imap.close()
        self.writeback._discard()


@pytest.fixture
def box(engine: Engine, settings: Settings, account: MailAccount) -> Iterator[Box]:
    found = Box(engine, settings, account)
    yield found
    found.close()


def before_recording(box: Box, step: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """The write-back runs `step` once an action's IMAP work is done, before recording it."""
    record = box.writeback.recorder.done

    def step_then_record(plan: Plan, outcome: Outcome) -> None:
        step()
        record(plan, outcome)

    monkeypatch.setattr(box.writeback.recorder, "done", step_then_record)


def test_a_fetch_our_move_overtakes_takes_nothing_back_in(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target's sync fetches the messages our last move brought; before it stores them,
    our next move takes them on and is recorded. What it fetched is no longer there: taking it
    in would put the messages back where they were (closed again, then spam again)."""
    cid = box.conversation()
    box.change(cid, status="closed")
    assert box.writeback.drain()
    assert box.places(INBOUND[0]) == ["Archive"]  # recorded; Archive's sync has not read them
    archive, archive_imap = box.folder_sync("Archive")
    box.change(cid, status="spam")
    fetch = archive._fetch
    overtaken: list[int] = []

    def fetch_then_our_next_move(imap: ImapSession, batch: list[int], sizes: Any) -> Any:
        fetched = fetch(imap, batch, sizes)
        if not overtaken:
            overtaken.extend(batch)
            assert box.writeback.drain()  # moved to Junk and recorded, as the fetch returns
        return fetched

    monkeypatch.setattr(archive, "_fetch", fetch_then_our_next_move)
    archive._catch_up(archive_imap)
    assert overtaken, "Archive's sync fetched the messages of our first move"
    for msgid in INBOUND:
        assert box.places(msgid) == ["Junk"], msgid
    assert box.imap_activity() == []
    assert box.state(cid) == ("spam", False)
    with Session(box.engine) as db:
        folder = db.get(Folder, archive.folder_id)
        assert folder is not None
        # past the UIDs that left: they are not fetched again
        assert folder.uidnext > max(overtaken) and folder.message_count == 0
    junk, junk_imap = box.folder_sync("Junk")
    junk._catch_up(junk_imap)
    assert box.imap_activity() == []
    box.matches_the_server(*INBOUND, OTHER)


def test_a_move_seen_leaving_before_we_record_it_is_not_judged_a_removal(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INBOX's sync sees the messages leave after our MOVE and before the write-back records
    it; the arrivals in Archive are not taken in yet when the vanished messages are judged.
    The recording says where they went: not deleted, then closed again."""
    cid = box.conversation()
    inbox, inbox_imap = box.folder_sync("INBOX")
    before_recording(box, lambda: inbox._sync_flags_and_expunges(inbox_imap), monkeypatch)
    box.change(cid, status="closed")
    assert box.writeback.drain()
    inbox._run_deferred()  # the grace is over, Archive's sync has not run
    assert box.imap_activity() == []
    for msgid in INBOUND:
        assert box.places(msgid) == ["Archive"], msgid
    assert box.state(cid) == ("closed", False)
    archive, archive_imap = box.folder_sync("Archive")
    archive._catch_up(archive_imap)
    assert box.imap_activity() == []
    with Session(box.engine) as db:
        folder = db.get(Folder, archive.folder_id)
        assert folder is not None and folder.message_count == len(INBOUND)
    box.matches_the_server(*INBOUND, OTHER)


def test_a_conversation_whose_mail_is_all_in_flight_keeps_its_claim(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claimed conversation with no reply of ours in Sent: when INBOX's sync judges its
    message gone while our move to Archive is not recorded yet, nothing in the mailbox speaks
    for the conversation. It stays claimed (not released, then claimed again)."""
    cid = box.conversation(OTHER)
    box.change(cid, claim=True)
    assert box.writeback.drain()
    inbox, inbox_imap = box.folder_sync("INBOX")

    def judged_gone_meanwhile() -> None:
        inbox._sync_flags_and_expunges(inbox_imap)
        inbox._run_deferred()  # the grace is over before the write-back records

    before_recording(box, judged_gone_meanwhile, monkeypatch)
    box.change(cid, status="closed")
    assert box.writeback.drain()
    assert box.imap_activity() == []
    assert box.places(OTHER) == ["Archive"]
    assert box.state(cid) == ("closed", True)
    archive, archive_imap = box.folder_sync("Archive")
    archive._catch_up(archive_imap)
    assert box.imap_activity() == []
    box.matches_the_server(*INBOUND, OTHER)
