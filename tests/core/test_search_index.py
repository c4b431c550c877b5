"""The per-conversation search index stays in step with what conversations hold: mail taken in
by the ingest (a reply to it, a late parent that merges two conversations), replies and notes
of agents, a rebuild, a deleted conversation; migration 0014 writes the documents of mail that
was there before it. On both databases."""

from __future__ import annotations

# ruff: noqa: RUF001  (Chinese and Japanese text, with its full-width punctuation)
from pathlib import Path

from sqlalchemy import Engine, create_engine, delete, insert, text
from sqlmodel import Session, col, select

from alembic import command
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.conversations import reads, search_index
from imapdesk.domain.mailboxes.config import ensure_folder
from imapdesk.domain.outbound.replies import add_note, queue_reply
from imapdesk.domain.sync.ingest import ingest_batch
from imapdesk.domain.sync.rebuild import forget_mail
from imapdesk.kernel.db import alembic_config, make_engine, unit_of_work
from imapdesk.kernel.models import (
    ActivitySource,
    Agent,
    Conversation,
    FolderRole,
    Mailbox,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import FetchedMessage
from tests.support import factories as f
from tests.support.cjk_mail import INVOICE, LOGIN
from tests.support.databases import fresh_pg_database, pg_url
from tests.support.mail import message_with_id


def found(engine: Engine, q: str) -> list[int]:
    with Session(engine) as s:
        agent = s.exec(select(Agent)).first()
        assert agent is not None
        page = reads.list_conversations(s, agent, reads.ConversationFilters(q=q))
        return [r.conversation.id or 0 for r in page.items]


def documents(engine: Engine) -> dict[int, str]:
    """What the index holds, by conversation."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(
                text(
                    "SELECT rowid, subject || '|' || sender || '|' || recipient || '|' || body "
                    "FROM conversation_search"
                )
            )
        else:
            rows = conn.execute(
                text("SELECT conversation_id, terms::text FROM conversation_search")
            )
        return {cid: doc for cid, doc in rows}


def ingest(engine: Engine, tmp_path: Path, *raws: bytes, uid: int = 1) -> None:
    with Session(engine) as s:
        box = s.exec(select(Mailbox)).one()
        folder = ensure_folder(s, box.id or 0, "INBOX", FolderRole.inbox, watched=True)
        ingest_batch(
            s,
            settings=Settings(data_dir=tmp_path, database_url=str(engine.url)),
            mailbox=box,
            folder=folder,
            fetched=[FetchedMessage(uid=uid + n, raw=raw) for n, raw in enumerate(raws)],
            our_addresses=frozenset({"support@example.test"}),
        )
        s.commit()


def setup(engine: Engine) -> int:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "support", smtp_host="smtp.example.com")
        create_agent(s, "alice@example.com", "Alice", "pw")
        assert box.id is not None
        return box.id


def test_ingest_replies_and_notes(engine: Engine, tmp_path: Path) -> None:
    setup(engine)
    ingest(engine, tmp_path, LOGIN.raw(to="support@example.test"))
    [cid] = found(engine, "登录")
    assert found(engine, "from:wang.xiaoming") == [cid]
    # the customer writes again in the thread
    answer = message_with_id(
        "zh-login-2@example.cn", subject="Re: 账户问题", refs=f"<{LOGIN.msgid}>"
    )
    ingest(engine, tmp_path, answer, uid=2)
    assert found(engine, '"Re: 账户问题"') == [cid]
    with unit_of_work(engine) as s:
        alice = s.exec(select(Agent)).one()
        queue_reply(
            s,
            alice,
            cid,
            body="您好，我们已经重置了您的密码，请重新登录后修改。",
            source=ActivitySource.web,
            settings=Settings(data_dir=tmp_path, database_url=str(engine.url)),
        )
        add_note(
            s,
            alice,
            cid,
            body="Escalated to the zeppelin team.",
            source=ActivitySource.web,
            settings=Settings(data_dir=tmp_path, database_url=str(engine.url)),
        )
    assert found(engine, "重置") == [cid]  # the reply's words
    assert found(engine, "zeppelin") == [cid]  # the note's
    # the reply went to the sender of the newest message
    assert found(engine, "to:customer@example.com") == [cid]
    assert set(documents(engine)) == {cid}


def test_a_late_parent_merges_two_conversations_and_their_documents(
    engine: Engine, tmp_path: Path
) -> None:
    setup(engine)
    ingest(engine, tmp_path, message_with_id("root@x", subject="Kettle broken"))
    ingest(
        engine,
        tmp_path,
        message_with_id("child@x", subject="Zeppelin parts", refs="<parent@x>"),
        uid=2,
    )
    [root], [child] = found(engine, "kettle"), found(engine, "zeppelin")
    assert root != child and set(documents(engine)) == {root, child}
    # the parent arrives: one conversation, one document
    ingest(
        engine,
        tmp_path,
        message_with_id("parent@x", subject="Re: Kettle broken", refs="<root@x>"),
        uid=3,
    )
    with Session(engine) as s:
        merged = s.get(Conversation, child)
        assert merged is not None and merged.merged_into_id == root
    assert found(engine, "zeppelin") == [root] and found(engine, "kettle") == [root]
    assert set(documents(engine)) == {root}


def test_rebuild_and_deleting_a_conversation_drop_their_documents(
    engine: Engine, tmp_path: Path
) -> None:
    setup(engine)
    ingest(engine, tmp_path, LOGIN.raw(), INVOICE.raw())
    assert len(documents(engine)) == 2
    [invoice] = found(engine, "支払方法")
    with unit_of_work(engine) as s:
        s.execute(delete(Conversation).where(col(Conversation.id) == invoice))
    assert found(engine, "支払方法") == [] and len(documents(engine)) == 1
    with unit_of_work(engine) as s:
        forget_mail(s)
    assert documents(engine) == {} and found(engine, "登录") == []


def test_rebuilding_every_document_gives_what_was_kept_in_step(
    engine: Engine, tmp_path: Path
) -> None:
    setup(engine)
    ingest(engine, tmp_path, LOGIN.raw(), INVOICE.raw())
    ingest(
        engine,
        tmp_path,
        message_with_id("a@x", subject="Re: 账户问题", refs=f"<{LOGIN.msgid}>"),
        uid=3,
    )
    kept = documents(engine)
    with engine.begin() as conn:
        assert search_index.rebuild_all(conn) == 2
    assert documents(engine) == kept


def test_the_migration_writes_the_documents_of_mail_already_there(
    db_url: str, tmp_path: Path
) -> None:
    """A database at 0013 with mail in it (written as the ingest of that version wrote it),
    upgraded: the Chinese and Japanese words are found."""

    def check(url: str) -> None:
        command.upgrade(alembic_config(url), "0013")
        plain = create_engine(url)
        with plain.begin() as conn:
            conn.execute(
                insert(Mailbox.__table__),  # type: ignore[attr-defined]
                [
                    {
                        "name": "support",
                        "address": "support@example.test",
                        "imap_host": "imap.example.test",
                        "imap_port": 993,
                        "imap_security": "ssl",
                        "username": "support",
                        "password_encrypted": "x",
                        "enabled": True,
                        "watched_folders": [],
                        "capabilities": {},
                        "created_at": f.BASE_TIME,
                    }
                ],
            )
            conn.execute(
                text(
                    "INSERT INTO conversation (id, mailbox_id, subject, subject_key, status, "
                    "claimed, message_count, unread, last_message_at, created_at, updated_at, "
                    "version) VALUES (7, 1, '請求書について', '', 'open', false, 1, true, "
                    ":t, :t, :t, 1)"
                ),
                {"t": f.BASE_TIME},
            )
            conn.execute(
                text(
                    "INSERT INTO message (id, message_id, has_message_id, content_hash, "
                    "conversation_id, thread_rule, direction, subject, from_email, from_name, "
                    '"to", cc, reply_to, "references", headers, text, snippet, size, '
                    "auto_submitted, seen, created_at) VALUES (1, 'm@x', true, 'h', 7, 'new', "
                    "'inbound', '請求書について', 'yamada@example.jp', '山田 太郎', '[]', '[]', "
                    "'[]', '[]', '', :body, '', 1, false, false, :t)"
                ),
                {"body": INVOICE.body, "t": f.BASE_TIME},
            )
        plain.dispose()
        command.upgrade(alembic_config(url), "head")
        engine = make_engine(url)
        try:
            with unit_of_work(engine) as s:
                create_agent(s, "alice@example.com", "Alice", "pw")
            assert found(engine, "支払方法") == [7] and found(engine, "発行") == [7]
            assert found(engine, "from:山田") == [7]
        finally:
            engine.dispose()

    if db_url.startswith("sqlite"):
        check(f"sqlite:///{tmp_path / 'at-0013.db'}")
    else:
        with fresh_pg_database("imapdesk_t_mig_") as name:
            check(pg_url(name))
