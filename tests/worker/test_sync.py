"""The worker against the real Dovecot: initial sync, live arrival, restarts, UIDVALIDITY."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from imapdesk.kernel.models import Folder, FolderState, Mailbox, Message, MessageLocation
from tests.support.corpus import CORPUS
from tests.support.imap import snapshot_mailbox
from tests.support.mail import make_mail
from tests.support.worker import (
    add_test_mailbox,
    caught_up,
    count_locations,
    count_messages,
    folder_state,
    live_conversations,
    make_settings,
    running_worker,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_settings(db_url, tmp_path / "data")


def test_initial_sync_then_live_arrival_without_touching_the_mailbox(
    engine: Engine,
    settings,
    mail_account,
    imap_client,  # type: ignore[no-untyped-def]
) -> None:
    server = mail_account.server
    server.seed(
        mail_account.user, mail_account.password, "INBOX", [make_mail(i) for i in range(30)]
    )
    server.seed(
        mail_account.user,
        mail_account.password,
        "Sent",
        [
            make_mail(
                100,
                subject="Re: Question number 3",
                refs="<m3@example.com>",
                sender=mail_account.user,
            )
        ],
        flags=("\\Seen",),
    )
    colleague = imap_client(mail_account)
    before = snapshot_mailbox(colleague)
    mailbox_id = add_test_mailbox(engine, settings, mail_account)
    with running_worker(settings, engine, untouched=[mail_account]):
        wait_for(
            lambda: (
                caught_up(engine, mailbox_id, "INBOX") and caught_up(engine, mailbox_id, "Sent")
            ),
            what="initial sync",
        )
        assert count_messages(engine) == 31
        convs = live_conversations(engine)
        assert len(convs) == 30
        # the reply from Sent joined the conversation of message 3 as outbound
        with Session(engine) as db:
            reply = db.exec(select(Message).where(Message.message_id == "m100@example.com")).one()
            original = db.exec(select(Message).where(Message.message_id == "m3@example.com")).one()
            assert reply.direction.value == "outbound"
            assert reply.conversation_id == original.conversation_id
        # a colleague's client appends a message: it arrives with nothing restarted
        colleague.append(
            "INBOX", make_mail(200, subject="Re: Question number 5", refs="<m5@example.com>")
        )
        wait_for(lambda: count_messages(engine) == 32, timeout=10, what="live arrival")
        with Session(engine) as db:
            new = db.exec(select(Message).where(Message.message_id == "m200@example.com")).one()
            m5 = db.exec(select(Message).where(Message.message_id == "m5@example.com")).one()
            assert new.conversation_id == m5.conversation_id
            assert new.thread_rule == "references"
        with Session(engine) as db:
            mb = db.get(Mailbox, mailbox_id)
            assert mb is not None and mb.capabilities["idle"] and mb.capabilities["condstore"]
    after = snapshot_mailbox(colleague)
    before["INBOX"].update({k: v for k, v in after["INBOX"].items() if b"m200@" in k})
    # the folders of the mapping that were missing (Pending, Notes) are created, empty
    assert {name: after[name] for name in set(after) - set(before)} == {"Pending": {}, "Notes": {}}
    assert {name: after[name] for name in before} == before, "the worker changed or moved mail"


def test_same_message_in_two_mailboxes_is_one_message_in_one_conversation(
    engine: Engine,
    settings,
    mailserver,
    mail_account_factory,  # type: ignore[no-untyped-def]
) -> None:
    a, b = mail_account_factory(), mail_account_factory()
    raw = make_mail(1, subject="Both boxes")
    for acc in (a, b):
        mailserver.seed(acc.user, acc.password, "INBOX", [raw])
    mailserver.seed(a.user, a.password, "INBOX", [raw])  # delivered twice to the first box
    first = add_test_mailbox(engine, settings, a, name="support")
    second = add_test_mailbox(engine, settings, b, name="info")
    with running_worker(settings, engine, untouched=[a, b]):
        wait_for(lambda: caught_up(engine, first) and caught_up(engine, second))
    assert count_messages(engine) == 1
    assert count_locations(engine) == 3
    assert len(live_conversations(engine)) == 1


def test_wrong_password_is_reported_and_other_mailboxes_go_on(
    engine: Engine,
    settings,
    mailserver,
    mail_account_factory,  # type: ignore[no-untyped-def]
) -> None:
    good, bad = mail_account_factory(), mail_account_factory()
    mailserver.seed(good.user, good.password, "INBOX", [make_mail(1)])
    bad_id = add_test_mailbox(engine, settings, bad, name="broken", password="wrong-password")
    good_id = add_test_mailbox(engine, settings, good, name="support")
    with running_worker(settings, engine, untouched=[good]):
        wait_for(lambda: caught_up(engine, good_id), what="the good mailbox")

        def bad_error() -> str | None:
            with Session(engine) as db:
                mb = db.get(Mailbox, bad_id)
                return mb.last_error if mb else None

        message = wait_for(bad_error, what="the error of the broken mailbox")
        assert "login failed" in message and "password" in message
        assert "wrong-password" not in message
    assert count_messages(engine) == 1


def test_untrusted_certificate_is_refused_with_a_clear_error(
    engine: Engine,
    settings,
    mail_account,  # type: ignore[no-untyped-def]
) -> None:
    from imapdesk.kernel.db import unit_of_work

    mailbox_id = add_test_mailbox(engine, settings, mail_account)
    with unit_of_work(engine) as db:
        mb = db.get(Mailbox, mailbox_id)
        assert mb is not None
        mb.ca_file = None  # the system CAs do not know the test server's certificate
    with running_worker(settings, engine, untouched=[mail_account]):

        def error() -> str | None:
            with Session(engine) as db:
                m = db.get(Mailbox, mailbox_id)
                return m.last_error if m else None

        message = wait_for(error, what="the TLS error")
    assert "certificate" in message and "--ca-file" in message


def test_uidvalidity_change_causes_no_duplicates(
    engine: Engine,
    settings,
    mail_account,
    imap_client,  # type: ignore[no-untyped-def]
) -> None:
    server = mail_account.server
    mails = [
        make_mail(
            i,
            subject="Order 7 status",
            refs="<m0@example.com>" if i else None,
        )
        for i in range(5)
    ]
    mails += [make_mail(i) for i in range(5, 20)]
    server.seed(mail_account.user, mail_account.password, "Support", mails)
    mailbox_id = add_test_mailbox(engine, settings, mail_account, folders=["Support"])
    colleague = imap_client(mail_account)
    # no untouched= here: the colleague deletes the folder on purpose
    with running_worker(settings, engine):
        wait_for(lambda: caught_up(engine, mailbox_id, "Support"))
        before = folder_state(engine, mailbox_id, "Support")
        assert before is not None
        convs_before = {c.id for c in live_conversations(engine)}
        assert count_messages(engine) == 20 and len(convs_before) == 16
        colleague.delete_folder("Support")
        colleague.create_folder("Support")
        colleague.append("Support", mails[0])  # new UIDVALIDITY, same mail coming back
        server.seed(mail_account.user, mail_account.password, "Support", mails[1:])

        def resynced() -> bool:
            f = folder_state(engine, mailbox_id, "Support")
            return bool(
                f
                and f.uidvalidity != before.uidvalidity
                and f.state == FolderState.poll
                and count_locations(engine, "Support") == 20
            )

        wait_for(resynced, timeout=30, what="the resync after UIDVALIDITY changed")
    assert count_messages(engine) == 20
    assert {c.id for c in live_conversations(engine)} == convs_before


def test_mail_sent_while_dovecot_was_down_arrives(
    engine: Engine,
    settings,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from imapdesk.devtools.mailserver import LocalMailServer, free_port

    server = LocalMailServer(tmp_path / "dovecot", imap_port=free_port(), imaps_port=free_port())
    server.start()
    try:
        server.add_user("down@example.test", "secret")
        server.seed("down@example.test", "secret", "INBOX", [make_mail(1)])

        acc = server.account("down@example.test")
        mailbox_id = add_test_mailbox(engine, settings, acc)
        with running_worker(settings, engine, untouched=[acc]):
            wait_for(lambda: caught_up(engine, mailbox_id))
            server.stop()
            time.sleep(0.5)
            server.start()
            server.seed("down@example.test", "secret", "INBOX", [make_mail(2)])
            wait_for(
                lambda: count_messages(engine) == 2,
                timeout=30,
                what="mail appended while the server was down",
            )
            server.seed("down@example.test", "secret", "INBOX", [make_mail(3)])
            wait_for(lambda: count_messages(engine) == 3, timeout=15, what="live after restart")
    finally:
        server.stop()


def test_kill_minus_9_during_initial_sync_resumes_without_gap_or_duplicate(
    db_url: str,
    engine: Engine,
    settings,
    mail_account,
    imap_client,  # type: ignore[no-untyped-def]
) -> None:
    server = mail_account.server
    server.seed(
        mail_account.user,
        mail_account.password,
        "INBOX",
        [make_mail(i, size=3000) for i in range(2000)],
    )
    colleague = imap_client(mail_account)
    before = snapshot_mailbox(colleague)
    add_test_mailbox(engine, settings, mail_account)
    env = dict(
        os.environ,
        IMAPDESK_DATABASE_URL=db_url,
        IMAPDESK_DATA_DIR=str(settings.data_dir),
        IMAPDESK_FETCH_BATCH_SIZE="100",
    )
    cmd = [sys.executable, "-m", "imapdesk", "worker"]

    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(
            lambda: count_messages(engine) >= 300,
            timeout=60,
            interval=0.01,
            what="the first batches",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = count_messages(engine)
        assert killed_at < 2000, "the sync finished before the kill: nothing was tested"
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: count_locations(engine) >= 2000, timeout=120, what="the resumed sync")
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    with Session(engine) as db:
        assert db.exec(select(func.count()).select_from(Message)).one() == 2000
        assert db.exec(select(func.count()).select_from(MessageLocation)).one() == 2000
        uids = db.exec(select(MessageLocation.uid)).all()
        assert len(set(uids)) == 2000
        folder = db.exec(select(Folder).where(Folder.name == "INBOX")).one()
        assert folder.message_count == 2000
    after = snapshot_mailbox(colleague)
    assert {name: after[name] for name in before} == before


def test_a_message_over_the_size_limit_is_stored_with_its_header_only(
    db_url: str,
    engine: Engine,
    mail_account,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    settings = make_settings(
        db_url, tmp_path / "data", large_message_bytes=100_000, max_message_bytes=1_000_000
    )
    big = make_mail(2, subject="Huge attachment", size=1_500_000)
    medium = make_mail(3, subject="Medium attachment", size=300_000)
    mail_account.server.seed(
        mail_account.user, mail_account.password, "INBOX", [make_mail(1), big, medium, make_mail(4)]
    )
    mailbox_id = add_test_mailbox(engine, settings, mail_account)
    with running_worker(settings, engine, untouched=[mail_account]):
        wait_for(lambda: caught_up(engine, mailbox_id))
    with Session(engine) as db:
        msgs = {m.message_id: m for m in db.exec(select(Message))}
    assert set(msgs) == {"m1@example.com", "m2@example.com", "m3@example.com", "m4@example.com"}
    assert msgs["m2@example.com"].subject == "Huge attachment"
    assert "IMAPDESK_MAX_MESSAGE_BYTES" in (msgs["m2@example.com"].parse_error or "")
    assert msgs["m3@example.com"].parse_error is None
    assert len(msgs["m3@example.com"].text) > 300_000


def _corpus_files(*roots: Path) -> list[Path]:
    skip = {"README", "COPYING", "COPYING-GPL-3", "SOURCE.txt"}
    files = []
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.name not in skip and p.suffix not in (".json", ".txt", ".T080"):
                files.append(p)
    return files


def test_notmuch_default_corpus_gives_the_expected_24_conversations(
    engine: Engine,
    settings,
    mail_account,  # type: ignore[no-untyped-def]
) -> None:
    files = _corpus_files(CORPUS / "notmuch/test/corpora/default")
    mail_account.server.seed(
        mail_account.user, mail_account.password, "INBOX", [p.read_bytes() for p in files]
    )
    mailbox_id = add_test_mailbox(engine, settings, mail_account)
    with running_worker(settings, engine, untouched=[mail_account]):
        wait_for(lambda: caught_up(engine, mailbox_id))
    expected: Counter[int] = Counter()
    for line in (
        (CORPUS / "notmuch/expected-default-corpus-threads.T080.txt")
        .read_text(encoding="utf-8")
        .splitlines()
    ):
        if line.startswith("thread:"):
            counts = line.split("[", 1)[1].split("]", 1)[0]  # "3/3(4)"
            expected[int(counts.split("/", 1)[0])] += 1
    convs = live_conversations(engine)
    assert len(convs) == 24
    assert Counter(c.message_count for c in convs) == expected
    assert count_locations(engine) == len(files)


def test_every_corpus_file_is_ingested_and_visible_through_the_api(
    engine: Engine,
    settings,
    mail_account,  # type: ignore[no-untyped-def]
) -> None:
    from fastapi.testclient import TestClient

    from imapdesk.api.app import create_app
    from imapdesk.domain.accounts.agents import create_agent, create_api_token
    from imapdesk.kernel.db import unit_of_work

    files = _corpus_files(CORPUS / "stalwart-eml", CORPUS / "notmuch/test/corpora")
    files = [p for p in files if p.suffix == ".eml" or "stalwart" not in str(p)]
    assert len(files) > 400
    mail_account.server.seed(
        mail_account.user, mail_account.password, "INBOX", [p.read_bytes() for p in files]
    )
    mailbox_id = add_test_mailbox(engine, settings, mail_account)
    with running_worker(settings, engine, untouched=[mail_account]):
        wait_for(lambda: caught_up(engine, mailbox_id), timeout=60)
    folder = folder_state(engine, mailbox_id, "INBOX")
    assert folder is not None and folder.last_error is None
    assert count_locations(engine) == len(files)
    with unit_of_work(engine) as db:
        agent = create_agent(db, email="admin@example.test", name="Admin", password="pw-123456")
        token = create_api_token(db, agent)
    client = TestClient(create_app(settings=settings, engine=engine))
    headers = {"Authorization": f"Bearer {token}"}
    seen_ids: set[int] = set()
    cursor = None
    conv_ids = []
    while True:
        params = {"limit": 200, "status": "open"} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/conversations", params=params, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        conv_ids += [c["id"] for c in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    for cid in conv_ids:
        detail = client.get(f"/api/v1/conversations/{cid}", headers=headers)
        assert detail.status_code == 200
        seen_ids |= {m["id"] for m in detail.json()["messages"]}
    with Session(engine) as db:
        all_ids = set(db.exec(select(Message.id)).all())
        conversationless = db.exec(
            select(func.count()).select_from(Message).where(col(Message.conversation_id).is_(None))
        ).one()
    assert conversationless == 0
    assert seen_ids == all_ids
    some = next(iter(all_ids))
    raw = client.get(f"/api/v1/messages/{some}/raw", headers=headers)
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("message/rfc822")
