"""Load: concurrent REST API clients and a burst of `/live` streams against `imapdesk serve`,
with `/healthz` probed throughout, beside a bare FastAPI route served the same way (issue 11).

Set-up per database (`--db both|sqlite|postgresql`; PostgreSQL a throwaway database): a fresh
database seeded as bench.web_queue seeds it (`--conversations` conversations of 2 messages each in
3 mailboxes, not through the ingest), `--agents` agents each with an API token, then
`python -m imapdesk serve` in a subprocess (database, data directory, secret key and port from
IMAPDESK_* variables; everything else at its defaults) and every agent signed in through the login
form for a session cookie. None of this is measured.

Each phase (`--clients 50,200,500`, `--seconds` each): that many API clients start at the same
moment, each on its own keep-alive connection with an agent's bearer token, asking without pause
in turn `GET /api/v1/conversations` and `GET /api/v1/conversations/{id}`, and one request in
twenty a `PATCH` of an open or pending conversation's status. At the same moment `--streams`
`/live` streams open at once (the agents' tabs after a restart: list pages `?parts=1` and
conversation pages `?conversation=ID`, spread over the agents), held until the phase ends and,
as a browser does, opened again 1-2 s after one ends. Clients and tabs wait `Retry-After` when a
503 or 429 gives one, and 0.1 s after any other failure. Every request has a `--timeout`; one still
unanswered when the phase ends is counted apart ("unanswered at the end"). The clients run in
`--client-processes` processes (each an asyncio loop, uvloop when there) beside the server on the
same machine.

Throughout, another process asks `/healthz` every 100 ms, each probe on its own schedule (5 s
timeout), so a freeze shows as slow and failed probes; a thread samples the server's RSS and CPU
time every 250 ms. When the load stops (every client and stream closed), an authenticated
`GET /api/v1/conversations` is tried every 50 ms (each try up to 5 s, for up to 30 s): the time
until it answers 200 is "back after". At the end, the streams and the first phase's clients again,
and SIGTERM after they have run for a few seconds: the time until the process exits (killed after
30 s), with the streams open at that moment counted.

Baseline, once per run before the databases: a bare FastAPI app with one sync route, `GET /ping`,
served by the same uvicorn set-up as `imapdesk serve` (`imapdesk.cli.serve.web_server`) in its own
process, under the same clients for `--baseline-seconds` per client count (every request `/ping`,
no streams). The ratios ours/baseline are printed per client count.

Printed per phase: requests/s (2xx answers per second), p50/p99/max of the 2xx answers, errors by
kind (HTTP status; the documented 503, one with `Retry-After`, apart; timeouts; connection errors;
dropped connections), the baseline beside it; `/healthz` p50/p99/max and failed probes; streams:
the most open at once and when all were, their errors; the server's RSS (before, peak, after) and
CPU; the time until it answers again. Then issue 11's targets, met or MISSED: every request
answered with no 5xx but the documented 503, `/healthz` p99 under 100 ms in every phase, peak RSS
under `--rss-limit-mb`, answering again within 1 s after the load stops, exiting within 5 s of
SIGTERM.

Exit status 1 only on a correctness failure (the server did not start or exited under load, signing
in failed, a client process failed), never on a missed target.

    .venv/bin/python -m bench.web_load [--db both] [--seconds 60] [--clients 50,200,500]
                                       [--streams 500] [--agents 100] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import queue
import random
import resource
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import insert
from sqlmodel import Session, col, select

from bench.common import (
    bench_parser,
    command_line,
    fresh_database,
    percentile,
    print_failure,
    print_table,
    say,
    scratch_dir,
    setup_logging,
    sign_in,
    start_serve,
    verdict,
)
from imapdesk.devtools.mailserver import free_port
from imapdesk.domain.accounts.agents import create_api_token
from imapdesk.kernel.crypto import hash_password
from imapdesk.kernel.db import make_engine, unit_of_work
from imapdesk.kernel.models import Agent, Conversation, ConversationStatus

REPOSITORY = Path(__file__).resolve().parent.parent
API = "/api/v1/conversations"
MESSAGES_PER_CONVERSATION = 2
PATCH_SHARE = 0.05

TARGET_HEALTHZ_P99 = 0.100
TARGET_BACK_AFTER = 1.0
TARGET_EXIT = 5.0

HEALTHZ_INTERVAL = 0.1
HEALTHZ_TIMEOUT = 5.0
HEALTHZ_CONNECTIONS = 64
SAMPLE_INTERVAL = 0.25
RECOVERY_TRY_TIMEOUT = 5.0
RECOVERY_LIMIT = 30.0
EXIT_LIMIT = 30.0
STARTUP_LIMIT = 60.0
# a stream is "stalled" after this long without a byte (the server sends a keep-alive every 15 s)
STREAM_READ_TIMEOUT = 60.0
# between submitting a phase to the client processes and its first request
LEAD_SECONDS = 2.0
# after a failure other than a documented 503 or 429: a client does not spin on fast errors
ERROR_PAUSE = 0.1
# how long the last clients and streams run before SIGTERM, at most
SHUTDOWN_SETTLE = 10.0

OK = "ok"
DOCUMENTED_503 = "503+Retry-After"
TIMEOUT = "timeout"
CONNECT_ERROR = "connect error"
DISCONNECTED = "dropped"
IN_FLIGHT = "unanswered at the end"
HELD = "held to the end"
ENDED = "ended by the server"
STALLED = "stalled"
# outcomes that break "every request answered, none with a 5xx but the documented 503"
UNANSWERED = frozenset({TIMEOUT, CONNECT_ERROR, DISCONNECTED, STALLED})

# a request: (sent at, as time.time(); seconds until answered or given up; kind; outcome)
Sample = tuple[float, float, str, str]
# a stream attempt: (sent at; its hello at, or None; closed at; outcome; events received)
StreamAttempt = tuple[float, float | None, float, str, int]
# what a client process sends back: (pid, CPU seconds, requests, stream attempts); plain tuples,
# since a class of the spawned processes' main module cannot be unpickled here
LoadResult = tuple[int, float, list[Sample], list[StreamAttempt]]


# --- the clients (in the client processes) ----------------------------------------------------


@dataclass(frozen=True)
class StreamTab:
    """A browser tab's `/live` stream: the agent's session cookie and the page's stream path."""

    cookies: dict[str, str]
    path: str


