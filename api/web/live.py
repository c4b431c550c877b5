"""Live updates for open pages: server-sent events fed by one database poller per process.

`GET /live` (optionally `?conversation=ID`) streams:
- `event: hello`, `data: {"conversation", "parts"}`, when connected (and after every
  reconnect): refetch what may have changed;
- `event: conversation`, `data: {"id", "mailbox_id", "version"}`: it changed;
- `event: presence`, `data: {"id", "mailbox_id", "agents": [{"id","name","email","state"}],
  "drafts": [{"id","name","email"}]}` (who is there, and who has a draft on it);
- `event: parts` (with `?parts=1` and the list page's parameters): that list's changing parts
  (`GET /queue-parts`'s JSON) after every batch of changes the agent may see (at most once per
  PARTS_INTERVAL_SECONDS: under a stream of changes one rendering covers them all), made once
  per agent and view for all its pages instead of fetched by each;
- `event: resync`: this client fell behind (or its parts could not be made); refetch everything.
- `event: notifications`, `data: {"unread", "new": [{"id", "kind", "text",
  "conversation_id"}]}`: the agent has new notifications (the bell's count).
The stream ends when the server shuts down, and when its agent may no longer see anything:
deactivated, or its browser session ended (signed out, expired).
In the browser, `live.js` turns them into DOM events on `document`: `imapdesk:conversation`,
`imapdesk:presence`, `imapdesk:parts`, `imapdesk:live` (connected/resync), each with the data as
`detail`.

An open stream holds no database connection and no thread: it waits on its queue, which the
hub's one poller fills. With every batch of changes (and every ACCESS_CHECK_SECONDS without
one) the poller reads again, for all streams at once, what each agent may see
(imapdesk/domain/live/audience.py) and whether each stream's browser session still signs its
agent in (`browser_sessions_still_valid`): a stream keeps no permission from when it opened.
At most `live_streams_max` streams per process and `live_streams_per_agent` per agent; one
more answers 503 with Retry-After, before any database work for a full process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.api.capacity import ServerBusy, Turns
from imapdesk.api.deps import MAX_ROW_ID
from imapdesk.api.web.auth import WebAgent, session_policy
from imapdesk.api.web.queues import ListParams, ListParamsDep, parts_body
from imapdesk.domain.accounts import sessions
from imapdesk.domain.live import audience
from imapdesk.domain.live.changes import Change, ChangeFeed
from imapdesk.domain.notifications import inbox as notifications_inbox
from imapdesk.kernel.models import Agent, utcnow
from imapdesk.kernel.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
QUEUE_SIZE = 256
RESYNC = "resync"
END = "end"
# what each agent may see is read with every batch of changes, and this often without one
ACCESS_CHECK_SECONDS = 5.0
# a list's parts are pushed at most this often per page (the first change at once)
PARTS_INTERVAL_SECONDS = 1.0
# lists' parts made at once in the process (more wait their turn), and the share of the time
# they may take
PARTS_AT_ONCE = 1
PARTS_SHARE = 0.25
# notifications read this long before a poll are looked at again (the mark precedes its commit)
READS_LOOKBACK = timedelta(seconds=5)
# how long a page refused at capacity waits before it tries again (live.js adds jitter)
STREAM_RETRY_AFTER_SECONDS = 10


# an agent and the view of its list
PartsKey = tuple[int | None, ListParams]


@dataclass(frozen=True)
class LiveEvent:
    """A change and its text on the stream, written once (by the poller) for every stream."""

    change: Change
    text: str

    @classmethod
    def of(cls, change: Change) -> LiveEvent:
        return cls(change, _event(change.kind, change.payload()))


@dataclass(frozen=True)
class Batch:
    """Changes for one stream, with the mailboxes its agent may see as of the same poll."""

    events: list[LiveEvent]
    visible: frozenset[int]
    # `event: notifications` texts for this stream's agent (its unread count went up)
    notices: tuple[str, ...] = ()


@dataclass(eq=False)
class LiveStream:
    """An open stream's place in the hub: its queue; once its caller is known, whose it is and
    the request it came with (which names its browser session)."""

    queue: asyncio.Queue[Batch | str] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    agent_id: int | None = None
    request: Request | None = None
    # changes found while this stream joined, before its access was read: sent with the next
    held: list[LiveEvent] = field(default_factory=list)

    def send(self, item: Batch | str) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # a client that does not keep up: it refetches everything instead
            self._replace_all(RESYNC)

    def end(self) -> None:
        self._replace_all(END)

    def _replace_all(self, item: str) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(item)


def browser_sessions_still_valid(db: Session, streams: Collection[LiveStream]) -> set[LiveStream]:
    """Of these streams, those whose browser session still signs their agent in: not revoked
    (signed out, a new password, the agent deactivated), not expired, not idle too long
    (imapdesk.domain.accounts.sessions). The session is the one the stream's request was
    signed in with (`request.state.browser_session_id`, api/web/auth.py); each is read once."""
    signs_in: dict[int, bool] = {}
    valid = set()
    for stream in streams:
        request = stream.request
        session_id = getattr(request.state, "browser_session_id", None) if request else None
        if request is None or not isinstance(session_id, int):
            continue
        if session_id not in signs_in:
            agent = sessions.session_agent(db, session_id, session_policy(request))
            signs_in[session_id] = agent is not None and agent.id == stream.agent_id
        if signs_in[session_id]:
            valid.add(stream)
    return valid


@dataclass(eq=False)
class PartsMaking:
    """A list's parts being made (or made) for its pages: `started` at which poll, if yet."""

    task: asyncio.Task[str | None] = field(init=False)
    started: int | None = None


