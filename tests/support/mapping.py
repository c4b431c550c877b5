"""The IMAP-mapping scene (docs IMAP-MAPPING.md end to end): a seeded box taken in by a
running worker, the API with two agents, a colleague's own IMAP session, and every command the
write-back sends, counted (`Writes`, the `writes` fixture)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient
from imapclient import IMAPClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.api.app import create_app
from imapdesk.devtools.mailserver import MailAccount
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.domain.conversations import operations
from imapdesk.domain.sync.rebuild import forget_mail
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    ActivitySource,
    Agent,
    ImapActionState,
    Mailbox,
    Message,
    PendingImapAction,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import ImapReply, ImapSession
from imapdesk.worker.supervisor import Worker, sync_until_caught_up
from tests.support.imap import Found, where_on_server
from tests.support.worker import (
    add_test_mailbox,
    caught_up,
    make_settings,
    running_worker,
    seed_conversation,
    wait_for,
)
from tests.support.writeback_commands import dress_writeback_sessions, replace_on

BASE = "/api/v1/conversations"
# one conversation: m1 and m3 from the customer in INBOX, our reply m2 in Sent; m9 another one
INBOUND = ("m1@example.com", "m3@example.com")
REPLY = "m2@example.com"
CONVERSATION = (INBOUND[0], REPLY, INBOUND[1])
OTHER = "m9@example.com"
# what the worker follows: the watched INBOX and Sent, and the folders of the mapping (named
# as on a server without a namespace prefix: `Scene.folder` gives a server's own name)
FOLLOWED = ("INBOX", "Sent", "Archive", "Junk", "Trash", "Pending", "Notes")
# a bound on a wait for a state, not a measure: a loaded machine (two suites side by side)
# takes many times what a quiet one does
TIMEOUT = 45.0
MAIL_CLIENT_HOLDER = "someone via mail client"

# The servers the mapping suite runs on: test id -> the fixture that gives a fresh MailAccount
# on it. The account's `server` offers `folder(name)` (the full name of `Sent` or `Archive` in
# its namespace), `seed`, `deliver`, `create_account` and `trim_capabilities`. Add a server
# here (its fixtures in tests/conftest.py) to run the suite on it.
MAPPING_SERVERS = {
    "dovecot": "mail_account",
    "nocondstore-nomove": "mail_account_nocondstore",
    "prefixed": "mail_account_prefixed",
    # from Debian's packages (tests/support/other_servers.py): `INBOX.` and `.`, IDLE that
    # polls every 60 s; Cyrus with special-use folders, Courier without MOVE or CONDSTORE
    "cyrus": "cyrus_account",
    "courier": "courier_account",
}


def mapping_account(request: pytest.FixtureRequest) -> MailAccount:
    """The account of the server `request.param` names (a key of MAPPING_SERVERS)."""
    account: MailAccount = request.getfixturevalue(MAPPING_SERVERS[request.param])
    return account


def has_move(account: MailAccount) -> bool:
    return "MOVE" not in account.server.trim_capabilities


def move_as_client(client: IMAPClient, uids: list[int], folder: str) -> None:
    """What a plain client does to move mail: MOVE where the server has it, else COPY, then
    \\Deleted and an expunge of those UIDs (UIDPLUS), as Thunderbird does."""
    if client.has_capability("MOVE"):
        client.move(uids, folder)
        return
    client.copy(uids, folder)
    client.delete_messages(uids)
    client.uid_expunge(uids)


# -- mail ------------------------------------------------------------------------------------------


def places(found: Found, msgid: str) -> list[str]:
    return sorted(folder for folder, _uid, _flags in found.get(msgid, []))


def flags_of(found: Found, msgid: str) -> set[str]:
    """The flags of a message that has exactly one copy (else the empty set: not settled)."""
    entries = found.get(msgid, [])
    return set(entries[0][2]) if len(entries) == 1 else set()


def conversation_of(engine: Engine, msgid: str) -> int:
    with Session(engine) as db:
        message = db.exec(select(Message).where(Message.message_id == msgid)).one()
        assert message.conversation_id is not None
        return message.conversation_id


T = TypeVar("T")


def until(probe: Callable[[], T | None], what: str, timeout: float = TIMEOUT) -> T:
    """`wait_for` for a probe that answers None until it has what it waits for."""
    found = wait_for(probe, timeout=timeout, what=what)
    assert found is not None
    return found


def inbound_in(folder: str) -> Callable[[Found], bool]:
    """The customer's messages of the conversation are in `folder`, and only there."""
    return lambda found: all(places(found, m) == [folder] for m in INBOUND)


