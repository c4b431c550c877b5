"""Live updates for open pages: server-sent events fed by one database poller per process.

`GET /live` (optionally `?conversation=ID`) streams:
- `event: hello`, when connected (and after every reconnect): refetch what may have changed;
- `event: conversation`, `data: {"id", "mailbox_id", "version"}`: it changed;
- `event: presence`, `data: {"id", "mailbox_id", "agents": [{"id","name","email","state"}]}`;
- `event: resync`: this client fell behind; refetch everything.
In the browser, `live.js` turns them into DOM events on `document`: `imapdesk:conversation`,
`imapdesk:presence`, `imapdesk:live` (connected/resync), each with the data as `detail`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine
from sqlmodel import Session

from api.deps import SessionDep
from api.web.auth import WebAgent
from core import queries
from core.live import Change, ChangeFeed

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
QUEUE_SIZE = 256
RESYNC = "resync"


class LiveHub:
    """One poller for all of this process's subscribers, running while there are any."""

    def __init__(self, engine: Engine, interval: float = POLL_SECONDS) -> None:
        self.engine = engine
        self.interval = interval
        self.subscribers: set[asyncio.Queue[list[Change] | str]] = set()
        self._task: asyncio.Task[None] | None = None
        self.polls = 0

    def subscribe(self) -> asyncio.Queue[list[Change] | str]:
        queue: asyncio.Queue[list[Change] | str] = asyncio.Queue(QUEUE_SIZE)
        self.subscribers.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-poller")
        return queue

    def unsubscribe(self, queue: asyncio.Queue[list[Change] | str]) -> None:
        self.subscribers.discard(queue)

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
    conversation: Annotated[int | None, Query(ge=1)] = None,
) -> StreamingResponse:
    visible = set(queries.visible_mailbox_ids(session, agent))
    hub = hub_for(request)

    async def stream() -> AsyncIterator[str]:
        queue = hub.subscribe()
        try:
            yield "retry: 1000\n" + _event("hello", {"conversation": conversation})
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
                out = [
                    _event(change.kind, change.payload())
                    for change in item
                    if change.mailbox_id in visible
                    and (conversation is None or change.conversation_id == conversation)
                ]
                if out:
                    yield "".join(out)
        finally:
            hub.unsubscribe(queue)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def close_streams(hub: LiveHub) -> None:
    """Stop the poller (tests and shutdown)."""
    task = hub._task
    hub.subscribers.clear()
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