@dataclass(frozen=True)
class LoadPlan:
    """What one client process runs between `start_at` and `stop_at` (time.time())."""

    base_url: str
    start_at: float
    stop_at: float
    tokens: tuple[str, ...]  # one API client each
    tabs: tuple[StreamTab, ...]
    detail_ids: tuple[int, ...]
    patch_ids: tuple[int, ...]
    timeout: float
    seed: int
    ping: bool = False  # the baseline: every request `GET /ping`
    end_on_refusal: bool = False  # the shutdown: a client whose connection is refused is done


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when there (uvicorn[standard] brings it, and the server runs on it): the clients
    take less of the machine the server runs on."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _outcome(response: httpx.Response) -> str:
    if response.is_success:
        return OK
    if response.status_code == 503 and "retry-after" in response.headers:
        return DOCUMENTED_503
    return f"HTTP {response.status_code}"


def _pause_after(response: httpx.Response | None, outcome: str, rng: random.Random) -> float:
    """How long a well-behaved client waits before its next request: `Retry-After` (jittered)
    on a 503 or 429 that gives one, ERROR_PAUSE after any other failure."""
    if outcome == OK:
        return 0.0
    if response is not None and response.status_code in (429, 503):
        with contextlib.suppress(KeyError, ValueError):
            return float(response.headers["retry-after"]) * rng.uniform(1.0, 1.2)
    return ERROR_PAUSE


async def _timed(
    http: httpx.AsyncClient, method: str, path: str, timeout: float, body: Any = None
) -> tuple[str, httpx.Response | None]:
    """One request, bounded by `timeout` in all; its outcome (a transport failure by kind)."""
    try:
        async with asyncio.timeout(timeout):
            response = await http.request(method, path, json=body)
    except (TimeoutError, httpx.TimeoutException):
        return TIMEOUT, None
    except httpx.ConnectError:
        return CONNECT_ERROR, None
    except httpx.TransportError:
        return DISCONNECTED, None
    return _outcome(response), response


def _next_request(plan: LoadPlan, rng: random.Random, n: int) -> tuple[str, str, str, Any]:
    """(kind, method, path, JSON body) of a client's n-th request."""
    if plan.ping:
        return "ping", "GET", "/ping", None
    if plan.patch_ids and rng.random() < PATCH_SHARE:
        status = rng.choice((ConversationStatus.open.value, ConversationStatus.pending.value))
        return "patch", "PATCH", f"{API}/{rng.choice(plan.patch_ids)}", {"status": status}
    if n % 2 == 0:
        return "list", "GET", API, None
    return "detail", "GET", f"{API}/{rng.choice(plan.detail_ids)}", None


async def _api_client(
    plan: LoadPlan, http: httpx.AsyncClient, rng: random.Random, out: list[Sample]
) -> None:
    n = 0
    while time.time() < plan.stop_at:
        kind, method, path, body = _next_request(plan, rng, n)
        n += 1
        sent, started = time.time(), time.perf_counter()
        outcome, response = IN_FLIGHT, None
        try:
            outcome, response = await _timed(http, method, path, plan.timeout, body)
        finally:
            # also when cancelled at the phase's end: that one is "unanswered at the end"
            out.append((sent, time.perf_counter() - started, kind, outcome))
        if outcome == CONNECT_ERROR and plan.end_on_refusal:
            return
        pause = _pause_after(response, outcome, rng)
        if pause:
            await asyncio.sleep(min(pause, max(0.0, plan.stop_at - time.time())))


async def _stream_tab(
    plan: LoadPlan, http: httpx.AsyncClient, path: str, rng: random.Random,
    out: list[StreamAttempt],
) -> None:  # fmt: skip
    """A tab's event stream, opened again when it ends, until the phase ends."""
    while time.time() < plan.stop_at:
        sent = time.time()
        opened: float | None = None
        events = 0
        outcome = HELD  # unless something else happens before the phase ends
        response: httpx.Response | None = None
        try:
            # the timeout bounds the wait for the stream's hello, not the stream
            async with (
                asyncio.timeout(plan.timeout) as opening,
                http.stream("GET", path) as response,
            ):
                if response.status_code != 200:
                    outcome = _outcome(response)
                else:
                    async for line in response.aiter_lines():
                        if not line.startswith("event: "):
                            continue
                        events += 1
                        if opened is None and line == "event: hello":
                            opened = time.time()
                            opening.reschedule(None)
                    outcome = ENDED
        except (TimeoutError, httpx.TimeoutException):
            outcome = TIMEOUT if opened is None else STALLED
        except httpx.ConnectError:
            outcome = CONNECT_ERROR
        except httpx.TransportError:
            outcome = DISCONNECTED
        finally:
            if outcome == HELD and opened is None:
                outcome = IN_FLIGHT
            out.append((sent, opened, time.time(), outcome, events))
        if outcome == CONNECT_ERROR and plan.end_on_refusal:
            return
        pause = _pause_after(response, outcome, rng)
        if outcome in (OK, ENDED) or pause == ERROR_PAUSE:
            pause = rng.uniform(1.0, 2.0)  # EventSource reconnects after its retry interval
        await asyncio.sleep(min(pause, max(0.0, plan.stop_at - time.time())))


