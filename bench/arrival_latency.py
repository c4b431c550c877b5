"""Arrival latency: from another client's APPEND until the message shows in the REST API, beside
a raw imapclient IDLE client's wake-up on the same server in the same run.

Dovecot holds every IDLE notification for about 500 ms (see docs/DOVECOT.md), so the raw IDLE
client is the floor: what we add on top of it is what this measures.

Set-up: a fresh Dovecot, a box with `--seed-count` synthetic messages, a fresh database, our
worker caught up (a subprocess by default, or a thread of this process), the API app served by
uvicorn in a thread on a free port, and an independent raw IDLE client on INBOX in its own
thread on its own connection. Each trial: a third connection APPENDs a message with a unique
Message-ID and subject (t0 just before the command is sent); the IDLE client notes when its
EXISTS arrives; the poller sends `GET /api/v1/conversations?limit=1` every 5 ms over real HTTP
until the newest conversation has the trial's subject. Trials start 100 ms after the previous one
completed. Then the conversation is read back to check it holds the Message-ID (not timed).

    python -m bench.arrival_latency [--trials 200] [--db sqlite|postgresql] [--worker subprocess]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import httpx
import uvicorn
from imapclient import IMAPClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bench.common import (
    MAILBOX_NAME,
    SUPPORT_ADDRESS,
    SubprocessWorker,
    ThreadWorker,
    add_bench_mailbox,
    bench_settings,
    command_line,
    connect_imaps,
    folder_snapshot,
    fresh_database,
    mail_server,
    new_secret_key,
    percentile,
    print_table,
    say,
    scratch_dir,
    seed_messages,
    setup_logging,
    verdict,
    wait_until,
    watched_folders_caught_up,
)
from core.agents import create_agent, create_api_token
from core.db import make_engine, unit_of_work
from core.demo_data import synthetic_corpus
from core.mailserver import MailAccount, free_port
from core.models import Message
from core.settings import Settings

POLL_INTERVAL = 0.005
TRIAL_GAP = 0.1
TRIAL_TIMEOUT = 10.0
P50_MARGIN = 0.100
P99_TARGET = 1.0


class IdleWatcher:
    """A plain client IDLEing on INBOX: notes when each `* n EXISTS` arrives."""

    def __init__(self, account: MailAccount) -> None:
        self.client: IMAPClient = connect_imaps(account)
        self.client.select_folder("INBOX", readonly=True)
        self.exists_at: dict[int, float] = {}
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._idling = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raw-idle", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._idling.wait(10):
            raise RuntimeError("the raw IDLE client did not enter IDLE")

    def _run(self) -> None:
        try:
            self.client.idle()
            self._idling.set()
            while not self._stop.is_set():
                responses = self.client.idle_check(timeout=0.2)
                now = time.perf_counter()
                for resp in responses:
                    if len(resp) >= 2 and resp[1] == b"EXISTS" and isinstance(resp[0], int):
                        with self._cond:
                            self.exists_at.setdefault(resp[0], now)
                            self._cond.notify_all()
            self.client.idle_done()
        except BaseException as exc:  # reported by wait_for, so a trial cannot hang on it
            self.error = exc
            with self._cond:
                self._cond.notify_all()

    def wait_for(self, exists: int, timeout: float) -> float | None:
        """When EXISTS reached `exists` (perf_counter), or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hit = min((t for n, t in self.exists_at.items() if n >= exists), default=None)
                if hit is not None or self.error is not None:
                    return hit
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.client.logout()


