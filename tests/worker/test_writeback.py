"""The write-back against the real Dovecot: what the helpdesk changes reaches the mailbox, once.

A second, independent IMAP session (the colleague on a plain client) checks every result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from imapclient import IMAPClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.conversations import operations
from imapdesk.domain.mailboxes.servers import imap_account
from imapdesk.domain.mailstate import assignee_keyword
from imapdesk.kernel import wakeups
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Conversation,
    Folder,
    ImapActionState,
    KeywordRefusal,
    Mailbox,
    Message,
    MessageLocation,
    PendingImapAction,
    UnkeptKeyword,
)
from imapdesk.kernel.settings import Settings
from imapdesk.kernel.wakeups import Loop
from imapdesk.mail.imap import ImapReply, ImapSession
from imapdesk.mail.parsing import normalize_msgid
from imapdesk.worker.folder_sync import SyncContext
from imapdesk.worker.writeback import WriteBack, WriteBackError
from tests.support.imap import where_on_server
from tests.support.mapping import has_move
from tests.support.worker import (
    add_test_mailbox,
    caught_up,
    count_messages,
    make_settings,
    running_worker,
    seed_conversation,
    wait_for,
)
from tests.support.writeback_commands import dress_writeback_sessions, replace_on

CONVERSATION = ("m1@example.com", "m2@example.com", "m3@example.com")
OTHER = "m9@example.com"
CONVERSATION_FOLDERS = ("INBOX", "Pending", "Archive", "Junk", "Trash")


# -- mail and the box ------------------------------------------------------------------------------


def where_in_db(
    engine: Engine, mailbox_id: int
) -> dict[str, list[tuple[str, int, frozenset[str]]]]:
    with Session(engine) as db:
        rows = db.exec(
            select(Message.message_id, Folder.name, MessageLocation.uid, MessageLocation.flags)
            .join(MessageLocation, col(MessageLocation.message_id) == col(Message.id))
            .join(Folder, col(Folder.id) == col(MessageLocation.folder_id))
            .where(Folder.mailbox_id == mailbox_id)
        ).all()
    out: dict[str, list[tuple[str, int, frozenset[str]]]] = {}
    for msgid, folder, uid, flags in rows:
        out.setdefault(msgid, []).append((folder, uid, frozenset(flags or ())))
    return out


def places(found: dict[str, list[tuple[str, int, frozenset[str]]]], msgid: str) -> list[str]:
    return sorted(folder for folder, _uid, _flags in found.get(msgid, []))


def flags_of(found: dict[str, list[tuple[str, int, frozenset[str]]]], msgid: str) -> set[str]:
    entries = found.get(msgid, [])
    assert len(entries) == 1, f"{msgid} is in {entries}"
    return set(entries[0][2])


def conversation_id(engine: Engine, msgid: str = "m1@example.com") -> int:
    with Session(engine) as db:
        message = db.exec(select(Message).where(Message.message_id == msgid)).one()
        assert message.conversation_id is not None
        return message.conversation_id


def add_action(
    engine: Engine,
    mailbox_id: int,
    conversation: int | None,
    kind: str,
    payload: dict[str, Any],
    *,
    message: int | None = None,
) -> int:
    with unit_of_work(engine) as db:
        action = PendingImapAction(
            mailbox_id=mailbox_id,
            conversation_id=conversation,
            message_id=message,
            kind=kind,
            payload=payload,
        )
        db.add(action)
        db.flush()
        assert action.id is not None
        return action.id


def action_row(engine: Engine, action_id: int) -> PendingImapAction:
    with Session(engine) as db:
        action = db.get(PendingImapAction, action_id)
        assert action is not None
        return action


def wait_done(engine: Engine, action_id: int, timeout: float = 20.0) -> PendingImapAction:
    def done() -> PendingImapAction | None:
        action = action_row(engine, action_id)
        assert action.state != ImapActionState.failed, f"action failed: {action.last_error}"
        return action if action.state == ImapActionState.done else None

    found = wait_for(done, timeout=timeout, what=f"action {action_id} to be done")
    assert found is not None
    return found


def mailbox_capabilities(engine: Engine, mailbox_id: int) -> dict[str, Any]:
    with Session(engine) as db:
        mailbox = db.get(Mailbox, mailbox_id)
        assert mailbox is not None
        return dict(mailbox.capabilities)


def wait_synced(engine: Engine, mailbox_id: int) -> None:
    wait_for(
        lambda: caught_up(engine, mailbox_id, "INBOX") and caught_up(engine, mailbox_id, "Sent"),
        what="INBOX and Sent caught up",
    )
    wait_for(
        lambda: all(where_in_db(engine, mailbox_id).get(m) for m in (*CONVERSATION, OTHER)),
        what="the seeded messages in the database",
    )
    assert len({conversation_id(engine, m) for m in CONVERSATION}) == 1


# -- watching the write-back's IMAP commands ----------------------------------------------------


@dataclass
class Recorder:
    """Every raw command the write-back's sessions send (and any bare EXPUNGE or CLOSE);
    `before` runs ahead of each raw command."""

    commands: list[tuple[str, ...]] = field(default_factory=list)
    before: Callable[[tuple[str, ...]], None] | None = None
    without: frozenset[str] = frozenset()
    lock: threading.Lock = field(default_factory=threading.Lock)

    def uid(self, command: str) -> list[tuple[str, ...]]:
        with self.lock:
            return [c for c in self.commands if c[:2] == ("UID", command)]

    def clear(self) -> None:
        with self.lock:
            self.commands.clear()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()

    def recording(session: ImapSession) -> Callable[[], None]:
        """Every raw command passes `command`; a bare EXPUNGE or a CLOSE could only come
        through imapclient's own methods, so those are recorded too."""
        send = session.command

        def command(*words: str, collect: Iterable[str] = ()) -> ImapReply:
            if rec.before is not None:
                rec.before(words)
            with rec.lock:
                rec.commands.append(words)
            return send(*words, collect=collect)

        client = session.client
        undo = [
            replace_on(session, command=command, capabilities=session.capabilities - rec.without),
            *(
                replace_on(client, **{method: _recorded(rec, name, getattr(client, method))})
                for method, name in (("expunge", "EXPUNGE"), ("close_folder", "CLOSE"))
            ),
        ]

        def undo_all() -> None:
            for step in reversed(undo):
                step()

        return undo_all

    dress_writeback_sessions(monkeypatch, recording)
    return rec