async def _load(plan: LoadPlan) -> tuple[list[Sample], list[StreamAttempt]]:
    requests: list[Sample] = []
    streams: list[StreamAttempt] = []
    rng = random.Random(plan.seed)
    # one TLS context for all (none is used on http://, but each client would build its own)
    tls = ssl.create_default_context()
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    api_timeout = httpx.Timeout(plan.timeout)
    stream_timeout = httpx.Timeout(plan.timeout, read=STREAM_READ_TIMEOUT)
    # every client exists before the start, so that they all begin at the same moment
    api_clients = [
        httpx.AsyncClient(
            base_url=plan.base_url,
            headers={"Authorization": f"Bearer {token}"} if token else None,
            timeout=api_timeout,
            limits=one,
            verify=tls,
        )
        for token in plan.tokens
    ]
    tab_clients = [
        httpx.AsyncClient(
            base_url=plan.base_url,
            cookies=tab.cookies,
            timeout=stream_timeout,
            limits=one,
            verify=tls,
        )
        for tab in plan.tabs
    ]
    try:
        await asyncio.sleep(max(0.0, plan.start_at - time.time()))
        tasks = [
            asyncio.create_task(_api_client(plan, http, random.Random(rng.random()), requests))
            for http in api_clients
        ] + [
            asyncio.create_task(
                _stream_tab(plan, http, tab.path, random.Random(rng.random()), streams)
            )
            for http, tab in zip(tab_clients, plan.tabs, strict=True)
        ]
        _done, pending = await asyncio.wait(tasks, timeout=max(0.0, plan.stop_at - time.time()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await asyncio.gather(
            *(http.aclose() for http in api_clients + tab_clients), return_exceptions=True
        )
    return requests, streams


def run_load(plan: LoadPlan) -> LoadResult:
    """A client process's share of a phase (run in the pool of client processes)."""
    cpu = time.process_time()
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        requests, streams = runner.run(_load(plan))
    return os.getpid(), time.process_time() - cpu, requests, streams


def client_process(inbox: Any, results: Any) -> None:
    """A client process: says it is ready, then runs each plan it is given until None."""
    results.put(("ready", os.getpid()))
    while (plan := inbox.get()) is not None:
        try:
            results.put(("done", run_load(plan)))
        except Exception as exc:
            results.put(("failed", repr(exc)))


async def _probe(base_url: str, stop: ProcessEvent) -> list[Sample]:
    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=HEALTHZ_CONNECTIONS)

    async def once(http: httpx.AsyncClient) -> None:
        sent, started = time.time(), time.perf_counter()
        outcome, _response = await _timed(http, "GET", "/healthz", HEALTHZ_TIMEOUT)
        samples.append((sent, time.perf_counter() - started, "healthz", outcome))

    async with httpx.AsyncClient(base_url=base_url, timeout=HEALTHZ_TIMEOUT, limits=limits) as http:
        tasks: set[asyncio.Task[None]] = set()
        next_at = time.monotonic()
        while not stop.is_set():
            task = asyncio.create_task(once(http))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            # a late loop skips probes rather than sending a burst of them
            next_at = max(next_at + HEALTHZ_INTERVAL, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())
        await asyncio.gather(*tasks)
    return samples


def probe_healthz(base_url: str, stop: ProcessEvent, results: Any) -> None:
    """`/healthz` every HEALTHZ_INTERVAL until `stop`, in a process of its own; the samples go
    to the `results` queue."""
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        results.put(runner.run(_probe(base_url, stop)))


def serve_baseline(port: int) -> None:
    """The baseline server: one sync route (run in the thread pool like the API's routes),
    served by the same uvicorn set-up as `imapdesk serve`."""
    from fastapi import FastAPI

    from imapdesk.cli.serve import web_server

    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"status": "ok"}

    web_server(app, "127.0.0.1", port).run()


# --- the server under test --------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    """What the clients need of the seeded database."""

    password: str  # every agent's
    emails: list[str]
    tokens: list[str]
    detail_ids: list[int]  # not deleted
    patch_ids: list[int]  # open or pending


def seed_database(url: str, conversations: int, agents: int) -> Seeded:
    """bench.web_queue's rows (its 10 agents among them), more agents with the same password,
    and an API token for each agent."""
    # here, not at the top: it imports fastapi's TestClient, whose deprecation warning every
    # client process would print
    from bench.web_queue import PASSWORD, seed

    engine = make_engine(url)
    try:
        seed(engine, conversations, random.Random(1), messages=MESSAGES_PER_CONVERSATION)
        password_hash = hash_password(PASSWORD)
        now = datetime.now(UTC)
        with engine.begin() as conn:
            for first in range(10, agents, 500):
                conn.execute(
                    insert(Agent),
                    [
                        {
                            "email": f"agent{i}@example.test",
                            "name": f"Agent {i}",
                            "handle": f"agent{i}",
                            "is_admin": False,
                            "is_active": True,
                            "all_mailboxes": True,
                            "password_hash": password_hash,
                            "created_at": now,
                        }
                        for i in range(first, min(first + 500, agents))
                    ],
                )
        with unit_of_work(engine) as db:
            rows = db.exec(select(Agent).order_by(col(Agent.id))).all()[:agents]
            tokens = [create_api_token(db, agent, name="bench.web_load") for agent in rows]
            emails = [agent.email for agent in rows]
        with Session(engine) as db:
            statuses = db.exec(select(Conversation.id, Conversation.status)).all()
    finally:
        engine.dispose()
    detail = [cid for cid, status in statuses if cid and status != ConversationStatus.deleted]
    patch = [
        cid
        for cid, status in statuses
        if cid and status in (ConversationStatus.open, ConversationStatus.pending)
    ]
    return Seeded(PASSWORD, emails, tokens, sorted(detail), sorted(patch))


