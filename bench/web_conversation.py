"""The conversation page's server time with 100,000 conversations in the database, against the
bare queries behind it (the conversation with its messages, attachments and locations, and its
activity log) in the same run.

Seeded with executemany (not through the ingest): 100,000 conversations of 3 messages each, an
activity row each, tags on every tenth. The page is requested through the ASGI app in this
process (FastAPI's TestClient, signed in), so the time is the server's: routing, session,
permission checks, queries, templates.

    .venv/bin/python -m bench.web_conversation [--db sqlite|postgresql] [--conversations 100000]
"""

from __future__ import annotations

import hashlib
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, text
from sqlmodel import Session, SQLModel
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from bench.common import (
    WEB_PASSWORD,
    add_db_argument,
    add_run_arguments,
    add_web_agent_and_box,
    bench_parser,
    command_line,
    fresh_database,
    new_secret_key,
    percentile,
    print_table,
    say,
    scratch_dir,
    setup_logging,
    sign_in,
)
from imapdesk.api.app import create_app, settle_after_start
from imapdesk.domain.conversations import reads
from imapdesk.kernel.db import make_engine, unit_of_work
from imapdesk.kernel.models import Activity, Agent, Conversation, ConversationTag, Message
from imapdesk.kernel.settings import Settings

TARGET_P99_MS = 100.0
BATCH = 5000
TEXT = (
    "Hello,\n\nthe printer on the second floor shows error 0x42 again since this morning. "
    "We restarted it twice.\n\nOn Mon, 1 Jan 2024, Support wrote:\n> Could you try again?\n"
)


def _table(model: type[SQLModel]) -> Any:
    return model.__table__  # type: ignore[attr-defined]


def seed(engine: Engine, conversations: int) -> int:
    """The rows, in batches of executemany; returns the agent's id."""
    with unit_of_work(engine) as s:
        agent, box = add_web_agent_and_box(s)
        assert box.id is not None and agent.id is not None
        box_id, agent_id = box.id, agent.id
    start = datetime(2024, 1, 1, tzinfo=UTC)
    started = time.monotonic()
    with engine.begin() as conn:
        for first in range(1, conversations + 1, BATCH):
            ids = range(first, min(first + BATCH, conversations + 1))
            convs, msgs, acts, tags = [], [], [], []
            for cid in ids:
                when = start + timedelta(minutes=cid)
                convs.append(
                    {"id": cid, "mailbox_id": box_id, "subject": f"Printer {cid}",
                     "subject_key": f"printer {cid}", "status": "open", "claimed": False,
                     "customer_email": f"c{cid}@customer.example", "customer_name": f"C {cid}",
                     "message_count": 3, "unread": True, "last_message_at": when,
                     "created_at": when, "updated_at": when, "version": 4}
                )  # fmt: skip
                for n in range(3):
                    msgid = f"m{cid}.{n}@customer.example"
                    msgs.append(
                        {"message_id": msgid, "has_message_id": True,
                         "content_hash": hashlib.sha256(msgid.encode()).hexdigest(),
                         "conversation_id": cid, "thread_rule": "references" if n else "new",
                         "direction": "outbound" if n == 1 else "inbound",
                         "subject": f"Printer {cid}", "from_email": f"c{cid}@customer.example",
                         "from_name": f"C {cid}", "to": [{"email": "support@example.test"}],
                         "cc": [], "reply_to": [], "date": when + timedelta(seconds=n),
                         "in_reply_to": f"m{cid}.{n - 1}@customer.example" if n else None,
                         "references": [], "headers": "", "text": TEXT,
                         "html": "<p>Hello</p>" if n == 2 else None, "snippet": TEXT[:100],
                         "size": 2000, "auto_submitted": False, "seen": False,
                         "created_at": when}
                    )  # fmt: skip
                acts.append(
                    {"conversation_id": cid, "created_at": when, "source": "imap",
                     "agent_id": None, "actor": "a mail client", "action": "status",
                     "details": {"from": "pending", "to": "open"}}
                )  # fmt: skip
                if cid % 10 == 0:
                    tags.append({"conversation_id": cid, "tag": "vip"})
            conn.execute(insert(_table(Conversation)), convs)
            conn.execute(insert(_table(Message)), msgs)
            conn.execute(insert(_table(Activity)), acts)
            if tags:
                conn.execute(insert(_table(ConversationTag)), tags)
        if engine.dialect.name == "postgresql":
            conn.execute(
                text("SELECT setval('conversation_id_seq', (SELECT max(id) FROM conversation))")
            )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    say(f"seeded {conversations} conversations in {time.monotonic() - started:.1f} s")
    return agent_id


class ServerTimer:
    """Times each request inside the server: from the ASGI call to the last body byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.last_ms = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()

        async def timed(message: AsgiMessage) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.last_ms = (time.perf_counter() - started) * 1000
            await send(message)

        await self.app(scope, receive, timed)


def main() -> None:
    parser = bench_parser(__doc__)
    add_db_argument(parser)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    add_run_arguments(parser, keep_help=None, verbose_help=None)
    args = parser.parse_args()
    setup_logging(args.verbose)
    with scratch_dir("imapdesk-bench-conv-", args.keep) as tmp, fresh_database(args.db, tmp) as url:
        engine = make_engine(url)
        agent_id = seed(engine, args.conversations)
        settings = Settings(
            database_url=url, data_dir=tmp / "data", secret_key=new_secret_key(),
            environment="development",
        )  # fmt: skip
        app = ServerTimer(create_app(settings=settings, engine=engine))
        settle_after_start()  # as `imapdesk serve` does
        rng = random.Random(7)
        sample = [rng.randint(1, args.conversations) for _ in range(args.requests)]
        page_ms: list[float] = []
        bare_ms: list[float] = []
        with TestClient(app, follow_redirects=False) as client:
            r = sign_in(client, "bench@example.com", WEB_PASSWORD)
            assert r.status_code == 303, r.text
            for cid in sample[:20]:  # warm up both paths
                client.get(f"/conversations/{cid}")
            for cid in sample:
                r = client.get(f"/conversations/{cid}")
                page_ms.append(app.last_ms)
                assert r.status_code == 200 and f"Printer {cid}" in r.text, r.status_code
                with Session(engine) as s:
                    agent = s.get(Agent, agent_id)
                    assert agent is not None
                    t0 = time.perf_counter()
                    reads.conversation_detail(s, agent, cid)
                    reads.conversation_activity(s, cid)
                    bare_ms.append((time.perf_counter() - t0) * 1000)
        engine.dispose()
    print(f"# {command_line()}")
    print(
        f"# {args.conversations} conversations (3 messages each), {args.db}, "
        f"{args.requests} pages at random"
    )
    rows = [
        [name, f"{percentile(v, 50):.1f}", f"{percentile(v, 99):.1f}", f"{max(v):.1f}"]
        for name, v in (("conversation page", page_ms), ("bare queries (baseline)", bare_ms))
    ]
    print_table(["path", "p50 ms", "p99 ms", "max ms"], rows)
    print(
        f"ratio page/bare: p50 {percentile(page_ms, 50) / percentile(bare_ms, 50):.1f}x, "
        f"p99 {percentile(page_ms, 99) / percentile(bare_ms, 99):.1f}x"
    )
    met = "met" if percentile(page_ms, 99) < TARGET_P99_MS else "MISSED"
    print(f"target: page p99 < {TARGET_P99_MS:.0f} ms: {met}")


if __name__ == "__main__":
    main()