def _recorded(rec: Recorder, name: str, send: Callable[..., Any]) -> Callable[..., Any]:
    def recorded(*args: Any, **kwargs: Any) -> Any:
        with rec.lock:
            rec.commands.append((name, *(str(a) for a in args)))
        return send(*args, **kwargs)

    return recorded


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(params=["condstore", "nocondstore"])
def account(request: pytest.FixtureRequest) -> MailAccount:
    """The same tests on Dovecot with CONDSTORE and MOVE and on one without either (as
    Exchange Online hides the first, older servers the second)."""
    name = "mail_account" if request.param == "condstore" else "mail_account_nocondstore"
    account: MailAccount = request.getfixturevalue(name)
    return account


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        db_url,
        tmp_path / "data",
        writeback_poll_seconds=0.05,
        writeback_retry_initial_seconds=0.1,
        writeback_retry_max_seconds=0.2,
        writeback_max_attempts=3,
    )


def condstore(account: MailAccount) -> bool:
    return "CONDSTORE" not in account.server.trim_capabilities


def direct_writeback(engine: Engine, settings: Settings, mailbox_id: int) -> WriteBack:
    """A WriteBack outside the worker, to drive step by step (the worker is stopped)."""
    with Session(engine) as db:
        mailbox = db.get(Mailbox, mailbox_id)
        assert mailbox is not None
        acc = imap_account(mailbox, settings)
    ctx = SyncContext(settings=settings, engine=engine, stop=threading.Event())
    return WriteBack(ctx, mailbox_id, "support", acc)


@pytest.fixture
def synced(
    engine: Engine, settings: Settings, account: MailAccount
) -> Iterator[tuple[int, MailAccount]]:
    """The seeded box, taken in by one run of the worker, which is then stopped."""
    seed_conversation(account)
    mailbox_id = add_test_mailbox(engine, settings, account)
    with running_worker(settings, engine):
        wait_synced(engine, mailbox_id)
    yield mailbox_id, account


# -- flags -----------------------------------------------------------------------------------------