def start_baseline(port: int, log: Path) -> subprocess.Popen[bytes]:
    """`serve_baseline` in a process of its own, as the server under test runs."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.web_load", "--baseline-server", str(port)],
            cwd=REPOSITORY, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_answering(base_url: str, path: str, proc: subprocess.Popen[bytes]) -> bool:
    """Until `path` answers 200 (within STARTUP_LIMIT); False if not or the process ended."""
    deadline = time.monotonic() + STARTUP_LIMIT
    with httpx.Client(base_url=base_url, timeout=2) as http:
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if http.get(path).status_code == 200:
                    return True
            time.sleep(0.1)
    return False


def sign_in_all(base_url: str, emails: Sequence[str], password: str) -> list[dict[str, str]]:
    """Each agent's session cookies, signed in through the login form (4 at a time)."""

    def one(email: str) -> dict[str, str]:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            response = sign_in(http, email, password, wait=5)
            if response.status_code != 303:
                raise RuntimeError(f"signing in {email} answered {response.status_code}")
            return dict(http.cookies)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, emails))


def log_tail(path: Path, lines: int = 30) -> list[str]:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace").splitlines()[-lines:]
    return []


class ServerSampler:
    """The server's RSS and CPU time every SAMPLE_INTERVAL in a thread: (time.time(), RSS
    bytes, CPU seconds)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="server-sampler", daemon=True)

    def __enter__(self) -> ServerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.process.oneshot():
                    rss = self.process.memory_info().rss
                    cpu = self.process.cpu_times()
            except psutil.Error:
                return
            self.samples.append((time.time(), rss, cpu.user + cpu.system))
            self._stop.wait(SAMPLE_INTERVAL)

    def figures(self, start: float, stop: float) -> tuple[int, int, int, float]:
        """RSS before `start`, its peak until `stop`, its latest; CPU share of one core."""
        samples = list(self.samples)
        if not samples:
            return 0, 0, 0, 0.0
        before = [s for s in samples if s[0] <= start] or samples[:1]
        during = [s for s in samples if start <= s[0] <= stop] or samples[-1:]
        cpu = (during[-1][2] - before[-1][2]) / max(during[-1][0] - before[-1][0], 1e-9)
        return before[-1][1], max(s[1] for s in during), samples[-1][1], cpu


class HealthzProbe:
    """`probe_healthz` in a process of its own, for the server's whole life."""

    def __init__(self, ctx: Any, base_url: str) -> None:
        self._stop = ctx.Event()
        self._results = ctx.Queue()
        self._process = ctx.Process(
            target=probe_healthz, args=(base_url, self._stop, self._results), daemon=True
        )
        self.samples: list[Sample] = []

    def start(self) -> None:
        self._process.start()

    def stop(self) -> list[Sample]:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.samples = self._results.get(timeout=HEALTHZ_TIMEOUT + 30)
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
        return self.samples


