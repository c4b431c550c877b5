"""Live updates: from a state change committed by another process until 50 open pages (SSE
clients of an API process) have it, against the bare database poll in the same run.

The API runs as its own process (uvicorn, as `imapdesk serve` does); this process commits
status changes at random moments (as the worker or another API process would) and holds 50
pages' streams. Baseline: a `ChangeFeed` polling the same database at the same interval in this
process (what the SSE path cannot beat: the poll interval plus a read).

`--pages conversation` (the default): 50 `GET /live?conversation=ID` streams; a page has the
change when its event arrives (the conversation page then fetches its parts, one request).
`--pages list`: 50 list pages of 10 agents (5 tabs each) over `--conversations` conversations
(100,000 by default, seeded as bench.web_queue seeds them), each with the stream a list page
opens (`/live?parts=1`): a page has the change when the rows and sidebar counts pushed on its
stream (what queues.js puts in place) show the new version.

    .venv/bin/python -m bench.web_live [--db sqlite|postgresql] [--clients 50] [--changes 60]
                                       [--pages conversation|list] [--conversations 100000]
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
import time
from datetime import UTC, datetime

import httpx
from sqlalchemy import update
from sqlmodel import Session, col

from bench.common import (
    WEB_PASSWORD,
    add_db_argument,
    add_run_arguments,
    add_web_agent_and_box,
    bench_parser,
    command_line,
    fresh_database,
    percentile,
    print_table,
    say,
    scratch_dir,
    setup_logging,
    sign_in,
    start_serve,
)
from bench.web_queue import PASSWORD as QUEUE_PASSWORD
from bench.web_queue import seed
from imapdesk.api.web.live import POLL_SECONDS
from imapdesk.devtools.mailserver import free_port
from imapdesk.domain.conversations import operations
from imapdesk.domain.live.changes import ChangeFeed
from imapdesk.kernel.db import make_engine, unit_of_work
from imapdesk.kernel.models import ActivitySource, Conversation, ConversationStatus

LIST_AGENTS = 10


def _seed(url: str) -> int:
    engine = make_engine(url)
    with unit_of_work(engine) as s:
        _agent, box = add_web_agent_and_box(s)
        assert box.id is not None
        conv = Conversation(mailbox_id=box.id, subject="Live", customer_email="c@example.com")
        s.add(conv)
        s.flush()
        assert conv.id is not None
        cid = conv.id
    engine.dispose()
    return cid


def _seed_list(url: str, conversations: int) -> int:
    """A big database as bench.web_queue seeds it; the conversation that changes is the newest
    open one, so it heads every agent's default view."""
    engine = make_engine(url)
    seed(engine, conversations, random.Random(1))
    with engine.begin() as conn:
        conn.execute(
            update(Conversation)
            .where(col(Conversation.id) == 1)
            .values(status=ConversationStatus.open, last_message_at=datetime.now(UTC))
        )
    engine.dispose()
    return 1


def _login(
    base: str, email: str = "bench@example.com", password: str = WEB_PASSWORD
) -> httpx.Cookies:
    """Signed in once the API process is up (within 30 s)."""
    with httpx.Client(base_url=base) as http:
        r = sign_in(http, email, password, wait=30)
        if r.status_code != 303:
            raise SystemExit(f"could not sign in: {r.status_code}")
        return http.cookies


def _writer(url: str, cid: int, changes: int, commits: dict[int, float]) -> None:
    engine = make_engine(url)
    statuses = [ConversationStatus.pending, ConversationStatus.open]
    for i in range(changes):
        time.sleep(random.uniform(0.2, 0.45))  # not in step with the poll
        with unit_of_work(engine) as s:
            conv = operations.set_status(s, cid, statuses[i % 2], source=ActivitySource.system)
            version = conv.version
        commits[version] = time.monotonic()
    engine.dispose()


def _baseline(url: str, stop: threading.Event, seen: dict[int, float]) -> None:
    engine = make_engine(url)
    feed = ChangeFeed()
    while not stop.is_set():
        with Session(engine) as s:
            now = time.monotonic()
            for change in feed.poll(s):
                seen.setdefault(change.version, now)
        time.sleep(POLL_SECONDS)
    engine.dispose()


async def _client(
    base: str, cookies: httpx.Cookies, cid: int, ready: asyncio.Event,
    counter: list[int], clients: int, got: dict[int, float], list_page: bool,
) -> None:  # fmt: skip
    """One page's event stream: a conversation page's, or a list page's with its parts."""
    stream = "/live?parts=1" if list_page else f"/live?conversation={cid}"
    async with (
        httpx.AsyncClient(base_url=base, cookies=cookies, timeout=None) as http,
        http.stream("GET", stream) as response,
    ):
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                now = time.monotonic()
                if kind == "hello":
                    counter[0] += 1
                    if counter[0] == clients:
                        ready.set()
                elif kind == "conversation" and not list_page:
                    got.setdefault(json.loads(line[6:])["version"], now)
                elif kind == "parts":
                    version = json.loads(line[6:])["versions"].get(str(cid))
                    if version is not None:
                        got.setdefault(version, now)


