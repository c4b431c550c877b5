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
until the newest conversation has the trial's subject. Trials start `--gap` ms (100) after the
previous one completed; `--back-to-back` appends each as soon as the one before is visible. Then
the conversation is read back to check it holds the Message-ID (not timed).

`--busy` keeps a CPU-bound process per core running beside it (a busy machine widens any race
between catching up and listening again); `--connections per_folder` runs the earlier design (a
connection per followed folder); `--server cyrus|courier` runs on Cyrus or Courier from Debian's
packages (tests/support/other_servers.py), whose IDLE tells of new mail only every 60 s.

    python -m bench.arrival_latency [--trials 200] [--db sqlite|postgresql] [--worker subprocess]
                                    [--back-to-back] [--busy [N]] [--connections shared]
                                    [--server dovecot]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
from imapclient import IMAPClient
from imapclient.exceptions import ProtocolError
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bench.common import (
    MAILBOX_NAME,
    SUPPORT_ADDRESS,
    SeededBox,
    add_bench_mailbox,
    add_run_arguments,
    api_client,
    bench_api_token,
    bench_settings,
    busy_machine,
    command_line,
    connect_imaps,
    fresh_database,
    latency_parser,
    ms,
    new_secret_key,
    p50_so_far,
    percentile,
    print_failure,
    print_stats,
    say,
    scratch_dir,
    seeded_box,
    setup_logging,
    started_worker,
    stat_row,
    verdict,
    wait_caught_up,
    wall_seconds,
    watched_folders_caught_up,
)
from imapdesk.devtools.demo_data import synthetic_corpus
from imapdesk.devtools.mailserver import MailAccount
from imapdesk.kernel.db import make_engine
from imapdesk.kernel.models import Message

POLL_INTERVAL = 0.005
TRIAL_GAP = 0.1
TRIAL_TIMEOUT = 10.0
P50_MARGIN = 0.100
P99_TARGET = 1.0
# back-to-back arrivals: none waits for a refresh
MAX_TARGET = 1.5
# servers whose IDLE tells late (polled): p99
LAZY_P99_TARGET = 1.5


class IdleWatcher:
    """A plain client IDLEing on INBOX: notes when each `* n EXISTS` arrives."""

    def __init__(self, account: MailAccount) -> None:
        self.client: IMAPClient = connect_imaps(account)
        self.client.select_folder("INBOX", readonly=True)
        self.exists_at: dict[int, float] = {}
        self.error: BaseException | None = None
        self.cut_lines = 0
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
                try:
                    responses = self.client.idle_check(timeout=0.2)
                except ProtocolError:
                    # imapclient reads IDLE lines without blocking and can cut one in two on a
                    # loaded machine: the EXISTS lost so is covered by the next one
                    self.cut_lines += 1
                    continue
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
    t0: float = 0.0  # perf_counter just before the APPEND


@dataclass
class Results:
    trials: list[Trial] = field(default_factory=list)
    warmup: list[Trial] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    request_seconds: list[float] = field(default_factory=list)
    row_created: list[float] = field(default_factory=list)  # t0 -> the worker built the row
    how_heard: str = ""  # what the worker recorded: connections and push delay