def time_until_answered(base_url: str, token: str, since: float) -> float | None:
    """Seconds from `since` until an authenticated list answers 200; None if not within
    RECOVERY_LIMIT."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=RECOVERY_TRY_TIMEOUT) as http:
        while time.time() - since < RECOVERY_LIMIT:
            with contextlib.suppress(httpx.TransportError):
                if http.get(API).status_code == 200:
                    return time.time() - since
            time.sleep(0.05)
    return None


# --- phases -----------------------------------------------------------------------------------


@dataclass
class PhaseFigures:
    label: str
    clients: int
    start_at: float
    stop_at: float
    requests: list[Sample]
    streams: list[StreamAttempt]
    asked_streams: int
    client_cpu: float  # the busiest client process, share of one core
    healthz: list[Sample] = field(default_factory=list)
    rss: tuple[int, int, int] = (0, 0, 0)  # before, peak, after
    server_cpu: float = 0.0
    back_after: float | None = None
    server_alive: bool = True
    # began while the server had not answered again after the phase before
    after_freeze: bool = False

    @property
    def seconds(self) -> float:
        return self.stop_at - self.start_at

    def ok_latencies(self, kind: str | None = None) -> list[float]:
        return [s for _t, s, k, o in self.requests if o == OK and kind in (None, k)]

    def rate(self) -> float:
        return len(self.ok_latencies()) / self.seconds

    def errors(self) -> Counter[str]:
        return Counter(o for _t, _s, _k, o in self.requests if o not in (OK, IN_FLIGHT))

    def in_flight_at_end(self) -> int:
        return sum(1 for _t, _s, _k, o in self.requests if o == IN_FLIGHT)

    def stream_errors(self) -> Counter[str]:
        return Counter(a[3] for a in self.streams if a[3] not in (HELD, IN_FLIGHT))

    def failures(self) -> Counter[str]:
        """What breaks "every request answered, none with a 5xx but the documented 503"."""
        outcomes = [*self.errors().elements(), *self.stream_errors().elements()]
        return Counter(o for o in outcomes if o in UNANSWERED or o.startswith("HTTP 5"))

    def healthz_latencies(self) -> list[float]:
        return [s for t, s, _k, _o in self.healthz if self.start_at <= t <= self.stop_at]

    def healthz_failures(self) -> Counter[str]:
        return Counter(
            o for t, _s, _k, o in self.healthz if self.start_at <= t <= self.stop_at and o != OK
        )

    def peak_streams(self) -> tuple[int, float | None]:
        """The most streams open at once, and when (seconds from the start) all asked were."""
        edges = sorted(
            [(a[1], 1) for a in self.streams if a[1] is not None]
            + [(a[2], -1) for a in self.streams if a[1] is not None],
            key=lambda edge: (edge[0], edge[1]),
        )
        open_now = peak = 0
        all_open: float | None = None
        for at, step in edges:
            open_now += step
            peak = max(peak, open_now)
            if all_open is None and self.asked_streams and open_now >= self.asked_streams:
                all_open = at - self.start_at
        return peak, all_open


class ClientPool:
    """The client processes, started once: each phase's clients and tabs are shared out among
    them, one plan each."""

    def __init__(self, processes: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.results: Any = ctx.Queue()
        self.inboxes: list[Any] = [ctx.Queue() for _ in range(processes)]
        self.processes = [
            ctx.Process(
                target=client_process,
                args=(inbox, self.results),
                name=f"clients-{i}",
                daemon=True,
            )
            for i, inbox in enumerate(self.inboxes)
        ]

    def __enter__(self) -> ClientPool:
        for process in self.processes:
            process.start()
        pids = [self.results.get(timeout=120)[1] for _ in self.processes]
        say(f"{len(pids)} client processes ready (pids {', '.join(map(str, sorted(pids)))})")
        return self

    def __exit__(self, *exc: object) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()

    def submit(
        self,
        base_url: str,
        start_at: float,
        stop_at: float,
        tokens: Sequence[str],
        tabs: Sequence[StreamTab],
        seeded: Seeded | None,
        timeout: float,
        *,
        end_on_refusal: bool = False,
    ) -> None:
        n = len(self.inboxes)
        for i, inbox in enumerate(self.inboxes):
            inbox.put(
                LoadPlan(
                    base_url=base_url,
                    start_at=start_at,
                    stop_at=stop_at,
                    tokens=tuple(tokens[i::n]),
                    tabs=tuple(tabs[i::n]),
                    detail_ids=tuple(seeded.detail_ids) if seeded else (),
                    patch_ids=tuple(seeded.patch_ids) if seeded else (),
                    timeout=timeout,
                    seed=int(start_at) * 100 + i,
                    ping=seeded is None,
                    end_on_refusal=end_on_refusal,
                )
            )

    def collect(
        self, stop_at: float, seconds: float
    ) -> tuple[list[Sample], list[StreamAttempt], float]:
        """The processes' results of the plans last submitted, merged; the busiest one's CPU
        share of one core. A RuntimeError if one failed or is late."""
        requests: list[Sample] = []
        streams: list[StreamAttempt] = []
        busiest = 0.0
        for _ in self.inboxes:
            try:
                kind, value = self.results.get(timeout=max(0.0, stop_at - time.time()) + 60)
            except queue.Empty as exc:
                raise RuntimeError(
                    "a client process did not finish within 60 s of the end"
                ) from exc
            if kind == "failed":
                raise RuntimeError(f"a client process failed: {value}")
            _pid, cpu, got_requests, got_streams = value
            requests += got_requests
            streams += got_streams
            busiest = max(busiest, cpu / max(seconds, 1e-9))
        return requests, streams, busiest


def client_tokens(tokens: Sequence[str], clients: int) -> list[str]:
    return [tokens[i % len(tokens)] for i in range(clients)]


def stream_tabs(
    cookies: Sequence[dict[str, str]], streams: int, ids: Sequence[int]
) -> list[StreamTab]:
    """Each agent's tabs in turn, every other one of an agent a list page, the others
    conversation pages."""
    rng = random.Random(7)
    tabs = []
    for i in range(streams):
        agent, nth = i % len(cookies), i // len(cookies)
        path = "/live?parts=1" if nth % 2 == 0 else f"/live?conversation={rng.choice(ids)}"
        tabs.append(StreamTab(cookies[agent], path))
    return tabs


def wait_until(moment: float, alive: Callable[[], bool]) -> bool:
    """Sleeps until `moment` (time.time()); False as soon as `alive()` is not."""
    while time.time() < moment:
        if not alive():
            return False
        time.sleep(min(0.2, max(0.0, moment - time.time())))
    return alive()


@dataclass
class Shutdown:
    streams_open: int  # at SIGTERM
    asked_streams: int
    clients: int
    requests_in_flight: int
    exit_seconds: float | None  # None: killed after EXIT_LIMIT
    exit_code: int | None
    streams_ended_after: list[float]  # seconds after SIGTERM that each open stream ended


@dataclass
class DatabaseRun:
    kind: str
    phases: list[PhaseFigures] = field(default_factory=list)
    shutdown: Shutdown | None = None
    pid: int = 0
    failures: list[str] = field(default_factory=list)


def run_database(
    kind: str, directory: Path, pool: ClientPool, args: argparse.Namespace
) -> DatabaseRun:
    run = DatabaseRun(kind)
    directory.mkdir()
    with fresh_database(kind, directory) as url:
        say(f"{kind}: seeding {args.conversations:,} conversations, {args.agents} agents")
        seeded = seed_database(url, args.conversations, args.agents)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log = directory / "serve.log"
        server = start_serve(url, directory / "data", port, log)
        run.pid = server.pid
        say(f"{kind}: imapdesk serve pid {server.pid} (for py-spy), log {log}")
        try:
            if not wait_answering(base_url, "/healthz", server):
                run.failures.append(f"{kind}: imapdesk serve did not start")
                run.failures += log_tail(log)
                return run
            say(f"{kind}: signing in {len(seeded.emails)} agents")
            try:
                cookies = sign_in_all(base_url, seeded.emails, seeded.password)
            except (RuntimeError, httpx.HTTPError, IndexError) as exc:
                run.failures.append(f"{kind}: signing in failed: {exc!r}")
                return run
            _run_phases(run, server, base_url, seeded, cookies, pool, args, log)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(10)
    return run


def _run_phases(
    run: DatabaseRun,
    server: subprocess.Popen[bytes],
    base_url: str,
    seeded: Seeded,
    cookies: list[dict[str, str]],
    pool: ClientPool,
    args: argparse.Namespace,
    log: Path,
) -> None:
    tabs = stream_tabs(cookies, args.streams, seeded.detail_ids)
    probe = HealthzProbe(multiprocessing.get_context("spawn"), base_url)
    probe.start()
    try:
        with ServerSampler(server.pid) as sampler:
            time.sleep(1.0)  # the probe's process starts
            for clients in args.clients:
                if not _phase(run, server, base_url, seeded, tabs, pool, args, clients, sampler):
                    run.failures += log_tail(log)
                    return
                time.sleep(2.0)  # the next phase starts on a quiet server
            if server.poll() is None:
                run.shutdown = _shutdown(run, server, base_url, seeded, tabs, pool, args)
    finally:
        samples = probe.stop()
        if run.phases and not samples:
            run.failures.append(f"{run.kind}: the /healthz probe sent nothing back")
        for phase in run.phases:
            phase.healthz = samples


def _phase(
    run: DatabaseRun,
    server: subprocess.Popen[bytes],
    base_url: str,
    seeded: Seeded,
    tabs: list[StreamTab],
    pool: ClientPool,
    args: argparse.Namespace,
    clients: int,
    sampler: ServerSampler,
) -> bool:
    """One phase, its figures added to `run`; False on a correctness failure."""

    def alive() -> bool:
        return server.poll() is None

    after_freeze = bool(run.phases) and run.phases[-1].back_after is None
    label = f"{clients} clients{'*' if after_freeze else ''}"
    say(f"{run.kind}: {label} + {args.streams} streams for {args.seconds:g} s")
    start_at = time.time() + LEAD_SECONDS
    stop_at = start_at + args.seconds
    pool.submit(
        base_url, start_at, stop_at, client_tokens(seeded.tokens, clients), tabs, seeded,
        args.timeout,
    )  # fmt: skip
    still = wait_until(stop_at, alive)
    back_after = time_until_answered(base_url, seeded.tokens[0], stop_at) if still else None
    try:
        requests, streams, client_cpu = pool.collect(stop_at, args.seconds)
    except RuntimeError as exc:
        run.failures.append(f"{run.kind}, {label}: {exc}")
        return False
    phase = PhaseFigures(
        label, clients, start_at, stop_at, requests, streams, args.streams, client_cpu,
        back_after=back_after, server_alive=alive(), after_freeze=after_freeze,
    )  # fmt: skip
    before, peak, after, phase.server_cpu = sampler.figures(start_at, stop_at)
    phase.rss = (before, peak, after)
    run.phases.append(phase)
    say(
        f"{run.kind}: {label}: {phase.rate():.0f} req/s, errors {dict(phase.errors()) or 0}, "
        f"back after {_back_after(back_after)}"
    )
    if not phase.server_alive:
        run.failures.append(f"{run.kind}: imapdesk serve exited during {label}")
        return False
    return True


def _shutdown(
    run: DatabaseRun,
    server: subprocess.Popen[bytes],
    base_url: str,
    seeded: Seeded,
    tabs: list[StreamTab],
    pool: ClientPool,
    args: argparse.Namespace,
) -> Shutdown:
    """The streams and the first phase's clients again; SIGTERM while they run."""
    clients = args.clients[0]
    settle = min(SHUTDOWN_SETTLE, args.seconds)
    say(f"{run.kind}: {clients} clients + {args.streams} streams, SIGTERM after {settle:g} s")
    start_at = time.time() + LEAD_SECONDS
    term_at = start_at + settle
    stop_at = term_at + EXIT_LIMIT + 5
    pool.submit(
        base_url, start_at, stop_at, client_tokens(seeded.tokens, clients), tabs, seeded,
        args.timeout, end_on_refusal=True,
    )  # fmt: skip
    wait_until(term_at, lambda: server.poll() is None)
    term_at = time.time()
    server.send_signal(signal.SIGTERM)
    exit_seconds: float | None
    try:
        server.wait(EXIT_LIMIT)
        exit_seconds = time.time() - term_at
    except subprocess.TimeoutExpired:
        say(f"{run.kind}: imapdesk serve did not exit within {EXIT_LIMIT:g} s of SIGTERM: killed")
        server.kill()
        server.wait(10)
        exit_seconds = None
    try:
        requests, streams, _cpu = pool.collect(stop_at, stop_at - start_at)
    except RuntimeError as exc:
        run.failures.append(f"{run.kind}, shutdown: {exc}")
        requests, streams = [], []
    open_at_term = [a for a in streams if a[1] is not None and a[1] <= term_at < a[2]]
    return Shutdown(
        streams_open=len(open_at_term),
        asked_streams=args.streams,
        clients=clients,
        requests_in_flight=sum(1 for t, s, _k, _o in requests if t <= term_at < t + s),
        exit_seconds=exit_seconds,
        exit_code=server.returncode,
        streams_ended_after=[a[2] - term_at for a in open_at_term],
    )


