"""A keyword the server refuses or cannot keep is a decision, not a retry: the claim reaches the
mailbox at once, the tag stays in imapdesk with a "not kept in the mailbox" mark, nothing is
retried, and agents and admins are told.

On the test Dovecot (Maildir, which keeps 26 distinct keywords per folder) and with Dovecot's
own refusal of a keyword longer than 50 characters (a NO to the STORE).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from imapclient import IMAPClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.api.app import SESSION_COOKIE, create_app
from imapdesk.devtools.mailserver import (
    LocalMailServer,
    LocalMailServerError,
    MailAccount,
    free_port,
    make_base_dir,
)
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.domain.conversations import operations, reads
from imapdesk.domain.mailboxes.servers import imap_account
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    ImapActionState,
    KeywordRefusal,
    Mailbox,
    Message,
    PendingImapAction,
    UnkeptKeyword,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import ImapAccount, ImapReply, ImapSession
from imapdesk.mail.imap.probe import UNLIMITED, probe
from imapdesk.worker.folder_sync import SyncContext
from imapdesk.worker.writeback import WriteBack
from tests.support.imap import Found, where_on_server
from tests.support.web import session_cookie
from tests.support.worker import (
    add_test_mailbox,
    caught_up,
    make_settings,
    running_worker,
    seed_conversation,
    wait_for,
)
from tests.support.writeback_commands import dress_writeback_sessions, replace_on

CONVERSATION = ("m1@example.com", "m2@example.com", "m3@example.com")
INBOX_OF_IT = ("m1@example.com", "m3@example.com")
OTHER = "m9@example.com"
# keywords of another client that are not tags: 26 of them fill a Maildir folder
FILLERS = [f"$Fill{i:02d}" for i in range(26)]
# Dovecot refuses keywords longer than 50 characters (mail_max_keyword_length)
LONG_TAG = "customer-escalation-" + "x" * 40


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


# -- helpers ---------------------------------------------------------------------------------


def conversation_id(engine: Engine, msgid: str = "m1@example.com") -> int:
    with Session(engine) as db:
        message = db.exec(select(Message).where(Message.message_id == msgid)).one()
        assert message.conversation_id is not None
        return message.conversation_id


def wait_synced(engine: Engine, mailbox_id: int, sent: str = "Sent") -> None:
    wait_for(
        lambda: caught_up(engine, mailbox_id, "INBOX") and caught_up(engine, mailbox_id, sent),
        what="INBOX and Sent caught up",
        timeout=60,
    )

    def all_in() -> bool:
        with Session(engine) as db:
            found = db.exec(
                select(Message.message_id).where(
                    col(Message.message_id).in_([*CONVERSATION, OTHER])
                )
            ).all()
        return len(found) == 4

    wait_for(all_in, what="the seeded messages in the database")


def actions(engine: Engine, mailbox_id: int) -> list[PendingImapAction]:
    with Session(engine) as db:
        return list(
            db.exec(
                select(PendingImapAction)
                .where(PendingImapAction.mailbox_id == mailbox_id)
                .order_by(col(PendingImapAction.id))
            )
        )


def unkept(engine: Engine, mailbox_id: int) -> dict[tuple[str, str], UnkeptKeyword]:
    with Session(engine) as db:
        rows = db.exec(select(UnkeptKeyword).where(UnkeptKeyword.mailbox_id == mailbox_id))
        return {(r.folder, r.keyword): r for r in rows}


def tags(engine: Engine, cid: int) -> set[str]:
    with Session(engine) as db:
        return operations.tags_of(db, cid)


def flags_on_server(found: Found, msgid: str) -> set[str]:
    (entry,) = found[msgid]
    return set(entry[2])


def fill_keywords(account: MailAccount, fillers: list[str] = FILLERS) -> None:
    """Another client already used `fillers` (26 distinct keywords: a Maildir folder keeps no
    more) in INBOX (on m9) and in Sent (on m2)."""
    client = account.connect()
    try:
        for folder, msgid in (("INBOX", OTHER), (account.server.folder("Sent"), "m2@example.com")):
            client.select_folder(folder)
            uids = client.search(["HEADER", "Message-ID", msgid])
            assert len(uids) == 1
            for start in range(0, len(fillers), 25):
                client.add_flags(uids, fillers[start : start + 25])
    finally:
        client.logout()


def direct_writeback(engine: Engine, settings: Settings, mailbox_id: int) -> WriteBack:
    """A WriteBack outside the worker, to drive one pass at a time."""
    with Session(engine) as db:
        mailbox = db.get(Mailbox, mailbox_id)
        assert mailbox is not None
        acc = imap_account(mailbox, settings)
    ctx = SyncContext(settings=settings, engine=engine, stop=threading.Event())
    return WriteBack(ctx, mailbox_id, "support", acc)


class StoreLog:
    """Every UID STORE the write-back's sessions send, and the server's answer."""

    def __init__(self) -> None:
        self.stores: list[tuple[str, str]] = []  # (flags sent, status)
        self.lock = threading.Lock()

    def with_(self, word: str) -> list[tuple[str, str]]:
        with self.lock:
            return [s for s in self.stores if word.lower() in s[0].lower()]


@pytest.fixture
def store_log(monkeypatch: pytest.MonkeyPatch) -> StoreLog:
    log = StoreLog()

    def logging(session: ImapSession) -> Callable[[], None]:
        send = session.command

        def command(*words: str, collect: Iterable[str] = ()) -> ImapReply:
            reply = send(*words, collect=collect)
            if words[:2] == ("UID", "STORE"):
                with log.lock:
                    # the item without its CONDSTORE condition
                    item = (
                        words[-1].split(") ", 1)[-1] if "UNCHANGEDSINCE" in words[-1] else words[-1]
                    )
                    log.stores.append((item, reply.status))
            return reply

        return replace_on(session, command=command)

    # the write-back's own sessions, and its turns at the mailbox's shared connection
    dress_writeback_sessions(monkeypatch, logging)
    return log


# -- at the limit of a Maildir folder: the claim at once, the tag kept and marked ------------------


def test_a_claim_reaches_the_mailbox_at_once_while_the_27th_keyword_is_refused(
    engine: Engine,
    settings: Settings,
    mail_account: MailAccount,
    imap_client: Callable[[MailAccount], IMAPClient],
    store_log: StoreLog,
) -> None:
    account = mail_account
    seed_conversation(account)
    fill_keywords(account)
    mailbox_id = add_test_mailbox(engine, settings, account)
    colleague = imap_client(account)
    with running_worker(settings, engine):
        wait_synced(engine, mailbox_id)
        with Session(engine) as db:
            mailbox = db.get(Mailbox, mailbox_id)
            assert mailbox is not None
            caps = dict(mailbox.capabilities)
        # the probe tells Maildir from dbox by the X-GUID of INBOX's messages
        assert caps["keyword_limit"] == 26 and caps["keyword_limit_basis"] == "Dovecot on Maildir"
        cid = conversation_id(engine)
        with unit_of_work(engine) as db:
            alice_id = create_agent(db, "alice@example.test", "Alice", "pw", handle="alice").id
            create_agent(db, "root@example.test", "Root", "pw", is_admin=True)
        # first the tag (the 27th keyword of INBOX and Sent), then the claim, each committed
        with unit_of_work(engine) as db:
            agent = db.get(Agent, alice_id)
            operations.add_tag(db, cid, "urgent", source=ActivitySource.web, agent=agent)
        with unit_of_work(engine) as db:
            agent = db.get(Agent, alice_id)
            operations.claim(db, cid, agent, source=ActivitySource.web)

        def all_done() -> bool:
            rows = actions(engine, mailbox_id)
            assert not [a for a in rows if a.attempts or a.state == ImapActionState.failed], [
                (a.kind, a.payload, a.attempts, a.last_error) for a in rows
            ]
            return len(rows) == 2 and all(a.state == ImapActionState.done for a in rows)

        wait_for(all_done, what="the tag and the claim written back")
        # no retries: every action done at its first attempt, no error, nothing due again
        for action in actions(engine, mailbox_id):
            assert action.attempts == 0 and action.last_error is None
            assert action.next_attempt_at is None
        on_server = where_on_server(colleague)
        for msgid in CONVERSATION:
            assert "\\Flagged" in flags_on_server(on_server, msgid), msgid
            assert "urgent" not in flags_on_server(on_server, msgid), msgid
            # the assignee's keyword would be the 27th too
            assert "$Assigned_alice" not in flags_on_server(on_server, msgid), msgid
        # never sent: Dovecot would accept them and lose them when its index is rebuilt
        assert store_log.with_("urgent") == [] and store_log.with_("$Assigned_") == []
        sent = account.server.folder("Sent")
        records = unkept(engine, mailbox_id)
        assert set(records) == {
            ("INBOX", "urgent"),
            (sent, "urgent"),
            ("INBOX", "$Assigned_alice"),
            (sent, "$Assigned_alice"),
        }
        assert {r.reason for r in records.values()} == {KeywordRefusal.limit}

        # the state stays in imapdesk, also after a colleague's change is read back
        colleague.select_folder("INBOX")
        colleague.add_flags(
            colleague.search(["HEADER", "Message-ID", "m1@example.com"]), ["\\Seen"]
        )

        def m1_seen() -> bool:
            with Session(engine) as db:
                return db.exec(
                    select(Message.seen).where(Message.message_id == "m1@example.com")
                ).one()

        wait_for(m1_seen, what="the colleague's \\Seen read back")
        assert tags(engine, cid) == {"urgent"}
        with Session(engine) as db:
            agent = db.get(Agent, alice_id)
            assert agent is not None
            detail = reads.conversation_detail(db, agent, cid)
            conversation = detail.row.conversation
            assert conversation.claimed and conversation.assignee_id == alice_id
            mark = detail.row.tags_not_kept["urgent"]
            assert mark.reason == "limit" and mark.folder in ("INBOX", sent)
            told = db.exec(
                select(Activity).where(
                    Activity.conversation_id == cid, Activity.action == "keyword_not_kept"
                )
            ).all()
        told_tags = {k.get("tag") for a in told for k in a.details["keywords"]}
        told_assignees = {k.get("assignee") for a in told for k in a.details["keywords"]}
        assert "urgent" in told_tags and "alice" in told_assignees

        # agents and admins are told: REST, the pages, /readyz, the admin page
        with unit_of_work(engine) as db:
            agent = db.get(Agent, alice_id)
            assert agent is not None
            token = create_api_token(db, agent)
        _told_over_http(settings, engine, cid, token, alice_id, sent)


def _told_over_http(
    settings: Settings, engine: Engine, cid: int, token: str, alice_id: int | None, sent: str
) -> None:
    client = TestClient(create_app(settings=settings, engine=engine))
    bearer = {"Authorization": f"Bearer {token}"}
    body = client.get(f"/api/v1/conversations/{cid}", headers=bearer).json()
    assert body["tags"] == ["urgent"]
    (mark,) = body["tags_not_kept"]
    assert mark["tag"] == "urgent" and mark["reason"] == "limit" and mark["why"]
    listed = client.get("/api/v1/conversations", headers=bearer).json()["items"]
    (row,) = [c for c in listed if c["id"] == cid]
    assert [m["tag"] for m in row["tags_not_kept"]] == ["urgent"]
    boxes = client.get("/api/v1/mailboxes", headers=bearer).json()
    (box,) = boxes["items"] if isinstance(boxes, dict) else boxes
    assert {(k["folder"], k["keyword"]) for k in box["keywords_not_kept"]} >= {
        ("INBOX", "urgent"),
        (sent, "urgent"),
    }
    ready = client.get("/readyz").json()
    (mailbox,) = ready["mailboxes"]
    assert mailbox["keyword_limit"] == 26
    # how many, not which: a keyword names a tag or an agent
    assert mailbox["keywords_not_kept"] >= 2
    assert "urgent" not in str(ready)

    assert alice_id is not None
    client.cookies.set(SESSION_COOKIE, session_cookie(settings, engine, alice_id))
    page = client.get(f"/conversations/{cid}").text
    assert 'data-not-kept="limit"' in page and "not kept in the mailbox" in page
    queue = client.get("/?queue=open").text
    assert 'data-tag="urgent" data-not-kept="limit"' in queue
    assert "is not kept in the mailbox" in page  # the activity log says it in words
    with Session(engine) as db:
        root = db.exec(select(Agent).where(Agent.email == "root@example.test")).one()
        mailbox_id = db.exec(select(Mailbox.id)).one()
    assert root.id is not None
    client.cookies.set(SESSION_COOKIE, session_cookie(settings, engine, root.id))
    admin = client.get(f"/admin/mailboxes/{mailbox_id}").text
    assert 'data-keyword="urgent" data-reason="limit"' in admin
    assert "Keywords not kept in the mailbox" in admin


# -- a NO to the STORE: taken apart, the system flags at once, the keyword recorded ---------------


@pytest.fixture
def synced(
    engine: Engine, settings: Settings, mail_account: MailAccount
) -> Iterator[tuple[int, MailAccount]]:
    """The seeded box, taken in by one run of the worker, which is then stopped."""
    seed_conversation(mail_account)
    mailbox_id = add_test_mailbox(engine, settings, mail_account)
    with running_worker(settings, engine):
        wait_synced(engine, mailbox_id)
    yield mailbox_id, mail_account


def test_a_keyword_the_server_refuses_is_recorded_once_and_never_retried(
    engine: Engine,
    settings: Settings,
    synced: tuple[int, MailAccount],
    imap_client: Callable[[MailAccount], IMAPClient],
    store_log: StoreLog,
) -> None:
    mailbox_id, account = synced
    cid = conversation_id(engine)
    other = conversation_id(engine, OTHER)
    with unit_of_work(engine) as db:
        # first a read mark and the keyword in one action (one STORE) on the other conversation
        # (in INBOX), then the tag and the claim of the conversation (in INBOX and Sent)
        db.add(
            PendingImapAction(
                mailbox_id=mailbox_id,
                conversation_id=other,
                kind="flags",
                payload={"add": ["\\Seen", LONG_TAG.upper()], "remove": []},
            )
        )
        db.flush()
        alice = create_agent(db, "alice@example.test", "Alice", "pw", handle="alice")
        alice_id = alice.id
        operations.add_tag(db, cid, LONG_TAG, source=ActivitySource.web, agent=alice)
        operations.claim(db, cid, alice, source=ActivitySource.web)
    wb = direct_writeback(engine, settings, mailbox_id)
    wb.drain()  # one pass: everything is decided in it
    for action in actions(engine, mailbox_id):
        assert action.state == ImapActionState.done, (action.payload, action.last_error)
        assert action.attempts == 0 and action.last_error is None
    on_server = where_on_server(imap_client(account))
    for msgid in CONVERSATION:
        assert {"\\Flagged", "$Assigned_alice"} <= flags_on_server(on_server, msgid)
        assert not {f.lower() for f in flags_on_server(on_server, msgid)} & {LONG_TAG}
    assert "\\Seen" in flags_on_server(on_server, OTHER)
    # Dovecot said NO to the STORE with \Seen and the keyword: \Seen went again alone, then
    # the keyword alone (NO again); the tag went to Sent only (INBOX had refused it, whatever
    # its case: keywords compare case-insensitively), twice; nothing else carried it
    with_it = store_log.with_(LONG_TAG)
    assert len(with_it) == 4 and all(status == "NO" for _flags, status in with_it)
    assert ("+FLAGS.SILENT (\\Seen)", "OK") in store_log.stores
    records = {
        (folder, kw.lower()): row for (folder, kw), row in unkept(engine, mailbox_id).items()
    }
    assert set(records) == {("INBOX", LONG_TAG), (account.server.folder("Sent"), LONG_TAG)}
    for record in records.values():
        assert record.reason == KeywordRefusal.refused
        assert "Keyword length too long" in record.detail
    assert tags(engine, cid) == {LONG_TAG}
    with Session(engine) as db:
        agent = db.get(Agent, alice_id)
        assert agent is not None
        mark = reads.conversation_detail(db, agent, cid).row.tags_not_kept[LONG_TAG]
    assert mark.reason == "refused" and "Keyword length too long" in mark.detail

    # the next tag with it: decided from the record, no STORE, done at once
    store_log.stores.clear()
    with unit_of_work(engine) as db:
        agent = db.get(Agent, alice_id)
        operations.add_tag(db, other, LONG_TAG, source=ActivitySource.web, agent=agent)
    wb.drain()
    assert store_log.stores == []
    assert all(a.state == ImapActionState.done for a in actions(engine, mailbox_id))
    # a rule that reads the mailbox again (a colleague's change) takes no tag away
    with unit_of_work(engine) as db:
        operations.set_tags(db, other, [], source=ActivitySource.imap)
    assert tags(engine, other) == {LONG_TAG}


def test_a_keyword_a_maildir_folder_lists_27th_is_not_sent(
    engine: Engine,
    settings: Settings,
    synced: tuple[int, MailAccount],
    imap_client: Callable[[MailAccount], IMAPClient],
    store_log: StoreLog,
) -> None:
    """Dovecot accepts a 27th keyword on Maildir and lists it, then loses it when its index is
    rebuilt: one the folder lists beyond 26 is not kept, so imapdesk does not rely on it."""
    mailbox_id, account = synced
    colleague = imap_client(account)
    colleague.select_folder("INBOX")
    (other_uid,) = colleague.search(["HEADER", "Message-ID", OTHER])
    colleague.add_flags([other_uid], FILLERS)
    colleague.add_flags([other_uid], ["late"])  # the folder's 27th keyword
    cid = conversation_id(engine)
    with unit_of_work(engine) as db:
        alice = create_agent(db, "alice@example.test", "Alice", "pw", handle="alice")
        operations.add_tag(db, cid, "late", source=ActivitySource.web, agent=alice)
    direct_writeback(engine, settings, mailbox_id).drain()
    (action,) = actions(engine, mailbox_id)
    assert action.state == ImapActionState.done and action.attempts == 0
    # not sent to INBOX (Sent has room: it keeps it there)
    assert [s for s in store_log.with_("late")] == [("+FLAGS.SILENT (late)", "OK")]
    record = unkept(engine, mailbox_id)[("INBOX", "late")]
    assert record.reason == KeywordRefusal.limit and "number 27" in record.detail
    # what Dovecot does with it: gone once the index is rebuilt from the Maildir files
    colleague.logout()
    for path in (account.server.mail_dir / account.user / "Maildir").glob("dovecot.index*"):
        path.unlink()
    fresh = imap_client(account)
    fresh.select_folder("INBOX")
    kept = {f.decode() for f in fresh.get_flags([other_uid])[other_uid]}
    assert "late" not in kept and set(FILLERS) <= kept


# -- the probe: keyword_limit per server ----------------------------------------------------------


@pytest.fixture(scope="module")
def sdbox_server(_mailservers: list[tuple[LocalMailServer, Path]]) -> LocalMailServer:
    """A Dovecot on sdbox (no keyword limit), stopped with the run's other servers."""
    last: LocalMailServerError | None = None
    for _ in range(3):
        base = make_base_dir("imapdesk-test-mail-sdbox-")
        server = LocalMailServer(
            base, imap_port=free_port(), imaps_port=free_port(), storage="sdbox"
        )
        try:
            server.start()
        except LocalMailServerError as exc:
            last = exc
            shutil.rmtree(base, ignore_errors=True)
            continue
        _mailservers.append((server, base))
        return server
    assert last is not None
    raise last


