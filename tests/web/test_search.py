"""Full-text search over subject, people and body text (SQLite FTS5 kept by triggers,
PostgreSQL GIN indexes), through the query layer, the REST API and the web UI."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from sqlmodel import col, delete, select

from imapdesk.domain.accounts import access
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.conversations import reads, search
from imapdesk.domain.conversations.search import search_words
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Message
from tests.support import factories as f


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


def test_many_matches_find_what_few_do(
    api: TestClient, engine: Engine, found: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search reads few matches by primary key and filters the list's index walk by a set of
    many: both give the same pages (with the bound at 0, every search counts as many)."""
    words = ["capacitor", "FLUX capac", "marty", "doc@labs.example", "pay ", "capac ", "dinosaur"]
    few = {q: ids(api, q) for q in words}
    assert few["capacitor"] == [found["secret"], found["flux"]] and few["pay "] == [found["other"]]
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    monkeypatch.setattr(search, "FEW_MATCHES", 0)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert {q: ids(api, q) for q in words} == few
        assert ids(api, "capacitor", mailbox="support") == [found["flux"]]
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    walk = "IS true" if engine.dialect.name == "postgresql" else "conversation.id + 0 IN (SELECT"
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
    from tests.support.web import Page, sign_in

    browser = TestClient(app, follow_redirects=False)
    sign_in(browser)
    page = Page(browser.get("/?q=capacitor&queue=open").text)
    assert page.row_ids == [found["secret"], found["flux"]]
    assert "Search results" in page.all_text


def test_query_words() -> None:
    words = search_words("Ünïcode 東京 o'brien_x ")
    assert [(w.word, w.prefix) for w in words] == [
        ("ünïcode", False),
        ("東京", False),
        ("o", False),
        ("brien", False),
        ("x", False),
    ]
    assert search_words("ab")[0].prefix
    assert not search_words("vitamin c")[-1].prefix  # one letter would match nearly everything
