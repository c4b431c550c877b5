"""Draft autosave: the server time of one save as the composer sends it while an agent types
(`POST /conversations/{id}/draft`, signed in), and through the REST API (`PUT
/api/v1/conversations/{id}/draft`), against a bare UPDATE of the same draft row through the
same engine in the same run; and what one save costs the database: statements (by kind) and
rows written.

Seeded with executemany: 100,000 conversations and 2,000 drafts of other agents. Each measured
draft is typed in 50 saves (the text growing by about 40 characters each: the first save
inserts the row, the others rewrite it), on conversations picked at random. Requests go
through the ASGI app in this process (FastAPI's TestClient), timed inside the server: routing,
the browser session or token, the CSRF check, the permission check, the upsert, the commit.
The baseline is one `UPDATE draft SET body, updated_at WHERE conversation_id AND agent_id`
in its own transaction; the statement a save writes (the upsert alone) is timed beside it, and
so is the conversation page's presence heartbeat, an existing route that writes one row (the
floor of a signed-in write through the app).

    .venv/bin/python -m bench.draft_autosave [--db sqlite|postgresql] [--conversations 100000]
                                             [--saves 1000]
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, insert, text
from sqlmodel import Session, SQLModel

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
from bench.web_conversation import ServerTimer
from imapdesk.api.app import create_app, settle_after_start
from imapdesk.domain.accounts.agents import create_api_token
from imapdesk.domain.outbound import drafts
from imapdesk.kernel.db import make_engine, unit_of_work
from imapdesk.kernel.models import Agent, Conversation, Draft, utcnow
from imapdesk.kernel.settings import Settings

BATCH = 5000
SAVES_PER_DRAFT = 50
WORDS = (
    "Hello Carol, thank you for the photos. The printer on the second floor shows error 0x42 "
    "when its fuser overheats; please switch it off, wait ten minutes and try again. "
)
TARGET_P99_MS = 50.0
TRANSACTION = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def _table(model: type[SQLModel]) -> Any:
    return model.__table__  # type: ignore[attr-defined]


def seed(engine: Engine, conversations: int, other_drafts: int) -> tuple[int, str]:
    """The rows; returns the agent's id and an API token of theirs."""
    with unit_of_work(engine) as s:
        agent, box = add_web_agent_and_box(s)
        # colleagues who never sign in here: no password worth hashing
        others = [
            Agent(email=f"agent{i}@example.com", name=f"Agent {i}", handle=f"agent{i}",
                  password_hash="-")
            for i in range(20)
        ]  # fmt: skip
        s.add_all(others)
        s.flush()
        token = create_api_token(s, agent, name="bench.draft_autosave")
        assert box.id is not None and agent.id is not None
        box_id, agent_id = box.id, agent.id
        other_ids = [a.id for a in others]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rng = random.Random(3)
    with engine.begin() as conn:
        for first in range(1, conversations + 1, BATCH):
            convs = []
            for cid in range(first, min(first + BATCH, conversations + 1)):
                when = start + timedelta(minutes=cid)
                convs.append(
                    {"id": cid, "mailbox_id": box_id, "subject": f"Printer {cid}",
                     "subject_key": f"printer {cid}", "status": "open", "claimed": False,
                     "customer_email": f"c{cid}@customer.example", "message_count": 1,
                     "unread": False, "last_message_at": when, "created_at": when,
                     "updated_at": when, "version": 2}
                )  # fmt: skip
            conn.execute(insert(_table(Conversation)), convs)
        taken = rng.sample(range(1, conversations + 1), other_drafts)
        conn.execute(
            insert(_table(Draft)),
            [
                {"conversation_id": cid, "agent_id": other_ids[i % len(other_ids)],
                 "kind": "reply", "body": WORDS * 3, "to": [], "cc": [],
                 "created_at": start, "updated_at": start}
                for i, cid in enumerate(taken)
            ],
        )  # fmt: skip
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
    return agent_id, token