def run_baseline(directory: Path, pool: ClientPool, args: argparse.Namespace) -> list[PhaseFigures]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = directory / "baseline.log"
    server = start_baseline(port, log)
    phases: list[PhaseFigures] = []
    try:
        if not wait_answering(base_url, "/ping", server):
            raise RuntimeError("the baseline server did not start:\n" + "\n".join(log_tail(log)))
        with ServerSampler(server.pid) as sampler:
            for clients in args.clients:
                say(f"baseline: {clients} clients for {args.baseline_seconds:g} s")
                start_at = time.time() + LEAD_SECONDS
                stop_at = start_at + args.baseline_seconds
                pool.submit(base_url, start_at, stop_at, [""] * clients, [], None, args.timeout)
                requests, streams, client_cpu = pool.collect(stop_at, args.baseline_seconds)
                phase = PhaseFigures(
                    f"{clients} clients", clients, start_at, stop_at, requests, streams, 0,
                    client_cpu,
                )  # fmt: skip
                before, peak, after, phase.server_cpu = sampler.figures(start_at, stop_at)
                phase.rss = (before, peak, after)
                phases.append(phase)
                time.sleep(1.0)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    return phases


# --- figures ----------------------------------------------------------------------------------


def _ms(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.0f}" if values else "-"


def _max_ms(values: Sequence[float]) -> str:
    return f"{max(values) * 1000:.0f}" if values else "-"


