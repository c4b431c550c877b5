"""Webhook latency: a change committed until the receiver has its signed webhook, beside a
direct httpx POST of the same body to the same receiver, in the same run.

A fresh database holds a mailbox row (not connected: no Dovecot is needed), a conversation,
an agent, and one webhook subscribed to every event, pointing at a receiver on loopback (the
standard library's threading HTTP server in this process, answering 200). Each trial commits
a status change of the conversation (`operations.set_status`, the real code path: activity,
event) and waits until the receiver has the webhook with that event's `webhook-id`: the time
from the commit's return to the request's arrival. The worker runs as `python -m imapdesk
worker` (default) or in a thread, with the default settings (`webhook_poll_seconds` 0.2).
The baseline: this process POSTs the same body with the same headers to the same receiver
with httpx and times it the same way (the HTTP and the receiver alone, no database, no
worker). Target: p99 under 1 s.

    .venv/bin/python -m bench.webhook_latency [--trials 200] [--warmup 10] [--db sqlite|postgresql]
                                              [--worker subprocess|thread] [--keep] [-v]
"""

from __future__ import annotations

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from sqlmodel import col, select

from bench.common import (
    add_run_arguments,
    bench_settings,
    command_line,
    fresh_database,
    latency_parser,
    new_secret_key,
    percentile,
    print_failure,
    print_stats,
    say,
    scratch_dir,
    setup_logging,
    started_worker,
    stat_row,
    verdict,
)
from imapdesk.devtools.mailserver import free_port
from imapdesk.domain import events
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.conversations import operations as ops
from imapdesk.domain.webhooks import deliveries, signing, subscriptions
from imapdesk.domain.webhooks.names import PUBLIC_EVENTS
from imapdesk.kernel.db import make_engine, unit_of_work
from imapdesk.kernel.models import (
    ActivitySource,
    Conversation,
    Event,
    Mailbox,
    WebhookDelivery,
)

TARGET_P99 = 1.0
WAIT_SECONDS = 30.0


class Receiver:
    """Keeps when each `webhook-id` first arrived (time.monotonic of this process)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[str, float] = {}
        self.count = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                now = time.monotonic()
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    receiver.arrived.setdefault(self.headers.get("webhook-id", ""), now)
                    receiver.count += 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(self, msg_id: str, timeout: float = WAIT_SECONDS) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = self.arrived.get(msg_id)
            if found is not None:
                return found
            time.sleep(0.001)
        return None


def main() -> int:
    parser = latency_parser(__doc__ or "", "bench.webhook_latency", warmup=10)
    add_run_arguments(parser)
    args = parser.parse_args()
    setup_logging(args.verbose)
    print(f"# {command_line()}")
    receiver = Receiver()
    receiver.thread.start()
    problems: list[str] = []
    with scratch_dir("imapdesk-bench-webhooks-", args.keep) as base:
        data_dir = base / "data"
        data_dir.mkdir()
        with fresh_database(args.db, base) as url:
            settings = bench_settings(url, data_dir, new_secret_key()).model_copy(
                update={"webhook_allow_private": True}
            )
            # for a worker subprocess, which reads its settings from the environment
            os.environ["IMAPDESK_WEBHOOK_ALLOW_PRIVATE"] = "true"
            engine = make_engine(url)
            with unit_of_work(engine) as s:
                agent = create_agent(s, "bench@example.test", "Bench", "bench password 123")
                box = Mailbox(
                    name="bench", address="support@example.test", imap_host="127.0.0.1",
                    username="support", password_encrypted="-", enabled=False,
                )  # fmt: skip
                s.add(box)
                s.flush()
                assert box.id is not None and agent.id is not None
                conversation = Conversation(mailbox_id=box.id, subject="Bench")
                s.add(conversation)
                s.flush()
                assert conversation.id is not None
                cid = conversation.id
                sub, secret = subscriptions.create(
                    s, settings, url=receiver.url, events=list(PUBLIC_EVENTS)
                )
                assert sub.id is not None and secret is not None
                sub_id = sub.id
                events.pending_events(s, deliveries.CONSUMER)  # the consumer starts here
            webhook: list[float | None] = []
            with started_worker(args.worker, settings, engine, base / "worker.log") as worker:
                total = args.warmup + args.trials
                for trial in range(total):
                    status = "pending" if trial % 2 == 0 else "open"
                    with unit_of_work(engine) as s:
                        ops.set_status(s, cid, status, source=ActivitySource.system)
                        event_id = s.exec(
                            select(Event.id)
                            .where(col(Event.conversation_id) == cid)
                            .order_by(col(Event.id).desc())
                        ).first()
                    committed = time.monotonic()
                    assert event_id is not None
                    arrived = receiver.wait_for(deliveries.msg_id(event_id, sub_id))
                    if arrived is None:
                        problems.append(f"trial {trial}: no webhook within {WAIT_SECONDS:.0f} s")
                        if not worker.alive():
                            problems.append("the worker died: " + worker.log_tail())
                            break
                    if trial >= args.warmup:
                        webhook.append(None if arrived is None else arrived - committed)
                    if (trial + 1) % 50 == 0:
                        say(f"{trial + 1}/{total} trials")
            with unit_of_work(engine) as s:
                body = s.exec(select(WebhookDelivery.body)).first() or "{}"
            # the baseline: the same body, headers and receiver, POSTed from here
            baseline: list[float | None] = []
            with httpx.Client(timeout=10) as http:
                for trial in range(args.warmup + args.trials):
                    msg = f"baseline_{trial}"
                    headers = signing.headers([secret], msg, int(time.time()), body.encode())
                    began = time.monotonic()
                    http.post(receiver.url, content=body.encode(), headers=headers)
                    arrived = receiver.wait_for(msg, 10)
                    if trial >= args.warmup:
                        baseline.append(None if arrived is None else arrived - began)
            engine.dispose()
    receiver.server.shutdown()
    print(
        f"# {args.trials} trials after {args.warmup} warm-up, database {args.db}, "
        f"worker {args.worker}, webhook_poll_seconds {settings.webhook_poll_seconds}"
    )
    print_stats(
        "latency (ms)",
        [
            stat_row("webhook: commit -> receiver", webhook),
            stat_row("baseline: httpx POST -> receiver", baseline),
        ],
    )
    got = [v for v in webhook if v is not None]
    base_values = [v for v in baseline if v is not None]
    if got and base_values:
        p50 = percentile(got, 50) / max(percentile(base_values, 50), 1e-9)
        p99 = percentile(got, 99) / max(percentile(base_values, 99), 1e-9)
        print(f"ratio webhook/baseline: p50 {p50:.1f}x, p99 {p99:.1f}x")
        print(
            f"target p99 < {TARGET_P99 * 1000:.0f} ms: "
            f"{verdict(percentile(got, 99) < TARGET_P99)} ({percentile(got, 99) * 1000:.0f} ms)"
        )
    if problems:
        print_failure("webhooks that did not arrive", problems)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
