"""Search with 100,000 conversations and 300,000 message texts: the server time of the list page
for a search (`GET /?q=...`: the matches, the page's rows, their snippets, the sidebar, the
template), p50 and p99 per kind of search (target: p99 < 100 ms for each).

Per database (`--db both|sqlite|postgresql`): a fresh database at the newest migration, seeded
directly with executemany as bench.web_queue seeds it (3 mailboxes, 10 agents, the
conversations, "refund" in the subject of 30% of them), with `--messages` messages each (a
customer's, an agent's answer, the customer's again): 80% English (sentences of common words,
~700 characters), 12% Chinese, 8% Japanese support mail. Then every conversation's search
document is written (`search_index.rebuild_all`, as migration 0014 does for existing mail; its
time and the index's size are printed) and the database analysed.

The searches, each typed into the search box (so the last word is a prefix too):
- a rare word (`zeppelin`, in about 15 texts);
- a word in 30% of the texts (`invoice`) and in 80% (`thanks`);
- a Chinese word of two characters from the middle of sentences (`登录`, in ~6% of the texts),
  and a Japanese one of four (`支払方法`, a phrase of character pairs);
- field queries: `from:` one customer's address (a handful of conversations), `subject:refund`
  (30%), and `invoice is:unread` (a word and a condition on the row).

Baseline, in the same run on the same database: the bare index query for the same search, on
a plain connection: the index reading every match (`SELECT count(*)` over `conversation_search`
MATCH on SQLite, `@@` on PostgreSQL, phrases checked), with no order, no visibility rule, no
page, no snippets, no template. The ratio says what the page costs over the index's own answer.

    python -m bench.web_search [--conversations 100000] [--messages 3] [--requests 100]
                               [--db both]
"""

# ruff: noqa: RUF001  (Chinese and Japanese text, with its full-width punctuation)

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

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
from bench.web_queue import PASSWORD, ServerTimer, seed, timed
from imapdesk.api.app import create_app, settle_after_start
from imapdesk.domain.conversations import search
from imapdesk.domain.conversations.search_index import rebuild_all
from imapdesk.domain.conversations.search_query import parse_query
from imapdesk.kernel.db import make_engine
from imapdesk.kernel.settings import Settings

TARGET_P99_MS = 100.0
RARE = "zeppelin"
RARE_RATE = 1 / 20_000
WORD_30, WORD_80 = "invoice", "thanks"
ZH_WORD, JA_WORD = "登录", "支払方法"

# English: sentences made of common words and product-ish names
_COMMON = (
    "the a to and of in is it you that for on with this we have be are not can your our at "
    "please help order account email could would will should about from when after before "
    "again still working problem issue printer delivery package shipping address phone "
    "number update change password login screen error message today yesterday week month "
    "customer support team manager refund payment card bank transfer receipt total price "
    "product item size colour replacement return label tracking courier warehouse store "
    "online app version install laptop cable battery charger screen keyboard mouse router "
    "network connection slow fast broken missing damaged wrong late early morning evening"
)
_WORDS = _COMMON.split()
_SYLLABLES = "ka lo mi ne su ta ri po fe gu da ve ni ro sa mu ke lu zo pi"
_ZH = (
    "您好，我是贵公司的老客户。",
    "我上周在网上订购了一台打印机，到现在还没有收到。",
    "请问订单什么时候可以发货？",
    "我的快递单号一直查不到物流信息。",
    "收到的商品包装有破损，希望可以更换。",
    "发票抬头需要修改成公司名称。",
    "客服电话一直打不通，只好发邮件咨询。",
    "系统提示密码错误，但我确定密码是对的。",
    "请尽快回复，谢谢！",
    "附件是付款截图，请查收。",
    "我们公司需要批量采购，请提供报价单。",
    "退款已经申请了一周，还没有到账。",
)
_ZH_TARGET = "今天早上开始我一直无法登录账户，麻烦帮忙处理一下。"
_JA = (
    "いつもお世話になっております。",
    "先月注文した商品がまだ届いておりません。",
    "配送状況を確認していただけますでしょうか。",
    "領収書の発行をお願いできますか。",
    "パスワードを忘れてしまい、ログインできません。",
    "アカウントがロックされてしまいました。",
    "請求書の宛名を会社名に変更してください。",
    "商品に傷がありましたので、交換を希望します。",
    "お手数ですが、ご確認のほどよろしくお願いいたします。",
    "返金の手続きについて教えてください。",
)
_JA_TARGET = "来月から、お支払方法を銀行振込に変更したいと考えております。"


