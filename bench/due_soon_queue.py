"""The Due soon queue (imapdesk/domain/sla/queues.py) with 100,000 conversations: p50 and p99
of one page of it, against the bare index query under it in the same run (target: p99 <
100 ms).

Per database (`--db both|sqlite|postgresql`): a fresh database at the newest migration, seeded
with bulk inserts (executemany in batches of 10,000, as bench.web_queue seeds it: 3 mailboxes,
10 agents, `--conversations` conversations: 60% closed, 15% open, 10% pending, 10% spam, 5%
deleted; one in five tagged), then an SLA record for every conversation (conversationsla): the
open and pending ones with a due time spread evenly over `--spread-hours` either side of now
(so about half are breached and 1/spread of the rest due within the hour), one in ten pending
ones paused, the others attained (no due time). Then ANALYZE (VACUUM ANALYZE on PostgreSQL).

Measured in-process, as the web page and the REST API call them, for one agent who sees every
mailbox, `--requests` times each after a warm-up: a page (50) of Due soon, of Breached, of every
conversation with a due time sorted by it, and the two SLA counts; beside them a page of All
open (imapdesk.domain.conversations.reads.list_conversations, newest first) on the same data.
The baseline is the bare index query: the first 51 (due time, conversation id) of the Due soon
window off `ix_conversationsla_next_due`, no join, no visibility; the ratio is each p50 over
the baseline's p50 (what the queue's joins, filters and row building cost on top of the index).
`--explain` prints the database's plan of the Due soon page (EXPLAIN QUERY PLAN on SQLite,
EXPLAIN ANALYZE on PostgreSQL).

    python -m bench.due_soon_queue [--conversations 100000] [--requests 200] [--db both]
        [--explain]
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event, insert, text
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from bench.common import (
    bench_parser,
    command_line,
    fresh_database,
    percentile,
    print_table,
    say,
    scratch_dir,
    verdict,
)
from bench.web_queue import seed
from imapdesk.domain.conversations import queues, reads
from imapdesk.domain.sla import queues as sla_queues
from imapdesk.kernel.db import make_engine
from imapdesk.kernel.models import Agent, Conversation, ConversationSla

TARGET_P99_MS = 100.0
WINDOW = timedelta(minutes=60)


def seed_slas(engine: Engine, spread_hours: float, rng: random.Random) -> tuple[int, int]:
    """An SLA record per conversation; returns (with a due time, due soon)."""
    now = datetime.now(UTC)
    spread = spread_hours * 3600
    with_due = due_soon = 0
    with engine.connect() as conn:
        rows = conn.execute(
            sa_select(Conversation.id, Conversation.status, Conversation.created_at)  # type: ignore[call-overload]
        ).all()
    batch: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for cid, status, created in rows:
            state = str(getattr(status, "value", status))
            running = state in ("open", "pending")
            due = now + timedelta(seconds=rng.uniform(-spread, spread)) if running else None
            # a pending one waiting on the customer: its resolution clock stands still
            paused = now - timedelta(hours=1) if state == "pending" and rng.random() < 0.1 else None
            if due is not None:
                with_due += 1
                due_soon += now < due <= now + WINDOW
            batch.append(
                {
                    "conversation_id": cid,
                    "policy_id": None,
                    "first_response_started_at": created,
                    "first_response_due": due,
                    "first_response_at": None if running else created,
                    "first_response_met": None if running else True,
                    "first_response_warned": False,
                    "first_response_breached": False,
                    "next_response_warned": False,
                    "next_response_breached": False,
                    "resolution_started_at": created,
                    "resolution_due": due,
                    "resolved_at": None if running else created,
                    "paused_at": paused,
                    "next_response_paused_seconds": 0,
                    "resolution_paused_seconds": 0,
                    "resolution_warned": False,
                    "resolution_breached": False,
                    "breached": False,
                    "next_due_at": due,
                    "check_at": due,
                    "updated_at": now,
                }
            )
            if len(batch) == 10_000:
                conn.execute(insert(ConversationSla), batch)
                batch = []
        if batch:
            conn.execute(insert(ConversationSla), batch)
        if engine.dialect.name != "postgresql":
            conn.execute(text("ANALYZE"))
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    return with_due, due_soon


def bare_index_query(engine: Engine, session: Session) -> Callable[[], int]:
    """The Due soon window's first 51 keys straight off the due-time index."""
    due = ConversationSla.__table__.c.next_due_at  # type: ignore[attr-defined]
    cid = ConversationSla.__table__.c.conversation_id  # type: ignore[attr-defined]

    def call() -> int:
        now = datetime.now(UTC)
        statement = (
            sa_select(cid, due).where(due > now, due <= now + WINDOW).order_by(due, cid).limit(51)
        )
        return len(session.connection().execute(statement).all())

    return call