@contextlib.contextmanager
def api_server(settings: Settings, engine: Engine) -> Iterator[str]:
    """The app under uvicorn in a thread on a free port; yields its base URL."""
    from api.app import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(settings=settings, engine=engine),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    if not wait_until(lambda: server.started, timeout=20, alive=thread.is_alive):
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def probe_message(trial: int, run_id: str) -> tuple[bytes, str, str]:
    """A new customer message: (raw bytes, unique subject, Message-ID without brackets)."""
    message_id = f"latency-{run_id}-{trial}@bench.example.test"
    subject = f"Latency probe {trial} {run_id}"
    body = (
        "Hello,\r\n\r\nthe export page times out again since this morning. "
        "Could you have a look?\r\n\r\n" + "Details of what we tried so far follow.\r\n" * 40
    )
    raw = (
        f"From: Probe Customer <probe{trial}@customer.example>\r\n"
        f"To: Example Support <{SUPPORT_ADDRESS}>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: <{message_id}>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: 7bit\r\n\r\n" + body
    )
    return raw.encode("ascii"), subject, message_id


@dataclass
class Trial:
    index: int
    message_id: str
    t0_wall: float
    append_seconds: float
    raw_idle: float | None  # seconds from t0; None: no EXISTS seen
    ours: float | None  # seconds from t0; None: not visible in time
    api_requests: int
    checked: bool = False


@dataclass
class Results:
    trials: list[Trial] = field(default_factory=list)
    warmup: list[Trial] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    request_seconds: list[float] = field(default_factory=list)
    row_created: list[float] = field(default_factory=list)  # t0 -> the worker built the row


def run_trial(
    index: int,
    run_id: str,
    appender: IMAPClient,
    watcher: IdleWatcher,
    http: httpx.Client,
    exists_before: int,
    page_size: int,
    results: Results,
) -> Trial:
    raw, subject, message_id = probe_message(index, run_id)
    t0_wall = time.time()
    t0 = time.perf_counter()
    appender.append("INBOX", raw)
    append_seconds = time.perf_counter() - t0

    t_api: float | None = None
    conversation_id: int | None = None
    requests = 0
    deadline = t0 + TRIAL_TIMEOUT
    while time.perf_counter() < deadline:
        sent = time.perf_counter()
        response = http.get("/api/v1/conversations", params={"limit": page_size})
        now = time.perf_counter()
        requests += 1
        results.request_seconds.append(now - sent)
        response.raise_for_status()
        match = next((c for c in response.json()["items"] if c["subject"] == subject), None)
        if match is not None:
            t_api = now
            conversation_id = int(match["id"])
            break
        time.sleep(POLL_INTERVAL)
    t_idle = watcher.wait_for(exists_before + 1, timeout=max(deadline - time.perf_counter(), 2))

    trial = Trial(
        index=index,
        message_id=message_id,
        t0_wall=t0_wall,
        append_seconds=append_seconds,
        raw_idle=(t_idle - t0) if t_idle is not None else None,
        ours=(t_api - t0) if t_api is not None else None,
        api_requests=requests,
    )
    if t_api is None:
        results.problems.append(
            f"trial {index}: {message_id} not in the API after {TRIAL_TIMEOUT:.0f} s"
        )
    if t_idle is None:
        results.problems.append(f"trial {index}: the raw IDLE client saw no EXISTS")
    if conversation_id is not None:
        detail = http.get(f"/api/v1/conversations/{conversation_id}")
        detail.raise_for_status()
        ids = {m.get("message_id", "").strip("<>") for m in detail.json().get("messages", [])}
        trial.checked = message_id in ids
        if not trial.checked:
            results.problems.append(
                f"trial {index}: conversation {conversation_id} has subject {subject!r} but not "
                f"the Message-ID {message_id} (it has {sorted(ids)})"
            )
    return trial


def worker_row_delays(engine: Engine, trials: list[Trial]) -> list[float]:
    """Seconds from each APPEND until the worker built the message row (its created_at)."""
    by_id = {t.message_id: t for t in trials}
    with Session(engine) as db:
        rows = db.exec(
            select(Message.message_id, Message.created_at).where(
                col(Message.message_id).in_(list(by_id))
            )
        ).all()
    delays = []
    for message_id, created_at in rows:
        created = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
        delays.append(created.timestamp() - by_id[message_id].t0_wall)
    return delays


