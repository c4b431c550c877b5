"""Live updates at the HTTP level, on SQLite and PostgreSQL: the change feed finds every kind of
change and presence in the database; the SSE stream delivers them to a connected client."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.api.app import SESSION_COOKIE
from imapdesk.api.web.live import LiveHub, PartsKey
from imapdesk.api.web.queues import ListParams
from imapdesk.domain.accounts import access
from imapdesk.domain.conversations import operations
from imapdesk.domain.live import presence
from imapdesk.domain.live.changes import ChangeFeed
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import ActivitySource, Agent, Conversation, utcnow
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer
from tests.support.web import session_cookie


def _setup(engine: Engine, agents: dict[str, int]) -> tuple[int, int, int]:
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        conv = f.conversation(s, box, "Live", minutes=1)
        assert conv.id and box.id
        return conv.id, agents["bob"], box.id


def test_change_feed_reports_changes_once_and_presence(
    engine: Engine, agents: dict[str, int]
) -> None:
    cid, bob_id, box_id = _setup(engine, agents)
    feed = ChangeFeed()
    with Session(engine) as s:
        assert feed.poll(s) == []  # the first poll takes stock
    with unit_of_work(engine) as s:
        bob = s.get(Agent, bob_id)
        operations.claim(s, cid, bob, source=ActivitySource.web)
    with Session(engine) as s:
        [change] = feed.poll(s)
        assert (change.kind, change.conversation_id, change.mailbox_id) == (
            "conversation", cid, box_id,
        )  # fmt: skip
        assert feed.poll(s) == []  # reported once
    # a new message (what the ingest does: the conversation's version moves)
    with unit_of_work(engine) as s:
        conv = s.get(Conversation, cid)
        assert conv is not None
        f.message(s, conv, text="more")
        conv.version += 1
        conv.updated_at = utcnow()
    with unit_of_work(engine) as s:
        bob = s.get(Agent, bob_id)
        assert bob is not None
        presence.touch(s, cid, bob, "replying")
    with Session(engine) as s:
        changes = {c.kind: c for c in feed.poll(s)}
        assert set(changes) == {"conversation", "presence"}
        assert changes["presence"].payload()["agents"] == [
            {"id": bob_id, "name": "Bob Builder", "email": "bob@example.com", "state": "replying"}
        ]
        # a heartbeat that changes nothing is no news; expiry is
        assert feed.poll(s) == []
        later = utcnow() + presence.PRESENCE_TTL + timedelta(seconds=1)
        [gone] = feed.poll(s, now=later)
        assert gone.kind == "presence" and gone.agents == ()


def test_a_late_commit_is_still_reported(engine: Engine, agents: dict[str, int]) -> None:
    """updated_at is set before the commit; a poll in between must not lose the change."""
    cid, _, _ = _setup(engine, agents)
    feed = ChangeFeed()
    with Session(engine) as s:
        feed.poll(s)
    stamped = utcnow() - timedelta(seconds=3)  # stamped, then committed 3 s later
    with Session(engine) as s:
        feed.poll(s)
    with unit_of_work(engine) as s:
        conv = s.get(Conversation, cid)
        assert conv is not None
        conv.version += 1
        conv.updated_at = stamped
    with Session(engine) as s:
        assert [c.conversation_id for c in feed.poll(s)] == [cid]


def _read_events(
    url: str, cookies: httpx.Cookies, out: list[tuple[str, Any]], stop: threading.Event
) -> None:
    try:
        with (
            httpx.Client(cookies=cookies, timeout=30) as http,
            http.stream("GET", url) as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            kind = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    out.append((kind, json.loads(line[6:])))
                if stop.is_set():
                    return
    except httpx.HTTPError:
        if not stop.is_set():  # the server going away at the end of the test is expected
            raise


def _wait(predicate: Any, timeout: float = 30.0) -> None:
    """Until `predicate` holds; the bound is for a hang (a loaded machine takes seconds)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sse_stream_delivers_changes_and_presence(
    live_server: LiveServer, settings: Settings, engine: Engine, agents: dict[str, int]
) -> None:
    cid, bob_id, _ = _setup(engine, agents)
    with unit_of_work(engine) as s:
        other = f.conversation(s, f.mailbox(s, "info"), "Other", minutes=2)
    cookies = httpx.Cookies()
    cookies.set(SESSION_COOKIE, session_cookie(settings, engine, agents["alice"]))
    assert httpx.get(f"{live_server.url}/live").status_code in (303, 401)  # signed in only

    events: list[tuple[str, Any]] = []
    stop = threading.Event()
    reader = threading.Thread(
        target=_read_events,
        args=(f"{live_server.url}/live?conversation={cid}", cookies, events, stop),
        daemon=True,
    )
    reader.start()
    _wait(lambda: any(k == "hello" for k, _ in events))
    time.sleep(0.3)  # the shared poller takes stock on its first poll
    with unit_of_work(engine) as s:
        operations.set_status(s, other.id or 0, "closed", source=ActivitySource.system)
        bob = s.get(Agent, bob_id)
        operations.claim(s, cid, bob, source=ActivitySource.api)
    _wait(lambda: any(k == "conversation" for k, _ in events))
    with unit_of_work(engine) as s:
        bob = s.get(Agent, bob_id)
        assert bob is not None
        presence.touch(s, cid, bob, "viewing")
    _wait(lambda: any(k == "presence" for k, _ in events))
    stop.set()
    # only this conversation's events reach a client that asked for it
    assert {d["id"] for k, d in events if k != "hello"} == {cid}
    assert [d["agents"][0]["name"] for k, d in events if k == "presence"] == ["Bob Builder"]