def test_claim_tag_and_read_reach_every_message_of_the_conversation_once(
    engine: Engine,
    settings: Settings,
    account: MailAccount,
    imap_client: Callable[[MailAccount], IMAPClient],
    recorder: Recorder,
) -> None:
    seed_conversation(account)
    mailbox_id = add_test_mailbox(engine, settings, account)
    colleague = imap_client(account)
    with running_worker(settings, engine):
        wait_synced(engine, mailbox_id)
        caps = mailbox_capabilities(engine, mailbox_id)
        assert caps["keywords"] is True and "\\*" in caps["permanent_flags"]
        assert caps["keyword_limit"] == 26 and caps["server"] == "dovecot"
        with unit_of_work(engine) as db:
            alice = create_agent(db, "alice@example.test", "Alice", "pw", handle="alice")
            operations.claim(db, conversation_id(engine), alice, source=ActivitySource.web)
        claim_action = wait_for(lambda: _one_action(engine, "flags"), what="the claim's outbox row")
        assert claim_action is not None
        wait_done(engine, claim_action)
        on_server = where_on_server(colleague)
        for msgid in CONVERSATION:
            assert {"\\Flagged", "$Assigned_alice"} <= flags_of(on_server, msgid), msgid
        assert "\\Flagged" not in flags_of(on_server, OTHER)
        # one STORE per folder (INBOX holds m1 and m3, Sent holds m2), conditional on CONDSTORE
        stores = recorder.uid("STORE")
        assert len(stores) == 2, stores
        assert all(("UNCHANGEDSINCE" in " ".join(s)) == condstore(account) for s in stores)
        # the database knows what the server has now: reading it back is no news (no echo)
        in_db = where_in_db(engine, mailbox_id)
        for msgid in (*CONVERSATION, OTHER):
            assert in_db[msgid] == on_server[msgid], msgid

        recorder.clear()
        again = add_action(
            engine,
            mailbox_id,
            conversation_id(engine),
            "flags",
            {"add": ["\\Flagged", assignee_keyword("alice")], "remove": []},
        )
        wait_done(engine, again)
        assert recorder.uid("STORE") == [], "a change already on the server is not written again"

        with unit_of_work(engine) as db:
            operations.add_tag(
                db, conversation_id(engine), "billing", source=ActivitySource.web, agent=alice
            )
            operations.mark_read(
                db, conversation_id(engine), True, source=ActivitySource.web, agent=alice
            )
        wait_for(lambda: _all_done(engine, mailbox_id), what="the tag and read actions to be done")
        on_server = where_on_server(colleague)
        for msgid in CONVERSATION:
            assert {"\\Flagged", "$Assigned_alice", "billing", "\\Seen"} <= flags_of(
                on_server, msgid
            ), msgid
        assert flags_of(on_server, OTHER) == set()
        in_db = where_in_db(engine, mailbox_id)
        for msgid in (*CONVERSATION, OTHER):
            assert in_db[msgid] == on_server[msgid], msgid
        # no echo: reading our own writes back (IDLE news comes ~0.5 s later) writes nothing
        with Session(engine) as db:
            actions = len(db.exec(select(PendingImapAction.id)).all())
        writes = len(recorder.uid("STORE"))
        time.sleep(2.0)
        with Session(engine) as db:
            assert len(db.exec(select(PendingImapAction.id)).all()) == actions
        assert len(recorder.uid("STORE")) == writes
        assert where_on_server(colleague) == on_server


def _one_action(engine: Engine, kind: str) -> int | None:
    with Session(engine) as db:
        found = db.exec(select(PendingImapAction.id).where(PendingImapAction.kind == kind)).all()
    return found[0] if len(found) == 1 else None


def _all_done(engine: Engine, mailbox_id: int) -> bool:
    with Session(engine) as db:
        states = db.exec(
            select(PendingImapAction.state, PendingImapAction.last_error).where(
                PendingImapAction.mailbox_id == mailbox_id
            )
        ).all()
    assert all(s != ImapActionState.failed for s, _ in states), states
    return bool(states) and all(s == ImapActionState.done for s, _ in states)