# per open stream: the mailboxes its agent may see now, or None when its access has ended
Access = dict[LiveStream, frozenset[int] | None]


class LiveHub:
    """One poller for all of this process's streams, running while there are any; the count of
    open streams against the process's and each agent's limit."""

    def __init__(
        self,
        engine: Engine,
        interval: float = POLL_SECONDS,
        *,
        settings: Settings | None = None,
        turns: Turns | None = None,
    ) -> None:
        settings = settings or Settings.model_construct()
        self.engine = engine
        self.interval = interval
        self.max_streams = settings.live_streams_max
        self.max_per_agent = settings.live_streams_per_agent
        # the requests' turns at the database, which making a list's parts takes too
        self.turns = turns or Turns.for_app(engine, settings)
        self.streams: set[LiveStream] = set()
        self.per_agent: Counter[int] = Counter()
        self.closed = False
        self._task: asyncio.Task[None] | None = None
        self.polls = 0
        # a list's parts as pushed after a poll, per (agent, view): the first of that agent's
        # pages to need them starts making them, the others (tabs) await the same result
        self.parts: dict[PartsKey, PartsMaking] = {}
        self.parts_at_once = Turns(PARTS_AT_ONCE)
        self._parts_rest_until = 0.0
        # the newest notification pushed (None: not read yet; the first poll takes stock)
        self.notified_up_to: int | None = None
        self._reads_since = utcnow()
        # the unread count last pushed to each agent (a read is pushed only when it moved it)
        self._unread_told: dict[int, int] = {}

    # --- capacity -------------------------------------------------------------------------

    def take_place(self) -> LiveStream:
        """A place for one more stream; 503 when the process has its fill or is stopping."""
        if self.closed:
            raise ServerBusy.refusing(
                "a running server", "the server is restarting; try again in a moment"
            )
        if len(self.streams) >= self.max_streams:
            raise ServerBusy.refusing(
                "a place for a live stream",
                "too many live pages are open on this server; try again later",
                STREAM_RETRY_AFTER_SECONDS,
            )
        stream = LiveStream()
        self.streams.add(stream)
        return stream

    def seat(self, stream: LiveStream, agent_id: int, request: Request) -> None:
        """The stream is this agent's (503 when the agent has its fill); updates start."""
        if self.per_agent[agent_id] >= self.max_per_agent:
            raise ServerBusy.refusing(
                "a place for a live stream",
                "too many of your pages are open for live updates; close some tabs",
                STREAM_RETRY_AFTER_SECONDS,
            )
        self.per_agent[agent_id] += 1
        stream.agent_id, stream.request = agent_id, request
        if not self.closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-poller")

    def leave(self, stream: LiveStream) -> None:
        """The stream has ended, however it ended (called once per `take_place`)."""
        self.streams.discard(stream)
        if stream.agent_id is not None:
            self.per_agent[stream.agent_id] -= 1
            if self.per_agent[stream.agent_id] <= 0:
                del self.per_agent[stream.agent_id]
        if not self.per_agent:
            self.parts.clear()

    def close(self) -> None:
        """The server stops: every stream ends now (its page reconnects to the next server),
        new ones are refused, the poller stops."""
        self.closed = True
        for stream in self.streams:
            stream.end()
        if self._task is not None:
            self._task.cancel()

    # --- the list pages' parts ------------------------------------------------------------

    async def shared_parts(self, key: PartsKey, make: Callable[[], str | None]) -> str | None:
        """`make()` (in a thread, with a turn at the database), once per key and poll. A result
        made after poll N saw the database as of poll N or later, so it serves every page
        handling a batch up to N; one not yet started serves any. Made apart from the page
        asking first, which may leave; PARTS_AT_ONCE at a time in the process, for at most
        PARTS_SHARE of the time, so that many agents' lists under a stream of changes slow down
        their own updates, not the requests (each list waits its turn, and then shows all the
        changes of the wait at once)."""
        making = self.parts.get(key)
        if making is None or (making.started is not None and making.started < self.polls):
            making = PartsMaking()
            making.task = asyncio.get_running_loop().create_task(self._make(making, make))
            self.parts[key] = making
            making.task.add_done_callback(lambda done: self._forget_failed(key, done))
        return await asyncio.shield(making.task)

    async def _make(self, making: PartsMaking, make: Callable[[], str | None]) -> str | None:
        async with self.parts_at_once.turn():
            # the lists' parts take at most PARTS_SHARE of the time: beyond it, each list is
            # updated less often (the requests come first)
            await asyncio.sleep(self._parts_rest_until - time.monotonic())
            async with self.turns.turn():
                making.started = self.polls
                began = time.monotonic()
                try:
                    return await asyncio.to_thread(make)
                finally:
                    took = time.monotonic() - began
                    self._parts_rest_until = time.monotonic() + took * (1 / PARTS_SHARE - 1)

    def _forget_failed(self, key: PartsKey, task: asyncio.Task[str | None]) -> None:
        making = self.parts.get(key)
        if making is not None and making.task is task and (task.cancelled() or task.exception()):
            del self.parts[key]

    # --- the poller -----------------------------------------------------------------------

    def _notices(self, db: Session, streams: list[LiveStream]) -> dict[int, str]:
        """`event: notifications` for each agent with notifications newer than the last poll,
        or read lately (in another tab, by the API), when the count moved:
        `{"unread", "new": [{"id", "kind", "text", "conversation_id"}]}`."""
        now = utcnow()
        if self.notified_up_to is None:
            self.notified_up_to = notifications_inbox.newest_id(db)
            self._reads_since = now
            return {}
        agent_ids = sorted({s.agent_id for s in streams if s.agent_id is not None})
        fresh = notifications_inbox.since(db, self.notified_up_to, agent_ids)
        if fresh:
            self.notified_up_to = max(n.id or 0 for n in fresh)
        # a read mark is set before its commit: looked for a little back
        look_from = self._reads_since - READS_LOOKBACK
        reading = notifications_inbox.read_since(db, look_from, agent_ids)
        self._reads_since = now
        concerned = {n.agent_id for n in fresh} | reading
        if not concerned:
            return {}
        told: dict[int, str] = {}
        for agent_id, unread in notifications_inbox.unread_counts(db, sorted(concerned)).items():
            new = [
                {"id": n.id, "kind": n.kind, "text": n.text, "conversation_id": n.conversation_id}
                for n in fresh
                if n.agent_id == agent_id
            ]
            if not new and self._unread_told.get(agent_id) == unread:
                continue
            self._unread_told[agent_id] = unread
            told[agent_id] = _event("notifications", {"unread": unread, "new": new[-5:]})
        return told

    def _poll(
        self, feed: ChangeFeed, streams: list[LiveStream], check: bool
    ) -> tuple[list[LiveEvent], Access | None, dict[int, str]]:
        """What changed; with changes (or `check`, or new notifications), what each stream's
        agent may see now."""
        with Session(self.engine) as db:
            changes = [LiveEvent.of(change) for change in feed.poll(db)]
            notices = self._notices(db, streams)
            if not (changes or check or notices):
                return changes, None, notices
            visible = audience.visible_mailboxes(
                db, {s.agent_id for s in streams if s.agent_id is not None}
            )
            signed_in = browser_sessions_still_valid(
                db, [s for s in streams if s.agent_id in visible]
            )
            access: Access = {
                s: visible[s.agent_id] if s in signed_in and s.agent_id is not None else None
                for s in streams
            }
            return changes, access, notices

    async def _run(self) -> None:
        feed = ChangeFeed()
        checked_at = -ACCESS_CHECK_SECONDS
        while not self.closed:
            streams = [s for s in self.streams if s.agent_id is not None]
            if not streams:
                break
            check = (
                time.monotonic() - checked_at >= ACCESS_CHECK_SECONDS
                or any(s.held for s in streams)
            )  # fmt: skip
            try:
                changes, access, notices = await asyncio.to_thread(self._poll, feed, streams, check)
            except Exception:
                log.exception("live updates: polling the database failed")
                changes, access, notices = [], None, {}
            self.polls += 1
            if access is not None:
                checked_at = time.monotonic()
                self._deliver(changes, access, notices)
            await asyncio.sleep(self.interval)

    def _deliver(
        self, changes: list[LiveEvent], access: Access, notices: dict[int, str] | None = None
    ) -> None:
        notices = notices or {}
        for stream in list(self.streams):
            if stream not in access:
                # joined during the poll: its access is read with the next one
                if stream.agent_id is not None:
                    stream.held += changes
                    if len(stream.held) > QUEUE_SIZE:
                        stream.held.clear()
                        stream.send(RESYNC)
                continue
            visible = access[stream]
            if visible is None:
                stream.end()
                continue
            notice = notices.get(stream.agent_id) if stream.agent_id is not None else None
            told = (notice,) if notice else ()
            if stream.held:
                held, stream.held = stream.held, []
                stream.send(Batch(held + changes, visible, told))
            elif changes or told:
                stream.send(Batch(changes, visible, told))


