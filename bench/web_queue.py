"""The queue page (`GET /`, the conversation list with its sidebar counts) with 100,000
conversations in the database: server time per request, p50 and p99 (target: p99 < 100 ms).

Per database (`--db both|sqlite|postgresql`): a fresh database at the newest migration, seeded
directly with executemany (not through ingest): 3 mailboxes, 10 agents, `--conversations`
conversations (60% closed, 15% open, 10% pending, 10% spam, 5% deleted; half of the open ones
assigned; one in five tagged, with one of 12 tags; last message times spread over two years), then
ANALYZE (VACUUM ANALYZE on PostgreSQL, as autovacuum would have by then). One agent, signed in
through the login form, asks for each view in turn (`--requests` times per view, after a warm-up):
Everything (the default), Mine, Unassigned, All open sorted oldest first, one mailbox's open ones,
a tag's open ones, and two searches: a rare word, and a word in the subject of 30% of all
conversations. The sidebar counts are reused while nothing changed
(imapdesk/domain/conversations/queues.py): two more views
have a conversation change (its version and updated_at bumped, as every change does) committed
before each request, so every request counts afresh ("busy"). Server time is measured inside the
ASGI app, from the request's arrival to the last byte of the response (routing, session, the
queries, the template), so the in-process client adds nothing; the process's CPU time per request
is printed beside it (what the page costs on an idle core, since a busy machine stretches the wall
time).

Baseline, side by side in the same run on the same database: the bare SQL of the list itself
(the same WHERE, ORDER BY and LIMIT as the page's main query, no counts, no template) run on a
plain connection. The ratio says what the page costs over the one query it cannot avoid. For a
search the bare SQL is the textbook form: `id IN (the full-text matches)`, planned by the database
(the page's own search chooses its plan from a bounded look at the matches,
imapdesk/domain/conversations/search.py); bench.web_search measures searches on their own.

With `--messages N` each conversation gets N messages whose text the searches look through too,
and a search for a word in 80% of the texts is added.

    python -m bench.web_queue [--conversations 100000] [--messages 0] [--requests 100] [--db both]
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, text
from sqlmodel import Session

from bench.common import (
    bench_parser,
    command_line,
    fresh_database,
    new_secret_key,
    percentile,
    print_table,
    say,
    scratch_dir,
    sign_in,
    verdict,
)
from imapdesk.api.app import create_app, settle_after_start
from imapdesk.domain.conversations import search
from imapdesk.domain.conversations.search_index import rebuild_all
from imapdesk.domain.conversations.search_query import parse_query
from imapdesk.kernel.crypto import hash_password
from imapdesk.kernel.db import make_engine
from imapdesk.kernel.models import Agent, Conversation, ConversationTag, Mailbox, Message
from imapdesk.kernel.settings import Settings

TARGET_P99_MS = 100.0
PASSWORD = "bench password"
TAGS = [f"tag{i}" for i in range(12)]
STATUSES = ["closed"] * 12 + ["open"] * 3 + ["pending"] * 2 + ["spam"] * 2 + ["deleted"]
SUBJECT_WORDS = "printer invoice refund login delivery broken urgent account password order"


@dataclass(frozen=True)
class View:
    label: str
    path: str
    # the bare list query behind the view: (extra WHERE, ORDER BY)
    where: str
    order: str
    # a conversation changes before each request: the counts cannot be reused
    busy: bool = False


def text_match(dialect: str, word: str) -> str:
    """The textbook full-text condition for a word typed into the search box (so a prefix):
    the subquery of matches (the conversations' documents: subject, customer, their messages)
    in a plain IN, left to the database's planner."""
    q = search.index_query(dialect, parse_query(word).clauses).replace("'", "''")
    matches = search.bare_matches(dialect).replace(":search_q", f"'{q}'")
    return f"id IN ({matches})"


def views(agent_id: int, dialect: str, messages: bool) -> list[View]:
    not_deleted = "status IN ('open', 'pending', 'closed', 'spam')"
    newest = "last_message_at DESC, id DESC"
    return [
        View("Everything", "/", not_deleted, newest),
        View(
            "Mine",
            "/?queue=mine",
            f"status IN ('open', 'pending') AND assignee_id = {agent_id}",
            newest,
        ),
        View("Unassigned", "/?queue=unassigned", "status = 'open' AND assignee_id IS NULL", newest),
        View(
            "Open, oldest",
            "/?queue=open&sort=oldest",
            "status = 'open'",
            "last_message_at ASC, id ASC",
        ),
        View("Mailbox b", "/?queue=open&mailbox=b", "status = 'open' AND mailbox_id = 2", newest),
        View(
            "Tag tag3",
            "/?queue=open&tag=tag3",
            "status = 'open' AND id IN "
            "(SELECT conversation_id FROM conversationtag WHERE tag = 'tag3')",
            newest,
        ),
        View("Everything, busy", "/", not_deleted, newest, busy=True),
        View(
            "Unassigned, busy",
            "/?queue=unassigned",
            "status = 'open' AND assignee_id IS NULL",
            newest,
            busy=True,
        ),
        View("Search, a rare word", "/?q=4242", text_match(dialect, "4242"), newest),
        View("Search, in 30% of all", "/?q=refund", text_match(dialect, "refund"), newest),
    ] + (
        [View("Search, in 80% of texts", "/?q=thanks", text_match(dialect, "thanks"), newest)]
        if messages
        else []
    )


# --- seeding --------------------------------------------------------------------------------


def seed(
    engine: Engine,
    conversations: int,
    rng: random.Random,
    messages: int = 0,
    make_messages: Callable[..., list[dict[str, Any]]] | None = None,
    *,
    index: bool = True,
) -> int:
    """Rows written straight into the tables; returns the id of the agent who browses.
    `messages` per conversation: bodies of ~700 characters, "thanks" in 80% of them and
    "refund" in 10%, so that searches must look through the messages' text too
    (`make_messages(conversation_rows, messages, rng)` writes other ones). `index`: write the
    conversations' search documents too (`search_index.rebuild_all`)."""
    now = datetime.now(UTC)
    with Session(engine) as s:
        s.execute(
            insert(Mailbox),
            [
                {
                    "name": name,
                    "address": f"{name}@example.test",
                    "imap_host": "127.0.0.1",
                    "imap_port": 993,
                    "imap_security": "ssl",
                    "username": f"{name}@example.test",
                    "password_encrypted": "x",
                    "enabled": False,
                    "watched_folders": [],
                    "capabilities": {},
                    "created_at": now,
                }
                for name in ("a", "b", "c")
            ],
        )
        password_hash = hash_password(PASSWORD)
        s.execute(
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
                for i in range(10)
            ],
        )
        s.commit()
    words = SUBJECT_WORDS.split()
    start = now - timedelta(days=730)
    batch = 10_000
    next_id = 1
    with engine.begin() as conn:
        for first in range(0, conversations, batch):
            rows: list[dict[str, Any]] = []
            tags: list[dict[str, Any]] = []
            for _ in range(min(batch, conversations - first)):
                status = rng.choice(STATUSES)
                assignee = rng.randint(1, 10) if status != "open" or rng.random() < 0.5 else None
                when = start + timedelta(seconds=rng.randint(0, 730 * 86400))
                subject = " ".join(rng.sample(words, 3)) + f" #{next_id}"
                rows.append(
                    {
                        "id": next_id,
                        "mailbox_id": rng.randint(1, 3),
                        "subject": subject,
                        "subject_key": subject[:255],
                        "status": status,
                        "assignee_id": assignee,
                        "claimed": assignee is not None,
                        "customer_email": f"customer{rng.randint(1, 20000)}@example.com",
                        "customer_name": f"Customer {next_id}",
                        "message_count": rng.randint(1, 8),
                        "unread": status == "open",
                        "last_message_at": when,
                        "created_at": when,
                        "updated_at": when,
                        "version": 1,
                    }
                )
                if rng.random() < 0.2:
                    tags.append({"conversation_id": next_id, "tag": rng.choice(TAGS)})
                next_id += 1
            conn.execute(insert(Conversation), rows)
            if tags:
                conn.execute(insert(ConversationTag), tags)
            if messages:
                conn.execute(insert(Message), (make_messages or message_rows)(rows, messages, rng))
    with engine.begin() as conn:
        if index:  # rows written around the ORM: their search documents too
            rebuild_all(conn)
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval('conversation_id_seq', :n)"), {"n": next_id})
        else:
            conn.execute(text("ANALYZE"))
    if engine.dialect.name == "postgresql":
        # a table in use has been vacuumed: do it now, not as autovacuum during the measuring
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    return 1


FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 8


def message_rows(
    conversations: list[dict[str, Any]], per_conversation: int, rng: random.Random
) -> list[dict[str, Any]]:
    return [
        {
            "message_id": f"m{c['id']}.{k}@bench.example",
            "has_message_id": True,
            "content_hash": f"{c['id']:x}.{k}",
            "conversation_id": c["id"],
            "subject": c["subject"],
            "from_email": c["customer_email"],
            "from_name": c["customer_name"],
            "to": [{"name": "Support", "email": "support@example.test"}],
            "text": "Hello team, "
            + ("thanks for the help. " if rng.random() < 0.8 else "please have a look. ")
            + ("I want a refund now. " if rng.random() < 0.1 else "")
            + FILLER
            + f"order {c['id'] * 7 + k}",
            "date": c["last_message_at"],
            "created_at": c["last_message_at"],
        }
        for c in conversations
        for k in range(per_conversation)
    ]


# --- measuring ------------------------------------------------------------------------------


class ServerTimer:
    """ASGI wrapper: the time from a request's arrival to its last response byte."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last: float = 0.0
        self.last_cpu: float = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, cpu = time.perf_counter(), time.process_time()

        async def timed_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.last = time.perf_counter() - started
                self.last_cpu = time.process_time() - cpu

        await self.app(scope, receive, timed_send)


def change_one(engine: Engine, rng: random.Random, conversations: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE conversation SET version = version + 1, updated_at = :now WHERE id = :id"),
            {"now": datetime.now(UTC), "id": rng.randint(1, conversations)},
        )


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bare_query(engine: Engine, view: View) -> Callable[[], object]:
    sql = (
        "SELECT * FROM conversation WHERE merged_into_id IS NULL AND mailbox_id IN (1, 2, 3) "
        f"AND {view.where} ORDER BY {view.order} LIMIT 51"
    )
    conn = engine.connect()

    def run() -> object:
        return conn.execute(text(sql)).fetchall()

    return run


@dataclass
class Result:
    db: str
    view: str
    page: list[float]
    baseline: list[float]
    # CPU time of the whole process during the request: what the page costs on an idle core
    cpu: list[float]


def measure(
    kind: str,
    directory: Path,
    conversations: int,
    requests: int,
    rng: random.Random,
    messages: int = 0,
) -> list[Result]:
    results: list[Result] = []
    with fresh_database(kind, directory) as url:
        engine = make_engine(url)
        try:
            say(f"{kind}: seeding {conversations:,} conversations, {messages} messages each")
            t = time.perf_counter()
            agent_id = seed(engine, conversations, rng, messages)
            say(f"{kind}: seeded in {time.perf_counter() - t:.1f} s")
            settings = Settings(
                database_url=url, data_dir=directory / "data", secret_key=new_secret_key()
            )
            timer = ServerTimer(create_app(settings=settings, engine=engine))
            settle_after_start()  # as `imapdesk serve` does
            client = TestClient(timer)
            r = sign_in(client, "agent0@example.test", PASSWORD)
            assert r.status_code == 303, r.text
            for view in views(agent_id, engine.dialect.name, messages > 0):
                for _ in range(5):  # warm-up
                    assert client.get(view.path).status_code == 200
                samples, cpu = [], []
                for _ in range(requests):
                    if view.busy:
                        change_one(engine, rng, conversations)
                    r = client.get(view.path)
                    assert r.status_code == 200 and 'data-id="' in r.text, view.path
                    samples.append(timer.last)
                    cpu.append(timer.last_cpu)
                baseline: list[float] = []
                if view.where:
                    run = bare_query(engine, view)
                    timed(run, 5)
                    baseline = timed(run, requests)
                results.append(Result(kind, view.label, samples, baseline, cpu))
                say(f"{kind}: {view.label}: p99 {percentile(samples, 99) * 1000:.1f} ms")
        finally:
            engine.dispose()
    return results


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def report(results: Sequence[Result]) -> bool:
    rows = []
    ok = True
    for res in results:
        p50, p99 = percentile(res.page, 50), percentile(res.page, 99)
        b50 = percentile(res.baseline, 50) if res.baseline else float("nan")
        b99 = percentile(res.baseline, 99) if res.baseline else float("nan")
        rows.append(
            [
                res.db,
                res.view,
                ms(p50),
                ms(p99),
                ms(percentile(res.cpu, 50)),
                ms(b50) if res.baseline else "-",
                ms(b99) if res.baseline else "-",
                f"{p50 / b50:.1f}x" if res.baseline else "-",
            ]
        )
    print_table(
        [
            "db",
            "view",
            "page p50 ms",
            "page p99 ms",
            "page CPU p50",
            "bare SQL p50",
            "bare SQL p99",
            "p50 ratio",
        ],
        rows,
    )
    print()
    # the queue views (the target's subject) and the searches, each summed up on its own
    groups = (("queue views", False), ("searches", True))
    for db in sorted({r.db for r in results}):
        for group, searching in groups:
            chosen = [r for r in results if r.db == db and r.view.startswith("Search") == searching]
            if not chosen:
                continue
            every = [x for r in chosen for x in r.page]
            every_cpu = [x for r in chosen for x in r.cpu]
            p99 = percentile(every, 99)
            met = p99 * 1000 < TARGET_P99_MS
            ok = ok and met
            print(
                f"{db}, {group}: {len(every)} requests: p50 {ms(percentile(every, 50))} ms, "
                f"p99 {ms(p99)} ms (target < {TARGET_P99_MS:.0f} ms: {verdict(met)}); "
                f"CPU per request p50 {ms(percentile(every_cpu, 50))} ms, "
                f"p99 {ms(percentile(every_cpu, 99))} ms"
            )
    return ok


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100, help="per view")
    parser.add_argument("--db", choices=["both", "sqlite", "postgresql"], default="both")
    parser.add_argument(
        "--messages", type=int, default=0, help="messages per conversation (their text searched)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    print(f"# {command_line()}")
    rng = random.Random(args.seed)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results: list[Result] = []
    with scratch_dir("imapdesk-bench-webqueue-", args.keep) as directory:
        for kind in kinds:
            results.extend(
                measure(kind, directory, args.conversations, args.requests, rng, args.messages)
            )
    print(
        f"{args.conversations:,} conversations, {args.messages} messages each; "
        f"{args.requests} requests per view; server time "
        "inside the ASGI app; baseline: the view's bare list query (same WHERE/ORDER/LIMIT)"
    )
    report(results)


if __name__ == "__main__":
    main()