@dataclass
class StatementCounter:
    """Every statement the engine sends while `on`, by its kind (the first word, and the
    table for a write), with the rows it wrote. `statements` leaves out the transactions'
    own (BEGIN, COMMIT: SQLite's driver sends them as statements, PostgreSQL's does not)."""

    on: bool = False
    statements: int = 0
    rows_written: int = 0
    kinds: Counter[str] = field(default_factory=Counter)

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "after_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not self.on:
            return
        words = statement.split()
        verb = words[0].upper() if words else "?"
        if verb not in TRANSACTION:
            self.statements += 1
        if verb in ("INSERT", "UPDATE", "DELETE"):
            target = words[2] if verb != "UPDATE" else words[1]
            table = target.strip('"').lower()
            self.kinds[f"{verb} {table}"] += 1
            self.rows_written += max(0, cursor.rowcount or 0)
        else:
            self.kinds[verb] += 1

    def reset(self) -> None:
        self.statements = self.rows_written = 0
        self.kinds.clear()


def typing_plan(conversations: int, saves: int, seed_value: int = 11) -> list[tuple[int, str]]:
    """(conversation, body) for each save: drafts typed SAVES_PER_DRAFT saves each."""
    rng = random.Random(seed_value)
    plan = []
    text_ = WORDS * 20
    for i in range(saves):
        if i % SAVES_PER_DRAFT == 0:
            cid = rng.randint(1, conversations)
        plan.append((cid, text_[: 40 * (i % SAVES_PER_DRAFT + 1)]))
    return plan


