"""Many idle mailboxes on one worker: what they cost while nothing happens (IMAP connections,
threads, resident memory, CPU per minute) and how soon a new message shows in each; the
shared-connection design beside the earlier one (a connection and a thread per followed folder,
plus the write-back's and the sender's), in the same run, on the same server.

Set-up: a fresh Dovecot with sdbox storage (hundreds of users, their connections allowed), and
`--mailboxes` accounts, each with a conversation in INBOX and our reply in Sent. Then for each
design (`IMAPDESK_IMAP_CONNECTION_MODE`: `shared`, `per_folder`), on a fresh database with
every mailbox added as an admin adds one (IMAPS, the server's CA):

1. `python -m imapdesk worker` in a subprocess; timed until every followed folder of every
   mailbox has been caught up;
2. `--idle` seconds of nothing (after `--settle` seconds): the worker's IMAP connections
   (its established TCP connections to the server, psutil), threads, resident memory (the
   worker and its parser processes), and CPU time (user + system, per minute);
3. a new message delivered by LMTP into each mailbox's INBOX in turn, `--rate` a second (t0
   just before each delivery), each until its row is in the database (looked for every 5 ms):
   p50, p99, max;
4. SIGTERM, timed until the worker exits.

    python -m bench.idle_mailboxes [--mailboxes 200] [--idle 60] [--designs shared,per_folder]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bench.common import (
    SubprocessWorker,
    add_run_arguments,
    bench_parser,
    bench_settings,
    command_line,
    fresh_database,
    new_secret_key,
    print_failure,
    print_stats,
    print_table,
    say,
    scratch_dir,
    setup_logging,
    stat_row,
    wait_until,
)
from imapdesk.devtools.mailserver import LocalMailServer, MailAccount, free_port
from imapdesk.domain.mailboxes.config import add_mailbox
from imapdesk.kernel.db import make_engine, unit_of_work
from imapdesk.kernel.models import Folder, FolderState, ImapSecurity, Message
from imapdesk.kernel.settings import Settings

DESIGNS = ("shared", "per_folder")
FOLLOWED = 7  # INBOX, Sent and the five folders of the mapping
ARRIVAL_TIMEOUT = 30.0


def conversation(index: int, user: str) -> tuple[list[bytes], bytes]:
    """A customer's message for INBOX and our reply for Sent."""
    first = (
        f"From: Customer {index} <customer{index}@example.com>\r\nTo: {user}\r\n"
        f"Subject: Question {index}\r\nMessage-ID: <q{index}@example.com>\r\n"
        "Date: Mon, 02 Nov 2026 10:00:00 +0000\r\n\r\nHello, a question.\r\n"
    ).encode()
    reply = (
        f"From: Support <{user}>\r\nTo: customer{index}@example.com\r\n"
        f"Subject: Re: Question {index}\r\nMessage-ID: <r{index}@example.test>\r\n"
        f"In-Reply-To: <q{index}@example.com>\r\n"
        "Date: Mon, 02 Nov 2026 11:00:00 +0000\r\n\r\nAn answer.\r\n"
    ).encode()
    return [first], reply


def new_message(index: int, run: str) -> tuple[bytes, str]:
    msgid = f"idle-{run}-{index}@bench.example.test"
    raw = (
        f"From: Someone <someone{index}@example.com>\r\nSubject: New {index}\r\n"
        f"Message-ID: <{msgid}>\r\nDate: Mon, 02 Nov 2026 12:00:00 +0000\r\n\r\nNew mail.\r\n"
    ).encode()
    return raw, msgid