def test_a_concurrent_change_is_read_again_and_decided_again(
    engine: Engine,
    settings: Settings,
    synced: tuple[int, MailAccount],
    imap_client: Callable[[MailAccount], IMAPClient],
    recorder: Recorder,
) -> None:
    mailbox_id, account = synced
    colleague = imap_client(account)
    colleague.select_folder("INBOX")
    uid_of = {_msgid(colleague, uid): uid for uid in colleague.search("ALL")}
    # just before our STORE reaches the server, the colleague reads m1 and flags m3 themselves
    fired: list[tuple[str, ...]] = []

    def colleague_acts(command: tuple[str, ...]) -> None:
        if command[:2] == ("UID", "STORE") and not fired:
            fired.append(command)
            colleague.add_flags([uid_of["m1@example.com"]], ["\\Seen"])
            colleague.add_flags([uid_of["m3@example.com"]], ["\\Flagged"])

    recorder.before = colleague_acts
    with Session(engine) as db:
        first_message = db.exec(select(Message).where(Message.message_id == "m1@example.com")).one()
        third_message = db.exec(select(Message).where(Message.message_id == "m3@example.com")).one()
    wb = direct_writeback(engine, settings, mailbox_id)
    first = add_action(
        engine, mailbox_id, None, "flags", {"add": ["\\Flagged"]}, message=first_message.id
    )
    second = add_action(
        engine, mailbox_id, None, "flags", {"add": ["\\Flagged"]}, message=third_message.id
    )
    # both messages in one action: one STORE for the two of them
    both = add_action(engine, mailbox_id, conversation_id(engine), "flags", {"add": ["\\Answered"]})
    for action in (first, second, both):
        wb.apply_action(action)
        assert action_row(engine, action).state == ImapActionState.done
    on_server = where_on_server(colleague)
    # both changes are there: the colleague's \Seen and ours
    assert {"\\Seen", "\\Flagged", "\\Answered"} <= flags_of(on_server, "m1@example.com")
    assert {"\\Flagged", "\\Answered"} <= flags_of(on_server, "m3@example.com")
    flag_stores = [s[2] for s in recorder.uid("STORE") if "\\Flagged" in s[-1]]
    m1 = str(uid_of["m1@example.com"])
    if condstore(account):
        # m1: MODIFIED, read again, still needed, so written again; m3 was flagged by the
        # colleague meanwhile: read again, nothing left to write
        assert flag_stores == [m1, m1]
    else:
        assert flag_stores == [m1]
    # \Answered for both messages: one STORE in INBOX, one in Sent
    assert len([s for s in recorder.uid("STORE") if "\\Answered" in s[-1]]) == 2
    in_db = where_in_db(engine, mailbox_id)
    for msgid in CONVERSATION:
        assert in_db[msgid] == on_server[msgid], msgid


def _msgid(client: IMAPClient, uid: int) -> str:
    data = client.fetch([uid], ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])[uid]
    header = data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().split(":", 1)[-1]
    msgid = normalize_msgid(header)
    assert msgid is not None
    return msgid


def test_keywords_past_the_folder_limit_are_recorded_not_lost(
    engine: Engine,
    settings: Settings,
    synced: tuple[int, MailAccount],
    imap_client: Callable[[MailAccount], IMAPClient],
    recorder: Recorder,
) -> None:
    mailbox_id, account = synced
    colleague = imap_client(account)
    colleague.select_folder("INBOX")
    other = next(u for u in colleague.search("ALL") if _msgid(colleague, u) == OTHER)
    # another client already used 25 distinct keywords in INBOX: one slot of Maildir's 26 left
    colleague.add_flags([other], [f"kw{i:02d}" for i in range(25)])
    wb = direct_writeback(engine, settings, mailbox_id)
    action = add_action(
        engine,
        mailbox_id,
        conversation_id(engine),
        "flags",
        {"add": ["\\Flagged", "first", "second", "third"], "remove": []},
    )
    wb.apply_action(action)
    assert action_row(engine, action).state == ImapActionState.done
    on_server = where_on_server(colleague)
    for msgid in ("m1@example.com", "m3@example.com"):
        assert flags_of(on_server, msgid) >= {"\\Flagged", "first"}
        assert not flags_of(on_server, msgid) & {"second", "third"}
    # Sent has room for all three
    assert flags_of(on_server, "m2@example.com") >= {"\\Flagged", "first", "second", "third"}
    # "second" and "third" were never sent to INBOX: Dovecot would take them and lose them
    assert sum("second" in " ".join(s) for s in recorder.uid("STORE")) == 1
    dropped = unkept(engine, mailbox_id)
    assert dropped == {
        ("INBOX", "second", KeywordRefusal.limit),
        ("INBOX", "third", KeywordRefusal.limit),
    }
    assert action_row(engine, action).attempts == 0
    # and the next action with them sends them to INBOX no more (decided, not retried)
    recorder.clear()
    again = add_action(
        engine, mailbox_id, conversation_id(engine), "flags", {"add": ["third"], "remove": []}
    )
    wb.apply_action(again)
    assert action_row(engine, again).state == ImapActionState.done
    assert not [s for s in recorder.uid("STORE") if "third" in " ".join(s)]
    assert unkept(engine, mailbox_id) == dropped
    # the keyword that was sent is really kept: Dovecot's Maildir index rebuilt from the files
    _drop_maildir_index(account)
    fresh = imap_client(account)
    on_server = where_on_server(fresh)
    assert "first" in flags_of(on_server, "m1@example.com")
    assert len({f for f in flags_of(on_server, OTHER) if f.startswith("kw")}) == 25


