"""A live stream keeps no permission from when it opened (issue 11, item 3), on SQLite and
PostgreSQL: with every batch of changes the hub reads again what the stream's agent may see,
so a mailbox taken away stops its events and its presence (names included), and the stream
ends when its agent is deactivated or its browser session is revoked."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from imapdesk.api.app import SESSION_COOKIE
from imapdesk.domain.accounts import access, sessions
from imapdesk.domain.conversations import operations
from imapdesk.domain.live import presence
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import ActivitySource, Agent
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer
from tests.support.web import session_cookie


@dataclass
class Stream:
    """A `/live` stream read in a thread: its events as they come, and how it ended."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    # "ended": the server closed the stream cleanly; else the error that cut it
    ending: str | None = None

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def ids(self, kind: str) -> set[int]:
        return {data["id"] for k, data in self.events if k == kind}


def _read(url: str, cookie: str, stream: Stream, stop: threading.Event) -> None:
    cookies = httpx.Cookies()
    cookies.set(SESSION_COOKIE, cookie)
    try:
        with (
            httpx.Client(cookies=cookies, timeout=httpx.Timeout(10, read=60)) as http,
            http.stream("GET", url) as response,
        ):
            assert response.status_code == 200
            kind = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    stream.events.append((kind, json.loads(line[6:])))
                if stop.is_set():
                    return
        stream.ending = "ended"
    except httpx.HTTPError as exc:
        stream.ending = repr(exc)


@pytest.fixture
def open_stream(live_server: LiveServer) -> Iterator[Callable[[str, str], Stream]]:
    stops: list[threading.Event] = []

    def start(path: str, cookie: str) -> Stream:
        stream, stop = Stream(), threading.Event()
        stops.append(stop)
        threading.Thread(
            target=_read, args=(live_server.url + path, cookie, stream, stop), daemon=True
        ).start()
        _wait(lambda: "hello" in stream.kinds())
        return stream

    yield start
    for stop in stops:
        stop.set()


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _touch(engine: Engine, conversation_id: int) -> None:
    """A change to the conversation, as any operation makes one."""
    with unit_of_work(engine) as s:
        operations.set_status(s, conversation_id, "pending", source=ActivitySource.system)
    with unit_of_work(engine) as s:
        operations.set_status(s, conversation_id, "open", source=ActivitySource.system)


def _touch_until_seen(engine: Engine, stream: Stream, conversation_id: int) -> None:
    """Changes the conversation until the stream shows a change of it (the poller's first
    poll after the stream opened only takes stock)."""
    for _ in range(20):
        _touch(engine, conversation_id)
        try:
            _wait(lambda: conversation_id in stream.ids("conversation"), timeout=2)
            return
        except AssertionError:
            continue
    raise AssertionError("the stream never showed the change")


def test_a_mailbox_taken_away_stops_its_events_and_presence_on_an_open_stream(
    open_stream: Callable[[str, str], Stream],
    settings: Settings,
    engine: Engine,
    agents: dict[str, int],
) -> None:
    with unit_of_work(engine) as s:
        kept_box, taken_box = f.mailbox(s, "support"), f.mailbox(s, "billing")
        kept = f.conversation(s, kept_box, "Kept", minutes=1)
        taken = f.conversation(s, taken_box, "Taken", minutes=2)
        bob = s.get(Agent, agents["bob"])
        assert bob is not None and kept_box.id and taken_box.id
        access.set_mailbox_access(
            s, bob, all_mailboxes=False, mailbox_ids=[kept_box.id, taken_box.id]
        )
        kept_id, taken_id = kept.id or 0, taken.id or 0
    stream = open_stream("/live", session_cookie(settings, engine, agents["bob"]))
    # while Bob may see it, its changes reach him
    _touch_until_seen(engine, stream, taken_id)

    with unit_of_work(engine) as s:
        bob = s.get(Agent, agents["bob"])
        assert bob is not None and kept_box.id
        access.set_mailbox_access(s, bob, all_mailboxes=False, mailbox_ids=[kept_box.id])
    seen = len(stream.events)
    # a change and Alice's presence in the mailbox taken away, then a change he may see
    _touch(engine, taken_id)
    with unit_of_work(engine) as s:
        alice = s.get(Agent, agents["alice"])
        assert alice is not None
        presence.touch(s, taken_id, alice, "replying")
    _touch(engine, kept_id)
    _wait(lambda: kept_id in {d["id"] for k, d in stream.events[seen:] if k == "conversation"})
    later = stream.events[seen:]
    assert all(data["id"] != taken_id for _kind, data in later)
    assert "Alice" not in json.dumps(later)
    assert stream.ending is None  # still open: only that mailbox is gone


def test_a_deactivated_agents_stream_ends(
    open_stream: Callable[[str, str], Stream],
    settings: Settings,
    engine: Engine,
    agents: dict[str, int],
) -> None:
    with unit_of_work(engine) as s:
        f.conversation(s, f.mailbox(s), "Live", minutes=1)
    stream = open_stream("/live?parts=1", session_cookie(settings, engine, agents["bob"]))
    with unit_of_work(engine) as s:
        bob = s.get(Agent, agents["bob"])
        assert bob is not None
        bob.is_active = False  # nothing else: his browser session stays as it was
        s.add(bob)
    _wait(lambda: stream.ending is not None)
    assert stream.ending == "ended"


def test_a_revoked_browser_session_ends_its_stream_and_no_other(
    open_stream: Callable[[str, str], Stream],
    settings: Settings,
    engine: Engine,
    agents: dict[str, int],
) -> None:
    with unit_of_work(engine) as s:
        conversation_id = f.conversation(s, f.mailbox(s), "Live", minutes=1).id or 0
    bob = open_stream("/live", session_cookie(settings, engine, agents["bob"]))
    alice = open_stream("/live", session_cookie(settings, engine, agents["alice"]))
    with unit_of_work(engine) as s:
        sessions.end_sessions_of(s, agents["bob"])  # as signing out everywhere does
    _wait(lambda: bob.ending is not None)
    assert bob.ending == "ended"
    _touch_until_seen(engine, alice, conversation_id)
    assert alice.ending is None
