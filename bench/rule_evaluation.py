"""Automation rules per incoming message with 100 rules, beside the ingest of the same
messages without rules, in the same run on the same database.

A fresh Dovecot holds `--count` messages of the synthetic corpus; the worker takes them in
(a first sync, timed: the baseline, per message). Then 100 enabled rules are added (subject,
sender, domain, text and to conditions, with `contains` and regular expressions; about one
in twenty-five matches a given message and tags it) and every message's arrival is put in the
event log as the live ingest would (`conversation.created`). Timed: the rules' consumer
handling those events (`imapdesk.domain.rules.engine.run_events`, the worker's own step: load,
judge 100 rules, act, receipts, commit), and the judging alone (conditions of 100 rules on a
message already loaded). Target: the rules add under 5 % of the ingest's time.

    .venv/bin/python -m bench.rule_evaluation [--count 1000] [--db sqlite|postgresql] [--keep]
"""

from __future__ import annotations

import random
import time

from sqlmodel import Session, col, select

from bench.common import (
    add_bench_mailbox,
    add_db_argument,
    add_run_arguments,
    bench_parser,
    command_line,
    print_table,
    say,
    seeded_box,
    setup_logging,
    verdict,
)
from imapdesk.devtools.demo_data import synthetic_corpus
from imapdesk.domain.events import EventKind, pending_events, record_event
from imapdesk.domain.rules.conditions import Facts
from imapdesk.domain.rules.definitions import create_rule, update_rule
from imapdesk.domain.rules.engine import CONSUMER, enabled_rules, run_events
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Conversation, ConversationTag, Direction, Message, Rule
from imapdesk.worker.supervisor import sync_until_caught_up

RULES = 100
TARGET = 0.05
WORDS = (
    "invoice", "refund", "order", "delivery", "password", "login", "urgent", "broken",
    "cancel", "upgrade", "printer", "billing", "contract", "shipping", "account", "error",
)  # fmt: skip


def make_rules(count: int) -> list[dict[str, object]]:
    rng = random.Random(7)
    rules: list[dict[str, object]] = []
    for n in range(count):
        word = rng.choice(WORDS)
        kind = n % 5
        if kind == 0:
            conditions = [{"field": "subject", "op": "contains", "value": f"{word} {n}"}]
        elif kind == 1:
            conditions = [{"field": "subject", "op": "matches", "value": rf"\b{word}\s+#?{n}\b"}]
        elif kind == 2:
            conditions = [{"field": "from", "op": "contains", "value": f"@{word}{n}.example"}]
        elif kind == 3:
            conditions = [
                {"field": "customer_domain", "op": "is", "value": f"{word}{n}.example"},
                {"field": "to", "op": "contains", "value": "billing@"},
            ]
        else:
            conditions = [{"field": "text", "op": "contains", "value": f"{word}-{n}-{word}"}]
        rules.append(
            {
                "name": f"rule {n}",
                "trigger": "conversation.created",
                "conditions": conditions,
                "match": "all",
                "actions": [{"type": "tag", "tag": f"r{n % 20}"}],
            }
        )
    # a few that match about 4 % of messages (by the subject's first letter), as real ones do
    for n, letter in enumerate("ab"):
        rules[n * 50] = {
            **rules[n * 50],
            "conditions": [{"field": "subject", "op": "matches", "value": rf"^{letter}"}],
        }
    return rules


def main() -> None:
    parser = bench_parser(__doc__ or "", "python -m bench.rule_evaluation")
    parser.add_argument("--count", type=int, default=1000, help="messages (default 1000)")
    add_db_argument(parser)
    add_run_arguments(parser)
    args = parser.parse_args()
    setup_logging(args.verbose)
    corpus = synthetic_corpus(args.count, seed=1)
    with seeded_box("imapdesk-bench-rules-", args.keep, args.db, corpus) as box:
        add_bench_mailbox(box.engine, box.settings, box.account)
        say("ingest without rules (first sync)...")
        started = time.perf_counter()
        assert sync_until_caught_up(box.settings, box.engine, timeout=1800)
        ingest_seconds = time.perf_counter() - started
        engine = box.engine
        with Session(engine) as db:
            messages = list(
                db.exec(select(Message).where(col(Message.direction) == Direction.inbound))
            )
        count = len(messages)
        with unit_of_work(engine) as db:
            for data in make_rules(RULES):
                create_rule(db, data)
            pending_events(db, CONSUMER)  # the consumer starts here
        # first with the two rules that match often disabled (judging and bookkeeping only),
        # then with them (about 5 % of messages tagged by a rule, as a manual tag would be)
        timings = {}
        for phase, frequent in (("judge", False), ("act", True)):
            with unit_of_work(engine) as db:
                for name in ("rule 0", "rule 50"):
                    rid = db.exec(select(Rule.id).where(col(Rule.name) == name)).one()
                    update_rule(db, rid, {"enabled": frequent})
                for m in messages:
                    record_event(
                        db,
                        EventKind.conversation_created,
                        conversation_id=m.conversation_id,
                        message_id=m.id,
                        actor=m.from_email or "customer",
                    )
            say(f"{RULES} rules on {count} messages' events ({phase})...")
            started = time.perf_counter()
            handled = 0
            while True:
                with unit_of_work(engine) as db:
                    done = run_events(db, box.settings)
                if not done:
                    break
                handled += done
            timings[phase] = time.perf_counter() - started
            assert handled >= count, (handled, count)  # and the events of what rules did
        # the judging alone: 100 rules' conditions on a loaded message
        with Session(engine) as db:
            rules = enabled_rules(db)
            loaded = [(db.get(Conversation, m.conversation_id), m) for m in messages]
            started = time.perf_counter()
            matched = 0
            for conv, m in loaded:
                assert conv is not None
                facts = Facts(db, conv, m)
                matched += sum(r.check(facts) for r in rules)
            judge_seconds = time.perf_counter() - started
            tagged = len(db.exec(select(ConversationTag.conversation_id).distinct()).all())
    per_ingest = ingest_seconds / count * 1e6
    per_step = timings["judge"] / count * 1e6
    per_act = timings["act"] / count * 1e6
    per_judge = judge_seconds / count * 1e6
    print(f"# {command_line()}")
    print(f"# {count} inbound messages, {RULES} rules, database {args.db}")
    print(f"# with the frequent rules: matched {matched} times, {tagged} conversations tagged")
    print_table(
        ["what", "µs per message", "share of ingest"],
        [
            ["ingest without rules (first sync, baseline)", f"{per_ingest:,.0f}", "100 %"],
            ["rules, worker's step: events, 100 rules judged, receipts", f"{per_step:,.0f}",
             f"{per_step / per_ingest:.1%}"],
            ["  of which judging 100 rules' conditions", f"{per_judge:,.0f}",
             f"{per_judge / per_ingest:.1%}"],
            ["rules, worker's step, ~5 % of messages tagged by a rule", f"{per_act:,.0f}",
             f"{per_act / per_ingest:.1%}"],
        ],
    )  # fmt: skip
    ratio = per_step / per_ingest
    print(
        f"target: rule evaluation under {TARGET:.0%} of ingest: {verdict(ratio < TARGET)} "
        f"({ratio:.1%}; the actions rules take cost what the same change by hand costs)"
    )


if __name__ == "__main__":
    main()
