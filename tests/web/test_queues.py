"""The conversation list: queues and their counts, sorting, and bulk actions (on both
databases, over HTTP)."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, func, update
from sqlmodel import Session, col, select

from imapdesk.domain.accounts import access
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.conversations import operations, queues
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    Conversation,
    ConversationStatus,
    Mailbox,
)
from tests.support import factories as f
from tests.support.web import PASSWORD, Page, csrf

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


_COUNT = re.compile(
    r'data-(queue|mailbox|tag)="([^"]+)">\s*<span>[^<]*</span> <span class="count">(\d+)</span>'
)


def counts(html: str) -> dict[str, int]:
    """{"mine": 2, "mailbox:support": 1, "tag:vip": 2, ...} from the sidebar."""
    return {
        (name if kind == "queue" else f"{kind}:{name}"): int(n)
        for kind, name, n in _COUNT.findall(html)
    }


@dataclass
class Scene:
    s1: int
    s2: int
    s3: int
    s4: int
    s5: int
    s6: int
    s7: int
    held_by_bob: int


@pytest.fixture
def scene(engine: Engine) -> Scene:
    with unit_of_work(engine) as s:
        alice = create_agent(s, "alice@example.com", "Alice", PASSWORD)
        bob = create_agent(s, "bob@example.com", "Bob", PASSWORD)
        support, billing = f.mailbox(s, "support"), f.mailbox(s, "billing")
        open_, pending, closed = "open", "pending", "closed"
        rows = [
            f.conversation(s, support, "one", minutes=10, tags=("vip",)),
            f.conversation(s, support, "two", minutes=20, assignee_id=alice.id, claimed=True),
            f.conversation(s, support, "three", minutes=30, status=pending, assignee_id=alice.id),
            f.conversation(s, billing, "four", minutes=40, status=closed),
            f.conversation(s, billing, "five", minutes=5, status=open_, tags=("vip",)),
            f.conversation(s, support, "six", minutes=50, status="deleted"),
            f.conversation(s, billing, "seven", minutes=60, status="spam"),
            f.conversation(s, billing, "eight", minutes=1, assignee_id=bob.id, claimed=True),
        ]
    return Scene(*[int(c.id or 0) for c in rows])


@pytest.fixture
def alice(app: FastAPI, scene: Scene) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    r = client.post(
        "/login",
        data={"email": "alice@example.com", "password": PASSWORD, "csrf_token": csrf(client)},
    )
    assert r.status_code == 303
    return client


def rows(client: TestClient, query: str = "") -> list[int]:
    r = client.get("/" + (f"?{query}" if query else ""))
    assert r.status_code == 200, r.text
    return Page(r.text).row_ids


def test_queue_counts_and_what_they_list(alice: TestClient, scene: Scene) -> None:
    assert counts(alice.get("/").text) == {
        "mine": 2,
        "drafts": 0,
        "unassigned": 2,
        "open": 4,
        "pending": 1,
        "closed": 1,
        "all": 7,
        "due_soon": 0,
        "breached": 0,
        "mailbox:billing": 2,
        "mailbox:support": 2,
        "tag:vip": 2,
    }
    s = scene
    assert rows(alice, "queue=mine") == [s.s3, s.s2]
    assert rows(alice, "queue=unassigned") == [s.s1, s.s5]
    assert rows(alice, "queue=open") == [s.s2, s.s1, s.s5, s.held_by_bob]
    assert rows(alice, "queue=pending") == [s.s3]
    assert rows(alice, "queue=closed") == [s.s4]
    assert rows(alice) == [s.s7, s.s4, s.s3, s.s2, s.s1, s.s5, s.held_by_bob]
    assert rows(alice, "queue=open&mailbox=billing") == [s.s5, s.held_by_bob]
    assert rows(alice, "queue=open&tag=vip") == [s.s1, s.s5]
    page = alice.get("/?queue=open&tag=vip").text
    assert 'data-tag="vip">' in page and 'aria-current="page" data-tag="vip"' in page


def test_sorting(alice: TestClient, engine: Engine, scene: Scene) -> None:
    s = scene
    assert rows(alice, "queue=open&sort=oldest") == [s.held_by_bob, s.s5, s.s1, s.s2]
    assert rows(alice, "queue=open&sort=newest") == [s.s2, s.s1, s.s5, s.held_by_bob]
    with unit_of_work(engine) as db:
        conv = db.get(Conversation, s.s5)
        assert conv is not None
        conv.updated_at = f.BASE_TIME.replace(year=2030)
        db.add(conv)
    assert rows(alice, "queue=open&sort=activity")[0] == s.s5

    # the cursor keeps the order
    with unit_of_work(engine) as db:
        box = f.mailbox(db, "bulk")
        made = [f.conversation(db, box, f"c{i}", minutes=100 + i).id for i in range(55)]
    first = Page(alice.get("/?mailbox=bulk&sort=oldest").text)
    assert first.row_ids == made[:50]
    older = [link for link in first.links if "cursor=" in link]
    assert len(older) == 1 and "sort=oldest" in older[0]
    assert Page(alice.get(older[0]).text).row_ids == made[50:]


def test_bulk_close_claim_assign_tag(alice: TestClient, engine: Engine, scene: Scene) -> None:
    s = scene
    token = csrf(alice, "/")

    def bulk(action: str, ids: list[int], **extra: str) -> str:
        r = alice.post(
            "/bulk",
            data={"action": action, "ids": ids, "csrf_token": token, "back": "/?queue=open"}
            | extra,
        )
        assert r.status_code == 303 and r.headers["location"] == "/?queue=open"
        return Page(alice.get("/?queue=open").text).all_text

    text = bulk("claim", [s.s1, s.held_by_bob])
    assert "Claimed 1 conversation." in text and "1 not changed" in text and "bob@" in text
    assert "Tagged 2 conversations." in bulk("tag", [s.s1, s.s5], tag="urgent")
    assert "Assigned 1 conversation." in bulk("assign", [s.s5], assignee="bob@example.com")
    text = bulk("close", [s.s1, s.s5])
    assert "Closed 2 conversations." in text
    assert counts(alice.get("/").text)["closed"] == 3

    with Session(engine) as db:
        got = {c.id: c for c in db.exec(select(Conversation))}
        assert got[s.s1].status == got[s.s5].status == ConversationStatus.closed
        assert got[s.held_by_bob].status == ConversationStatus.open
        activity = db.exec(
            select(Activity.action, Activity.source).where(
                col(Activity.conversation_id).in_([s.s1, s.s5])
            )
        ).all()
    assert {a for a, _ in activity} == {"claimed", "tagged", "assigned", "status"}
    assert {src for _, src in activity} == {ActivitySource.web}


def test_bulk_needs_csrf_an_action_and_a_selection(alice: TestClient, scene: Scene) -> None:
    assert alice.post("/bulk", data={"action": "close", "ids": [scene.s1]}).status_code == 403
    token = csrf(alice, "/")
    alice.post("/bulk", data={"action": "close", "csrf_token": token})
    assert "Select one or more conversations first." in Page(alice.get("/").text).all_text
    alice.post("/bulk", data={"action": "explode", "ids": [scene.s1], "csrf_token": token})
    assert "Choose what to do" in Page(alice.get("/").text).all_text


def test_counts_are_reused_only_while_nothing_changed(
    app: FastAPI, alice: TestClient, engine: Engine, scene: Scene
) -> None:
    cache = app.state.queue_counts
    first = counts(alice.get("/").text)
    misses = cache.misses
    assert counts(alice.get("/?queue=open").text) == first
    assert cache.misses == misses and cache.hits >= 1

    # a change through the operations, as the web UI, the API and the worker make them
    with unit_of_work(engine) as s:
        me = s.exec(select(Agent).where(col(Agent.email) == "alice@example.com")).one()
        operations.claim(s, scene.s1, me, source=ActivitySource.web)
    now = counts(alice.get("/").text)
    assert (now["mine"], now["unassigned"]) == (first["mine"] + 1, first["unassigned"] - 1)

    # a commit that lands late, its updated_at older than the newest one already seen
    with unit_of_work(engine) as s:
        newest = s.exec(select(func.max(Conversation.updated_at))).one()
        assert newest is not None
        s.exec(
            update(Conversation)
            .where(col(Conversation.id) == scene.s5)
            .values(
                status=ConversationStatus.closed,
                version=Conversation.version + 1,
                updated_at=newest - timedelta(seconds=2),
            )
        )
    late = counts(alice.get("/").text)
    assert late["open"] == now["open"] - 1 and late["closed"] == now["closed"] + 1

    # a new conversation dated in the past: the newest id tells
    with unit_of_work(engine) as s:
        box = s.exec(select(Mailbox).where(col(Mailbox.name) == "support")).one()
        old = f.conversation(s, box, "from an old import", minutes=3)
        s.exec(
            update(Conversation)
            .where(col(Conversation.id) == old.id)
            .values(updated_at=newest - timedelta(days=30))
        )
    assert counts(alice.get("/").text)["open"] == late["open"] + 1


# --- the live parts: GET /queue-parts --------------------------------------------------------


def parts(client: TestClient, query: str = "") -> dict[str, Any]:
    r = client.get("/queue-parts" + (f"?{query}" if query else ""))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    return body


def test_queue_parts_need_sign_in(app: FastAPI, scene: Scene) -> None:
    anonymous = TestClient(app, follow_redirects=False)
    r = anonymous.get("/queue-parts?queue=open")
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?")
    assert "support" not in r.text and "one" not in r.text


def test_queue_parts_show_what_the_page_shows(
    alice: TestClient, engine: Engine, scene: Scene
) -> None:
    with unit_of_work(engine) as db:
        box = f.mailbox(db, "bulk")
        for i in range(55):
            f.conversation(db, box, f"c{i}", minutes=100 + i)
    queries_ = [
        "",
        "queue=mine",
        "queue=unassigned",
        "queue=open&mailbox=billing",
        "queue=open&tag=vip",
        "queue=closed",
        "status=spam",
        "queue=open&sort=oldest",
        "mailbox=bulk&sort=oldest",
        "queue=nonsense&sort=nonsense",
    ]
    for query in queries_:
        html = alice.get("/" + (f"?{query}" if query else "")).text
        got = parts(alice, query)
        page_rows = Page(html).row_ids
        assert got["ids"] == page_rows, query
        assert Page(got["rows"]).row_ids == page_rows, query
        assert counts(got["sidebar"]) == counts(html), query
        assert set(got["versions"]) == {str(i) for i in page_rows}
        # the page's script asks for the same view
        assert 'data-parts-url="/queue-parts' in html
        assert got["paged"] is False

    # a later page: the same rows as the page behind the same cursor, and its pager
    first = Page(alice.get("/?mailbox=bulk&sort=oldest").text)
    [later] = [link for link in first.links if "cursor=" in link]
    query = later.split("?", 1)[1]
    html = alice.get(later).text
    got = parts(alice, query)
    assert got["paged"] is True
    assert got["ids"] == Page(html).row_ids and len(got["ids"]) == 5
    assert "First page" in got["pager"]
    assert f'data-parts-url="/queue-parts?{query}"' in html.replace("&amp;", "&")


def test_queue_parts_follow_changes(alice: TestClient, engine: Engine, scene: Scene) -> None:
    s = scene
    before = parts(alice, "queue=unassigned")
    assert before["ids"] == [s.s1, s.s5]
    with unit_of_work(engine) as db:
        bob = db.exec(select(Agent).where(col(Agent.email) == "bob@example.com")).one()
        operations.claim(db, s.s1, bob, source=ActivitySource.api)
    after = parts(alice, "queue=unassigned")
    assert after["ids"] == [s.s5]
    assert counts(after["sidebar"])["unassigned"] == 1
    assert after["versions"][str(s.s5)] == before["versions"][str(s.s5)]
    everything = parts(alice)
    assert everything["versions"][str(s.s1)] > before["versions"][str(s.s1)]
    # the assignee by name, the address in a title
    assert "· Bob" in Page(everything["rows"]).all_text
    assert 'title="bob@example.com"' in everything["rows"]


def test_queue_parts_leave_out_mailboxes_the_agent_may_not_see(
    app: FastAPI, engine: Engine, scene: Scene
) -> None:
    with unit_of_work(engine) as db:
        bob = db.exec(select(Agent).where(col(Agent.email) == "bob@example.com")).one()
        support = db.exec(select(Mailbox).where(col(Mailbox.name) == "support")).one()
        access.set_mailbox_access(db, bob, all_mailboxes=False, mailbox_ids=[support.id or 0])
    bob_client = TestClient(app, follow_redirects=False)
    r = bob_client.post(
        "/login",
        data={"email": "bob@example.com", "password": PASSWORD, "csrf_token": csrf(bob_client)},
    )
    assert r.status_code == 303
    s = scene
    support_ids = [s.s6, s.s3, s.s2, s.s1]  # newest first, billing's left out
    for query in ("", "mailbox=billing", "queue=open&mailbox=billing", "q=four", "tag=vip"):
        got = parts(bob_client, query)
        shown = Page(got["rows"] + got["sidebar"]).all_text
        assert not set(got["ids"]) & {s.s4, s.s5, s.s7, s.held_by_bob}, query
        assert "billing" not in shown and "four" not in shown and "five" not in shown, query
        assert got["ids"] == Page(bob_client.get(f"/?{query}").text).row_ids, query
    assert parts(bob_client, "status=deleted")["ids"] == [s.s6]
    assert parts(bob_client)["ids"] == [i for i in support_ids if i != s.s6]
    assert "mailbox:billing" not in counts(parts(bob_client)["sidebar"])


def test_queue_parts_cost_no_more_than_the_page(
    alice: TestClient, engine: Engine, scene: Scene
) -> None:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    for query in ("", "queue=open&tag=vip"):
        alice.get(f"/?{query}")  # warm: the session's agent, the app's caches
        event.listen(engine, "before_cursor_execute", count)
        try:
            alice.get(f"/?{query}")
            page_statements = len(statements)
            statements.clear()
            parts(alice, query)  # made afresh: the page's statements, the stamp and access
            fresh = len(statements)
            statements.clear()
            parts(alice, query)  # nothing changed: the same agent's same view is reused
            reused = len(statements)
            statements.clear()
        finally:
            event.remove(engine, "before_cursor_execute", count)
        # the page's, the stamps (changes and drafts, the agent's read marks) and access
        assert 0 < fresh <= page_statements + 3, query
        assert 0 < reused < page_statements, query


def test_queue_parts_reused_only_for_the_same_access(
    alice: TestClient, engine: Engine, scene: Scene
) -> None:
    before = parts(alice, "queue=open")
    assert scene.s5 in before["ids"] and scene.s1 in before["ids"]
    # no conversation changes: only alice's access does
    with unit_of_work(engine) as s:
        me = s.exec(select(Agent).where(col(Agent.email) == "alice@example.com")).one()
        support = s.exec(select(Mailbox).where(col(Mailbox.name) == "support")).one()
        assert support.id is not None
        access.set_mailbox_access(s, me, all_mailboxes=False, mailbox_ids=[support.id])
    after = parts(alice, "queue=open")
    assert scene.s1 in after["ids"] and scene.s5 not in after["ids"]
    assert "billing" not in after["sidebar"]


def test_a_count_is_made_once_for_threads_that_ask_at_the_same_time() -> None:
    cache = queues.ChangeCache()
    calls: list[int] = []
    started = threading.Event()

    def slow() -> int:
        calls.append(1)
        started.set()
        time.sleep(0.2)
        return 42

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(cache.get, "k", ("stamp",), slow)
        started.wait(5)
        others = [pool.submit(cache.get, "k", ("stamp",), slow) for _ in range(7)]
        assert first.result() == 42 and [f.result() for f in others] == [42] * 7
    assert len(calls) == 1 and cache.misses == 1 and cache.hits == 7
    # a new stamp counts again; the old value is not returned for it
    assert cache.get("k", ("newer",), lambda: 7) == 7 and cache.misses == 2


def test_the_change_stamp_holds_still_while_nothing_changes(engine: Engine, scene: Scene) -> None:
    # a slot of time [start, start + 10 s), and a change made 8 s before it began
    start = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
    with unit_of_work(engine) as s:
        s.exec(
            update(Conversation)
            .where(col(Conversation.id) == scene.s1)
            .values(updated_at=start - timedelta(seconds=8))
        )
    with Session(engine) as s:
        early = queues.change_stamp(s, now=start + timedelta(seconds=0.5))
        # rows grow older, but the window stays: the counts made early still serve
        assert queues.change_stamp(s, now=start + timedelta(seconds=9.5)) == early
        # the next slot moves the window once
        assert queues.change_stamp(s, now=start + timedelta(seconds=10.5)) != early
    with unit_of_work(engine) as s:
        # a commit landing late within the slot, dated before it began
        s.exec(
            update(Conversation)
            .where(col(Conversation.id) == scene.s2)
            .values(version=Conversation.version + 1, updated_at=start - timedelta(seconds=3))
        )
    with Session(engine) as s:
        assert queues.change_stamp(s, now=start + timedelta(seconds=9.5)) != early