def explain(engine: Engine, session: Session, call: Callable[[], int]) -> str:
    """The plan of the first statement `call` sends that reads the SLA table."""
    seen: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "conversationsla" in statement and not seen:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    if not seen:
        return "(no statement read the SLA table)"
    statement, parameters = seen[0]
    prefix = (
        "EXPLAIN (ANALYZE, BUFFERS) "
        if engine.dialect.name == "postgresql"
        else ("EXPLAIN QUERY PLAN ")
    )
    rows = session.connection().exec_driver_sql(prefix + statement, parameters).all()
    return "\n".join(" | ".join(str(c) for c in row) for row in rows)


def timed(call: Callable[[], int], requests: int, warmup: int) -> tuple[list[float], int]:
    for _ in range(warmup):
        call()
    times = []
    shown = 0
    for _ in range(requests):
        started = time.perf_counter()
        shown = call()
        times.append(time.perf_counter() - started)
    return times, shown


def run(
    kind: str, conversations: int, requests: int, spread_hours: float, show_plan: bool = False
) -> list[list[object]]:
    rng = random.Random(14)
    with (
        scratch_dir("imapdesk-bench-due-", keep=False) as directory,
        fresh_database(kind, directory) as url,
    ):
        engine = make_engine(url)
        say(f"{kind}: seeding {conversations:,} conversations")
        started = time.monotonic()
        seed(engine, conversations, rng, index=False)
        with_due, due_soon = seed_slas(engine, spread_hours, rng)
        say(
            f"{kind}: seeded in {time.monotonic() - started:.0f} s; {with_due:,} with a due "
            f"time, {due_soon:,} due within the hour"
        )
        with Session(engine) as session:
            agent = session.exec(select(Agent).order_by(Agent.id)).first()  # type: ignore[arg-type]
            assert agent is not None
            visible = reads.visible_mailbox_ids(session, agent)

            def page(which: str) -> Callable[[], int]:
                filters = queues.queue_filters(which)
                return lambda: len(
                    sla_queues.list_due(
                        session, agent, which, filters, limit=50, window=WINDOW
                    ).items
                )

            def with_due_page() -> int:
                filters = queues.queue_filters("open")
                return len(
                    sla_queues.list_due(
                        session, agent, sla_queues.WITH_DUE, filters, limit=50
                    ).items
                )

            def all_open() -> int:
                return len(
                    reads.list_conversations(
                        session, agent, queues.queue_filters("open"), limit=50
                    ).items
                )

            def counts() -> int:
                return sum(sla_queues.count_due(session, visible, window=WINDOW).values())

            if show_plan:
                plan = explain(engine, session, page("due_soon"))
                say(f"{kind}: the Due soon page's plan\n{plan}")
            cases = [
                ("bare index query (baseline)", bare_index_query(engine, session)),
                ("All open", all_open),
                ("Due soon", page("due_soon")),
                ("Breached", page("breached")),
                ("Open by due time", with_due_page),
                ("SLA counts (2, capped)", counts),
            ]
            measured = []
            for label, call in cases:
                times, shown = timed(call, requests, warmup=10)
                measured.append((label, times, shown))
        engine.dispose()
    base = percentile(measured[0][1], 50)
    out: list[list[object]] = []
    for label, times, shown in measured:
        p50, p99 = percentile(times, 50), percentile(times, 99)
        out.append(
            [
                kind,
                label,
                shown,
                f"{p50 * 1000:.2f}",
                f"{p99 * 1000:.2f}",
                f"{p50 / base:.2f}",
                verdict(p99 * 1000 < TARGET_P99_MS),
            ]
        )
    return out


def main() -> None:
    parser = bench_parser(__doc__ or "")
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--spread-hours", type=float, default=48.0)
    parser.add_argument("--db", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--explain", action="store_true", help="print the Due soon page's plan")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    rows: list[list[object]] = []
    for kind in kinds:
        rows.extend(run(kind, args.conversations, args.requests, args.spread_hours, args.explain))
    print(f"# {command_line()}")
    print(
        f"# {args.conversations:,} conversations, {args.requests} requests per row; "
        f"times in ms; ratio = p50 / the bare index query's p50; target p99 < "
        f"{TARGET_P99_MS:.0f} ms"
    )
    print_table(("db", "query", "rows", "p50", "p99", "ratio", "p99 target"), rows)


if __name__ == "__main__":
    main()