def _ratio(ours: float, base: float) -> str:
    return f"{ours / base:.2f}x" if base and ours == ours and base == base else "-"


def _kinds(counts: Counter[str]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in counts.most_common()) or "0"


def _back_after(seconds: float | None) -> str:
    return f"> {RECOVERY_LIMIT:g} s" if seconds is None else f"{seconds:.2f} s"


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f}"


def print_baseline(phases: Sequence[PhaseFigures]) -> None:
    print_table(
        ["baseline GET /ping", "req/s", "p50 ms", "p99 ms", "max ms", "client CPU", "server CPU",
         "cut", "errors"],
        [
            [p.label, f"{p.rate():.0f}", _ms(p.ok_latencies(), 50), _ms(p.ok_latencies(), 99),
             _max_ms(p.ok_latencies()), f"{p.client_cpu:.0%}", f"{p.server_cpu:.0%}",
             p.in_flight_at_end(), _kinds(p.errors())]
            for p in phases
        ],
    )  # fmt: skip


def print_database(run: DatabaseRun, baseline: Sequence[PhaseFigures]) -> None:
    base = {p.clients: p for p in baseline}
    rows: list[list[object]] = []
    for p in run.phases:
        b = base.get(p.clients)
        ok, bok = p.ok_latencies(), b.ok_latencies() if b else []
        rows.append(
            [p.label, f"{p.rate():.0f}", _ms(ok, 50), _ms(ok, 99), _max_ms(ok),
             f"{b.rate():.0f}" if b else "-", _ratio(p.rate(), b.rate() if b else 0),
             _ratio(percentile(ok, 50), percentile(bok, 50)),
             _ratio(percentile(ok, 99), percentile(bok, 99)),
             f"{p.client_cpu:.0%}", p.in_flight_at_end(), _kinds(p.errors())]
        )  # fmt: skip
    print_table(
        ["API", "req/s", "p50 ms", "p99 ms", "max ms", "base req/s", "req/s x", "p50 x", "p99 x",
         "client CPU", "cut", "errors"],
        rows,
    )  # fmt: skip
    if any(p.after_freeze for p in run.phases):
        print("* began while the server had not answered again since the phase before")
    print()
    rows = []
    for p in run.phases:
        health = p.healthz_latencies()
        peak, all_open = p.peak_streams()
        rss = p.rss
        rows.append(
            [p.label, _ms(health, 50), _ms(health, 99), _max_ms(health),
             _kinds(p.healthz_failures()), f"{peak}/{p.asked_streams}",
             "-" if all_open is None else f"{all_open:.1f}", f"{_mib(rss[0])}/{_mib(rss[1])}/"
             f"{_mib(rss[2])}", f"{p.server_cpu:.0%}",
             f">{RECOVERY_LIMIT:g}" if p.back_after is None else f"{p.back_after:.2f}"]
        )  # fmt: skip
    print_table(
        ["server", "healthz p50", "p99", "max", "failed", "streams open", "all open s",
         "RSS MiB b/peak/a", "CPU", "back after s"],
        rows,
    )  # fmt: skip
    print()
    rows = []
    for p in run.phases:
        hello = [a[1] - a[0] for a in p.streams if a[1] is not None]
        events = sum(a[4] for a in p.streams)
        rows.append(
            [p.label, len(p.streams), len(hello), _ms(hello, 50), _ms(hello, 99), events,
             _kinds(p.stream_errors())]
        )  # fmt: skip
    if any(p.asked_streams for p in run.phases):
        print_table(
            ["streams", "attempts", "opened", "hello p50 ms", "p99 ms", "events",
             "ended early or refused"],
            rows,
        )  # fmt: skip
        print()
    rows = []
    for p in run.phases:
        for kind in ("list", "detail", "patch"):
            ok = p.ok_latencies(kind)
            errors = Counter(
                o for _t, _s, k, o in p.requests if k == kind and o not in (OK, IN_FLIGHT)
            )
            rows.append([p.label, kind, len(ok), _ms(ok, 50), _ms(ok, 99), _kinds(errors)])
    print_table(["by request", "kind", "ok", "p50 ms", "p99 ms", "errors"], rows)
    s = run.shutdown
    if s is not None:
        exited = (
            f"exited after {s.exit_seconds:.2f} s (exit code {s.exit_code})"
            if s.exit_seconds is not None
            else f"did not exit within {EXIT_LIMIT:g} s: killed"
        )
        ended = sorted(s.streams_ended_after)
        streams_ended = (
            f"; the open streams ended {_ms(ended, 50)} ms (p50) / {_max_ms(ended)} ms (max) "
            "after it"
            if ended
            else ""
        )
        print(
            f"SIGTERM with {s.streams_open} of {s.asked_streams} streams open and {s.clients} "
            f"clients ({s.requests_in_flight} requests in flight): {exited}{streams_ended}"
        )


