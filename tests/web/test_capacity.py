"""Capacity that degrades, never freezes (issue 11, item 1), on SQLite and PostgreSQL: the pool
and the threads sized by the settings; `/healthz` answers while no database connection is to
be had, and the requests waiting for one answer 503 with Retry-After; the /live stream caps;
SIGTERM ends the open streams. And the turns themselves (api/capacity.py)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio import to_thread
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from imapdesk.api.app import GC_THRESHOLDS, SESSION_COOKIE, create_app, settle_after_start
from imapdesk.api.capacity import Admission, Turns
from imapdesk.devtools.mailserver import free_port
from imapdesk.kernel.db import make_engine, pool_capacity
from imapdesk.kernel.settings import Settings
from tests.support.browser import LiveServer
from tests.support.processes import ImapdeskProcess
from tests.support.web import session_cookie


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- sizes from the settings ---------------------------------------------------------------


def test_the_pool_and_the_threads_are_sized_by_the_settings(tmp_path: Path, db_url: str) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=db_url, db_pool_size=3, db_max_overflow=4,
        db_wait_seconds=1.5, web_threads=20,
    )  # fmt: skip
    engine = make_engine(db_url, settings=settings)
    try:
        assert engine.pool.size() == 3 and pool_capacity(engine) == 7  # type: ignore[attr-defined]
        assert engine.pool.timeout() == 1.5  # type: ignore[attr-defined]
        app = create_app(settings=settings, engine=engine)
        # every connection but the live updates' poller's is a request's turn
        assert app.state.database_turns.size == 6
        with TestClient(app) as client:
            tokens = client.portal.call(lambda: to_thread.current_default_thread_limiter())
            assert tokens.total_tokens == 20
        # and fewer turns than threads, with some to spare
        few_threads = settings.model_copy(update={"web_threads": 5})
        assert create_app(settings=few_threads, engine=engine).state.database_turns.size == 3
    finally:
        engine.dispose()


# --- no connection to be had --------------------------------------------------------------


@contextmanager
def _holding_every_connection(engine: Engine) -> Iterator[None]:
    with ExitStack() as held:
        for _ in range(2):  # the pool's size in these tests
            held.enter_context(engine.connect())
        yield


def test_healthz_answers_while_no_connection_is_to_be_had_and_the_waiting_get_503(
    tmp_path: Path, db_url: str, agent_token: str
) -> None:
    """More requests than threads wait for a connection that something else holds: /healthz
    still answers, before any of them; each of them answers 503 with Retry-After once it
    waited `db_wait_seconds`; and once the connections are free, requests answer again."""
    settings = Settings(data_dir=tmp_path, database_url=db_url, db_wait_seconds=10)
    engine = make_engine(db_url, pool_size=2, max_overflow=0, pool_timeout=10)
    server = LiveServer(create_app(settings=settings, engine=engine))
    server.start()
    headers = {"Authorization": f"Bearer {agent_token}"}
    answered: list[str] = []
    try:
        with _holding_every_connection(engine), ThreadPoolExecutor(50) as pool:

            def ask() -> httpx.Response:
                with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
                    response = http.get("/api/v1/conversations")
                answered.append("api")
                return response

            waiting = [pool.submit(ask) for _ in range(50)]
            # every one of them in the server, waiting
            _wait(lambda: len(server.server.server_state.tasks) >= 50)
            health = httpx.get(f"{server.url}/healthz", timeout=20)
            answered.append("healthz")
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            responses = [future.result() for future in waiting]
        assert answered[0] == "healthz"
        assert {r.status_code for r in responses} == {503}
        assert all(int(r.headers["retry-after"]) > 0 for r in responses)
        assert responses[0].json()["error"]["code"] == "server_busy"
        again = httpx.get(f"{server.url}/api/v1/conversations", headers=headers, timeout=20)
        assert again.status_code == 200
    finally:
        server.stop()
        engine.dispose()


def test_readyz_answers_503_busy_while_no_connection_is_to_be_had(
    tmp_path: Path, db_url: str
) -> None:
    settings = Settings(data_dir=tmp_path, database_url=db_url)
    engine = make_engine(db_url, settings=settings)
    app = create_app(settings=settings, engine=engine)
    turns: Turns = app.state.database_turns
    try:
        with TestClient(app) as client:
            turns.taken = turns.size  # every turn taken
            busy = client.get("/readyz")
            turns.taken = 0
            assert busy.status_code == 503 and busy.json()["database"] == "busy"
            assert int(busy.headers["retry-after"]) > 0
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
    finally:
        engine.dispose()


def test_a_request_whose_client_left_gives_up_its_place_in_the_queue(
    tmp_path: Path, db_url: str, engine: Engine, agent_token: str
) -> None:
    """After a burst, the requests still waiting for a turn whose clients have gone must not
    keep those still there waiting behind them."""
    settings = Settings(data_dir=tmp_path, database_url=db_url, db_wait_seconds=60)
    app = create_app(settings=settings, engine=engine)
    turns: Turns = app.state.database_turns
    server = LiveServer(app)
    server.start()
    headers = {"Authorization": f"Bearer {agent_token}"}
    try:
        turns.taken = turns.size  # every turn taken: a request waits
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{server.url}/api/v1/conversations", headers=headers, timeout=1)
        _wait(lambda: turns.waiting == 0)
        turns.taken = 0
        assert httpx.get(f"{server.url}/api/v1/conversations", headers=headers).status_code == 200
    finally:
        server.stop()


# --- the /live stream caps -----------------------------------------------------------------


def _open_stream(url: str, cookie: str, stack: ExitStack) -> httpx.Response:
    """A `/live` stream held open until `stack` closes (its answer, whatever it is)."""
    http = stack.enter_context(
        httpx.Client(cookies={SESSION_COOKIE: cookie}, timeout=httpx.Timeout(20, read=60))
    )
    return stack.enter_context(http.stream("GET", url))


def test_streams_beyond_the_caps_answer_503_with_retry_after(
    tmp_path: Path, db_url: str, engine: Engine, agents: dict[str, int]
) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=db_url, live_streams_max=3, live_streams_per_agent=2
    )
    server = LiveServer(create_app(settings=settings, engine=engine))
    server.start()
    url = f"{server.url}/live"
    alice = session_cookie(settings, engine, agents["alice"])
    bob = session_cookie(settings, engine, agents["bob"])
    try:
        with ExitStack() as first, ExitStack() as others:
            assert _open_stream(url, alice, first).status_code == 200
            assert _open_stream(url, alice, others).status_code == 200
            # Alice has her fill; Bob may still open one
            refused = _open_stream(url, alice, others)
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
            assert _open_stream(url, bob, others).status_code == 200
            # the process has its fill: Bob too is refused
            refused = _open_stream(url, bob, others)
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
            first.close()  # one of Alice's ends: a place for Bob

            def bob_gets_one() -> bool:
                with ExitStack() as attempt:
                    return _open_stream(url, bob, attempt).status_code == 200

            _wait(bob_gets_one)
    finally:
        server.stop()


# --- SIGTERM ends the open streams ------------------------------------------------------------


def _read_stream(url: str, cookie: str, out: dict[str, Any]) -> None:
    try:
        with (
            httpx.Client(
                cookies={SESSION_COOKIE: cookie}, timeout=httpx.Timeout(20, read=60)
            ) as http,
            http.stream("GET", url) as response,
        ):
            for line in response.iter_lines():
                if line == "event: hello":
                    out["hello"] = True
        out["ending"] = "ended"
    except httpx.HTTPError as exc:
        out["ending"] = repr(exc)


def test_sigterm_ends_the_open_streams_and_the_server_exits(
    tmp_path: Path, db_url: str, settings: Settings, engine: Engine, agents: dict[str, int]
) -> None:
    """`imapdesk serve` with streams open: each ends cleanly (a complete response, not a
    connection cut when the server's graceful wait runs out), and the process exits."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        IMAPDESK_DATABASE_URL=db_url,
        IMAPDESK_DATA_DIR=str(tmp_path / "serve"),
        IMAPDESK_SECRET_KEY=settings.secret_key,
        IMAPDESK_PORT=str(port),
        IMAPDESK_HOST="127.0.0.1",
    )
    # the data directory: no developer's .env is read
    (tmp_path / "serve").mkdir()
    serve = ImapdeskProcess(
        [sys.executable, "-m", "imapdesk", "serve"], cwd=tmp_path / "serve", env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            assert serve.get_when_up(http, "/healthz", time.monotonic() + 60).status_code == 200
        streams: list[dict[str, Any]] = [{} for _ in range(3)]
        cookies = [session_cookie(settings, engine, agents[who]) for who in ("alice", "bob")]
        readers = [
            threading.Thread(
                target=_read_stream, args=(f"{base}/live", cookies[i % 2], out), daemon=True
            )
            for i, out in enumerate(streams)
        ]
        for reader in readers:
            reader.start()
        _wait(lambda: all(out.get("hello") for out in streams))
        serve.process.send_signal(signal.SIGTERM)
        serve.process.wait(30)
        for reader in readers:
            reader.join(30)
        assert [out.get("ending") for out in streams] == ["ended"] * 3
        assert serve.process.returncode == 0, serve.output
    finally:
        if serve.process.poll() is None:
            serve.process.kill()
            serve.process.wait(10)


# --- the turns ----------------------------------------------------------------------------


def _run(coroutine: Any) -> Any:
    # a thread of its own: a live server in this process may hold this thread's event loop
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def test_turns_go_to_the_waiting_in_order_of_arrival() -> None:
    async def scenario() -> list[str]:
        turns = Turns(2)
        order: list[str] = []
        assert await turns.take(1) and await turns.take(1)

        async def wait(name: str) -> None:
            assert await turns.take(30)
            order.append(name)

        waiting = [asyncio.create_task(wait(name)) for name in ("first", "second")]
        await asyncio.sleep(0)
        assert turns.waiting == 2 and not order
        turns.give_back()
        await asyncio.sleep(0)
        turns.give_back()
        await asyncio.gather(*waiting)
        assert turns.taken == 2  # the two turns went on to the waiting
        turns.give_back()
        turns.give_back()
        assert turns.taken == 0
        return order

    assert _run(scenario()) == ["first", "second"]


def test_a_wait_that_runs_out_or_is_cancelled_leaves_no_turn_behind() -> None:
    async def scenario() -> None:
        turns = Turns(1)
        assert await turns.take(1)
        assert not await turns.take(0.01)  # ran out: False
        cancelled = asyncio.create_task(turns.take(30))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert turns.waiting == 0
        turns.give_back()  # nobody waits: the turn is free again
        assert turns.taken == 0 and await turns.take(0.01)

        # handed the turn just as its task is cancelled: it passes it on
        handed = asyncio.create_task(turns.take(30))
        follower = asyncio.create_task(turns.take(30))
        await asyncio.sleep(0)
        turns.give_back()
        handed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handed
        assert await follower and turns.taken == 1

    _run(scenario())


# --- a burst begins a few requests per turn of the event loop -------------------------------


class _Recorder:
    """An ASGI app noting which turn of the event loop each request began in."""

    def __init__(self) -> None:
        self.turn = 0
        self.begun: list[tuple[str, int]] = []
        self.ticking = True

    def tick(self) -> None:
        # runs once per turn of the loop: a callback scheduled now runs in the next
        if self.ticking:
            self.turn += 1
            asyncio.get_running_loop().call_soon(self.tick)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.begun.append((scope["path"], self.turn))


def _request(path: str) -> dict[str, Any]:
    return {"type": "http", "path": path, "method": "GET"}


async def _nothing() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def _ignore(_message: Any) -> None:
    return None


def test_a_burst_begins_a_few_requests_per_turn_of_the_event_loop_in_order_of_arrival() -> None:
    async def scenario() -> _Recorder:
        app = _Recorder()
        admission = Admission(app, per_iteration=3)
        app.tick()
        burst = [f"/r{i}" for i in range(10)]
        tasks = [asyncio.create_task(admission(_request(p), _nothing, _ignore)) for p in burst]
        # asked last, while the burst waits: /healthz begins at once
        tasks.append(asyncio.create_task(admission(_request("/healthz"), _nothing, _ignore)))
        await asyncio.gather(*tasks)
        app.ticking = False
        return app

    app = _run(scenario())
    paths = [path for path, _turn in app.begun]
    assert sorted(paths) == sorted([f"/r{i}" for i in range(10)] + ["/healthz"])
    burst = [(path, turn) for path, turn in app.begun if path != "/healthz"]
    assert [path for path, _turn in burst] == [f"/r{i}" for i in range(10)]  # in order
    per_turn = Counter(turn for _path, turn in burst)
    assert max(per_turn.values()) == 3 and len(per_turn) == 4  # 3 + 3 + 3 + 1
    first_turn = burst[0][1]
    healthz_turn = dict(app.begun)["/healthz"]
    assert healthz_turn == first_turn < max(per_turn)  # not behind the burst


def test_a_request_cancelled_while_waiting_to_begin_leaves_its_place() -> None:
    async def scenario() -> tuple[_Recorder, Admission]:
        app = _Recorder()
        admission = Admission(app, per_iteration=1)
        app.tick()
        first, cancelled, last = (
            asyncio.create_task(admission(_request(p), _nothing, _ignore))
            for p in ("/a", "/b", "/c")
        )
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(first, last)
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        app.ticking = False
        return app, admission

    app, admission = _run(scenario())
    assert [path for path, _turn in app.begun] == ["/a", "/c"]
    turns = [turn for _path, turn in app.begun]
    # the loop's next turn let /c begin (it began in the turn after that), as it would /b: the
    # place /b left went to /c, not to nobody
    assert turns[1] == turns[0] + 2
    assert not any(gate.waiting for gate in admission._gates.values())


def test_the_app_admits_requests_before_any_other_middleware(tmp_path: Path, db_url: str) -> None:
    app = create_app(settings=Settings(data_dir=tmp_path, database_url=db_url))
    assert app.user_middleware[0].cls is Admission


def test_serving_freezes_what_start_up_made_and_collects_less_often() -> None:
    before = gc.get_threshold()
    try:
        settle_after_start()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLDS != before
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
