"""Search (the per-conversation index: SQLite FTS5, PostgreSQL tsvector): words in the subject,
people and text, Chinese and Japanese words from the middle of sentences, every operator,
phrases, snippets (escaped on the page), and the mailboxes an agent may see, through the query
layer, the REST API and the web UI, on both databases."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text
from sqlmodel import Session, col, delete, select

from imapdesk.domain.accounts import access
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.conversations import reads, search
from imapdesk.domain.conversations.search_query import parse_query
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent, Mailbox, Message
from imapdesk.mail.parsing import parse_message
from tests.support import cjk_mail
from tests.support import factories as f
from tests.support.cjk_mail import CORPUS_JAPANESE, CORPUS_JAPANESE_WORD, MAILS
from tests.support.web import Page


@pytest.fixture
def found(engine: Engine, agent_token: str) -> dict[str, int]:
    with unit_of_work(engine) as s:
        support, billing = f.mailbox(s, "support"), f.mailbox(s, "billing")
        flux = f.conversation(s, support, "Car trouble", minutes=1)
        f.message(
            s,
            flux,
            subject="Car trouble",
            from_name="Marty McFly",
            from_email="marty@hillvalley.example",
            to=[{"name": "Doc Brown", "email": "doc@labs.example"}],
            text="The flux capacitor is broken again.\nIt needs 1.21 gigawatts.",
        )
        other = f.conversation(s, support, "Invoice", minutes=2)
        f.message(s, other, text="Please pay the invoice.", from_email="ap@shop.example")
        secret = f.conversation(s, billing, "Payroll", minutes=3)
        f.message(s, secret, text="The capacitor budget is secret.")
    return {"flux": flux.id or 0, "other": other.id or 0, "secret": secret.id or 0}


def ids(api: TestClient, q: str, **params: str) -> list[int]:
    r = api.get("/api/v1/conversations", params={"q": q, **params})
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


def test_a_word_only_in_the_body_finds_the_conversation(
    api: TestClient, found: dict[str, int]
) -> None:
    assert ids(api, "capacitor") == [found["secret"], found["flux"]]
    assert ids(api, "capacitor", mailbox="support") == [found["flux"]]
    assert ids(api, "FLUX capac") == [found["flux"]]  # the last word as a prefix
    assert ids(api, "gigawatts 1.21") == [found["flux"]]
    assert ids(api, "capac ") == []  # a finished word is a whole word
    assert ids(api, "flux c") == []  # a single letter is no prefix yet
    assert ids(api, "dinosaur") == []


def test_people_and_subject(api: TestClient, found: dict[str, int]) -> None:
    assert ids(api, "marty") == [found["flux"]]
    assert ids(api, "hillvalley.example") == [found["flux"]]
    assert ids(api, "Doc Brown") == [found["flux"]]
    assert ids(api, "doc@labs.example") == [found["flux"]]
    assert ids(api, "trouble") == [found["flux"]]
    # the JSON keys of the recipients are not words of the mail
    assert ids(api, "email") == [] and ids(api, "name") == []


def test_the_index_follows_changes(api: TestClient, engine: Engine, found: dict[str, int]) -> None:
    with unit_of_work(engine) as s:
        msg = s.exec(select(Message).where(Message.conversation_id == found["other"])).one()
        msg.text = "Please pay the overdue bill."
        s.add(msg)
    assert ids(api, "invoice") == [found["other"]]  # still in its subject
    assert ids(api, "overdue") == [found["other"]]
    assert ids(api, "pay the") == [found["other"]]
    with unit_of_work(engine) as s:
        s.exec(delete(Message).where(col(Message.conversation_id) == found["flux"]))
    assert ids(api, "gigawatts") == []


@pytest.mark.parametrize("plan", ["set", "rows"])
def test_many_matches_find_what_few_do(
    api: TestClient,
    engine: Engine,
    found: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    plan: str,
) -> None:
    """A search reads few matches by primary key and filters the list's index walk by a set of
    many (with the bound at 0, every search counts as many); on PostgreSQL, past a share of all
    conversations, the walk checks each row's document instead: all give the same pages."""
    words = [
        "capacitor",
        "FLUX capac",
        "marty",
        "doc@labs.example",
        "pay ",
        "capac ",
        "dinosaur",
        '"flux capacitor"',
        '"capacitor flux"',
        "from:marty capacitor",
    ]
    few = {q: ids(api, q) for q in words}
    assert few["capacitor"] == [found["secret"], found["flux"]] and few["pay "] == [found["other"]]
    assert few['"flux capacitor"'] == [found["flux"]] and few['"capacitor flux"'] == []
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    monkeypatch.setattr(search, "FEW_MATCHES", 0)
    monkeypatch.setattr(search, "DENSE_SHARE", 1e9 if plan == "set" else 0)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:  # the table's size, which the plan is chosen by
            conn.execute(text("ANALYZE conversation_search"))
    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert {q: ids(api, q) for q in words} == few
        assert ids(api, "capacitor", mailbox="support") == [found["flux"]]
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    if engine.dialect.name == "sqlite":
        walk = "conversation.id + 0 IN (SELECT"
    else:
        walk = "IS true" if plan == "set" else "OFFSET 0"
    assert any(walk in s and "ORDER BY" in s for s in statements)


