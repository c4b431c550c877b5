"""Reply latency: from the reply API call until the reply is in the customer's box and its copy
in the shared box's Sent, beside a plain client doing the same by hand in the same run.

Set-up: a fresh Dovecot, a fresh database, the local SMTP relay (aiosmtpd, STARTTLS + AUTH,
delivering into Dovecot over LMTP), a shared box with `--trials` customer messages waiting
(one conversation each), our worker caught up in a thread of this process (as `imapdesk run`
has it, so the API wakes the sender at once), and the API under uvicorn in a thread.

Each trial, in turn:
- **imapdesk**: `POST /api/v1/conversations/{id}/replies` over real HTTP (t0 just before it);
  done when the customer's INBOX and the shared box's Sent each hold one more message.
- **baseline**: a plain client (smtplib: connect, STARTTLS, AUTH, send through the same relay,
  then IMAP APPEND of the copy to its own Sent, on a connection opened beforehand); done when
  its customer's INBOX and its Sent each hold one more message.
Both are detected the same way: `STATUS (MESSAGES)` on a separate connection every 5 ms (not
IDLE: Dovecot holds IDLE notifications for 500 ms, see docs/DOVECOT.md). Afterwards each
customer box is checked to hold exactly one message per trial (every reply delivered once).

    python -m bench.reply_latency [--trials 100] [--db sqlite|postgresql]
"""

from __future__ import annotations

import contextlib
import email.policy
import smtplib
import statistics
import sys
import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate

from imapclient import IMAPClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bench.common import (
    ThreadWorker,
    add_bench_mailbox,
    add_db_argument,
    api_client,
    bench_parser,
    bench_settings,
    command_line,
    connect_imaps,
    fresh_database,
    mail_server,
    new_secret_key,
    percentile,
    print_table,
    say,
    scratch_dir,
    setup_logging,
    wait_until,
    watched_folders_caught_up,
)
from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.kernel.db import make_engine, unit_of_work
from imapdesk.kernel.models import Message, SmtpSecurity
from imapdesk.kernel.settings import Settings

POLL_INTERVAL = 0.005
TRIAL_TIMEOUT = 15.0
WARMUP = 3


def customer_message(n: int, run_id: str, to: str, sender: str) -> tuple[bytes, str]:
    msgid = f"question-{run_id}-{n}@customer.example"
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"Customer {n} <{sender}>"
    msg["To"] = to
    msg["Subject"] = f"Question {n} about my order"
    msg["Message-ID"] = f"<{msgid}>"
    msg["Date"] = formatdate()
    msg.set_content("Hello,\n\nwhere is my order? It was due yesterday.\n" * 5)
    return msg.as_bytes(), msgid


class StatusPoller:
    """Counts of messages in folders of several accounts, by STATUS on one connection each."""

    def __init__(self, accounts: dict[str, MailAccount]) -> None:
        self.clients: dict[str, IMAPClient] = {k: connect_imaps(a) for k, a in accounts.items()}

    def count(self, key: str, folder: str) -> int:
        info = self.clients[key].folder_status(folder, ["MESSAGES"])
        return int(info[b"MESSAGES"])

    def wait(
        self, targets: list[tuple[str, str, int]], t0: float
    ) -> dict[tuple[str, str], float] | None:
        """Seconds after t0 when each (account, folder) reached its count; None on timeout."""
        reached: dict[tuple[str, str], float] = {}
        deadline = time.monotonic() + TRIAL_TIMEOUT
        while len(reached) < len(targets):
            for key, folder, want in targets:
                if (key, folder) not in reached and self.count(key, folder) >= want:
                    reached[(key, folder)] = time.perf_counter() - t0
            if len(reached) == len(targets):
                break
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL_INTERVAL)
        return reached

    def close(self) -> None:
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                client.logout()