def field_is(name: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda conversation: bool(conversation[name] == value)


def api_shows(found: Found) -> Callable[[dict[str, Any]], bool]:
    """The API shows each message of the conversation where, and with the flags, `found` has."""

    def check(conversation: dict[str, Any]) -> bool:
        return all(
            sorted((folder, flags) for folder, _uid, flags in found.get(m["message_id"], []))
            == sorted((loc["folder"], frozenset(loc["flags"])) for loc in m["locations"])
            for m in conversation["messages"]
        )

    return check


# -- counting what the write-back sends -------------------------------------------------------

WRITE_COMMANDS = ("STORE", "MOVE", "COPY", "EXPUNGE")


@dataclass
class Writes:
    """Every command the write-back's IMAP sessions send, with the time it was sent; `before`
    runs ahead of each command, `after` once its answer is in (both in the write-back's thread)."""

    commands: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)
    before: Callable[[tuple[str, ...]], None] | None = None
    after: Callable[[tuple[str, ...]], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def uid(self, *names: str, since: float = 0.0) -> list[tuple[str, ...]]:
        """The `UID <name>` commands sent after `since` (time.monotonic())."""
        with self.lock:
            return [c for t, c in self.commands if t >= since and c[:2] in _uid_pairs(names)]

    def writes(self, since: float = 0.0) -> list[tuple[str, ...]]:
        """The commands that change the mailbox: UID STORE, MOVE, COPY, EXPUNGE."""
        return self.uid(*WRITE_COMMANDS, since=since)

    def counts(self, since: float = 0.0) -> dict[str, int]:
        return {name: len(self.uid(name, since=since)) for name in WRITE_COMMANDS}

    def moves(self, since: float = 0.0) -> int:
        """How many moves were sent: UID MOVE, or UID COPY where the server has no MOVE
        (each followed by exactly one UID EXPUNGE of the moved UIDs)."""
        copies = self.uid("COPY", since=since)
        assert len(self.uid("EXPUNGE", since=since)) == len(copies), self.writes(since)
        return len(self.uid("MOVE", since=since)) + len(copies)


def only_tidy_ups(writes: list[tuple[str, ...]], keyword: str) -> bool:
    """Whether every write is the removal of `keyword` (at least one write)."""
    return bool(writes) and all(
        w[:2] == ("UID", "STORE") and w[-1].endswith(f"-FLAGS.SILENT ({keyword})") for w in writes
    )


def _uid_pairs(names: tuple[str, ...]) -> set[tuple[str, ...]]:
    return {("UID", n) for n in names}


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Writes:
    rec = Writes()

    def counting(session: ImapSession) -> Callable[[], None]:
        """Every raw command of the session layer passes `command`."""
        send = session.command

        def command(*words: str, collect: Iterable[str] = ()) -> ImapReply:
            if rec.before is not None:
                rec.before(words)
            with rec.lock:
                rec.commands.append((time.monotonic(), words))
            answer = send(*words, collect=collect)
            if rec.after is not None:
                rec.after(words)
            return answer

        return replace_on(session, command=command)

    dress_writeback_sessions(monkeypatch, counting)
    return rec


# -- the scene: a seeded box, the worker, the API, two agents and a colleague ----------------


@dataclass
class Scene:
    engine: Engine
    settings: Settings
    account: MailAccount
    mailbox_id: int
    colleague: IMAPClient
    alice: TestClient  # alice@example.test, handle alice
    bob: TestClient  # bob@example.test, handle bob
    alice_id: int
    bob_id: int
    cid: int  # the conversation of m1, m2, m3
    other_cid: int  # m9's
    writes: Writes
    worker: Worker

    # -- folder names -------------------------------------------------------------------------
    def folder(self, name: str) -> str:
        """The server's own name of `Sent`, `Archive`... (`INBOX.Sent` under `INBOX.`)."""
        return self.account.server.folder(name)

    def logical(self, name: str) -> str:
        """The name as the tests say it (`Sent`) of a folder as the server names it."""
        prefix = self.account.server.namespace_prefix
        if prefix and name.startswith(prefix):
            return name[len(prefix) :].replace(self.account.server.separator, "/")
        return name

    @property
    def has_move(self) -> bool:
        return has_move(self.account)

    # -- the API ------------------------------------------------------------------------------
    def conv(self, cid: int | None = None) -> dict[str, Any]:
        """The conversation as the API shows it, its folders named as the tests say them."""
        r = self.alice.get(f"{BASE}/{cid or self.cid}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        for message in body["messages"]:
            for location in message["locations"]:
                location["folder"] = self.logical(location["folder"])
        return body

    def activity(self, cid: int | None = None) -> list[dict[str, Any]]:
        """Oldest first."""
        r = self.alice.get(f"{BASE}/{cid or self.cid}/activity")
        assert r.status_code == 200, r.text
        return list(reversed(r.json()["items"]))

    def api_places(self, cid: int | None = None) -> dict[str, list[tuple[str, frozenset[str]]]]:
        """Message-ID -> (folder, flags) of each copy, as the API shows them."""
        return {
            m["message_id"]: sorted(
                (loc["folder"], frozenset(loc["flags"])) for loc in m["locations"]
            )
            for m in self.conv(cid)["messages"]
        }

    def wait_api(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        cid: int | None = None,
        timeout: float = TIMEOUT,
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            conversation = self.conv(cid)
            return conversation if predicate(conversation) else None

        try:
            return until(probe, what, timeout)
        except AssertionError:
            c = self.conv(cid)
            print("DEBUGSTATE", c["status"], self.api_places(cid), self.activity(cid))
            raise

    def wait_activity(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, cid: int | None = None
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            return next((a for a in self.activity(cid) if predicate(a)), None)

        return until(probe, what)

    # -- the mailbox, as the colleague sees it ------------------------------------------------
    def on_server(self) -> Found:
        """Where every message is, its folders named as the tests say them."""
        return {
            msgid: [(self.logical(folder), uid, flags) for folder, uid, flags in entries]
            for msgid, entries in where_on_server(self.colleague).items()
        }

    def wait_server(self, predicate: Callable[[Found], bool], what: str) -> Found:
        def probe() -> Found | None:
            found = self.on_server()
            return found if predicate(found) else None

        return until(probe, what)

    def select(self, folder: str, *msgids: str) -> list[int]:
        """Select the folder read-write as the colleague; the UIDs of these messages there."""
        self.colleague.select_folder(self.folder(folder))
        uids: list[int] = []
        for msgid in msgids:
            found = self.colleague.search(["HEADER", "Message-ID", f"<{msgid}>"])
            assert len(found) == 1, f"{msgid} in {folder}: {found}"
            uids.append(int(found[0]))
        return uids

    def move(self, uids: list[int], folder: str) -> None:
        """The colleague moves these messages of the selected folder (see `move_as_client`)."""
        move_as_client(self.colleague, uids, self.folder(folder))

    def append(self, folder: str, raw: bytes, flags: Iterable[bytes] = (b"\\Seen",)) -> None:
        """The colleague puts a message into a folder."""
        self.colleague.append(self.folder(folder), raw, flags=list(flags))

    # -- the outbox and the write-back --------------------------------------------------------
    def outbox(self) -> list[tuple[str, str, str | None]]:
        with Session(self.engine) as db:
            rows = db.exec(
                select(
                    PendingImapAction.kind, PendingImapAction.state, PendingImapAction.last_error
                )
                .where(PendingImapAction.mailbox_id == self.mailbox_id)
                .order_by(col(PendingImapAction.id))
            ).all()
        return [(kind, str(state), error) for kind, state, error in rows]

    def outbox_done(self) -> bool:
        rows = self.outbox()
        assert not [r for r in rows if r[1] == ImapActionState.failed.value], rows
        return all(state == ImapActionState.done.value for _k, state, _e in rows)

    def agent(self, db: Session, agent_id: int) -> Agent:
        agent = db.get(Agent, agent_id)
        assert agent is not None
        return agent

    def mark_read(self, agent_id: int, cid: int | None = None) -> None:
        """No REST route yet: the domain operation, in a unit of work, as a route would."""
        with unit_of_work(self.engine) as db:
            operations.mark_read(
                db, cid or self.cid, True, source=ActivitySource.api, agent=self.agent(db, agent_id)
            )

    def rebuild(self) -> None:
        """`imapdesk rebuild` as an admin runs it: the worker stopped, everything read from
        mail forgotten, every followed folder read again."""
        self.worker.ctx.stop.set()
        wait_for(
            lambda: all(
                r.thread is None or not r.thread.is_alive() for r in self.worker.runners.values()
            ),
            timeout=TIMEOUT,
            what="the worker stopped",
        )
        with unit_of_work(self.engine) as db:
            forget_mail(db, None)
        assert sync_until_caught_up(self.settings, self.engine, timeout=60), "the rebuild"

    def quiet(self, seconds: float = 1.5) -> None:
        """Nothing is written during `seconds` (reading our own writes back is no news)."""
        start = time.monotonic()
        outbox = len(self.outbox())
        time.sleep(seconds)
        assert self.writes.writes(since=start) == [], "the write-back wrote again: an echo"
        assert len(self.outbox()) == outbox, "new outbox rows: an echo"


def _tokens(engine: Engine) -> tuple[int, str, int, str]:
    with unit_of_work(engine) as db:
        alice = create_agent(db, "alice@example.test", "Alice", "pw", handle="alice")
        bob = create_agent(db, "bob@example.test", "Bob", "pw", handle="bob")
        assert alice.id is not None and bob.id is not None
        return alice.id, create_api_token(db, alice), bob.id, create_api_token(db, bob)


def _client(app: Any, token: str) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


@contextmanager
def open_scene(
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    account: MailAccount,
    imap_client: Callable[[MailAccount], IMAPClient],
    writes: Writes,
    *,
    mailbox: dict[str, Any] | None = None,
    **overrides: Any,
) -> Iterator[Scene]:
    """The seeded box taken in by a running worker, the API on the same database; `mailbox`
    sets more of the mailbox row (SMTP, folder names) before the worker starts."""
    values: dict[str, Any] = {
        "writeback_poll_seconds": 0.05,
        "writeback_retry_initial_seconds": 0.2,
        "writeback_retry_max_seconds": 1.0,
        # without CONDSTORE: rescan the flags of each followed folder at most this often
        "flag_rescan_seconds": 0.5,
    }
    values.update(overrides)
    settings = make_settings(db_url, tmp_path / "data", **values)
    seed_conversation(account)
    mailbox_id = add_test_mailbox(engine, settings, account)
    if mailbox:
        with unit_of_work(engine) as db:
            row = db.get(Mailbox, mailbox_id)
            assert row is not None
            for key, value in mailbox.items():
                setattr(row, key, value)
    alice_id, alice_token, bob_id, bob_token = _tokens(engine)
    app = create_app(settings=settings, engine=engine)
    colleague = imap_client(account)
    followed = [account.server.folder(name) for name in FOLLOWED]
    with (
        running_worker(settings, engine) as worker,
        _client(app, alice_token) as alice,
        _client(app, bob_token) as bob,
    ):
        wait_for(
            lambda: all(caught_up(engine, mailbox_id, name) for name in followed),
            timeout=TIMEOUT,
            what="every followed folder caught up",
        )

        def all_in() -> bool:
            with Session(engine) as db:
                have = set(db.exec(select(Message.message_id)).all())
            return have >= {*CONVERSATION, OTHER}

        wait_for(all_in, timeout=TIMEOUT, what="the seeded messages in the database")
        cid = conversation_of(engine, INBOUND[0])
        assert {conversation_of(engine, m) for m in CONVERSATION} == {cid}
        yield Scene(
            engine=engine,
            settings=settings,
            account=account,
            mailbox_id=mailbox_id,
            colleague=colleague,
            alice=alice,
            bob=bob,
            alice_id=alice_id,
            bob_id=bob_id,
            cid=cid,
            other_cid=conversation_of(engine, OTHER),
            writes=writes,
            worker=worker,
        )