def test_the_look_at_the_matches_counts_messages_not_conversations(
    api: TestClient, engine: Engine, found: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three matching messages of one conversation fill a look of three rows (two and one
    more): it saw one conversation, not all of them, so the search must not stop there."""
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "sales")
        chatty = f.conversation(s, box, "Quote", minutes=30)
        for n in range(3):
            f.message(s, chatty, text=f"The zeppelin quote, take {n}.")
        newest = f.conversation(s, box, "Hangar", minutes=40)
        f.message(s, newest, text="Where does the zeppelin land?")
    monkeypatch.setattr(search, "FEW_MATCHES", 2)
    assert ids(api, "zeppelin") == [newest.id, chatty.id]


def test_search_respects_mailbox_access(engine: Engine, found: dict[str, int]) -> None:
    with unit_of_work(engine) as s:
        bob = create_agent(s, "bob@example.com", "Bob", "pw")
        access.set_mailbox_access(
            s, bob, all_mailboxes=False, mailbox_ids=reads.visible_mailbox_ids(s, bob)[:1]
        )
        page = reads.list_conversations(s, bob, reads.ConversationFilters(q="capacitor"))
        assert [r.conversation.id for r in page.items] == [found["flux"]]


def test_web_search_box(app: FastAPI, engine: Engine, found: dict[str, int]) -> None:
    from tests.support.web import sign_in

    browser = TestClient(app, follow_redirects=False)
    sign_in(browser)
    page = Page(browser.get("/?q=capacitor&queue=open").text)
    assert page.row_ids == [found["secret"], found["flux"]]
    assert "Search results" in page.all_text


def test_query_words() -> None:
    query = parse_query("Ünïcode 東京 o'brien_x ")
    assert [[(t.text, t.prefix) for t in c.terms] for c in query.clauses] == [
        [("unicode", False)],
        [("東京", False)],
        [("o", False), ("brien", False), ("x", False)],
    ]
    assert parse_query("ab").clauses[0].terms[0].prefix
    # one letter would match nearly everything
    assert not parse_query("vitamin c").clauses[-1].terms[-1].prefix


# --- words of any script, operators, phrases, snippets -----------------------------------------


def _store(s: Session, box: Mailbox, raw: bytes, **kw: Any) -> int:
    """A conversation holding one message as our parser reads `raw`."""
    parsed = parse_message(raw)
    conv = f.conversation(s, box, parsed.subject, minutes=kw.pop("minutes", 0), **kw)
    f.message(
        s,
        conv,
        raw=raw,
        subject=parsed.subject,
        from_name=parsed.from_name,
        from_email=parsed.from_email,
        to=parsed.to,
        text=parsed.text,
    )
    assert conv.id is not None
    return conv.id


@pytest.fixture
def cjk(engine: Engine, agent_token: str) -> dict[str, int]:
    """Chinese and Japanese mail in the support mailbox, one in billing; the English one."""
    with unit_of_work(engine) as s:
        support, billing = f.mailbox(s, "support"), f.mailbox(s, "billing")
        found = {m.msgid: _store(s, support, m.raw(), minutes=n) for n, m in enumerate(MAILS)}
        found["corpus"] = _store(s, support, CORPUS_JAPANESE.read_bytes(), minutes=10)
        hidden = replace(cjk_mail.LOGIN, msgid="zh-login-billing@example.cn")
        found["billing"] = _store(s, billing, hidden.raw(), minutes=20)
        other = f.conversation(s, support, "Car trouble", minutes=30)
        f.message(s, other, text="The flux capacitor is broken.", from_email="marty@example.com")
        found["english"] = other.id or 0
    return found


def test_chinese_and_japanese_words_from_the_middle_of_sentences(
    api: TestClient, cjk: dict[str, int]
) -> None:
    for mail in MAILS:
        for word in mail.words:
            expected = [cjk[mail.msgid]]
            if mail is cjk_mail.LOGIN:
                expected = [cjk["billing"], *expected]  # newest first
            assert ids(api, word) == expected, word
    assert ids(api, CORPUS_JAPANESE_WORD) == [cjk["corpus"]]
    # a single character is found wherever it stands in a run
    assert ids(api, "录", mailbox="support") == [cjk[cjk_mail.LOGIN.msgid]]
    # a sequence that is in no message
    assert ids(api, "登錄") == [] and ids(api, "方法支払") == []
    # the subject and the sender, in their scripts
    assert ids(api, "subject:請求書") == [cjk[cjk_mail.INVOICE.msgid]]
    assert ids(api, "from:山田") == [cjk[cjk_mail.INVOICE.msgid]]


def test_the_rest_api_gives_a_snippet_with_the_words_found(
    api: TestClient, cjk: dict[str, int]
) -> None:
    r = api.get("/api/v1/conversations", params={"q": "支払方法", "mailbox": "support"})
    [item] = r.json()["items"]
    snippet = item["snippet"]
    [[start, end]] = snippet["highlights"]
    assert snippet["text"][start:end] == "支払方法"
    assert "お支払方法を銀行振込から" in snippet["text"]
    r = api.get("/api/v1/conversations", params={"q": "from:yamada"})
    [item] = r.json()["items"]
    assert item["snippet"]["text"] == "山田 太郎 <yamada@example.jp>"
    # no words, no snippet
    r = api.get("/api/v1/conversations", params={"q": "is:unread"})
    assert all(item["snippet"] is None for item in r.json()["items"])


@pytest.fixture
def fields(engine: Engine, agent_token: str, tmp_path: Path) -> dict[str, int]:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "support")
        a = f.conversation(s, box, "Refund for order 77", minutes=1, unread=True, tags=("VIP",))
        f.message(
            s,
            a,
            subject="Refund for order 77",
            from_name="Alice Martin",
            from_email="alice@shop.example",
            to=[{"name": "Support", "email": "support@example.com"}],
            cc=[{"name": "Carol", "email": "carol@accounts.example"}],
            text="Please refund the broken kettle.",
        )
        report = f.message(
            s,
            a,
            subject="Re: Refund for order 77",
            from_email="support@example.com",
            to=[{"name": "Alice Martin", "email": "alice@shop.example"}],
            text="Bob Brown from shipping has the kettle.",
        )
        f.attachment(s, report, tmp_path, b"%PDF-1.4 label", filename="label.pdf")
        b = f.conversation(
            s, box, "Kettle question", minutes=60 * 24 * 40, unread=False, tags=("vip-ish",)
        )
        f.message(
            s,
            b,
            subject="Kettle question",
            from_name="Bob Brown",
            from_email="bob@home.example",
            to=[{"name": "Support", "email": "support@example.com"}],
            text="Does the kettle need a refund form? Alice said so.",
        )
        logo = f.message(s, b, text="Our logo.", from_email="support@example.com")
        f.attachment(
            s,
            logo,
            tmp_path,
            b"\x89PNG logo",
            filename="logo.png",
            content_type="image/png",
            inline=True,
            content_id="logo@example.com",
        )
    return {"a": a.id or 0, "b": b.id or 0}


def test_each_operator(api: TestClient, fields: dict[str, int]) -> None:
    a, b = fields["a"], fields["b"]
    assert ids(api, "kettle") == [b, a]
    assert ids(api, "from:alice") == [a]  # the sender, not a word of b's text
    assert ids(api, "from:bob") == [b]
    assert ids(api, "from:shop.example") == [a]
    assert ids(api, 'from:"Alice Martin"') == [a]
    assert ids(api, "to:alice") == [a]  # the reply's recipient
    assert ids(api, "to:carol") == [a] and ids(api, "cc:accounts.example") == [a]
    assert ids(api, "to:bob") == []
    assert ids(api, "subject:refund") == [a]  # b has it in its text only
    assert ids(api, "subject:kettle") == [b]
    assert ids(api, "has:attachment") == [a]  # b's image is inline
    assert ids(api, "is:unread") == [a] and ids(api, "is:read") == [b]
    assert ids(api, "tag:VIP") == [a] and ids(api, "tag:vip") == []
    # b's last message is 40 days after a's
    assert ids(api, "before:2024-05-02") == [a]
    assert ids(api, "after:2024-05-02") == [b]
    assert ids(api, "after:2024-05-01 before:2024-05-02") == [a]
    assert ids(api, "kettle has:attachment is:unread from:alice") == [a]
    assert ids(api, "kettle is:read to:support") == [b]


def test_phrases(api: TestClient, fields: dict[str, int]) -> None:
    a, b = fields["a"], fields["b"]
    assert ids(api, '"broken kettle"') == [a]
    assert ids(api, '"kettle broken"') == []
    assert ids(api, '"refund form"') == [b]
    assert ids(api, '"Bob Brown"') == [b, a]  # a's text names him too
    assert ids(api, 'from:"Bob Brown"') == [b]


def test_a_value_an_operator_cannot_take_is_refused_with_what_it_takes(
    api: TestClient, app: FastAPI, fields: dict[str, int]
) -> None:
    r = api.get("/api/v1/conversations", params={"q": "before:yesterday"})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["field"] == "q" and "YYYY-MM-DD" in error["message"]
    from tests.support.web import sign_in

    browser = TestClient(app, follow_redirects=False)
    sign_in(browser)
    r = browser.get("/", params={"q": "is:urgent"})
    assert r.status_code == 200
    assert 'role="alert"' in r.text and "is: takes unread or read" in r.text
    assert Page(r.text).row_ids == []


def test_web_snippets_are_escaped_and_marked(
    app: FastAPI, engine: Engine, agent_token: str
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "support")
        conv = f.conversation(s, box, "<b>Bold</b> subject", minutes=1)
        f.message(
            s,
            conv,
            text='Hi <img src=x onerror="alert(1)"> the zeppelin </mark><script>alert(2)</script>',
        )
    from tests.support.web import sign_in

    browser = TestClient(app, follow_redirects=False)
    sign_in(browser)
    html = browser.get("/", params={"q": "zeppelin"}).text
    snippet = html[html.index('<div class="snippet"') :]
    snippet = snippet[: snippet.index("</div>")]
    assert "<mark>zeppelin</mark>" in snippet
    assert "&lt;img src=x onerror=" in snippet and "&lt;script&gt;" in snippet
    assert "&lt;/mark&gt;" in snippet
    assert "<img" not in html and "<script>alert" not in html and "<b>Bold" not in html


def test_an_agent_never_finds_what_they_may_not_see(
    engine: Engine, cjk: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    with unit_of_work(engine) as s:
        bob = create_agent(s, "bob@example.com", "Bob", "pw")
        support = s.exec(select(Mailbox).where(Mailbox.name == "support")).one()
        access.set_mailbox_access(s, bob, all_mailboxes=False, mailbox_ids=[support.id or 0])
    with Session(engine) as s:
        seen = s.get(Agent, bob.id)
        assert seen is not None
        for few in (search.FEW_MATCHES, 0):  # both plans
            monkeypatch.setattr(search, "FEW_MATCHES", few)
            for q in ("登录", "from:wang.xiaoming", "subject:账户", '"无法登录"', "帮 is:unread"):
                page = reads.list_conversations(s, seen, reads.ConversationFilters(q=q))
                assert [r.conversation.id for r in page.items] == [cjk[cjk_mail.LOGIN.msgid]], q
            page = reads.list_conversations(
                s, seen, reads.ConversationFilters(q="登录", mailbox="billing")
            )
            assert page.items == []