def _sentences(rng: random.Random, count: int = 3000) -> list[str]:
    names = sorted(
        {"".join(rng.choices(_SYLLABLES.split(), k=rng.randint(2, 4))) for _ in range(4000)}
        - {RARE, WORD_30, WORD_80}
    )
    out = []
    for _ in range(count):
        words = [
            rng.choice(names) if rng.random() < 0.25 else rng.choice(_WORDS)
            for _ in range(rng.randint(10, 18))
        ]
        out.append(" ".join(words).capitalize() + ".")
    return out


def _english(rng: random.Random, sentences: list[str]) -> list[str]:
    return rng.sample(sentences, 7)


def _cjk(rng: random.Random, lines: Sequence[str], target: str) -> list[str]:
    parts = rng.sample(list(lines), rng.randint(5, 8))
    if rng.random() < 0.5:
        parts.insert(rng.randint(1, len(parts) - 1), target)
    return parts


def make_texts(rng: random.Random) -> Any:
    sentences = _sentences(rng)

    def message_rows(
        conversations: list[dict[str, Any]], per_conversation: int, r: random.Random
    ) -> list[dict[str, Any]]:
        rows = []
        for c in conversations:
            language = r.random()
            agent = r.randint(0, 9)
            for k in range(per_conversation):
                if language < 0.8:
                    parts = _english(r, sentences)
                elif language < 0.92:
                    parts = _cjk(r, _ZH, _ZH_TARGET)
                else:
                    parts = _cjk(r, _JA, _JA_TARGET)
                if r.random() < 0.8:
                    parts.append(f"{WORD_80.capitalize()} a lot.")
                if r.random() < 0.3:
                    parts.insert(r.randint(0, len(parts)), f"The {WORD_30} is attached.")
                if r.random() < RARE_RATE:
                    parts.insert(r.randint(0, len(parts)), f"It came by {RARE}.")
                ours = k % 2 == 1
                customer = {"name": c["customer_name"], "email": c["customer_email"]}
                rows.append(
                    {
                        "message_id": f"m{c['id']}.{k}@bench.example",
                        "has_message_id": True,
                        "content_hash": f"{c['id']:x}.{k}",
                        "conversation_id": c["id"],
                        "direction": "outbound" if ours else "inbound",
                        "subject": ("Re: " if k else "") + c["subject"],
                        "from_email": f"agent{agent}@example.test" if ours else c["customer_email"],
                        "from_name": f"Agent {agent}" if ours else c["customer_name"],
                        "to": [customer]
                        if ours
                        else [{"name": "Support", "email": "support@example.test"}],
                        "text": " ".join(parts),
                        "date": c["last_message_at"],
                        "created_at": c["last_message_at"],
                    }
                )
        return rows

    return message_rows


@dataclass(frozen=True)
class Search:
    label: str
    q: str


def searches(customer: str) -> list[Search]:
    return [
        Search("rare word", RARE),
        Search("word in 30% of texts", WORD_30),
        Search("word in 80% of texts", WORD_80),
        Search("Chinese word (2 characters)", ZH_WORD),
        Search("Japanese word (4 characters)", JA_WORD),
        Search("field: from:", f"from:{customer}"),
        Search("field: subject: (30%)", "subject:refund"),
        Search("word and is:unread", f"{WORD_30} is:unread"),
    ]


@dataclass
class Result:
    db: str
    search: Search
    matches: int
    page: list[float]
    cpu: list[float]
    baseline: list[float]


def bare_index_query(engine: Engine, q: str) -> Any:
    dialect = engine.dialect.name
    query = search.index_query(dialect, parse_query(q).clauses)
    statement = text(f"SELECT count(*) FROM ({search.bare_matches(dialect)}) AS matches")
    conn = engine.connect()

    def run() -> int:
        return int(conn.execute(statement, {"search_q": query}).scalar_one())

    return run


def index_size(engine: Engine) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            size = conn.execute(
                text("SELECT pg_total_relation_size('conversation_search')")
            ).scalar_one()
        else:
            pages = conn.execute(
                text("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'conversation_search%'")
            ).scalar()
            size = pages or 0
    return f"{size / 2**20:.0f} MB"


