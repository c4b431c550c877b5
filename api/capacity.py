"""Capacity that degrades, never freezes: how requests share the database connections.

A request takes its connection in one thread step (the caller's lookup) and gives it back
after another (the route, then closing the session); in between it holds the connection
without a thread. With more requests than connections, every thread could be waiting for a
connection held by requests that wait for a thread, the pool and the thread pool waiting on
each other until the pool gives up (issue 11: about 60 requests froze the server, `/healthz`
included, for 30-120 s). So a request takes a *turn* before its session (`DatabaseTurn`, a
dependency of `api.deps.get_session`): there are as many turns as the pool has connections,
less what the live updates' poller keeps (api/web/live.py), and fewer than the threads that
run request handlers (the same wait, on SQLite's write lock: a request holds it between two
thread steps while others' threads wait for it); a request waits for its turn on the event
loop, holding no thread and no connection, and one that waited `db_wait_seconds` answers 503
with `Retry-After` (`ServerBusy`). A request with a turn finds a connection, and a thread.

`/healthz` takes neither a turn nor a thread; `/readyz` takes a turn with a short wait.

A burst (every open tab reconnecting after a restart, hundreds of clients starting at once)
also asks more of the event loop than of the database: each request's first step (routing, the
middleware, its dependencies up to its turn) is a millisecond or two of the loop, and a loop
that runs hundreds of them before it next looks at its sockets answers nothing for that long
(issue 11: 500 streams and 200 clients at once held `/healthz` for 0.8 s). So `Admission`, the
outermost middleware, lets at most ADMITTED_PER_ITERATION requests begin per turn of the event
loop; the others wait for the next turns in order of arrival, holding nothing but their place.
`/healthz` never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from starlette.types import ASGIApp, Receive, Scope, Send

from imapdesk.kernel.db import pool_capacity
from imapdesk.kernel.errors import ImapdeskError
from imapdesk.kernel.settings import Settings

# what a 503 asks a client to wait before it tries again
RETRY_AFTER_SECONDS = 2
# connections kept out of the requests' turns: the live updates' poller
POLLER_CONNECTIONS = 1
# threads kept out of the requests' turns: for work without the database (static files)
SPARE_THREADS = 2
BUSY_LOG_SECONDS = 10.0
# requests that begin per turn of the event loop (a burst's first steps take turns with the
# sockets), and the paths that never wait for one
ADMITTED_PER_ITERATION = 8
UNGATED_PATHS = frozenset({"/healthz"})

log = logging.getLogger(__name__)


class ServerBusy(ImapdeskError):
    """503: the server is at capacity (database connections, open streams); try again after
    `Retry-After` seconds."""

    status_code = 503
    code = "server_busy"

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}

    @classmethod
    def refusing(
        cls, short_of: str, message: str = "", retry_after: int = RETRY_AFTER_SECONDS
    ) -> ServerBusy:
        """The 503 for a request refused for want of `short_of`; counted in the log."""
        _refusals.note(short_of)
        return cls(message or "the server is busy; try again in a moment", retry_after)


class _Refusals:
    """One warning per BUSY_LOG_SECONDS at most, with how many were refused meanwhile: a
    server at capacity answers hundreds of 503s a second, which a line each would add to."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.logged_at = 0.0

    def note(self, short_of: str) -> None:
        self.counts[short_of] += 1
        now = time.monotonic()
        if now - self.logged_at >= BUSY_LOG_SECONDS:
            what = ", ".join(f"{n} for want of {k}" for k, n in self.counts.most_common())
            log.warning("at capacity: answered 503 with Retry-After (%s)", what)
            self.counts.clear()
            self.logged_at = now


_refusals = _Refusals()