def test_a_list_stream_pushes_its_parts_after_each_change_it_may_see(
    live_server: LiveServer, settings: Settings, engine: Engine, agents: dict[str, int]
) -> None:
    cid, bob_id, box_id = _setup(engine, agents)
    with unit_of_work(engine) as s:
        hidden = f.conversation(s, f.mailbox(s, "info"), "Not for Bob", minutes=2)
        bob = s.get(Agent, bob_id)
        assert bob is not None
        access.set_mailbox_access(s, bob, all_mailboxes=False, mailbox_ids=[box_id])
    streams = {}
    for who in ("alice", "bob"):
        cookies = httpx.Cookies()
        cookies.set(SESSION_COOKIE, session_cookie(settings, engine, agents[who]))
        events: list[tuple[str, Any]] = []
        stop = threading.Event()
        url = f"{live_server.url}/live?parts=1&queue=open"
        threading.Thread(
            target=_read_events, args=(url, cookies, events, stop), daemon=True
        ).start()
        streams[who] = (events, stop)
    for events, _ in streams.values():
        _wait(lambda events=events: any(k == "hello" and d["parts"] for k, d in events))
    time.sleep(0.3)  # the shared poller takes stock on its first poll

    # a change in a mailbox Bob may not see: parts for Alice only
    with unit_of_work(engine) as s:
        operations.set_status(s, hidden.id or 0, "closed", source=ActivitySource.system)
    alice_events, bob_events = streams["alice"][0], streams["bob"][0]
    _wait(lambda: any(k == "parts" for k, _ in alice_events))
    [alice_parts] = [d for k, d in alice_events if k == "parts"]
    assert alice_parts["ids"] == [cid] and "Not for Bob" not in alice_parts["rows"]

    # a change both see: the new version in both lists' parts
    with unit_of_work(engine) as s:
        operations.claim(s, cid, s.get(Agent, bob_id), source=ActivitySource.api)
        version = s.get(Conversation, cid).version  # type: ignore[union-attr]
    for events in (alice_events, bob_events):
        _wait(
            lambda events=events: any(
                k == "parts" and d["versions"].get(str(cid)) == version for k, d in events
            ),
        )
    for _, stop in streams.values():
        stop.set()
    bob_parts = [d for k, d in bob_events if k == "parts"]
    assert len(bob_parts) == 1 and all("Not for Bob" not in d["rows"] for d in bob_parts)
    assert not any(d.get("id") == hidden.id for k, d in bob_events if k == "conversation")


def test_an_agents_tabs_share_one_making_of_their_lists_parts_per_poll(engine: Engine) -> None:
    hub = LiveHub(engine)
    made: list[int] = []

    def make() -> str:
        time.sleep(0.05)
        made.append(hub.polls)
        return f"parts after poll {hub.polls}"

    async def tabs(n: int, key: PartsKey) -> list[str | None]:
        return list(await asyncio.gather(*(hub.shared_parts(key, make) for _ in range(n))))

    def _run(coroutine: Any) -> Any:
        # a thread of its own: a browser test before this one may hold this thread's loop
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coroutine).result()

    mine, other = (1, ListParams(queue="open")), (2, ListParams(queue="open"))
    assert _run(tabs(5, mine)) == ["parts after poll 0"] * 5 and made == [0]
    _run(tabs(3, other))  # another agent's list is its own
    assert made == [0, 0]
    hub.polls += 1  # a later batch of changes: made afresh
    assert _run(tabs(2, mine)) == ["parts after poll 1"] * 2 and made == [0, 0, 1]