def run_trial(
    index: int,
    run_id: str,
    appender: IMAPClient,
    watcher: IdleWatcher,
    http: httpx.Client,
    exists_before: int,
    page_size: int,
    results: Results,
    *,
    raw_waits: bool = True,
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
    # a lazy server's IDLE tells every 60 s: its wake-ups are paired with the trials afterwards
    t_idle = (
        watcher.wait_for(exists_before + 1, timeout=max(deadline - time.perf_counter(), 2))
        if raw_waits
        else None
    )

    trial = Trial(
        index=index,
        message_id=message_id,
        t0_wall=t0_wall,
        append_seconds=append_seconds,
        raw_idle=(t_idle - t0) if t_idle is not None else None,
        ours=(t_api - t0) if t_api is not None else None,
        api_requests=requests,
        t0=t0,
    )
    if t_api is None:
        results.problems.append(
            f"trial {index}: {message_id} not in the API after {TRIAL_TIMEOUT:.0f} s"
        )
    if t_idle is None and raw_waits:
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
    return [wall_seconds(created) - by_id[message_id].t0_wall for message_id, created in rows]


def report(args: argparse.Namespace, results: Results, worker_mode: str) -> bool:
    trials = results.trials
    raw = [t.raw_idle for t in trials if t.raw_idle is not None]
    ours = [t.ours for t in trials if t.ours is not None]
    diffs = [t.ours - t.raw_idle for t in trials if t.ours is not None and t.raw_idle is not None]
    append = [t.append_seconds for t in trials]
    print()
    print(f"command:  {command_line()}")
    server = "Dovecot (Maildir)" if args.server == "dovecot" else args.server.capitalize()
    print(
        f"set-up:   fresh {server} over IMAPS, box with {args.seed_count} messages, "
        f"{args.db}, worker in a {worker_mode} ({args.connections} connections), uvicorn in a "
        f"thread, httpx poller every {POLL_INTERVAL * 1000:.0f} ms (limit={args.page_size})"
    )
    spacing = "back to back" if args.gap == 0 else f"{args.gap:.0f} ms apart"
    busy = f"; machine kept busy by {args.busy} CPU-bound processes" if args.busy else ""
    print(
        f"trials:   {len(trials)} measured (+{len(results.warmup)} warm-up, not counted), "
        f"{spacing}{busy}"
    )
    if results.how_heard:
        print(f"heard by: {results.how_heard}")
    print()
    print_stats(
        "ms from APPEND",
        [
            stat_row("raw IDLE client: EXISTS", raw),
            stat_row("ours: visible in GET /conversations", ours),
            stat_row("ours minus raw, per trial", diffs),
            stat_row("worker built the row (Message.created_at)", results.row_created),
            stat_row("APPEND command itself", append),
            stat_row("one API poll request", results.request_seconds),
        ],
    )
    print()
    ok = True
    if ours:
        ours_p50, ours_p99, ours_max = percentile(ours, 50), percentile(ours, 99), max(ours)
        print("targets:")
        if raw and args.server == "dovecot":
            raw_p50 = percentile(raw, 50)
            print(f"p50 difference (ours - raw): {ms(ours_p50 - raw_p50)} ms")
            print(
                f"  ours p50 {ms(ours_p50)} ms <= raw p50 {ms(raw_p50)} ms + "
                f"{ms(P50_MARGIN)} ms: {verdict(ours_p50 <= raw_p50 + P50_MARGIN)}"
            )
        p99_target = P99_TARGET if args.server == "dovecot" else LAZY_P99_TARGET
        print(
            f"  ours p99 {ms(ours_p99)} ms <= {ms(p99_target)} ms: "
            f"{verdict(ours_p99 <= p99_target)}"
        )
        if args.gap == 0 and args.server == "dovecot":
            print(
                f"  back to back, ours max {ms(ours_max)} ms <= {ms(MAX_TARGET)} ms (none "
                f"waited for a refresh): {verdict(ours_max <= MAX_TARGET)}"
            )
    if results.problems:
        ok = False
        print_failure(f"CORRECTNESS FAILURE ({len(results.problems)})", results.problems[:20])
    else:
        print(
            "correctness: every probe reached the API in its own conversation with its Message-ID"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = latency_parser(__doc__, "python -m bench.arrival_latency", warmup=3)
    parser.add_argument(
        "--page-size", type=int, default=1, help="`limit` of each poll request (default 1)"
    )
    parser.add_argument(
        "--gap", type=float, default=TRIAL_GAP * 1000, help="ms between trials (default 100)"
    )
    parser.add_argument(
        "--back-to-back",
        dest="gap",
        action="store_const",
        const=0.0,
        help="append each message as soon as the one before is visible in the API",
    )
    parser.add_argument(
        "--busy",
        type=int,
        nargs="?",
        const=os.cpu_count() or 2,
        default=0,
        help="keep N CPU-bound processes running beside it (no N: one per core)",
    )
    parser.add_argument(
        "--connections",
        choices=("shared", "per_folder"),
        default="shared",
        help="the worker's IMAP connections (IMAPDESK_IMAP_CONNECTION_MODE; default shared)",
    )
    parser.add_argument(
        "--server",
        choices=("dovecot", "cyrus", "courier"),
        default="dovecot",
        help="the IMAP server (cyrus, courier: tests/support/other_servers.py)",
    )
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be positive")
    # the worker reads it (a subprocess inherits it)
    os.environ["IMAPDESK_IMAP_CONNECTION_MODE"] = args.connections
    setup_logging(args.verbose)
    # The raw IDLE client shares this process with uvicorn and the poller: a short GIL switch
    # interval keeps its wake-up timestamps from waiting behind them (default 5 ms).
    sys.setswitchinterval(0.001)
    run_id = uuid.uuid4().hex[:8]

    corpus = synthetic_corpus(args.seed_count, seed=7)
    boxes = (
        seeded_box("imapdesk-bench-latency-", args.keep, args.db, corpus)
        if args.server == "dovecot"
        else other_server_box(args.server, args.keep, args.db, corpus)
    )
    with boxes as box:
        results = _measure(args, run_id, box)
    ok = report(args, results, args.worker)
    return 0 if ok else 1


@contextlib.contextmanager
def other_server_box(
    kind: str, keep: bool, db_kind: str, corpus: list[bytes]
) -> Iterator[SeededBox]:
    """As `seeded_box`, on Cyrus or Courier run from Debian's packages."""
    from tests.support.other_servers import running_server

    with (
        scratch_dir(f"imapdesk-bench-latency-{kind}-", keep) as work_dir,
        running_server(kind) as server,
    ):
        account = server.create_account()
        started = time.perf_counter()
        seeded = server.seed(account.user, account.password, "INBOX", corpus)
        seconds = time.perf_counter() - started
        say(f"seeded {seeded} messages in {seconds:.1f} s on {kind}")
        data_dir = work_dir / "data"
        data_dir.mkdir()
        with fresh_database(db_kind, data_dir) as db_url:
            settings = bench_settings(db_url, data_dir, new_secret_key())
            engine = make_engine(db_url)
            try:
                yield SeededBox(server, account, seeded, seconds, data_dir, settings, engine)  # type: ignore[arg-type]
            finally:
                engine.dispose()


def _measure(args: argparse.Namespace, run_id: str, box: SeededBox) -> Results:
    results = Results()
    engine, settings, seeded = box.engine, box.settings, box.seeded
    mailbox_id = add_bench_mailbox(engine, settings, box.account)
    token = bench_api_token(engine, "arrival latency benchmark")
    watcher: IdleWatcher | None = None
    appender: IMAPClient | None = None
    raw_waits = args.server == "dovecot"  # elsewhere IDLE tells every 60 s
    with (
        started_worker(args.worker, settings, engine, box.data_dir / "worker.log") as worker,
        busy_machine(args.busy),
    ):
        try:
            wait_caught_up(
                worker, engine, mailbox_id, seeded, 120, folders_done=watched_folders_caught_up
            )
            say("worker caught up; starting the API, the raw IDLE client and the appender")
            watcher = IdleWatcher(box.account)
            watcher.start()
            appender = connect_imaps(box.account)
            time.sleep(1.0)  # let the worker settle into IDLE
            with api_client(settings, engine, token) as http:
                check = http.get("/api/v1/conversations", params={"limit": 1})
                check.raise_for_status()
                if (
                    check.json()["items"]
                    and check.json()["items"][0].get("mailbox") != MAILBOX_NAME
                ):
                    raise RuntimeError(f"unexpected first page: {check.text[:300]}")
                exists = seeded
                total = args.warmup + args.trials
                for i in range(total):
                    trial = run_trial(
                        i,
                        run_id,
                        appender,
                        watcher,
                        http,
                        exists,
                        args.page_size,
                        results,
                        raw_waits=raw_waits,
                    )
                    exists += 1
                    (results.warmup if i < args.warmup else results.trials).append(trial)
                    if (i + 1) % 25 == 0 or i + 1 == total:
                        done = [t.ours for t in results.trials if t.ours is not None]
                        say(f"{i + 1}/{total} trials; ours p50 so far {p50_so_far(done)}")
                    if watcher.error is not None:
                        raise RuntimeError(f"the raw IDLE client failed: {watcher.error!r}")
                    time.sleep(args.gap / 1000)
            if not raw_waits:
                _pair_raw_wakeups(watcher, results, seeded + args.warmup)
            results.row_created = worker_row_delays(engine, results.trials)
            results.how_heard = _how_heard(engine, mailbox_id)
        finally:
            if appender is not None:
                with contextlib.suppress(Exception):
                    appender.logout()
            if watcher is not None:
                watcher.stop()
    return results


def _pair_raw_wakeups(watcher: IdleWatcher, results: Results, exists_before: int) -> None:
    """Each trial's raw IDLE wake-up, once the lazy server has told (it may take a minute)."""
    last = exists_before + len(results.trials)
    say("waiting up to 70 s for the raw IDLE client to hear of the last trial")
    watcher.wait_for(last, timeout=70)
    for n, trial in enumerate(results.trials, start=exists_before + 1):
        hit = watcher.wait_for(n, timeout=0)
        trial.raw_idle = (hit - trial.t0) if hit is not None else None


def _how_heard(engine: Engine, mailbox_id: int) -> str:
    from imapdesk.kernel.models import Mailbox

    with Session(engine) as db:
        mailbox = db.get(Mailbox, mailbox_id)
        caps = dict(mailbox.capabilities or {}) if mailbox is not None else {}
    conn, push = caps.get("connections") or {}, caps.get("push") or {}
    if not conn:
        return "one connection per followed folder, IDLE on each"
    told = (
        f", the server told of an APPEND after {push['delay_ms']} ms"
        if push.get("delay_ms")
        else ""
    )
    lazy = " (lazy: polled)" if push.get("lazy") else ""
    return f"{conn.get('push')} on {conn.get('open')} connection(s){told}{lazy}"


if __name__ == "__main__":
    sys.exit(main())