def unkept(engine: Engine, mailbox_id: int) -> set[tuple[str, str, KeywordRefusal]]:
    with Session(engine) as db:
        rows = db.exec(select(UnkeptKeyword).where(UnkeptKeyword.mailbox_id == mailbox_id))
        return {(r.folder, r.keyword, r.reason) for r in rows}


def _drop_maildir_index(account: MailAccount) -> None:
    home = account.server.mail_dir / account.user / "Maildir"
    for path in home.glob("dovecot.index*"):
        path.unlink()


def test_a_mailbox_that_keeps_no_keywords_gets_only_system_flags(
    engine: Engine,
    settings: Settings,
    synced: tuple[int, MailAccount],
    imap_client: Callable[[MailAccount], IMAPClient],
    recorder: Recorder,
) -> None:
    mailbox_id, account = synced
    with unit_of_work(engine) as db:
        mailbox = db.get(Mailbox, mailbox_id)
        assert mailbox is not None
        # as Exchange Online: no \* in PERMANENTFLAGS
        mailbox.capabilities = {
            **mailbox.capabilities,
            "permanent_flags": ["\\Seen", "\\Flagged", "\\Answered", "\\Deleted", "\\Draft"],
            "keywords": False,
        }
    wb = direct_writeback(engine, settings, mailbox_id)
    action = add_action(
        engine,
        mailbox_id,
        conversation_id(engine),
        "flags",
        {"add": ["\\Flagged", "$Assigned_alice"], "remove": ["$Assigned_bob"]},
    )
    wb.apply_action(action)
    assert action_row(engine, action).state == ImapActionState.done
    on_server = where_on_server(imap_client(account))
    for msgid in CONVERSATION:
        assert flags_of(on_server, msgid) >= {"\\Flagged"}
        assert "$Assigned_alice" not in flags_of(on_server, msgid)
    assert not any("$Assigned" in " ".join(s) for s in recorder.uid("STORE"))


# -- moves ---------------------------------------------------------------------------------------


def test_status_moves_follow_the_conversation_and_sent_stays(
    engine: Engine,
    settings: Settings,
    account: MailAccount,
    imap_client: Callable[[MailAccount], IMAPClient],
    recorder: Recorder,
) -> None:
    seed_conversation(account)
    mailbox_id = add_test_mailbox(engine, settings, account)
    colleague = imap_client(account)
    messages_before = None
    with running_worker(settings, engine):
        wait_synced(engine, mailbox_id)
        messages_before = count_messages(engine)
        cid = conversation_id(engine)
        with unit_of_work(engine) as db:
            alice = create_agent(db, "alice@example.test", "Alice", "pw", handle="alice")
        for status, folder in (
            ("closed", "Archive"),
            ("pending", "Pending"),
            ("spam", "Junk"),
            ("deleted", "Trash"),
            ("open", "INBOX"),
        ):
            recorder.clear()
            with unit_of_work(engine) as db:
                operations.set_status(db, cid, status, source=ActivitySource.web, agent=alice)
            wait_for(lambda: _all_done(engine, mailbox_id), what=f"the move to {folder}")
            on_server = where_on_server(colleague)
            for msgid in ("m1@example.com", "m3@example.com"):
                assert places(on_server, msgid) == [folder], (status, msgid, on_server[msgid])
            assert places(on_server, "m2@example.com") == ["Sent"], "our reply stays in Sent"
            assert places(on_server, OTHER) == ["INBOX"]
            # one UID MOVE from the one folder the conversation was in; without MOVE one UID
            # COPY, then \\Deleted and UID EXPUNGE of exactly those UIDs
            moves = recorder.uid("MOVE") if has_move(account) else recorder.uid("COPY")
            assert len(moves) == 1 and moves[0][-1].strip('"') == folder, moves
            assert len(recorder.uid("EXPUNGE")) == (0 if has_move(account) else 1)
            assert not [c for c in recorder.commands if c[0] == "EXPUNGE"]

            # the database follows: same folder and UID, one location each, no new messages;
            # the folder syncs of the target folders (where they run) do not add one twice
            def db_matches(expected: dict[str, Any] = on_server) -> bool:
                in_db = where_in_db(engine, mailbox_id)
                return all(in_db.get(m) == expected.get(m) for m in (*CONVERSATION, OTHER))

            wait_for(db_matches, timeout=5, what=f"the database to match after {status}")
            assert count_messages(engine) == messages_before
        subscribed = {name for _f, _d, name in colleague.list_sub_folders()}
        assert "Pending" in subscribed
    with Session(engine) as db:
        pending = db.exec(
            select(Folder).where(Folder.mailbox_id == mailbox_id, Folder.name == "Pending")
        ).one()
        assert pending.role.value == "pending"
    assert count_messages(engine) == messages_before


