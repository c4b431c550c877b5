"""What plain clients do on the shared box reaches the database: flags, moves, deletions."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.kernel.models import Folder, Message, MessageLocation
from tests.support.mail import make_mail
from tests.support.mapping import move_as_client
from tests.support.worker import (
    add_test_mailbox,
    caught_up,
    count_messages,
    make_settings,
    running_worker,
    wait_for,
)


def _locations(engine: Engine, message_id: str) -> list[tuple[str, list[str]]]:
    with Session(engine) as db:
        rows = db.exec(
            select(Folder.name, MessageLocation.flags)
            .join(MessageLocation, MessageLocation.folder_id == Folder.id)  # type: ignore[arg-type]
            .join(Message, Message.id == MessageLocation.message_id)  # type: ignore[arg-type]
            .where(Message.message_id == message_id)
        ).all()
    return sorted((name, sorted(flags)) for name, flags in rows)


@pytest.mark.parametrize("server", ["condstore", "no_condstore"])
def test_flags_moves_and_expunges_by_another_client_are_taken_in(
    server: str,
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    imap_client,  # type: ignore[no-untyped-def]
) -> None:
    account = request.getfixturevalue(
        "mail_account" if server == "condstore" else "mail_account_nocondstore"
    )
    settings = make_settings(db_url, tmp_path / "data", flag_rescan_seconds=0.5)
    account.server.seed(account.user, account.password, "INBOX", [make_mail(i) for i in range(5)])
    mailbox_id = add_test_mailbox(engine, settings, account)
    colleague = imap_client(account)
    with running_worker(settings, engine):
        wait_for(
            lambda: (
                caught_up(engine, mailbox_id, "INBOX") and caught_up(engine, mailbox_id, "Archive")
            )
        )
        colleague.select_folder("INBOX")
        uids = {
            data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].strip().split(b"<")[1].split(b">")[0]: uid
            for uid, data in colleague.fetch(
                colleague.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
            ).items()
        }
        # flag one, read another
        colleague.add_flags([uids[b"m1@example.com"]], [b"\\Flagged"])
        colleague.add_flags([uids[b"m2@example.com"]], [b"\\Seen"])
        wait_for(
            lambda: _locations(engine, "m1@example.com") == [("INBOX", ["\\Flagged"])],
            timeout=10,
            what="the flag",
        )
        wait_for(
            lambda: _locations(engine, "m2@example.com") == [("INBOX", ["\\Seen"])],
            timeout=10,
            what="\\Seen",
        )
        # move one to Archive: one message, its location now in Archive
        move_as_client(colleague, [uids[b"m3@example.com"]], "Archive")
        wait_for(
            lambda: _locations(engine, "m3@example.com") == [("Archive", [])],
            timeout=10,
            what="the move",
        )
        # delete and expunge one: the message stays in the database, without a location
        colleague.delete_messages([uids[b"m4@example.com"]])
        colleague.expunge()
        wait_for(lambda: _locations(engine, "m4@example.com") == [], timeout=10, what="the expunge")
        # unflag
        colleague.remove_flags([uids[b"m1@example.com"]], [b"\\Flagged"])
        wait_for(
            lambda: _locations(engine, "m1@example.com") == [("INBOX", [])],
            timeout=10,
            what="the unflag",
        )
    assert count_messages(engine) == 5


def _conversation(engine: Engine, message_id: str) -> tuple[str, bool, list[str]]:
    from imapdesk.kernel.models import Conversation, ConversationTag

    with Session(engine) as db:
        message = db.exec(select(Message).where(Message.message_id == message_id)).one()
        conv = db.get(Conversation, message.conversation_id)
        assert conv is not None
        tags = sorted(
            db.exec(
                select(ConversationTag.tag).where(ConversationTag.conversation_id == conv.id)
            ).all()
        )
        return conv.status.value, conv.claimed, tags


def _activity(engine: Engine, message_id: str) -> list[tuple[str, str, str]]:
    from imapdesk.kernel.models import Activity

    with Session(engine) as db:
        message = db.exec(select(Message).where(Message.message_id == message_id)).one()
        rows = db.exec(
            select(Activity)
            .where(Activity.conversation_id == message.conversation_id)
            .order_by(Activity.id)
        ).all()
        return [(a.source.value, a.actor, a.action) for a in rows]


def test_what_a_plain_client_does_becomes_helpdesk_state(
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    mail_account,
    imap_client,  # type: ignore[no-untyped-def]
) -> None:
    from imapdesk.kernel.models import PendingImapAction

    settings = make_settings(db_url, tmp_path / "data")
    mail_account.server.seed(
        mail_account.user, mail_account.password, "INBOX", [make_mail(i) for i in range(4)]
    )
    mailbox_id = add_test_mailbox(engine, settings, mail_account)
    colleague = imap_client(mail_account)
    colleague.select_folder("INBOX")

    def uid_of(n: int) -> int:
        found = colleague.search(["HEADER", "Message-ID", f"<m{n}@example.com>"])
        assert len(found) == 1
        return int(found[0])

    with running_worker(settings, engine):
        wait_for(
            lambda: all(caught_up(engine, mailbox_id, f) for f in ("INBOX", "Archive", "Junk"))
        )
        assert _conversation(engine, "m0@example.com") == ("open", False, [])
        colleague.add_flags([uid_of(0)], [b"\\Flagged", b"invoice"])
        wait_for(
            lambda: _conversation(engine, "m0@example.com") == ("open", True, ["invoice"]),
            timeout=10,
            what="claim and tag from the mail client",
        )
        colleague.move([uid_of(1)], "Archive")
        wait_for(
            lambda: _conversation(engine, "m1@example.com")[0] == "closed",
            timeout=10,
            what="closed by a move to Archive",
        )
        colleague.move([uid_of(2)], "Junk")
        wait_for(lambda: _conversation(engine, "m2@example.com")[0] == "spam", timeout=10)
        colleague.delete_messages([uid_of(3)])
        colleague.expunge()
        wait_for(lambda: _conversation(engine, "m3@example.com")[0] == "deleted", timeout=10)
        # back from Archive into INBOX reopens
        colleague.select_folder("Archive")
        colleague.move(colleague.search("ALL"), "INBOX")
        colleague.select_folder("INBOX")
        wait_for(
            lambda: _conversation(engine, "m1@example.com")[0] == "open",
            timeout=10,
            what="reopened by a move back",
        )
    assert ("imap", "a mail client", "claimed") in _activity(engine, "m0@example.com")
    # the move shows as closed then reopened, never as deleted in between
    assert [a for _, _, a in _activity(engine, "m1@example.com")] == ["status", "status"]
    with Session(engine) as db:
        # changes that came from the mailbox are not written back to it
        assert db.exec(select(PendingImapAction)).all() == []
    assert count_messages(engine) == 4