def main() -> None:
    parser = bench_parser(__doc__)
    add_db_argument(parser)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--other-drafts", type=int, default=2000)
    parser.add_argument("--saves", type=int, default=1000, help="measured saves per path")
    add_run_arguments(parser, keep_help=None, verbose_help=None)
    args = parser.parse_args()
    setup_logging(args.verbose)
    with (
        scratch_dir("imapdesk-bench-draft-", args.keep) as tmp,
        fresh_database(args.db, tmp) as url,
    ):
        engine = make_engine(url)
        started = time.monotonic()
        agent_id, token = seed(engine, args.conversations, args.other_drafts)
        say(f"seeded in {time.monotonic() - started:.1f} s")
        settings = Settings(
            database_url=url, data_dir=tmp / "data", secret_key=new_secret_key(),
            environment="development",
        )  # fmt: skip
        app = ServerTimer(create_app(settings=settings, engine=engine))
        counter = StatementCounter()
        counter.attach(engine)
        settle_after_start()
        web_plan = typing_plan(args.conversations, args.saves, 11)
        rest_plan = typing_plan(args.conversations, args.saves, 12)
        warm = typing_plan(args.conversations, 40, 13)
        web_ms: list[float] = []
        rest_ms: list[float] = []
        web_cost: list[tuple[int, int]] = []
        rest_cost: list[tuple[int, int]] = []
        beat_ms: list[float] = []
        beat_cost: list[tuple[int, int]] = []
        kinds: dict[str, Counter[str]] = {}
        with TestClient(app, follow_redirects=False) as client:
            r = sign_in(client, "bench@example.com", WEB_PASSWORD)
            assert r.status_code == 303, r.text
            page = client.get(f"/conversations/{web_plan[0][0]}").text
            csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            headers = {"X-Requested-With": "fetch"}
            bearer = {"Authorization": f"Bearer {token}"}

            def web_save(cid: int, body: str) -> None:
                data = {"csrf_token": csrf, "kind": "reply", "body": body, "to": "", "cc": ""}
                r = client.post(f"/conversations/{cid}/draft", data=data, headers=headers)
                assert r.status_code == 200 and r.json()["draft"], r.text

            def heartbeat(cid: int, body: str) -> None:
                data = {"csrf_token": csrf, "state": "replying"}
                r = client.post(f"/conversations/{cid}/presence", data=data, headers=headers)
                assert r.status_code == 204, r.text

            def rest_save(cid: int, body: str) -> None:
                r = client.put(
                    f"/api/v1/conversations/{cid}/draft",
                    json={"kind": "reply", "body": body},
                    headers=bearer,
                )
                assert r.status_code == 200, r.text

            for cid, body in warm:
                web_save(cid, body)
                rest_save(cid, body)
                heartbeat(cid, body)
            for name, plan, save, times, cost in (
                ("web", web_plan, web_save, web_ms, web_cost),
                ("rest", rest_plan, rest_save, rest_ms, rest_cost),
                ("heartbeat", web_plan, heartbeat, beat_ms, beat_cost),
            ):
                say(f"{name}: {len(plan)} saves")
                for i, (cid, body) in enumerate(plan):
                    counter.reset()
                    counter.on = True
                    save(cid, body)
                    counter.on = False
                    times.append(app.last_ms)
                    cost.append((counter.statements, counter.rows_written))
                    if i % SAVES_PER_DRAFT == 1:  # a save that rewrites the row, as most do
                        kinds[name] = Counter(counter.kinds)

        # the baseline: one UPDATE of the draft row, and the save's own upsert, alone
        bare_ms: list[float] = []
        upsert_ms: list[float] = []
        bare_cost: list[tuple[int, int]] = []
        upsert_cost: list[tuple[int, int]] = []
        for cid, body in web_plan:
            counter.reset()
            counter.on = True
            t0 = time.perf_counter()
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "UPDATE draft SET body = :body, updated_at = :at "
                        "WHERE conversation_id = :cid AND agent_id = :agent"
                    ),
                    {"body": body, "at": utcnow(), "cid": cid, "agent": agent_id},
                )
            bare_ms.append((time.perf_counter() - t0) * 1000)
            counter.on = False
            bare_cost.append((counter.statements, counter.rows_written))
            counter.reset()
            counter.on = True
            t0 = time.perf_counter()
            with Session(engine) as s:
                drafts._upsert(s, cid, agent_id, "reply", body, [], [])
                s.commit()
            upsert_ms.append((time.perf_counter() - t0) * 1000)
            counter.on = False
            upsert_cost.append((counter.statements, counter.rows_written))
        with Session(engine) as s:
            agent = s.get(Agent, agent_id)
            assert agent is not None
            mine = drafts.count(s, agent_id, [1])
        engine.dispose()

    print(f"# {command_line()}")
    print(
        f"# {args.conversations} conversations, {args.other_drafts} drafts of other agents, "
        f"{args.db}; {args.saves} saves per path, {SAVES_PER_DRAFT} per draft "
        f"({mine} drafts of the agent at the end)"
    )
    rows = [
        [name, f"{percentile(v, 50):.2f}", f"{percentile(v, 99):.2f}", f"{max(v):.2f}",
         f"{sum(c[0] for c in cost) / len(cost):.1f}",
         f"{sum(c[1] for c in cost) / len(cost):.1f}"]
        for name, v, cost in (
            ("web save (POST /conversations/{id}/draft)", web_ms, web_cost),
            ("REST save (PUT /api/v1/.../draft)", rest_ms, rest_cost),
            ("presence heartbeat (a one-row write route)", beat_ms, beat_cost),
            ("bare UPDATE of the row (baseline)", bare_ms, bare_cost),
            ("the save's upsert alone", upsert_ms, upsert_cost),
        )
    ]  # fmt: skip
    print_table(["path", "p50 ms", "p99 ms", "max ms", "statements", "rows written"], rows)
    for path, times in (("web", web_ms), ("REST", rest_ms)):
        print(
            f"ratio {path}/bare UPDATE: p50 {percentile(times, 50) / percentile(bare_ms, 50):.1f}x,"
            f" p99 {percentile(times, 99) / percentile(bare_ms, 99):.1f}x"
        )
    print(
        "ratio web save/heartbeat: "
        f"p50 {percentile(web_ms, 50) / percentile(beat_ms, 50):.1f}x, "
        f"p99 {percentile(web_ms, 99) / percentile(beat_ms, 99):.1f}x"
    )
    for name, counted in kinds.items():
        listed = ", ".join(f"{k} x{n}" for k, n in sorted(counted.items()))
        print(f"one {name} save sends: {listed}")
    met = "met" if percentile(web_ms, 99) < TARGET_P99_MS else "MISSED"
    print(f"target: web save p99 < {TARGET_P99_MS:.0f} ms: {met}")


if __name__ == "__main__":
    main()
