"""Initial sync throughput: our worker against a raw imapclient FETCH on the same server.

A fresh Dovecot gets `--count` synthetic messages (2-50 KB, in threads) by MULTIAPPEND (not
timed). Then, in the same run:

1. baseline: one imapclient connection (IMAPS, as the worker) selects INBOX read-only,
   `UID SEARCH ALL`, and fetches `BODY.PEEK[]` in batches of 500 UIDs;
2. ours, worker in a thread: the worker's initial sync into an empty database, from start until
   INBOX is in state "poll" with all N messages (the database polled every 20 ms);
3. ours, worker in a subprocess (`python -m imapdesk worker`): the same on another empty
   database, with the process's RSS sampled every 20 ms; its time includes Python start-up,
   which is printed separately (start until the INBOX row exists / first batch committed).

Each worker run is checked: exactly N messages and as many conversations as the corpus has
threads. Exit status 1 on a correctness failure only, not on missing a target.

    python -m bench.ingest [--count 10000] [--db sqlite|postgresql] [--worker both] [--keep]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    RssSampler,
    SubprocessWorker,
    add_bench_mailbox,
    add_db_argument,
    add_run_arguments,
    bench_parser,
    bench_settings,
    command_line,
    connect_imaps,
    folder_snapshot,
    fresh_database,
    mail_server,
    new_secret_key,
    new_worker,
    print_failure,
    print_table,
    say,
    scratch_dir,
    seed_messages,
    setup_logging,
    store_counts,
    verdict,
)
from imapdesk.devtools.demo_data import synthetic_corpus
from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.kernel.db import make_engine

FETCH_BATCH = 500
POLL_INTERVAL = 0.02
RATIO_TARGET = 0.5
RSS_TARGET_MB = 300
MB = 1024 * 1024


@dataclass
class Baseline:
    messages: int
    bytes: int
    seconds: float
    cpu_seconds: float


@dataclass
class WorkerRun:
    mode: str
    seconds: float | None = None  # start until INBOX is "poll" with N messages; None: timed out
    folder_seen: float | None = None  # start until the INBOX row exists (start-up, connect)
    first_batch: float | None = None  # start until the first batch is committed
    first_batch_count: int = 0
    messages: int = 0
    conversations: int = 0
    conversations_total: int = 0
    folder_count: int = 0
    # (seconds from start, INBOX message_count) at each committed batch
    progress: list[tuple[float, int]] = field(default_factory=list)
    peak_rss: int | None = None
    cpu_seconds: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_baseline(account: MailAccount, expected: int) -> Baseline:
    cpu0 = time.process_time()
    started = time.perf_counter()
    client = connect_imaps(account)
    try:
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")  # UID SEARCH ALL: imapclient uses UIDs by default
        messages = total = 0
        for i in range(0, len(uids), FETCH_BATCH):
            batch = uids[i : i + FETCH_BATCH]
            for item in client.fetch(batch, ["BODY.PEEK[]"]).values():
                total += len(item[b"BODY[]"])
                messages += 1
        seconds = time.perf_counter() - started
    finally:
        client.logout()
    if messages != expected:
        say(f"warning: the baseline fetched {messages} messages, expected {expected}")
    return Baseline(messages, total, seconds, time.process_time() - cpu0)


def _wait_for_sync(
    run: WorkerRun,
    db_url: str,
    mailbox_id: int,
    expected: int,
    started: float,
    timeout: float,
    alive: Callable[[], bool],
) -> None:
    """Polls the database every 20 ms until INBOX is caught up with `expected` messages."""
    engine = make_engine(db_url)
    try:
        deadline = started + timeout
        poll_seen_at: float | None = None
        while True:
            snap = folder_snapshot(engine, mailbox_id)
            now = time.perf_counter()
            if snap.exists and run.folder_seen is None:
                run.folder_seen = now - started
            if snap.message_count and (
                not run.progress or snap.message_count != run.progress[-1][1]
            ):
                run.progress.append((now - started, snap.message_count))
            if snap.message_count > 0 and run.first_batch is None:
                run.first_batch = now - started
                run.first_batch_count = snap.message_count
            if snap.state == "poll":
                if snap.message_count == expected:
                    run.seconds = now - started
                    break
                # caught up with the wrong count: give it a moment, then call it a failure
                poll_seen_at = poll_seen_at or now
                if now - poll_seen_at > 5:
                    run.seconds = poll_seen_at - started
                    run.problems.append(
                        f"INBOX reached state poll with message_count {snap.message_count}, "
                        f"expected {expected}"
                    )
                    break
            if now > deadline:
                run.problems.append(
                    f"timed out after {timeout:.0f} s: INBOX state {snap.state}, "
                    f"{snap.message_count} of {expected} messages"
                )
                break
            if not alive():
                run.problems.append(
                    f"the worker died: INBOX state {snap.state}, "
                    f"{snap.message_count} of {expected} messages"
                )
                break
            time.sleep(POLL_INTERVAL)
        run.folder_count = folder_snapshot(engine, mailbox_id).message_count
    finally:
        engine.dispose()


def _check_store(run: WorkerRun, db_url: str, expected: int, threads: int) -> None:
    engine = make_engine(db_url)
    try:
        counts = store_counts(engine)
    finally:
        engine.dispose()
    run.messages = counts.messages
    run.conversations = counts.conversations
    run.conversations_total = counts.conversations_total
    if counts.messages != expected:
        run.problems.append(f"{counts.messages} messages stored, expected exactly {expected}")
    if counts.conversations != threads:
        run.problems.append(
            f"{counts.conversations} conversations (not merged; {counts.conversations_total} "
            f"rows in all), expected {threads}: the corpus has {threads} threads"
        )


def run_worker(
    mode: str,
    account: MailAccount,
    db_kind: str,
    work_dir: Path,
    expected: int,
    threads: int,
    timeout: float,
) -> WorkerRun:
    run = WorkerRun(mode)
    data_dir = work_dir / f"data-{mode}"
    data_dir.mkdir()
    with fresh_database(db_kind, data_dir) as db_url:
        settings = bench_settings(db_url, data_dir, new_secret_key())
        engine = make_engine(db_url)
        try:
            mailbox_id = add_bench_mailbox(engine, settings, account)
            sampler: RssSampler | None = None
            worker = new_worker(mode, settings, engine, data_dir / "worker.log")
            started = time.perf_counter()
            worker.start()
            if isinstance(worker, SubprocessWorker):
                say(f"worker pid {worker.pid} (for py-spy)")
                sampler = RssSampler(worker.pid, POLL_INTERVAL)
                sampler.start()
            try:
                _wait_for_sync(run, db_url, mailbox_id, expected, started, timeout, worker.alive)
                if isinstance(worker, SubprocessWorker) and worker.alive():
                    import psutil

                    cpu = psutil.Process(worker.pid).cpu_times()
                    run.cpu_seconds = cpu.user + cpu.system
            finally:
                if sampler is not None:
                    sampler.stop()
                    run.peak_rss = sampler.peak
                worker.stop()
            if isinstance(worker, SubprocessWorker) and run.problems:
                say(f"worker log ({worker.log_path}):\n{worker.log_tail()}")
            _check_store(run, db_url, expected, threads)
        finally:
            engine.dispose()
    return run


def _quarters(run: WorkerRun, n: int) -> str:
    """The rate within each quarter of the messages (does it slow down as the store grows?)."""
    if len(run.progress) < 2:
        return "-"
    points = [(0.0, 0), *run.progress]  # the first quarter includes start-up
    rates = []
    for q in range(4):
        lo, hi = n * q // 4, n * (q + 1) // 4
        start = max((p for p in points if p[1] <= lo), default=points[0], key=lambda p: p[1])
        end = min((p for p in points if p[1] >= hi), default=points[-1], key=lambda p: p[1])
        if end[0] > start[0] and end[1] > start[1]:
            rates.append(f"{(end[1] - start[1]) / (end[0] - start[0]):,.0f}")
        else:
            rates.append("-")
    return " / ".join(rates)


def _rate(count: int, seconds: float | None) -> str:
    return f"{count / seconds:,.0f}" if seconds else "-"


def _secs(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def report(
    args: argparse.Namespace,
    corpus_bytes: int,
    threads: int,
    seed_seconds: float,
    baseline: Baseline,
    runs: list[WorkerRun],
) -> None:
    n = args.count
    base_rate = baseline.messages / baseline.seconds
    print()
    print(f"command:   {command_line()}")
    print(
        f"corpus:    {n:,} messages, {corpus_bytes / MB:.1f} MB "
        f"(mean {corpus_bytes / max(n, 1) / 1024:.1f} KB), {threads:,} threads; "
        f"seeded by MULTIAPPEND in {seed_seconds:.1f} s (not measured)"
    )
    print(f"database:  {args.db}; server: fresh Dovecot, Maildir, IMAPS on 127.0.0.1")
    print()
    rows: list[list[object]] = [
        [
            "baseline: imapclient FETCH BODY.PEEK[] x500",
            f"{baseline.seconds:.2f}",
            _rate(baseline.messages, baseline.seconds),
            f"{baseline.bytes / MB / baseline.seconds:.1f}",
            "1.00",
            f"{baseline.cpu_seconds:.1f}",
            "-",
        ]
    ]
    for run in runs:
        ratio = (n / run.seconds) / base_rate if run.seconds else None
        rows.append(
            [
                f"ours: worker in a {run.mode}"
                + (" (incl. start-up)" if run.mode == "subprocess" else ""),
                _secs(run.seconds),
                _rate(n, run.seconds),
                f"{corpus_bytes / MB / run.seconds:.1f}" if run.seconds else "-",
                f"{ratio:.2f}" if ratio is not None else "-",
                f"{run.cpu_seconds:.1f}" if run.cpu_seconds is not None else "-",
                f"{run.peak_rss / MB:.0f}" if run.peak_rss is not None else "-",
            ]
        )
        if run.mode == "subprocess" and run.seconds and run.first_batch:
            steady = run.seconds - run.first_batch
            rest = n - run.first_batch_count
            if steady > 0 and rest > 0:
                rows.append(
                    [
                        "  the same after its first batch (no start-up)",
                        f"{steady:.2f}",
                        _rate(rest, steady),
                        "-",
                        f"{(rest / steady) / base_rate:.2f}",
                        "-",
                        "-",
                    ]
                )
    print_table(["", "seconds", "msg/s", "MB/s", "ratio", "CPU s", "peak RSS MB"], rows)
    print()
    for run in runs:
        print(
            f"worker in a {run.mode}: INBOX row after {_secs(run.folder_seen)} s, first batch "
            f"({run.first_batch_count} messages) committed after {_secs(run.first_batch)} s"
        )
        print(
            f"  stored {run.messages:,} messages (expected {n:,}), folder count "
            f"{run.folder_count:,}; {run.conversations:,} conversations (expected {threads:,}; "
            f"{run.conversations_total:,} rows incl. merged)"
        )
    print()
    for run in runs:
        print(f"worker in a {run.mode}, msg/s by quarter of the corpus: {_quarters(run, n)}")
    print()
    print("targets:")
    for run in runs:
        if run.seconds:
            ratio = (n / run.seconds) / base_rate
            print(
                f"  ratio, worker in a {run.mode}: {ratio:.2f} (>= {RATIO_TARGET}): "
                f"{verdict(ratio >= RATIO_TARGET)}"
            )
        if run.peak_rss is not None:
            mb = run.peak_rss / MB
            print(f"  peak RSS: {mb:.0f} MB (< {RSS_TARGET_MB} MB): {verdict(mb < RSS_TARGET_MB)}")
    failed = [run for run in runs if not run.ok]
    if failed:
        print_failure(
            "CORRECTNESS FAILURE",
            (f"worker in a {run.mode}: {problem}" for run in failed for problem in run.problems),
        )
    else:
        print("correctness: every run stored exactly N messages in the expected conversations")


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, "python -m bench.ingest")
    parser.add_argument("--count", type=int, default=10_000, help="messages (default 10000)")
    add_db_argument(parser)
    parser.add_argument(
        "--worker",
        choices=("both", "thread", "subprocess"),
        default="both",
        help="how to run our worker (default: both, each on its own fresh database)",
    )
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per worker run (default: N/20 + 60)"
    )
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be positive")
    setup_logging(args.verbose)
    timeout = args.timeout or args.count / 20 + 60
    modes = ["thread", "subprocess"] if args.worker == "both" else [args.worker]

    with scratch_dir("imapdesk-bench-ingest-", args.keep) as work_dir:
        server: LocalMailServer
        with mail_server(work_dir) as server:
            account = server.create_account()
            corpus = synthetic_corpus(args.count, seed=args.seed)
            say(f"seeding {args.count:,} messages ({corpus.thread_count:,} threads)...")
            count, corpus_bytes, seed_seconds = seed_messages(server, account, corpus)
            assert count == args.count
            say(f"seeded in {seed_seconds:.1f} s; baseline fetch...")
            baseline = run_baseline(account, args.count)
            say(f"baseline: {baseline.messages / baseline.seconds:,.0f} msg/s")
            runs = []
            for mode in modes:
                say(f"our worker in a {mode}, {args.db}...")
                run = run_worker(
                    mode, account, args.db, work_dir, args.count, corpus.thread_count, timeout
                )
                say(
                    f"worker in a {mode}: "
                    + (f"{args.count / run.seconds:,.0f} msg/s" if run.seconds else "no figure")
                    + ("" if run.ok else f"; PROBLEMS: {'; '.join(run.problems)}")
                )
                runs.append(run)
            say("stopping Dovecot...")
        report(args, corpus_bytes, corpus.thread_count, seed_seconds, baseline, runs)
    return 0 if all(run.ok for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
