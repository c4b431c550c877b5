"""Customers at scale: what the customers list, a customer's page, the conversation page's
sidebar and the ingest's step cost, beside the bare query each one is built on, in the same
run on the same database.

Seeded with executemany: 100,000 conversations in 4 mailboxes with about 37,000 customer
addresses (20,000 people, half at free-mail providers), then the customers are made as
migration 0015 makes them (`directory.backfill`, timed). Each read is timed for an agent who
sees every mailbox and one restricted to one of the four (whose conditions are where the
visibility costs): ours through `imapdesk.domain.customers.views`, the baseline the same rows
read without any visibility condition (customers by address; an address's conversations by
date). The ingest's step (`directory.keep_in_step` for a batch of 500 conversations, all
customers known) is timed beside a bare read of the same 500 conversations' addresses.

    .venv/bin/python -m bench.customers [--db sqlite|postgresql] [--conversations 100000]
                                        [--repeat 50]
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, text
from sqlmodel import Session, col, select

from bench.common import (
    add_db_argument,
    add_run_arguments,
    bench_parser,
    command_line,
    fresh_database,
    percentile,
    print_table,
    say,
    scratch_dir,
    setup_logging,
)
from imapdesk.domain.accounts import access
from imapdesk.domain.customers import directory, views
from imapdesk.kernel.db import make_engine, unit_of_work
from imapdesk.kernel.models import Agent, Conversation, Customer, Mailbox

PEOPLE = 20_000
MAILBOXES = 4
BATCH = 5000


def seed(engine: Engine, conversations: int) -> None:
    rng = random.Random(1)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    with unit_of_work(engine) as s:
        boxes = [
            Mailbox(name=f"box{i}", address=f"box{i}@example.test", imap_host="localhost",
                    username="x", password_encrypted="-")
            for i in range(MAILBOXES)
        ]  # fmt: skip
        s.add_all(boxes)
        s.add(Agent(email="all@example.com", name="All", handle="all", password_hash="-"))
        restricted = Agent(email="one@example.com", name="One", handle="one", password_hash="-")
        s.add(restricted)
        s.flush()
        access.set_mailbox_access(
            s, restricted, all_mailboxes=False, mailbox_ids=[boxes[0].id or 0]
        )
        box_ids = [b.id for b in boxes]
    table = Conversation.__table__  # type: ignore[attr-defined]
    for start in range(0, conversations, BATCH):
        rows = []
        for i in range(start, min(start + BATCH, conversations)):
            person = rng.randint(1, PEOPLE)
            domain = rng.choice(("gmail.com", f"org{person % 3000}.example"))
            rows.append(
                {"mailbox_id": rng.choice(box_ids), "subject": f"Question {i}",
                 "subject_key": f"question {i}", "status": "open", "claimed": False,
                 "customer_email": f"person{person}@{domain}",
                 "customer_name": f"Person {person}", "message_count": 1, "unread": True,
                 "last_message_at": base + timedelta(minutes=i), "created_at": base,
                 "updated_at": base, "version": 1}
            )  # fmt: skip
        with engine.begin() as conn:
            conn.execute(insert(table), rows)
        say(f"seeded {min(start + BATCH, conversations):,} conversations")


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()  # warm
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def row(name: str, ours: list[float], base: list[float]) -> list[object]:
    def f(v: float) -> str:
        return f"{v * 1000:.1f}"

    p50o, p50b = percentile(ours, 50), percentile(base, 50)
    return [
        name,
        f(p50o),
        f(percentile(ours, 99)),
        f(p50b),
        f(percentile(base, 99)),
        f"{p50o / p50b:.1f}x" if p50b else "-",
    ]


def main() -> None:
    parser = bench_parser(__doc__)
    add_db_argument(parser)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    add_run_arguments(parser, verbose_help="log more")
    args = parser.parse_args()
    setup_logging(args.verbose)
    print(f"# {command_line()}")
    with (
        scratch_dir("imapdesk-bench-customers-", args.keep) as tmp,
        fresh_database(args.db, tmp) as url,
    ):
        engine = make_engine(url)
        seed(engine, args.conversations)
        start = time.perf_counter()
        with engine.begin() as conn:
            made = directory.backfill(conn)
        backfill = time.perf_counter() - start
        if args.db == "postgresql":
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        rows = measure(engine, args.repeat)
        engine.dispose()
    print(
        f"{args.conversations:,} conversations, {made:,} customers ({args.db}); "
        f"backfill (migration 0015): {backfill:.2f} s"
    )
    print_table(["what (ms)", "ours p50", "ours p99", "bare p50", "bare p99", "p50 ratio"], rows)


def measure(engine: Engine, repeat: int) -> list[list[object]]:
    rows: list[list[object]] = []
    with Session(engine) as s:
        agents = {
            "every mailbox": s.exec(select(Agent).where(col(Agent.handle) == "all")).one(),
            "one mailbox": s.exec(select(Agent).where(col(Agent.handle) == "one")).one(),
        }
        first_box = s.exec(select(Mailbox.id).order_by(col(Mailbox.id))).first()
        # a conversation the restricted agent sees, of a customer with others
        conversation = s.exec(
            select(Conversation)
            .where(col(Conversation.mailbox_id) == first_box)
            .where(col(Conversation.customer_email).like("%@org%"))
            .order_by(col(Conversation.id))
        ).first()
        assert conversation is not None and conversation.customer_email is not None
        customer = s.exec(
            select(Customer).where(col(Customer.email) == conversation.customer_email)
        ).one()

        def bare_list() -> None:
            s.exec(select(Customer).order_by(col(Customer.email)).limit(51)).all()

        def bare_search() -> None:
            s.exec(
                select(Customer)
                .where(col(Customer.search_key).contains("person 1999"))
                .order_by(col(Customer.email))
                .limit(51)
            ).all()

        def bare_conversations() -> None:
            s.exec(
                select(Conversation)
                .where(col(Conversation.customer_email) == customer.email)
                .order_by(col(Conversation.last_message_at).desc())
                .limit(100)
            ).all()

        for who, agent in agents.items():
            say(f"timing for the agent who sees {who}")
            rows.append(row(f"list, first page ({who})",
                            timed(lambda a=agent: views.list_customers(s, a), repeat),
                            timed(bare_list, repeat)))  # fmt: skip
            rows.append(row(f"list, q=\"person 1999\" ({who})",
                            timed(lambda a=agent: views.list_customers(s, a, "person 1999"),
                                  repeat),
                            timed(bare_search, repeat)))  # fmt: skip
            rows.append(row(f"customer page ({who})",
                            timed(lambda a=agent: views.customer_detail(s, a, customer.id or 0),
                                  repeat),
                            timed(bare_conversations, repeat)))  # fmt: skip
            rows.append(row(f"sidebar ({who})",
                            timed(lambda a=agent: views.customer_card(s, a, conversation), repeat),
                            timed(bare_conversations, repeat)))  # fmt: skip
    ids = list(range(1, 501))

    def step() -> None:
        with engine.begin() as conn:
            directory.keep_in_step(conn, ids)

    def bare_step() -> None:
        with engine.begin() as conn:
            conn.execute(
                select(col(Conversation.customer_email), col(Conversation.customer_name)).where(
                    col(Conversation.id).in_(ids)
                )
            ).all()

    rows.append(
        row("ingest step, 500 conversations", timed(step, repeat), timed(bare_step, repeat))
    )
    say(f"median of all ours: {statistics.median(float(r[1]) for r in rows):.1f} ms")
    return rows


if __name__ == "__main__":
    main()