def _probe(account: MailAccount) -> dict[str, Any]:
    session = ImapSession(
        ImapAccount(
            host="localhost",
            port=account.imaps_port,
            security="ssl",
            username=account.user,
            password=account.password,
            ca_file=str(account.ca_file),
        )
    )
    try:
        return probe(session)
    finally:
        session.close()


def test_the_probe_knows_the_keyword_limit_of_dovecot_by_its_storage(
    mail_account: MailAccount, sdbox_server: LocalMailServer
) -> None:
    # Maildir, INBOX empty: the storage is not seen yet, Maildir's limit is assumed
    empty = _probe(mail_account)
    assert empty["keyword_limit"] == 26 and "assumed" in empty["keyword_limit_basis"]
    seed_conversation(mail_account)
    maildir = _probe(mail_account)
    assert maildir["server"] == "dovecot" and maildir["keywords"] is True
    assert maildir["keyword_limit"] == 26
    assert maildir["keyword_limit_basis"] == "Dovecot on Maildir"
    on_sdbox = sdbox_server.create_account()
    seed_conversation(on_sdbox)
    sdbox = _probe(on_sdbox)
    assert sdbox["keyword_limit"] == UNLIMITED
    assert sdbox["keyword_limit_basis"] == "Dovecot on dbox or mbox"