class Turns:
    """At most `size` holders at once; the others wait in order of arrival, each for a bounded
    time. Not bound to an event loop (a test may serve one app from two)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.taken = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @classmethod
    def for_app(cls, engine: Engine, settings: Settings) -> Turns:
        """As many turns as the pool has connections for requests, and fewer than the threads
        that run them: a request between two thread steps may hold a connection, or SQLite's
        write lock for which other requests' threads wait, so it must always find a thread."""
        return cls(
            min(pool_capacity(engine) - POLLER_CONNECTIONS, settings.web_threads - SPARE_THREADS)
        )

    def free(self) -> bool:
        """Whether `take` would give a turn at once."""
        return self.taken < self.size and self._first_waiting() is None

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._waiting if not waiter.done())

    def _first_waiting(self) -> asyncio.Future[None] | None:
        # a waiter whose task was cancelled leaves on its own; until then it is skipped
        while self._waiting and self._waiting[0].done():
            self._waiting.popleft()
        return self._waiting[0] if self._waiting else None

    async def take(self, timeout: float | None) -> bool:
        """A turn (give it back with `give_back`), or False after `timeout` seconds (None: as
        long as it takes)."""
        if self.free():
            self.taken += 1
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # handed over just as the wait ended: to the next one
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
            if isinstance(exc, TimeoutError):
                return False
            raise
        return True

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """A turn for the block, however long it takes to come."""
        await self.take(None)
        try:
            yield
        finally:
            self.give_back()

    def give_back(self) -> None:
        """The turn goes to the first one waiting, else back to the free ones."""
        waiter = self._first_waiting()
        if waiter is not None:
            self._waiting.popleft()
            waiter.set_result(None)
            return
        self.taken -= 1


def turns_of(request: Request) -> Turns:
    turns: Turns = request.app.state.database_turns
    return turns


async def database_turn(request: Request) -> AsyncIterator[None]:
    """A turn at the database for this request's session (held until the session is closed),
    or 503 with Retry-After when none came within `db_wait_seconds`."""
    turns = turns_of(request)
    wait = request.app.state.settings.db_wait_seconds
    if request.method in ("GET", "HEAD") and not turns.free():
        taken = await _take_while_connected(turns, wait, request)
    else:
        taken = await turns.take(wait)
    if not taken:
        raise ServerBusy.refusing("a database connection")
    try:
        yield
    finally:
        turns.give_back()


async def _take_while_connected(turns: Turns, wait: float, request: Request) -> bool:
    """`turns.take(wait)`, given up when the client leaves meanwhile: under load the waiting
    are many, and those whose client is gone would take turns from those still there (after a
    burst, the next request would wait behind all of them). A request without a body only: its
    one message can be read here, and nothing reads it later."""
    taking = asyncio.ensure_future(turns.take(wait))
    leaving = asyncio.ensure_future(_client_leaves(request))
    try:
        await asyncio.wait((taking, leaving), return_when=asyncio.FIRST_COMPLETED)
    finally:
        leaving.cancel()
        if not taking.done():
            taking.cancel()  # a turn handed over meanwhile goes on to the next (Turns.take)
    await asyncio.wait((taking,))
    if taking.cancelled():
        raise ServerBusy("the client left before its turn")
    return taking.result()


async def _client_leaves(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        continue


# scope="function": given back when the route returns, before a streamed response goes on
DatabaseTurn = Annotated[None, Depends(database_turn, scope="function")]


class _Gate:
    """One event loop's admissions: how many began in its current turn, who waits."""

    def __init__(self, loop: asyncio.AbstractEventLoop, per_iteration: int) -> None:
        self.loop = loop
        self.per_iteration = per_iteration
        self.begun = 0
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.next_turn_due = False

    async def enter(self) -> None:
        if not self.waiting and self.begun < self.per_iteration:
            self.begun += 1
            self._count_from_next_turn()
            return
        waiter = self.loop.create_future()
        self.waiting.append(waiter)
        self._count_from_next_turn()
        try:
            await waiter
        except BaseException:
            # cancelled while waiting (the client left, the server stops): out of the queue,
            # so the next turn's places go to those still waiting (`_next_turn` skips it)
            with contextlib.suppress(ValueError):
                self.waiting.remove(waiter)
            raise

    def _count_from_next_turn(self) -> None:
        # a callback scheduled now runs in the loop's next turn, after it has polled the sockets
        if not self.next_turn_due:
            self.next_turn_due = True
            self.loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self.next_turn_due = False
        self.begun = 0
        while self.waiting and self.begun < self.per_iteration:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.begun += 1
        if self.begun:
            self._count_from_next_turn()


class Admission:
    """ASGI middleware: at most `per_iteration` HTTP requests begin per turn of the event loop,
    the others in order of arrival in the turns after (see the module's text); paths in
    UNGATED_PATHS begin at once. Per event loop (a test may serve one app from two)."""

    def __init__(self, app: ASGIApp, per_iteration: int = ADMITTED_PER_ITERATION) -> None:
        self.app = app
        self.per_iteration = max(1, per_iteration)
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Gate] = (
            weakref.WeakKeyDictionary()
        )

    def gate(self) -> _Gate:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = _Gate(loop, self.per_iteration)
        return gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in UNGATED_PATHS:
            await self.gate().enter()
        await self.app(scope, receive, send)