def targets(run: DatabaseRun, rss_limit: int) -> list[tuple[str, bool, str]]:
    """Issue 11's targets: (what, met, the figures behind it)."""
    phases = run.phases
    failures = {p.label: p.failures() for p in phases}
    healthz = {p.label: p.healthz_latencies() for p in phases}
    healthz_failed = {p.label: sum(p.healthz_failures().values()) for p in phases}
    s = run.shutdown
    return [
        (
            "every request answered, none with a 5xx but the documented 503",
            bool(phases) and not any(failures.values()),
            "; ".join(f"{k}: {_kinds(v)}" for k, v in failures.items()),
        ),
        (
            f"/healthz p99 < {TARGET_HEALTHZ_P99 * 1000:.0f} ms, no probe failed, every phase",
            bool(phases)
            and all(
                v and percentile(v, 99) < TARGET_HEALTHZ_P99 and not healthz_failed[k]
                for k, v in healthz.items()
            ),
            "; ".join(
                f"{k}: p99 {_ms(v, 99)} ms, {healthz_failed[k]} failed" for k, v in healthz.items()
            ),
        ),
        (
            f"memory bounded: peak RSS < {rss_limit} MiB in every phase",
            bool(phases) and all(p.rss[1] < rss_limit * 2**20 for p in phases),
            "; ".join(f"{p.label}: {_mib(p.rss[1])} MiB" for p in phases),
        ),
        (
            f"answers normally within {TARGET_BACK_AFTER:g} s after the load stops",
            bool(phases)
            and all(p.back_after is not None and p.back_after <= TARGET_BACK_AFTER for p in phases),
            "; ".join(f"{p.label}: {_back_after(p.back_after)}" for p in phases),
        ),
        (
            f"exits within {TARGET_EXIT:g} s of SIGTERM, streams open",
            s is not None and s.exit_seconds is not None and s.exit_seconds <= TARGET_EXIT,
            "not reached"
            if s is None
            else (
                f"{s.exit_seconds:.2f} s with {s.streams_open} streams open"
                if s.exit_seconds is not None
                else f"killed after {EXIT_LIMIT:g} s with {s.streams_open} streams open"
            ),
        ),
    ]


# --- the command line -------------------------------------------------------------------------


def _counts(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of positive numbers")
    return values


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__)
    parser.add_argument("--db", choices=["both", "sqlite", "postgresql"], default="both")
    parser.add_argument("--seconds", type=float, help="per phase (default 60; --quick 10)")
    parser.add_argument(
        "--clients", type=_counts, help="API clients per phase (default 50,200,500; --quick 50,200)"
    )
    parser.add_argument("--streams", type=int, help="/live streams (default 500; --quick 200)")
    parser.add_argument("--agents", type=int, help="agents (default 100; --quick 40)")
    parser.add_argument("--conversations", type=int, help="default 5000; --quick 2000")
    parser.add_argument(
        "--baseline-seconds", type=float, help="per baseline phase (default 10; --quick 5)"
    )
    parser.add_argument(
        "--timeout", type=float, help="per request, and for a stream's hello (default 15 s; "
        "--quick 5 s)",
    )  # fmt: skip
    parser.add_argument(
        "--client-processes", type=int, default=min(4, os.cpu_count() or 2),
        help="processes the clients run in (default: the cores, at most 4)",
    )  # fmt: skip
    parser.add_argument("--rss-limit-mb", type=int, default=512, help="the memory target")
    parser.add_argument(
        "--quick", action="store_true", help="10 s phases, 50,200 clients, 200 streams"
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases and servers' logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO")
    parser.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    defaults: dict[str, Any] = (
        dict(seconds=10.0, clients=[50, 200], streams=200, agents=40, conversations=2000,
             baseline_seconds=5.0, timeout=5.0)
        if args.quick
        else dict(seconds=60.0, clients=[50, 200, 500], streams=500, agents=100,
                  conversations=5000, baseline_seconds=10.0, timeout=15.0)
    )  # fmt: skip
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.agents < 1 or args.streams < 0 or args.conversations < 10:
        parser.error("--agents >= 1, --streams >= 0, --conversations >= 10")
    return args


def raise_file_limit(needed: int) -> None:
    """Every client, stream and probe is a socket, in the client processes and in the server
    (which inherit this limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        say(f"raised the open files limit from {soft} to {want}")
    if want < needed:
        say(f"warning: the open files limit ({hard}) is below the {needed} this run may need")


def _machine() -> str:
    return f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"


def main() -> None:
    args = parse_args()
    if args.baseline_server is not None:
        serve_baseline(args.baseline_server)
        return
    setup_logging(args.verbose)
    raise_file_limit(2 * (max(args.clients) + args.streams + HEALTHZ_CONNECTIONS) + 1024)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    runs: list[DatabaseRun] = []
    failures: list[str] = []
    with scratch_dir("imapdesk-bench-load-", args.keep) as directory, ClientPool(
        args.client_processes
    ) as pool:  # fmt: skip
        try:
            baseline = run_baseline(directory, pool, args)
        except RuntimeError as exc:
            failures.append(str(exc))
            baseline = []
        for kind in kinds:
            run = run_database(kind, directory / kind, pool, args)
            runs.append(run)
            failures += run.failures
    _print_report(args, baseline, runs)
    if failures:
        print_failure("CORRECTNESS FAILURE", failures)
        sys.exit(1)


def _print_report(
    args: argparse.Namespace, baseline: Sequence[PhaseFigures], runs: Iterable[DatabaseRun]
) -> None:
    print(f"# {command_line()}")
    print(
        f"# imapdesk serve: {','.join(map(str, args.clients))} API clients (list, detail, 1 in 20 "
        f"a PATCH) + {args.streams} /live streams opened at once, {args.seconds:g} s per phase; "
        f"{args.conversations:,} conversations, {args.agents} agents"
    )
    print(
        f"# baseline: a bare FastAPI GET /ping served as imapdesk serve serves, "
        f"{args.baseline_seconds:g} s per client count; request timeout {args.timeout:g} s; "
        f"{args.client_processes} client processes on the same machine ({_machine()})"
    )
    print(
        "# latencies of 2xx answers; req/s: 2xx answers per second; cut: requests unanswered when "
        "the phase ended; CPU: share of one core"
    )
    print()
    print_baseline(baseline)
    for run in runs:
        print()
        print(f"## {run.kind} (imapdesk serve pid {run.pid})")
        if not run.phases:
            print("no phase ran: see the correctness failure below")
            continue
        print_database(run, baseline)
        print()
        print(f"targets, {run.kind}:")
        for what, met, figures in targets(run, args.rss_limit_mb):
            print(f"  {what}: {verdict(met)} ({figures})")


if __name__ == "__main__":
    main()