# -- Cyrus: clients may create 100 of its 128 user flags per folder --------------------------------

CYRUS_FILLERS = [f"$Fill{i:03d}" for i in range(100)]


def test_on_cyrus_the_101st_keyword_is_not_sent_and_the_claim_goes_at_once(
    engine: Engine,
    settings: Settings,
    cyrus_account: MailAccount,
    imap_client: Callable[[MailAccount], IMAPClient],
    store_log: StoreLog,
) -> None:
    account = cyrus_account
    sent = account.server.folder("Sent")
    seed_conversation(account)
    fill_keywords(account, CYRUS_FILLERS)
    mailbox_id = add_test_mailbox(engine, settings, account)
    with running_worker(settings, engine):
        wait_synced(engine, mailbox_id, sent)
        with Session(engine) as db:
            mailbox = db.get(Mailbox, mailbox_id)
            assert mailbox is not None
            caps = dict(mailbox.capabilities)
        assert caps["server"] == "cyrus imapd" and caps["keyword_limit"] == 100
        cid = conversation_id(engine)
        with unit_of_work(engine) as db:
            alice = create_agent(db, "alice@example.test", "Alice", "pw", handle="alice")
            alice_id = alice.id
            operations.add_tag(db, cid, "urgent", source=ActivitySource.web, agent=alice)
        with unit_of_work(engine) as db:
            agent = db.get(Agent, alice_id)
            operations.claim(db, cid, agent, source=ActivitySource.web)

        def all_done() -> bool:
            rows = actions(engine, mailbox_id)
            assert not [a for a in rows if a.attempts or a.state == ImapActionState.failed], [
                (a.kind, a.payload, a.attempts, a.last_error) for a in rows
            ]
            return len(rows) == 2 and all(a.state == ImapActionState.done for a in rows)

        wait_for(all_done, what="the tag and the claim written back")
    on_server = where_on_server(imap_client(account))
    for msgid in CONVERSATION:
        assert "\\Flagged" in flags_on_server(on_server, msgid), msgid
        assert not {"urgent", "$Assigned_alice"} & flags_on_server(on_server, msgid), msgid
    assert store_log.with_("urgent") == []
    records = unkept(engine, mailbox_id)
    assert {("INBOX", "urgent"), (sent, "urgent")} <= set(records)
    assert all(r.reason == KeywordRefusal.limit for r in records.values())
    assert tags(engine, cid) == {"urgent"}