def _ms(value: float) -> str:
    text = f"{value * 1000:.0f}"
    return "0" if text == "-0" else text


def report(args: argparse.Namespace, results: Results, worker_mode: str) -> bool:
    trials = results.trials
    raw = [t.raw_idle for t in trials if t.raw_idle is not None]
    ours = [t.ours for t in trials if t.ours is not None]
    diffs = [t.ours - t.raw_idle for t in trials if t.ours is not None and t.raw_idle is not None]
    append = [t.append_seconds for t in trials]
    print()
    print(f"command:  {command_line()}")
    print(
        f"set-up:   fresh Dovecot (Maildir, IMAPS), box with {args.seed_count} messages, "
        f"{args.db}, worker in a {worker_mode}, uvicorn in a thread, httpx poller every "
        f"{POLL_INTERVAL * 1000:.0f} ms (limit={args.page_size})"
    )
    print(
        f"trials:   {len(trials)} measured (+{len(results.warmup)} warm-up, not counted), "
        f"{TRIAL_GAP * 1000:.0f} ms apart"
    )
    print()

    def row(name: str, values: list[float]) -> list[object]:
        if not values:
            return [name, 0, "-", "-", "-", "-", "-", "-"]
        return [
            name,
            len(values),
            _ms(min(values)),
            _ms(percentile(values, 50)),
            _ms(percentile(values, 95)),
            _ms(percentile(values, 99)),
            _ms(max(values)),
            _ms(statistics.fmean(values)),
        ]

    print_table(
        ["ms from APPEND", "n", "min", "p50", "p95", "p99", "max", "mean"],
        [
            row("raw IDLE client: EXISTS", raw),
            row("ours: visible in GET /conversations", ours),
            row("ours minus raw, per trial", diffs),
            row("worker built the row (Message.created_at)", results.row_created),
            row("APPEND command itself", append),
            row("one API poll request", results.request_seconds),
        ],
    )
    print()
    ok = True
    if raw and ours:
        raw_p50, ours_p50, ours_p99 = (
            percentile(raw, 50),
            percentile(ours, 50),
            percentile(ours, 99),
        )
        print(f"p50 difference (ours - raw): {_ms(ours_p50 - raw_p50)} ms")
        print("targets:")
        print(
            f"  ours p50 {_ms(ours_p50)} ms <= raw p50 {_ms(raw_p50)} ms + "
            f"{_ms(P50_MARGIN)} ms: {verdict(ours_p50 <= raw_p50 + P50_MARGIN)}"
        )
        print(
            f"  ours p99 {_ms(ours_p99)} ms <= {_ms(P99_TARGET)} ms: "
            f"{verdict(ours_p99 <= P99_TARGET)}"
        )
    if results.problems:
        ok = False
        print()
        print("!" * 78)
        print(f"CORRECTNESS FAILURE ({len(results.problems)})")
        for problem in results.problems[:20]:
            print(f"  {problem}")
        print("!" * 78)
    else:
        print(
            "correctness: every probe reached the API in its own conversation with its Message-ID"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.arrival_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--trials", type=int, default=200, help="measured trials (default 200)")
    parser.add_argument("--warmup", type=int, default=3, help="trials not counted (default 3)")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--worker",
        choices=("subprocess", "thread"),
        default="subprocess",
        help="our worker as `python -m core.cli worker` (default) or in a thread of this process",
    )
    parser.add_argument("--seed-count", type=int, default=300, help="messages in the box first")
    parser.add_argument(
        "--page-size", type=int, default=1, help="`limit` of each poll request (default 1)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the worker's INFO")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be positive")
    setup_logging(args.verbose)
    # The raw IDLE client shares this process with uvicorn and the poller: a short GIL switch
    # interval keeps its wake-up timestamps from waiting behind them (default 5 ms).
    sys.setswitchinterval(0.001)
    run_id = uuid.uuid4().hex[:8]

    with (
        scratch_dir("imapdesk-bench-latency-", args.keep) as work_dir,
        mail_server(work_dir) as server,
    ):
        account = server.create_account()
        corpus = synthetic_corpus(args.seed_count, seed=7)
        seeded, _bytes, seconds = seed_messages(server, account, corpus)
        say(f"seeded {seeded} messages in {seconds:.1f} s")
        data_dir = work_dir / "data"
        data_dir.mkdir()
        with fresh_database(args.db, data_dir) as db_url:
            settings = bench_settings(db_url, data_dir, new_secret_key())
            engine = make_engine(db_url)
            try:
                results = _measure(args, run_id, account, settings, engine, seeded, data_dir)
            finally:
                engine.dispose()
        say("stopping Dovecot...")
    ok = report(args, results, args.worker)
    return 0 if ok else 1