def test_a_missing_pending_folder_is_created_and_subscribed(
    engine: Engine,
    settings: Settings,
    synced: tuple[int, MailAccount],
    imap_client: Callable[[MailAccount], IMAPClient],
) -> None:
    mailbox_id, account = synced
    colleague = imap_client(account)
    if colleague.folder_exists("Pending"):
        colleague.unsubscribe_folder("Pending")
        colleague.delete_folder("Pending")
    with unit_of_work(engine) as db:
        for folder in db.exec(
            select(Folder).where(Folder.mailbox_id == mailbox_id, Folder.name == "Pending")
        ):
            db.delete(folder)
    wb = direct_writeback(engine, settings, mailbox_id)
    action = add_action(engine, mailbox_id, conversation_id(engine), "move", {"role": "pending"})
    assert wb.apply_action(action) is True
    assert "Pending" in {name for _f, _d, name in colleague.list_sub_folders()}
    on_server = where_on_server(colleague)
    assert places(on_server, "m1@example.com") == ["Pending"]
    with Session(engine) as db:
        folder = db.exec(
            select(Folder).where(Folder.mailbox_id == mailbox_id, Folder.name == "Pending")
        ).one()
        assert folder.role.value == "pending"
    assert where_in_db(engine, mailbox_id)["m1@example.com"] == on_server["m1@example.com"]


def test_without_move_it_copies_and_expunges_exactly_those_uids(
    engine: Engine,
    settings: Settings,
    synced: tuple[int, MailAccount],
    imap_client: Callable[[MailAccount], IMAPClient],
    recorder: Recorder,
) -> None:
    mailbox_id, account = synced
    recorder.without = frozenset({"MOVE"})
    colleague = imap_client(account)
    colleague.select_folder("INBOX")
    other = next(u for u in colleague.search("ALL") if _msgid(colleague, u) == OTHER)
    # the colleague's client marks m9 deleted without expunging (Thunderbird's IMAP delete model)
    colleague.add_flags([other], ["\\Deleted"])
    wb = direct_writeback(engine, settings, mailbox_id)
    action = add_action(engine, mailbox_id, conversation_id(engine), "move", {"role": "archive"})
    wb.apply_action(action)
    assert action_row(engine, action).state == ImapActionState.done
    on_server = where_on_server(colleague)
    assert places(on_server, "m1@example.com") == ["Archive"]
    assert places(on_server, "m3@example.com") == ["Archive"]
    assert places(on_server, OTHER) == ["INBOX"], "never a bare EXPUNGE of other mail"
    assert recorder.uid("MOVE") == []
    assert len(recorder.uid("COPY")) == 1
    expunges = recorder.uid("EXPUNGE")
    assert len(expunges) == 1 and str(other) not in expunges[0][2].split(",")
    assert not [c for c in recorder.commands if c[0] in ("EXPUNGE", "CLOSE")]
    in_db = where_in_db(engine, mailbox_id)
    for msgid in CONVERSATION:
        assert in_db[msgid] == on_server[msgid]


def test_a_server_with_neither_move_nor_uidplus_is_refused_clearly(
    engine: Engine,
    settings: Settings,
    synced: tuple[int, MailAccount],
    imap_client: Callable[[MailAccount], IMAPClient],
    recorder: Recorder,
) -> None:
    mailbox_id, account = synced
    recorder.without = frozenset({"MOVE", "UIDPLUS"})
    wb = direct_writeback(engine, settings, mailbox_id)
    action = add_action(engine, mailbox_id, conversation_id(engine), "move", {"role": "archive"})
    assert wb.apply_action(action) is False
    row = action_row(engine, action)
    assert row.state == ImapActionState.failed and row.attempts == 1
    assert row.last_error is not None and "neither MOVE nor UIDPLUS" in row.last_error
    with Session(engine) as db:
        logged = db.exec(select(Activity).where(Activity.action == "writeback_failed")).all()
    assert len(logged) == 1 and logged[0].details["action_id"] == action
    on_server = where_on_server(imap_client(account))
    assert places(on_server, "m1@example.com") == ["INBOX"]
    assert not [c for c in recorder.commands if "EXPUNGE" in c or "COPY" in c]


# -- crashes, failures, order -------------------------------------------------------------------


class Crash(Exception):
    pass