def test_on_cyrus_a_no_to_the_store_is_taken_apart_not_retried(
    engine: Engine,
    settings: Settings,
    cyrus_account: MailAccount,
    imap_client: Callable[[MailAccount], IMAPClient],
    store_log: StoreLog,
) -> None:
    """A Cyrus that does not say its name (`serverinfo: off`, no ID): its limit is not known,
    so the 101st keyword is sent, and Cyrus refuses the whole STORE."""
    account = cyrus_account
    sent = account.server.folder("Sent")
    seed_conversation(account)
    fill_keywords(account, CYRUS_FILLERS)
    mailbox_id = add_test_mailbox(engine, settings, account)
    with running_worker(settings, engine):
        wait_synced(engine, mailbox_id, sent)
    with unit_of_work(engine) as db:
        mailbox = db.get(Mailbox, mailbox_id)
        assert mailbox is not None
        mailbox.capabilities = {**mailbox.capabilities, "server": None, "keyword_limit": None}
        cid = conversation_id(engine)
        db.add(
            PendingImapAction(
                mailbox_id=mailbox_id,
                conversation_id=cid,
                kind="flags",
                payload={"add": ["\\Flagged", "urgent"], "remove": []},
            )
        )
    direct_writeback(engine, settings, mailbox_id).drain()
    (action,) = actions(engine, mailbox_id)
    assert action.state == ImapActionState.done
    assert action.attempts == 0 and action.last_error is None
    on_server = where_on_server(imap_client(account))
    for msgid in CONVERSATION:
        assert "\\Flagged" in flags_on_server(on_server, msgid), msgid
        assert "urgent" not in flags_on_server(on_server, msgid), msgid
    # per folder: the STORE refused, \Flagged again alone, the keyword alone refused
    assert [status for _flags, status in store_log.with_("urgent")] == ["NO"] * 4
    assert [status for _flags, status in store_log.with_("\\Flagged")] == ["NO", "OK"] * 2
    records = unkept(engine, mailbox_id)
    assert set(records) == {("INBOX", "urgent"), (sent, "urgent")}
    for record in records.values():
        assert record.reason == KeywordRefusal.refused
        assert "Too many user flags" in record.detail