async def _run(
    base: str, url: str, cid: int, clients: int, changes: int, list_page: bool
) -> tuple[list[float], list[float], int]:
    if list_page:
        # ten agents (bench.web_queue's), each with clients / 10 tabs
        sessions = [
            await asyncio.to_thread(_login, base, f"agent{i}@example.test", QUEUE_PASSWORD)
            for i in range(LIST_AGENTS)
        ]
    else:
        sessions = [await asyncio.to_thread(_login, base)]
    ready = asyncio.Event()
    counter = [0]
    received: list[dict[int, float]] = [{} for _ in range(clients)]
    pages = [
        (sessions[i % len(sessions)], ready, counter, clients, received[i], list_page)
        for i in range(clients)
    ]
    tasks = [asyncio.create_task(_client(base, cookies, cid, *rest)) for cookies, *rest in pages]
    await asyncio.wait_for(ready.wait(), 30)
    await asyncio.sleep(1.0)  # the API's poller takes stock on its first poll
    say(f"{clients} pages connected; committing {changes} changes")
    commits: dict[int, float] = {}
    seen: dict[int, float] = {}
    stop = threading.Event()
    base_thread = threading.Thread(target=_baseline, args=(url, stop, seen), daemon=True)
    base_thread.start()
    await asyncio.sleep(0.5)
    await asyncio.to_thread(_writer, url, cid, changes, commits)
    await asyncio.sleep(2.0)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    base_thread.join(5)

    # two commits within one poll arrive as one event with the newer version: a page has a
    # change once it got that version or a newer one
    def shown(got: dict[int, float], version: int) -> float | None:
        times = [at for v, at in got.items() if v >= version]
        return min(times) if times else None

    live: list[float] = []
    missing = 0
    for got in received:
        for v, t in commits.items():
            at = shown(got, v)
            if at is None:
                missing += 1
            else:
                live.append((at - t) * 1000)
    baseline = [(at - t) * 1000 for v, t in commits.items() if (at := shown(seen, v)) is not None]
    return live, baseline, missing


def main() -> None:
    parser = bench_parser(__doc__)
    add_db_argument(parser)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--changes", type=int, default=60)
    parser.add_argument("--pages", choices=("conversation", "list"), default="conversation")
    parser.add_argument("--conversations", type=int, default=100_000, help="with --pages list")
    add_run_arguments(parser, keep_help=None, verbose_help=None)
    args = parser.parse_args()
    setup_logging(args.verbose)
    with scratch_dir("imapdesk-bench-live-", args.keep) as tmp, fresh_database(args.db, tmp) as url:
        list_page = args.pages == "list"
        if list_page:
            say(f"seeding {args.conversations:,} conversations")
            cid = _seed_list(url, args.conversations)
        else:
            cid = _seed(url)
        port = free_port()
        api = start_serve(url, tmp / "data", port, tmp / "api.log")
        try:
            live, baseline, missing = asyncio.run(
                _run(f"http://127.0.0.1:{port}", url, cid, args.clients, args.changes, list_page)
            )
        finally:
            api.terminate()
            api.wait(20)
    print(f"# {command_line()}")
    what = (
        f"{args.clients} list pages of {LIST_AGENTS} agents with their pushed parts, "
        f"{args.conversations:,} conversations"
        if list_page
        else f"{args.clients} conversation pages' SSE streams"
    )
    print(
        f"# {args.changes} status changes committed by another process, {what}, {args.db}; "
        f"poll interval {POLL_SECONDS * 1000:.0f} ms"
    )
    rows = []
    ours = f"{'SSE with list parts' if list_page else 'SSE'} to {args.clients} pages"
    for name, values in ((ours, live), ("bare DB poll (baseline)", baseline)):
        rows.append(
            [name, len(values), f"{percentile(values, 50):.0f}", f"{percentile(values, 99):.0f}",
             f"{max(values):.0f}"]
        )  # fmt: skip
    print_table(["path", "deliveries", "p50 ms", "p99 ms", "max ms"], rows)
    p50 = percentile(live, 50) / percentile(baseline, 50)
    p99 = percentile(live, 99) / percentile(baseline, 99)
    print(f"ratio SSE/baseline: p50 {p50:.2f}x, p99 {p99:.2f}x; missed deliveries: {missing}")
    met = "met" if percentile(live, 99) < 1000 else "MISSED"
    print(f"target: every page within 1 s (p99 < 1000 ms): {met}")
    if missing:
        sys.exit(1)


if __name__ == "__main__":
    main()