def hub_for(app: FastAPI) -> LiveHub:
    hub: LiveHub = app.state.live_hub
    return hub


def close_streams(app: FastAPI) -> None:
    """The server stops: the open streams end (see LiveHub.close)."""
    hub: LiveHub | None = getattr(app.state, "live_hub", None)
    if hub is not None:
        hub.close()


def _changes_a_list(batch: Batch) -> bool:
    """Whether the batch changes a conversation its agent may see (its lists' parts, then)."""
    return any(
        e.change.kind == "conversation" and e.change.mailbox_id in batch.visible
        for e in batch.events
    )


def _event(kind: str, data: object) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream_place(request: Request) -> AsyncIterator[LiveStream]:
    """A place among the process's open streams (503 when there is none), held until the
    response has ended, however it ends."""
    hub = hub_for(request.app)
    stream = hub.take_place()
    try:
        yield stream
    finally:
        hub.leave(stream)


# declared first: a full process answers before any database work
StreamPlace = Annotated[LiveStream, Depends(stream_place)]


@router.get("/live", name="live")
async def live_events(
    request: Request,
    place: StreamPlace,
    agent: WebAgent,
    params: ListParamsDep,
    conversation: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    parts: Annotated[bool, Query()] = False,
) -> StreamingResponse:
    hub = hub_for(request.app)
    agent_id = agent.id
    assert agent_id is not None
    hub.seat(place, agent_id, request)
    engine: Engine = request.app.state.engine

    def make_parts() -> str | None:
        with Session(engine) as db:
            me = db.get(Agent, agent_id)
            if me is None or not me.is_active:
                return None
            return _event("parts", parts_body(request, db, me, params))

    async def stream() -> AsyncIterator[str]:
        queue = place.queue
        loop = asyncio.get_running_loop()
        parts_due = loop.time()
        yield "retry: 1000\n" + _event("hello", {"conversation": conversation, "parts": parts})
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item == END:
                return
            if item == RESYNC:
                yield _event(RESYNC, {})
                continue
            assert isinstance(item, Batch)
            batch = item
            if parts:
                if _changes_a_list(batch):
                    # the parts at most every PARTS_INTERVAL_SECONDS: under a stream of changes
                    # one rendering covers all of that time's
                    await asyncio.sleep(parts_due - loop.time())
                # what is already waiting too: one rendering for the whole burst
                while not queue.empty():
                    more = queue.get_nowait()
                    if more == END:
                        return
                    if more == RESYNC:
                        yield _event(RESYNC, {})
                        continue
                    assert isinstance(more, Batch)
                    # what the agent may see as of the later batch
                    batch = Batch(
                        batch.events + more.events, more.visible, batch.notices + more.notices
                    )
            visible = batch.visible
            out = [
                event.text
                for event in batch.events
                if event.change.mailbox_id in visible
                and (conversation is None or event.change.conversation_id == conversation)
            ]
            out.extend(batch.notices)
            if not out:
                continue
            if parts and _changes_a_list(batch):
                parts_due = loop.time() + PARTS_INTERVAL_SECONDS
                try:
                    pushed = await hub.shared_parts((agent_id, params), make_parts)
                except Exception:
                    log.exception("live updates: making the list's parts failed")
                    pushed = _event(RESYNC, {})
                if pushed is None:
                    return  # deactivated meanwhile
                out.append(pushed)
            yield "".join(out)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