@pytest.mark.parametrize("without_move", [False, True], ids=["move", "copy-expunge"])
def test_a_crash_between_applying_and_recording_is_replayed_once(
    without_move: bool,
    engine: Engine,
    settings: Settings,
    synced: tuple[int, MailAccount],
    imap_client: Callable[[MailAccount], IMAPClient],
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed after the IMAP work, before the database knew (the internal apply step, then a
    raise instead of the recording); the restarted write-back finds it all done already."""
    mailbox_id, account = synced
    if without_move:
        recorder.without = frozenset({"MOVE"})
    without_move = without_move or not has_move(account)
    cid = conversation_id(engine)
    counted = ("MOVE", "COPY", "EXPUNGE", "STORE")

    def crash_then_restart(
        action: int, *, whole_worker: bool = False
    ) -> tuple[dict[str, int], dict[str, int]]:
        crashing = direct_writeback(engine, settings, mailbox_id)

        def crash(*_args: Any) -> None:
            raise Crash("killed after the IMAP work, before the database knew")

        monkeypatch.setattr(crashing.recorder, "done", crash)
        recorder.clear()
        with pytest.raises(Crash):
            crashing.apply_action(action)
        crashing._discard()
        assert action_row(engine, action).state == ImapActionState.pending
        applied = {k: len(recorder.uid(k)) for k in counted}
        recorder.clear()
        if whole_worker:
            # the folder syncs of INBOX and Archive race the write-back: INBOX sees the
            # messages gone, Archive sees them arrive
            with running_worker(settings, engine):
                wait_done(engine, action)
                wait_for(
                    lambda: (
                        where_in_db(engine, mailbox_id) == where_on_server(imap_client(account))
                    ),
                    timeout=10,
                    what="the database to match the mailbox",
                )
        else:
            restarted = direct_writeback(engine, settings, mailbox_id)
            assert restarted.drain() is True
            restarted._discard()
        row = action_row(engine, action)
        assert row.state == ImapActionState.done and row.attempts == 0, row.last_error
        return applied, {k: len(recorder.uid(k)) for k in counted}

    flags = add_action(engine, mailbox_id, cid, "flags", {"add": ["\\Flagged", "urgent"]})
    applied, replayed = crash_then_restart(flags)
    # INBOX (m1, m3) and Sent (m2): one STORE each, none on replay
    assert applied == {"MOVE": 0, "COPY": 0, "EXPUNGE": 0, "STORE": 2}
    assert replayed == {"MOVE": 0, "COPY": 0, "EXPUNGE": 0, "STORE": 0}

    move = add_action(engine, mailbox_id, cid, "move", {"role": "archive"})
    applied, replayed = crash_then_restart(move, whole_worker=True)
    if without_move:
        assert applied == {"MOVE": 0, "COPY": 1, "EXPUNGE": 1, "STORE": 1}
    else:
        assert applied == {"MOVE": 1, "COPY": 0, "EXPUNGE": 0, "STORE": 0}
    # on replay the UIDs are gone from INBOX and the messages are found in Archive
    assert replayed == {"MOVE": 0, "COPY": 0, "EXPUNGE": 0, "STORE": 0}

    on_server = where_on_server(imap_client(account))
    for msgid in ("m1@example.com", "m3@example.com"):
        assert places(on_server, msgid) == ["Archive"], on_server[msgid]
        assert {"\\Flagged", "urgent"} <= flags_of(on_server, msgid)
    assert places(on_server, "m2@example.com") == ["Sent"]
    in_db = where_in_db(engine, mailbox_id)
    for msgid in (*CONVERSATION, OTHER):
        assert in_db[msgid] == on_server[msgid], msgid


def test_a_failing_action_backs_off_blocks_only_its_conversation_then_fails_visibly(
    engine: Engine,
    settings: Settings,
    synced: tuple[int, MailAccount],
    imap_client: Callable[[MailAccount], IMAPClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mailbox_id, account = synced
    cid = conversation_id(engine)
    other_cid = conversation_id(engine, OTHER)
    broken = add_action(engine, mailbox_id, cid, "flags", {"add": ["\\Flagged"]})
    later = add_action(engine, mailbox_id, cid, "flags", {"add": ["\\Answered"]})
    elsewhere = add_action(engine, mailbox_id, other_cid, "flags", {"add": ["\\Flagged"]})
    wb = direct_writeback(engine, settings, mailbox_id)
    apply_flags = wb.flags.apply

    def refuse_the_first(imap: ImapSession, plan: Any, outcome: Any) -> None:
        if plan.action_id == broken:
            raise WriteBackError("the server said NO (a test)")
        apply_flags(imap, plan, outcome)

    monkeypatch.setattr(wb.flags, "apply", refuse_the_first)
    assert wb.drain() is True
    first = action_row(engine, broken)
    assert first.state == ImapActionState.pending and first.attempts == 1
    assert first.next_attempt_at is not None and "a test" in (first.last_error or "")
    # the later action of the same conversation waits; the other conversation's went through
    assert action_row(engine, later).state == ImapActionState.pending
    assert action_row(engine, later).attempts == 0
    assert action_row(engine, elsewhere).state == ImapActionState.done
    on_server = where_on_server(imap_client(account))
    assert "\\Answered" not in flags_of(on_server, "m1@example.com")
    assert "\\Flagged" in flags_of(on_server, OTHER)
    wait_for(
        lambda: (wb.drain() or True) and action_row(engine, later).state == ImapActionState.done,
        timeout=10,
        what="the action to fail for good and the later one to go through",
    )
    failed = action_row(engine, broken)
    assert failed.state == ImapActionState.failed
    assert failed.attempts == settings.writeback_max_attempts
    with Session(engine) as db:
        logged = db.exec(select(Activity).where(Activity.action == "writeback_failed")).all()
    assert [a.conversation_id for a in logged] == [cid]
    on_server = where_on_server(imap_client(account))
    assert "\\Answered" in flags_of(on_server, "m1@example.com")
    assert "\\Flagged" not in flags_of(on_server, "m1@example.com")


def test_a_committed_claim_wakes_the_loop_at_once(
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    mail_account: MailAccount,
    imap_client: Callable[[MailAccount], IMAPClient],
) -> None:
    """No notify call anywhere: the commit that wrote the outbox row wakes the write-back."""
    slow = make_settings(db_url, tmp_path / "slow", writeback_poll_seconds=60.0)
    seed_conversation(mail_account)
    mailbox_id = add_test_mailbox(engine, slow, mail_account)
    with running_worker(slow, engine):
        wait_synced(engine, mailbox_id)
        time.sleep(0.5)  # the loop has polled once and is in its 60 s wait
        with unit_of_work(engine) as db:
            alice = create_agent(db, "alice@example.test", "Alice", "pw", handle="alice")
            operations.claim(db, conversation_id(engine), alice, source=ActivitySource.web)
        claim_action = wait_for(lambda: _one_action(engine, "flags"), what="the claim's outbox row")
        assert claim_action is not None
        wait_done(engine, claim_action, timeout=10)
    on_server = where_on_server(imap_client(mail_account))
    assert "\\Flagged" in flags_of(on_server, "m1@example.com")


def test_a_claim_sets_the_registered_loops_event_when_it_commits(
    engine: Engine, settings: Settings
) -> None:
    """The domain operation alone wakes the write-back of its mailbox (kernel.wakeups): set on
    commit, not before, not for a rolled-back claim, not for another mailbox's loop."""
    not_connected = SimpleNamespace(
        imaps_port=993, user="support@example.test", password="pw", ca_file=""
    )
    mailbox_id = add_test_mailbox(engine, settings, not_connected)
    other_mailbox = add_test_mailbox(engine, settings, not_connected, name="sales")
    with unit_of_work(engine) as db:
        alice = create_agent(db, "alice@example.test", "Alice", "pw", handle="alice")
        conversation = Conversation(mailbox_id=mailbox_id, subject="Order 123")
        db.add(conversation)
        db.flush()
        cid = conversation.id
    assert cid is not None
    wake = wakeups.register(Loop.WRITEBACK, mailbox_id)
    elsewhere = wakeups.register(Loop.WRITEBACK, other_mailbox)
    sender = wakeups.register(Loop.SENDER, mailbox_id)
    try:
        with pytest.raises(RuntimeError), unit_of_work(engine) as db:
            operations.claim(db, cid, alice, source=ActivitySource.web)
            db.flush()
            assert not wake.is_set(), "woken before the commit"
            raise RuntimeError("the request failed after the claim: rolled back")
        assert not wake.is_set(), "a rolled-back claim wakes nobody"
        with unit_of_work(engine) as db:
            operations.claim(db, cid, alice, source=ActivitySource.web)
            db.flush()
            assert not wake.is_set(), "woken before the commit"
        assert wake.is_set()
        assert not elsewhere.is_set() and not sender.is_set()
        with Session(engine) as db:
            queued = db.exec(
                select(PendingImapAction).where(PendingImapAction.mailbox_id == mailbox_id)
            ).all()
        assert [a.kind for a in queued] == ["flags"]
    finally:
        wakeups.unregister(Loop.WRITEBACK, mailbox_id, wake)
        wakeups.unregister(Loop.WRITEBACK, other_mailbox, elsewhere)
        wakeups.unregister(Loop.SENDER, mailbox_id, sender)