def plain_client_reply(
    relay: LocalSmtpRelay,
    plain: MailAccount,
    imap: IMAPClient,
    to: str,
    n: int,
    run_id: str,
) -> None:
    """What a mail client does: compose, SMTP (STARTTLS + AUTH), then APPEND to Sent."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"Plain Client <{plain.user}>"
    msg["To"] = to
    msg["Subject"] = f"Re: Question {n} about my order"
    msg["Message-ID"] = f"<baseline-{run_id}-{n}@example.test>"
    msg["In-Reply-To"] = f"<question-{run_id}-{n}@customer.example>"
    msg["Date"] = formatdate()
    msg.set_content("Your order is on its way.\n")
    raw = msg.as_bytes()
    context = relay.server.ssl_context()
    with smtplib.SMTP("localhost", relay.port, timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.login(plain.user, plain.password)
        smtp.sendmail(plain.user, [to], raw)
    imap.append("Sent", raw, flags=[b"\\Seen"])


def _conversations(engine: Engine, msgids: list[str]) -> list[int]:
    with Session(engine) as db:
        rows = dict(
            db.exec(
                select(Message.message_id, Message.conversation_id).where(
                    col(Message.message_id).in_(msgids)
                )
            ).all()
        )
    return [int(rows[m]) for m in msgids if rows.get(m) is not None]


def run(trials: int, db_kind: str, keep: bool) -> int:
    run_id = uuid.uuid4().hex[:8]
    with (
        scratch_dir("imapdesk-bench-reply-", keep) as base,
        mail_server(base) as server,
        fresh_database(db_kind, base) as url,
    ):
        return _run(server, url, base, trials, db_kind, run_id)


def _run(
    server: LocalMailServer, url: str, base: object, trials: int, db_kind: str, run_id: str
) -> int:
    from pathlib import Path

    settings: Settings = bench_settings(url, Path(str(base)) / "data", new_secret_key())
    settings = settings.model_copy(update={"sender_poll_seconds": 0.2})
    engine = make_engine(url)
    support = server.create_account(prefix="support")
    customer = server.create_account(prefix="customer")
    plain = server.create_account(prefix="plain")
    plain_customer = server.create_account(prefix="plaincustomer")
    relay = LocalSmtpRelay(server, security="starttls")
    relay.start()
    total = trials + WARMUP
    say(f"seeding {total} customer messages")
    questions = [customer_message(n, run_id, support.user, customer.user) for n in range(total)]
    server.seed(support.user, support.password, "INBOX", [raw for raw, _ in questions])
    for account in (support, plain):
        server.seed(account.user, account.password, "Sent", [])
    mailbox_id = add_bench_mailbox(
        engine,
        settings,
        support,
        address=support.user,
        smtp_host="localhost",
        smtp_port=relay.port,
        smtp_security=SmtpSecurity.starttls,
    )
    with unit_of_work(engine) as db:
        agent = create_agent(db, "alice@example.test", "Alice", "correct horse battery")
        token = create_api_token(db, agent, name="bench")
    worker = ThreadWorker(settings, engine)
    worker.start()
    poller: StatusPoller | None = None
    plain_imap: IMAPClient | None = None
    try:
        if not wait_until(lambda: watched_folders_caught_up(engine, mailbox_id), timeout=120):
            say("the worker did not catch up")
            return 1
        conversations = _conversations(engine, [m for _, m in questions])
        if len(conversations) != total:
            say(f"only {len(conversations)} of {total} conversations")
            return 1
        poller = StatusPoller({"support": support, "customer": customer, "pc": plain_customer})
        plain_imap = connect_imaps(plain)
        ours: list[float] = []
        ours_rcpt: list[float] = []
        ours_sent: list[float] = []
        ours_api: list[float] = []
        baseline: list[float] = []
        with api_client(settings, engine, token, timeout=30) as http:
            say(f"{total} trials ({WARMUP} warm-up)")
            for n, cid in enumerate(conversations):
                # imapdesk
                inbox_before = poller.count("customer", "INBOX")
                sent_before = poller.count("support", "Sent")
                t0 = time.perf_counter()
                answer = http.post(
                    f"/api/v1/conversations/{cid}/replies",
                    json={"body": "Your order is on its way."},
                    headers={"Idempotency-Key": f"{run_id}-{n}"},
                )
                api_done = time.perf_counter() - t0
                if answer.status_code != 202:
                    say(f"reply {n}: {answer.status_code} {answer.text}")
                    return 1
                got = poller.wait(
                    [("customer", "INBOX", inbox_before + 1), ("support", "Sent", sent_before + 1)],
                    t0,
                )
                if got is None:
                    say(f"trial {n}: imapdesk's reply did not arrive within {TRIAL_TIMEOUT} s")
                    return 1
                # baseline: a plain client
                pc_before = poller.count("pc", "INBOX")
                t1 = time.perf_counter()
                plain_client_reply(relay, plain, plain_imap, plain_customer.user, n, run_id)
                base = poller.wait([("pc", "INBOX", pc_before + 1)], t1)
                if base is None:
                    say(f"trial {n}: the plain client's mail did not arrive")
                    return 1
                base_total = max(base.values())
                if n >= WARMUP:
                    ours.append(max(got.values()))
                    ours_rcpt.append(got[("customer", "INBOX")])
                    ours_sent.append(got[("support", "Sent")])
                    ours_api.append(api_done)
                    baseline.append(base_total)
        delivered = poller.count("customer", "INBOX")
        copies = poller.count("support", "Sent")
    finally:
        if poller is not None:
            poller.close()
        if plain_imap is not None:
            with contextlib.suppress(Exception):
                plain_imap.logout()
        worker.stop()
        relay.stop()
        engine.dispose()

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.0f}"

    print(f"# reply latency, {trials} trials, database {db_kind}")
    print(f"# {command_line()}")
    print_table(
        ["path", "p50 ms", "p99 ms", "mean ms"],
        [
            [
                "imapdesk: API call -> recipient's box and Sent",
                ms(ours, 50),
                ms(ours, 99),
                f"{statistics.fmean(ours) * 1000:.0f}",
            ],
            [
                "  of which the API call (queued, 202)",
                ms(ours_api, 50),
                ms(ours_api, 99),
                f"{statistics.fmean(ours_api) * 1000:.0f}",
            ],
            [
                "  of which -> recipient's box",
                ms(ours_rcpt, 50),
                ms(ours_rcpt, 99),
                f"{statistics.fmean(ours_rcpt) * 1000:.0f}",
            ],
            [
                "  of which -> Sent",
                ms(ours_sent, 50),
                ms(ours_sent, 99),
                f"{statistics.fmean(ours_sent) * 1000:.0f}",
            ],
            [
                "baseline: smtplib send + APPEND to Sent",
                ms(baseline, 50),
                ms(baseline, 99),
                f"{statistics.fmean(baseline) * 1000:.0f}",
            ],
        ],
    )
    ratio50 = percentile(ours, 50) / percentile(baseline, 50)
    ratio99 = percentile(ours, 99) / percentile(baseline, 99)
    print(f"ratio imapdesk / baseline: p50 {ratio50:.2f}x, p99 {ratio99:.2f}x")
    exact = delivered == total and copies == total
    print(
        f"delivered {delivered} of {total} replies, {copies} copies in Sent: "
        + ("each exactly once" if exact else "MISMATCH")
    )
    return 0 if exact else 1


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--trials", type=int, default=100)
    add_db_argument(parser)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args()
    setup_logging(args.verbose)
    return run(args.trials, args.db, args.keep)


if __name__ == "__main__":
    sys.exit(main())