def measure(
    kind: str, directory: Path, conversations: int, messages: int, requests: int, seed_value: int
) -> tuple[list[Result], str]:
    rng = random.Random(seed_value)
    results: list[Result] = []
    with fresh_database(kind, directory) as url:
        engine = make_engine(url)
        try:
            say(f"{kind}: seeding {conversations:,} conversations, {messages} messages each")
            started = time.perf_counter()
            agent_id = seed(engine, conversations, rng, messages, make_texts(rng), index=False)
            seeded = time.perf_counter() - started
            # every conversation's document, as migration 0014 writes them for existing mail
            started = time.perf_counter()
            with engine.begin() as conn:
                rebuild_all(conn)
            build = time.perf_counter() - started
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                    text(
                        "VACUUM ANALYZE conversation_search" if kind == "postgresql" else "ANALYZE"
                    )
                )
            with engine.connect() as conn:
                customer = conn.execute(
                    text("SELECT customer_email FROM conversation WHERE id = 4242")
                ).scalar_one()
            note = (
                f"{kind}: seeded in {seeded:.0f} s; every search document written in "
                f"{build:.0f} s; "
                f"index {index_size(engine)}"
            )
            say(note)
            settings = Settings(
                database_url=url, data_dir=directory / "data", secret_key=new_secret_key()
            )
            timer = ServerTimer(create_app(settings=settings, engine=engine))
            settle_after_start()
            client = TestClient(timer)
            r = sign_in(client, f"agent{agent_id - 1}@example.test", PASSWORD)
            assert r.status_code == 303, r.text
            for s in searches(customer):
                path = "/?" + urlencode({"q": s.q})
                bare = bare_index_query(engine, s.q)
                matches = bare()
                for _ in range(5):  # warm-up
                    assert client.get(path).status_code == 200
                samples, cpu = [], []
                for _ in range(requests):
                    r = client.get(path)
                    assert r.status_code == 200, (path, r.status_code)
                    assert 'data-id="' in r.text or not matches, path
                    samples.append(timer.last)
                    cpu.append(timer.last_cpu)
                timed(bare, 5)
                baseline = timed(bare, requests)
                results.append(Result(kind, s, matches, samples, cpu, baseline))
                say(
                    f"{kind}: {s.label}: {matches:,} matches, "
                    f"p99 {percentile(samples, 99) * 1000:.1f} ms"
                )
        finally:
            engine.dispose()
    return results, note


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def report(results: Sequence[Result]) -> bool:
    rows = []
    ok = True
    for res in results:
        p50, p99 = percentile(res.page, 50), percentile(res.page, 99)
        b50, b99 = percentile(res.baseline, 50), percentile(res.baseline, 99)
        met = p99 * 1000 < TARGET_P99_MS
        ok = ok and met
        rows.append(
            [
                res.db,
                res.search.label,
                res.search.q,
                f"{res.matches:,}",
                ms(p50),
                ms(p99),
                ms(percentile(res.cpu, 50)),
                ms(b50),
                ms(b99),
                f"{p50 / b50:.1f}x",
                f"{p99 / b99:.1f}x",
                verdict(met),
            ]
        )
    print_table(
        [
            "db",
            "search",
            "q",
            "matches",
            "page p50 ms",
            "page p99 ms",
            "page CPU p50",
            "index p50",
            "index p99",
            "p50 ratio",
            "p99 ratio",
            f"p99 < {TARGET_P99_MS:.0f} ms",
        ],
        rows,
    )
    return ok


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=3, help="messages per conversation")
    parser.add_argument("--requests", type=int, default=100, help="per search")
    parser.add_argument("--db", choices=["both", "sqlite", "postgresql"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    print(f"# {command_line()}")
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results: list[Result] = []
    notes: list[str] = []
    with scratch_dir("imapdesk-bench-websearch-", args.keep) as directory:
        for kind in kinds:
            found, note = measure(
                kind, directory, args.conversations, args.messages, args.requests, args.seed
            )
            results.extend(found)
            notes.append(note)
    print(
        f"{args.conversations:,} conversations, {args.messages} messages each; {args.requests} "
        "requests per search; page: server time of GET /?q= inside the ASGI app; index: the "
        "bare index query (counting every match, no order, no visibility)"
    )
    for note in notes:
        print(note)
    report(results)


if __name__ == "__main__":
    main()