def _measure(
    args: argparse.Namespace,
    run_id: str,
    account: MailAccount,
    settings: Settings,
    engine: Engine,
    seeded: int,
    data_dir: Path,
) -> Results:
    results = Results()
    mailbox_id = add_bench_mailbox(engine, settings, account)
    with unit_of_work(engine) as db:
        agent = create_agent(db, email="bench@example.test", name="Bench", password="bench-pw")
        token = create_api_token(db, agent, name="arrival latency benchmark")

    worker: ThreadWorker | SubprocessWorker
    if args.worker == "thread":
        worker = ThreadWorker(settings, engine)
    else:
        worker = SubprocessWorker(settings, data_dir / "worker.log")
    worker.start()
    if isinstance(worker, SubprocessWorker):
        say(f"worker pid {worker.pid} (for py-spy)")
    watcher: IdleWatcher | None = None
    appender: IMAPClient | None = None
    try:
        caught_up = wait_until(
            lambda: (
                watched_folders_caught_up(engine, mailbox_id)
                and folder_snapshot(engine, mailbox_id).message_count == seeded
            ),
            timeout=120,
            interval=0.05,
            alive=worker.alive,
        )
        if not caught_up:
            tail = worker.log_tail() if isinstance(worker, SubprocessWorker) else ""
            raise RuntimeError(f"the worker did not catch up with {seeded} messages\n{tail}")
        say("worker caught up; starting the API, the raw IDLE client and the appender")
        watcher = IdleWatcher(account)
        watcher.start()
        appender = connect_imaps(account)
        time.sleep(1.0)  # let the worker settle into IDLE
        headers = {"Authorization": f"Bearer {token}"}
        with (
            api_server(settings, engine) as base_url,
            httpx.Client(base_url=base_url, headers=headers, timeout=10) as http,
        ):
            check = http.get("/api/v1/conversations", params={"limit": 1})
            check.raise_for_status()
            if check.json()["items"] and check.json()["items"][0].get("mailbox") != MAILBOX_NAME:
                raise RuntimeError(f"unexpected first page: {check.text[:300]}")
            exists = seeded
            total = args.warmup + args.trials
            for i in range(total):
                trial = run_trial(
                    i, run_id, appender, watcher, http, exists, args.page_size, results
                )
                exists += 1
                (results.warmup if i < args.warmup else results.trials).append(trial)
                if (i + 1) % 25 == 0 or i + 1 == total:
                    done = [t.ours for t in results.trials if t.ours is not None]
                    say(
                        f"{i + 1}/{total} trials; ours p50 so far "
                        + (f"{percentile(done, 50) * 1000:.0f} ms" if done else "-")
                    )
                if watcher.error is not None:
                    raise RuntimeError(f"the raw IDLE client failed: {watcher.error!r}")
                time.sleep(TRIAL_GAP)
        results.row_created = worker_row_delays(engine, results.trials)
    finally:
        if appender is not None:
            with contextlib.suppress(Exception):
                appender.logout()
        if watcher is not None:
            watcher.stop()
        worker.stop()
    return results


if __name__ == "__main__":
    sys.exit(main())
