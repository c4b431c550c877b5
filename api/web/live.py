"""Live updates for open pages: server-sent events fed by one database poller per process.

`GET /live` (optionally `?conversation=ID`) streams:
- `event: hello`, `data: {"conversation", "parts"}`, when connected (and after every
  reconnect): refetch what may have changed;
- `event: conversation`, `data: {"id", "mailbox_id", "version"}`: it changed;
- `event: presence`, `data: {"id", "mailbox_id", "agents": [{"id","name","email","state"}]}`;
- `event: parts` (with `?parts=1` and the list page's parameters): that list's changing parts
  (`GET /queue-parts`'s JSON) after every batch of changes the agent may see, made once per
  agent and view for all its pages instead of fetched by each;
- `event: resync`: this client fell behind (or its parts could not be made); refetch everything.
In the browser, `live.js` turns them into DOM events on `document`: `imapdesk:conversation`,
`imapdesk:presence`, `imapdesk:parts`, `imapdesk:live` (connected/resync), each with the data as
`detail`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.api.deps import MAX_ROW_ID, SessionDep
from imapdesk.api.web.auth import WebAgent
from imapdesk.api.web.queues import ListParams, ListParamsDep, parts_body
from imapdesk.domain.conversations import reads
from imapdesk.domain.live.changes import Change, ChangeFeed
from imapdesk.kernel.models import Agent

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
QUEUE_SIZE = 256
RESYNC = "resync"


# an agent and the view of its list
PartsKey = tuple[int | None, ListParams]


class LiveHub:
    """One poller for all of this process's subscribers, running while there are any."""

    def __init__(self, engine: Engine, interval: float = POLL_SECONDS) -> None:
        self.engine = engine
        self.interval = interval
        self.subscribers: set[asyncio.Queue[list[Change] | str]] = set()
        self._task: asyncio.Task[None] | None = None
        self.polls = 0
        # a list's parts as pushed after a poll, per (agent, view): the first of that agent's
        # pages to need them makes them, the others (tabs) await the same result
        self.parts: dict[PartsKey, tuple[int, asyncio.Future[str | None]]] = {}

    async def shared_parts(self, key: PartsKey, make: Callable[[], str | None]) -> str | None:
        """`make()` (in a thread), once per key and poll. A result made after poll N saw the
        database as of poll N or later, so it serves every page handling a batch up to N."""
        entry = self.parts.get(key)
        if entry is not None and entry[0] == self.polls:
            return await asyncio.shield(entry[1])
        made: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.parts[key] = (self.polls, made)
        try:
            made.set_result(await asyncio.to_thread(make))
        except Exception as exc:
            made.set_exception(exc)
            made.exception()  # the pages awaiting it get it; none need be
            self.parts.pop(key, None)
            raise
        return made.result()

    def subscribe(self) -> asyncio.Queue[list[Change] | str]:
        queue: asyncio.Queue[list[Change] | str] = asyncio.Queue(QUEUE_SIZE)
        self.subscribers.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-poller")
        return queue

    def unsubscribe(self, queue: asyncio.Queue[list[Change] | str]) -> None:
        self.subscribers.discard(queue)
        if not self.subscribers:
            self.parts.clear()

    def _poll(self, feed: ChangeFeed) -> list[Change]:
        with Session(self.engine) as session:
            return feed.poll(session)

    async def _run(self) -> None:
        feed = ChangeFeed()
        while self.subscribers:
            try:
                changes = await asyncio.to_thread(self._poll, feed)
            except Exception:
                log.exception("live updates: polling the database failed")
                changes = []
            self.polls += 1
            if changes:
                for queue in list(self.subscribers):
                    try:
                        queue.put_nowait(changes)
                    except asyncio.QueueFull:
                        # a client that does not keep up: it refetches everything instead
                        while not queue.empty():
                            queue.get_nowait()
                        queue.put_nowait(RESYNC)
            await asyncio.sleep(self.interval)


def hub_for(request: Request) -> LiveHub:
    state = request.app.state
    hub: LiveHub | None = getattr(state, "live_hub", None)
    if hub is None:
        hub = LiveHub(state.engine)
        state.live_hub = hub
    return hub


def _event(kind: str, data: object) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get("/live", name="live")
async def live_events(
    request: Request,
    session: SessionDep,
    agent: WebAgent,
    params: ListParamsDep,
    conversation: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    parts: Annotated[bool, Query()] = False,
) -> StreamingResponse:
    visible = set(reads.visible_mailbox_ids(session, agent))
    hub = hub_for(request)
    agent_id = agent.id
    engine: Engine = request.app.state.engine

    def make_parts() -> str | None:
        with Session(engine) as db:
            me = db.get(Agent, agent_id)
            if me is None or not me.is_active:
                return None
            return _event("parts", parts_body(request, db, me, params))

    async def stream() -> AsyncIterator[str]:
        queue = hub.subscribe()
        try:
            yield "retry: 1000\n" + _event("hello", {"conversation": conversation, "parts": parts})
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item == RESYNC:
                    yield _event(RESYNC, {})
                    continue
                assert isinstance(item, list)
                if parts:
                    # what is already waiting too: one rendering for the whole burst
                    while not queue.empty():
                        more = queue.get_nowait()
                        if more == RESYNC:
                            yield _event(RESYNC, {})
                            continue
                        assert isinstance(more, list)
                        item = item + more
                out = [
                    _event(change.kind, change.payload())
                    for change in item
                    if change.mailbox_id in visible
                    and (conversation is None or change.conversation_id == conversation)
                ]
                if not out:
                    continue
                if parts and any(
                    c.kind == "conversation" and c.mailbox_id in visible for c in item
                ):
                    try:
                        pushed = await hub.shared_parts((agent_id, params), make_parts)
                    except Exception:
                        log.exception("live updates: making the list's parts failed")
                        pushed = _event(RESYNC, {})
                    if pushed is None:
                        return  # signed out or deactivated meanwhile
                    out.append(pushed)
                yield "".join(out)
        finally:
            hub.unsubscribe(queue)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