@contextlib.contextmanager
def sdbox_server(base: Path, mailboxes: int) -> Iterator[LocalMailServer]:
    path = base / "dovecot"
    path.mkdir(mode=0o755)
    server = LocalMailServer(
        path,
        imap_port=free_port(),
        imaps_port=free_port(),
        storage="sdbox",
        # the earlier design: 9 per mailbox, and the probes'
        max_connections=mailboxes * 12 + 100,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def add_mailboxes(engine: Engine, settings: Settings, accounts: list[MailAccount]) -> None:
    with unit_of_work(engine) as db:
        for i, account in enumerate(accounts):
            add_mailbox(
                db,
                settings,
                name=f"box{i:03d}",
                address=account.user,
                imap_host="localhost",
                imap_port=account.imaps_port,
                imap_security=ImapSecurity.ssl,
                username=account.user,
                password=account.password,
                ca_file=str(account.ca_file),
            )


def caught_up(engine: Engine, mailboxes: int) -> bool:
    with Session(engine) as db:
        states = db.exec(select(Folder.state).where(Folder.role != "other")).all()
    polled = sum(1 for s in states if FolderState(s) == FolderState.poll)
    return polled >= mailboxes * FOLLOWED


@dataclass
class Idle:
    connections: int = 0
    threads: int = 0
    rss: int = 0  # bytes, the worker and its children
    cpu_per_minute: float = 0.0  # seconds
    seconds: float = 0.0


@dataclass
class Run:
    design: str
    startup: float = 0.0
    idle: Idle = field(default_factory=Idle)
    arrivals: list[float | None] = field(default_factory=list)
    stop: float = 0.0
    problems: list[str] = field(default_factory=list)


def _tree(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def _cpu(pid: int) -> float:
    total = 0.0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _imap_connections(pid: int, server: LocalMailServer) -> int:
    ports = {server.imap_port, server.imaps_port}
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED
    )


def measure(
    design: str,
    args: argparse.Namespace,
    server: LocalMailServer,
    accounts: list[MailAccount],
    work: Path,
) -> Run:
    run = Run(design)
    data_dir = work / f"data-{design}"
    data_dir.mkdir()
    os.environ["IMAPDESK_IMAP_CONNECTION_MODE"] = design
    with fresh_database(args.db, data_dir) as db_url:
        settings = bench_settings(db_url, data_dir, new_secret_key())
        engine = make_engine(db_url)
        add_mailboxes(engine, settings, accounts)
        worker = SubprocessWorker(settings, work / f"worker-{design}.log")
        started = time.monotonic()
        worker.start()
        say(f"{design}: worker pid {worker.pid}; waiting for {len(accounts)} mailboxes")
        try:
            if not wait_until(
                lambda: caught_up(engine, len(accounts)),
                timeout=args.timeout,
                interval=0.5,
                alive=worker.alive,
            ):
                run.problems.append(f"{design}: not caught up in {args.timeout:.0f} s")
                return run
            run.startup = time.monotonic() - started
            say(f"{design}: caught up in {run.startup:.1f} s; settling {args.settle:.0f} s")
            time.sleep(args.settle)
            run.idle = _idle(worker.pid, server, args.idle)
            say(
                f"{design}: idle: {run.idle.connections} connections, {run.idle.threads} "
                f"threads, {run.idle.rss / 2**20:.0f} MB, {run.idle.cpu_per_minute:.2f} CPU s/min"
            )
            run.arrivals = _arrivals(engine, server, accounts, run, args.rate)
        finally:
            stopping = time.monotonic()
            worker.stop()
            run.stop = time.monotonic() - stopping
            engine.dispose()
    return run


def _idle(pid: int, server: LocalMailServer, seconds: float) -> Idle:
    cpu_before = _cpu(pid)
    started = time.monotonic()
    connections: list[int] = []
    threads: list[int] = []
    rss: list[int] = []
    while time.monotonic() - started < seconds:
        tree = _tree(pid)
        connections.append(_imap_connections(pid, server))
        threads.append(sum(p.num_threads() for p in tree))
        rss.append(sum(p.memory_info().rss for p in tree))
        time.sleep(min(5.0, seconds / 4))
    elapsed = time.monotonic() - started
    return Idle(
        connections=max(connections),
        threads=max(threads),
        rss=max(rss),
        cpu_per_minute=(_cpu(pid) - cpu_before) / elapsed * 60,
        seconds=elapsed,
    )


def _arrivals(
    engine: Engine, server: LocalMailServer, accounts: list[MailAccount], run: Run, rate: float
) -> list[float | None]:
    """A new message into each mailbox, `rate` a second round the mailboxes (t0 just before
    each delivery), each timed until its row is in the database (all looked for at once,
    every 5 ms)."""
    tag = f"{run.design}-{os.getpid()}"
    sent: dict[str, tuple[int, float]] = {}  # Message-ID -> (mailbox index, t0)
    seen: dict[int, float] = {}
    gap = 1.0 / rate
    started = time.perf_counter()
    for i, account in enumerate(accounts):
        while time.perf_counter() < started + i * gap:
            _look(engine, sent, seen)
            time.sleep(0.005)
        raw, msgid = new_message(i, tag)
        t0 = time.perf_counter()
        server.deliver(account.user, raw)
        sent[msgid] = (i, t0)
    deadline = time.perf_counter() + ARRIVAL_TIMEOUT
    while len(seen) < len(accounts) and time.perf_counter() < deadline:
        _look(engine, sent, seen)
        time.sleep(0.005)
    for msgid, (i, _t0) in sent.items():
        if i not in seen:
            run.problems.append(
                f"{run.design}: {msgid} not taken in {ARRIVAL_TIMEOUT:.0f} s after the last"
            )
    return [seen.get(i) for i in range(len(accounts))]


def _look(engine: Engine, sent: dict[str, tuple[int, float]], seen: dict[int, float]) -> None:
    waiting = [msgid for msgid, (i, _t0) in sent.items() if i not in seen]
    if not waiting:
        return
    with Session(engine) as db:
        found = db.exec(select(Message.message_id).where(col(Message.message_id).in_(waiting)))
        now = time.perf_counter()
        for msgid in found:
            i, t0 = sent[msgid]
            seen[i] = now - t0


def report(args: argparse.Namespace, runs: list[Run]) -> bool:
    print()
    print(f"command:  {command_line()}")
    print(
        f"set-up:   fresh Dovecot (sdbox, IMAPS), {args.mailboxes} mailboxes of one "
        f"conversation each, {FOLLOWED} folders followed per mailbox, {args.db}, "
        "`python -m imapdesk worker` in a subprocess per design"
    )
    print(f"idle:     {args.idle:.0f} s measured after {args.settle:.0f} s of settling")
    print(f"arrivals: one new message in each mailbox, {args.rate:g} a second round them")
    pool = os.environ.get("IMAPDESK_DB_POOL_SIZE"), os.environ.get("IMAPDESK_DB_MAX_OVERFLOW")
    if any(pool):
        print(f"database: pool of {pool[0] or 'default'} + {pool[1] or 'default'} overflow")
    print()
    rows = []
    for run in runs:
        per = args.mailboxes
        rows.append(
            [
                run.design,
                f"{run.startup:.1f}",
                f"{run.idle.connections} ({run.idle.connections / per:.1f})",
                f"{run.idle.threads} ({run.idle.threads / per:.1f})",
                f"{run.idle.rss / 2**20:.0f}",
                f"{run.idle.cpu_per_minute:.2f}",
                f"{run.stop:.1f}",
            ]
        )
    print_table(
        [
            "design",
            "caught up s",
            "IMAP connections (per box)",
            "threads (per box)",
            "RSS MB",
            "CPU s/min idle",
            "stop s",
        ],
        rows,
    )
    print()
    print_stats(
        "ms from delivery to the row",
        [stat_row(f"{run.design}: new message in each box", run.arrivals) for run in runs],
    )
    by = {run.design: run for run in runs}
    if "shared" in by and "per_folder" in by:
        new, old = by["shared"].idle, by["per_folder"].idle
        print()
        print("shared / per_folder:")
        for name, a, b in (
            ("IMAP connections", new.connections, old.connections),
            ("threads", new.threads, old.threads),
            ("RSS", new.rss, old.rss),
            ("CPU per minute", new.cpu_per_minute, old.cpu_per_minute),
        ):
            print(f"  {name}: {a / b:.2f}" if b else f"  {name}: -")
    problems = [p for run in runs for p in run.problems]
    if problems:
        print_failure(f"CORRECTNESS FAILURE ({len(problems)})", problems[:20])
        return False
    print("correctness: every new message was taken in, in every mailbox, in both designs")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, "python -m bench.idle_mailboxes")
    parser.add_argument("--mailboxes", type=int, default=200, help="mailboxes (default 200)")
    parser.add_argument("--idle", type=float, default=60.0, help="idle seconds measured")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before measuring")
    parser.add_argument(
        "--designs", default=",".join(DESIGNS), help="comma-separated: shared, per_folder"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="to catch up, seconds")
    parser.add_argument(
        "--rate", type=float, default=10.0, help="new messages a second, round the mailboxes"
    )
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    if not designs or any(d not in DESIGNS for d in designs):
        parser.error(f"--designs takes {', '.join(DESIGNS)}")
    setup_logging(args.verbose)
    runs = []
    with (
        scratch_dir("imapdesk-bench-idle-", args.keep) as work,
        sdbox_server(work, args.mailboxes) as server,
    ):
        accounts = []
        for i in range(args.mailboxes):
            account = server.create_account(prefix=f"idle{i:03d}")
            inbox, reply = conversation(i, account.user)
            server.seed(account.user, account.password, "INBOX", inbox)
            server.seed(account.user, account.password, "Sent", [reply], flags=["\\Seen"])
            accounts.append(account)
        say(f"{len(accounts)} mailboxes seeded")
        for design in designs:
            runs.append(measure(design, args, server, accounts, work))
    return 0 if report(args, runs) else 1


if __name__ == "__main__":
    sys.exit(main())
