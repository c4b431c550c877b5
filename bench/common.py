"""What the benchmarks share: the command line, a fresh Dovecot, a fresh database, a mailbox row,
the worker in a thread or a subprocess, the API under uvicorn, signing in to the web pages,
percentiles and plain-text tables.

Run the benchmarks from the repository root (`python -m bench.ingest`); see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn
from imapclient import IMAPClient
from sqlalchemy import Engine, create_engine, func, text
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import (
    LocalMailServer,
    LocalMailServerError,
    MailAccount,
    free_port,
)
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.domain.mailboxes.config import add_mailbox
from imapdesk.kernel.db import make_engine, unit_of_work, upgrade_database
from imapdesk.kernel.models import (
    Agent,
    Conversation,
    Folder,
    FolderRole,
    FolderState,
    ImapSecurity,
    Mailbox,
    Message,
)
from imapdesk.kernel.settings import Settings

log = logging.getLogger("bench")

PG_ADMIN_URL = os.environ.get(
    "IMAPDESK_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# The synthetic corpus writes its support replies from this address: the box's own address.
SUPPORT_ADDRESS = "support@example.test"
MAILBOX_NAME = "support"
# the folders the worker follows (supervisor: watched ones plus those of the mapping)
FOLLOWED_ROLES = (
    FolderRole.inbox,
    FolderRole.sent,
    FolderRole.archive,
    FolderRole.junk,
    FolderRole.trash,
    FolderRole.pending,
    FolderRole.notes,
)
WORKER_HELP = "our worker as `python -m imapdesk worker` (default) or in a thread of this process"


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        force=True,
    )
    logging.getLogger("bench").setLevel(logging.INFO)
    for noisy in ("imapclient", "sqlalchemy.engine", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def say(message: str) -> None:
    """Progress of the run, on stderr so that stdout holds only the figures."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def command_line() -> str:
    return shlex.join([Path(sys.executable).name, "-m", _module_name(), *sys.argv[1:]])


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return str(spec.name)
    return Path(sys.argv[0]).stem


# --- the command line -----------------------------------------------------------------------


def bench_parser(doc: str, prog: str | None = None) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of the benchmark's docstring."""
    return argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")


def add_worker_argument(parser: argparse.ArgumentParser, help: str | None = WORKER_HELP) -> None:
    parser.add_argument(
        "--worker", choices=("subprocess", "thread"), default="subprocess", help=help
    )


def add_run_arguments(
    parser: argparse.ArgumentParser,
    keep_help: str | None = "keep the temporary directories",
    verbose_help: str | None = "log the worker's INFO",
) -> None:
    """`--keep` and `-v/--verbose`, which every benchmark takes last."""
    parser.add_argument("--keep", action="store_true", help=keep_help)
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)


def latency_parser(
    doc: str,
    prog: str,
    *,
    warmup: int,
    trials_help: str = "measured trials (default 200)",
    warmup_help: str | None = None,
    worker: dict[str, Any] | None = None,
) -> argparse.ArgumentParser:
    """The options the latency benchmarks start with: `--trials`, `--warmup`, `--db`,
    `--worker` (subprocess or thread unless `worker` gives its own) and `--seed-count`."""
    parser = bench_parser(doc, prog)
    parser.add_argument("--trials", type=int, default=200, help=trials_help)
    parser.add_argument(
        "--warmup",
        type=int,
        default=warmup,
        help=warmup_help or f"trials not counted (default {warmup})",
    )
    add_db_argument(parser)
    if worker is None:
        add_worker_argument(parser)
    else:
        parser.add_argument("--worker", **worker)
    parser.add_argument("--seed-count", type=int, default=300, help="messages in the box first")
    return parser


# --- the scratch directory ------------------------------------------------------------------


@contextlib.contextmanager
def scratch_dir(prefix: str, keep: bool) -> Iterator[Path]:
    """A fresh directory Dovecot's unprivileged processes can traverse; removed unless `keep`."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        if keep:
            say(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


# --- the mail server ------------------------------------------------------------------------


@contextlib.contextmanager
def mail_server(base_dir: Path, trim: Sequence[str] = ()) -> Iterator[LocalMailServer]:
    """A fresh Maildir Dovecot on free ports (retried on a port race), stopped at the end;
    `trim`: capabilities it does not announce (`trim_capabilities`)."""
    last_error: LocalMailServerError | None = None
    for attempt in range(3):
        path = base_dir / f"dovecot-{attempt}"
        path.mkdir(mode=0o755)
        server = LocalMailServer(
            path,
            imap_port=free_port(),
            imaps_port=free_port(),
            storage="maildir",
            trim_capabilities=trim,
        )
        try:
            server.start()
        except LocalMailServerError as exc:
            last_error = exc
            continue
        break
    else:
        assert last_error is not None
        raise last_error
    try:
        yield server
    finally:
        server.stop()


def connect_imaps(account: MailAccount, timeout: float = 60.0) -> IMAPClient:
    """An IMAPS connection, as the worker makes it (TLS verified against the server's CA)."""
    return account.server.connect(account.user, account.password, ssl=True, timeout=timeout)


def seed_messages(
    server: LocalMailServer, account: MailAccount, messages: Iterable[bytes], folder: str = "INBOX"
) -> tuple[int, int, float]:
    """MULTIAPPEND everything into `folder`; returns (count, total bytes, seconds)."""
    total_bytes = 0

    def counted() -> Iterator[bytes]:
        nonlocal total_bytes
        for raw in messages:
            total_bytes += len(raw)
            yield raw

    started = time.perf_counter()
    count = server.seed(account.user, account.password, folder, counted(), batch=500)
    return count, total_bytes, time.perf_counter() - started


# --- the database ---------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(kind: str, directory: Path) -> Iterator[str]:
    """A new database at the newest migration: a SQLite file in `directory`, or a throwaway
    PostgreSQL database on 127.0.0.1:5432 that is dropped at the end."""
    if kind == "sqlite":
        url = f"sqlite:///{directory / f'imapdesk-{uuid.uuid4().hex[:8]}.db'}"
        upgrade_database(url)
        yield url
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}")
    name = f"imapdesk_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        upgrade_database(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def bench_settings(database_url: str, data_dir: Path, secret_key: str) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        secret_key=secret_key,
        environment="development",
        mailbox_refresh_seconds=0.2,
        reconnect_initial_seconds=0.2,
        reconnect_max_seconds=2.0,
    )


def new_secret_key() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class SeededBox:
    """A fresh Dovecot with one account holding the corpus, and a fresh database beside it."""

    server: LocalMailServer
    account: MailAccount
    seeded: int  # messages in INBOX
    seed_seconds: float
    data_dir: Path
    settings: Settings
    engine: Engine


@contextlib.contextmanager
def seeded_box(
    prefix: str,
    keep: bool,
    db_kind: str,
    corpus: Iterable[bytes],
    *,
    label: str = "",
    trim: Sequence[str] = (),
    stopping_note: bool = True,
) -> Iterator[SeededBox]:
    """The set-up of the benchmarks on one box: a scratch directory (`prefix`, kept if
    `keep`), a fresh Dovecot, the corpus in INBOX of a new account (not timed), a fresh
    database and the benchmark's settings; progress on stderr prefixed with `label`."""
    with scratch_dir(prefix, keep) as work_dir, mail_server(work_dir, trim) as server:
        account = server.create_account()
        seeded, _bytes, seconds = seed_messages(server, account, corpus)
        say(f"{label}seeded {seeded} messages in {seconds:.1f} s")
        data_dir = work_dir / "data"
        data_dir.mkdir()
        with fresh_database(db_kind, data_dir) as db_url:
            settings = bench_settings(db_url, data_dir, new_secret_key())
            engine = make_engine(db_url)
            try:
                yield SeededBox(server, account, seeded, seconds, data_dir, settings, engine)
            finally:
                engine.dispose()
        if stopping_note:
            say(f"{label}stopping Dovecot...")


def add_bench_mailbox(
    engine: Engine,
    settings: Settings,
    account: MailAccount,
    address: str = SUPPORT_ADDRESS,
    **smtp: Any,
) -> int:
    """The shared box as an admin adds it: IMAPS, the server's CA, INBOX and Sent watched;
    `smtp`: add_mailbox's smtp_* settings, for a box that sends."""
    with unit_of_work(engine) as db:
        mailbox = add_mailbox(
            db,
            settings,
            name=MAILBOX_NAME,
            address=address,
            imap_host="localhost",
            imap_port=account.imaps_port,
            imap_security=ImapSecurity.ssl,
            username=account.user,
            password=account.password,
            ca_file=str(account.ca_file),
            **smtp,
        )
        assert mailbox.id is not None
        return mailbox.id


@dataclass(frozen=True)
class FolderSnapshot:
    exists: bool
    state: str | None
    message_count: int


def folder_snapshot(engine: Engine, mailbox_id: int, name: str = "INBOX") -> FolderSnapshot:
    with Session(engine) as db:
        row = db.exec(
            select(Folder.state, Folder.message_count).where(
                Folder.mailbox_id == mailbox_id, Folder.name == name
            )
        ).first()
    if row is None:
        return FolderSnapshot(False, None, 0)
    state, count = row
    return FolderSnapshot(True, FolderState(state).value, int(count))


def watched_folders_caught_up(engine: Engine, mailbox_id: int) -> bool:
    with Session(engine) as db:
        states = db.exec(
            select(Folder.state).where(Folder.mailbox_id == mailbox_id, col(Folder.watched))
        ).all()
    return bool(states) and all(FolderState(s) == FolderState.poll for s in states)


def followed_folders_caught_up(engine: Engine, mailbox_id: int) -> bool:
    """Every folder the worker follows has finished its first catch-up (state `poll`)."""
    with Session(engine) as db:
        rows = db.exec(
            select(Folder.role, Folder.state).where(Folder.mailbox_id == mailbox_id)
        ).all()
    followed = [FolderState(s) for r, s in rows if FolderRole(r) in FOLLOWED_ROLES]
    return len(followed) >= len(FOLLOWED_ROLES) and all(s == FolderState.poll for s in followed)


def wall_seconds(value: datetime) -> float:
    """A database timestamp as time.time() seconds (a naive one is UTC)."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class StoreCounts:
    messages: int
    conversations: int  # not merged into another: what agents see
    conversations_total: int


def store_counts(engine: Engine) -> StoreCounts:
    with Session(engine) as db:
        messages = db.exec(select(func.count()).select_from(Message)).one()
        live = db.exec(
            select(func.count())
            .select_from(Conversation)
            .where(col(Conversation.merged_into_id).is_(None))
        ).one()
        total = db.exec(select(func.count()).select_from(Conversation)).one()
    return StoreCounts(int(messages), int(live), int(total))


# --- the worker -----------------------------------------------------------------------------


class ThreadWorker:
    """`make_worker(...).run()` in a thread of this process."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        from imapdesk.worker.supervisor import make_worker

        self.stop_event = threading.Event()
        self.worker = make_worker(settings, engine, self.stop_event)
        self.thread = threading.Thread(target=self.worker.run, name="bench-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=20)
        if self.thread.is_alive():
            say("warning: the worker thread did not stop within 20 s")

    def log_tail(self, lines: int = 20) -> str:
        return ""  # it logs to this process's stderr


class SubprocessWorker:
    """`python -m imapdesk worker` on its own, so that its RSS and CPU are its alone."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            IMAPDESK_DATABASE_URL=self.settings.database_url,
            IMAPDESK_DATA_DIR=str(self.settings.data_dir),
            IMAPDESK_SECRET_KEY=self.settings.secret_key,
            IMAPDESK_ENVIRONMENT="development",
            IMAPDESK_MAILBOX_REFRESH_SECONDS=str(self.settings.mailbox_refresh_seconds),
        )
        self._log_file = self.log_path.open("wb")
        # cwd: the scratch directory, so no developer's .env is read
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imapdesk", "worker"],
            env=env,
            cwd=self.settings.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                say("warning: the worker did not exit within 20 s of SIGTERM: killing it")
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


Worker = ThreadWorker | SubprocessWorker


def new_worker(mode: str, settings: Settings, engine: Engine, log_path: Path) -> Worker:
    """`subprocess`: `python -m imapdesk worker` logging to `log_path`; otherwise a
    thread."""
    if mode == "subprocess":
        return SubprocessWorker(settings, log_path)
    return ThreadWorker(settings, engine)


def start_worker(mode: str, settings: Settings, engine: Engine, log_path: Path) -> Worker:
    worker = new_worker(mode, settings, engine, log_path)
    worker.start()
    if isinstance(worker, SubprocessWorker):
        say(f"worker pid {worker.pid} (for py-spy)")
    return worker


@contextlib.contextmanager
def started_worker(
    mode: str, settings: Settings, engine: Engine, log_path: Path
) -> Iterator[Worker]:
    worker = start_worker(mode, settings, engine, log_path)
    try:
        yield worker
    finally:
        worker.stop()


def wait_caught_up(
    worker: Worker,
    engine: Engine,
    mailbox_id: int,
    seeded: int,
    timeout: float,
    folders_done: Callable[[Engine, int], bool] = followed_folders_caught_up,
) -> None:
    """Until `folders_done` and INBOX holds the `seeded` messages (polled every 50 ms); a
    RuntimeError with the worker's log if that takes longer than `timeout` or it dies."""
    caught_up = wait_until(
        lambda: (
            folders_done(engine, mailbox_id)
            and folder_snapshot(engine, mailbox_id).message_count == seeded
        ),
        timeout=timeout,
        interval=0.05,
        alive=worker.alive,
    )
    if not caught_up:
        raise RuntimeError(
            f"the worker did not catch up with {seeded} messages\n{worker.log_tail()}"
        )


class RssSampler:
    """Samples the RSS of a process (and any children) every `interval` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss
                for child in self.process.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss += child.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._stop.wait(self.interval)


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = 0.02,
    alive: Callable[[], bool] | None = None,
) -> bool:
    """Polls `predicate` until it holds (True), time is up or `alive` says the worker died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if alive is not None and not alive():
            return predicate()
        time.sleep(interval)
    return False


# --- the API and the web pages --------------------------------------------------------------

WEB_PASSWORD = "bench password 123"


@contextlib.contextmanager
def api_server(settings: Settings, engine: Engine) -> Iterator[str]:
    """The app under uvicorn in a thread on a free port; yields its base URL."""
    from imapdesk.api.app import create_app

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


@contextlib.contextmanager
def api_client(
    settings: Settings, engine: Engine, token: str, timeout: float = 10
) -> Iterator[httpx.Client]:
    """An httpx client with the bearer `token`, on the API served by `api_server`."""
    headers = {"Authorization": f"Bearer {token}"}
    with (
        api_server(settings, engine) as base_url,
        httpx.Client(base_url=base_url, headers=headers, timeout=timeout) as http,
    ):
        yield http


def bench_api_token(engine: Engine, purpose: str) -> str:
    """A new agent's API token, named after the benchmark (`purpose`)."""
    with unit_of_work(engine) as db:
        agent = create_agent(db, email="bench@example.test", name="Bench", password="bench-pw")
        token = create_api_token(db, agent, name=purpose)
    return token


def add_web_agent_and_box(db: Session) -> tuple[Agent, Mailbox]:
    """An admin who signs in with WEB_PASSWORD, and a mailbox row no worker connects to."""
    agent = create_agent(db, "bench@example.com", "Bench", WEB_PASSWORD, is_admin=True)
    box = Mailbox(
        name="support", address="support@example.test", imap_host="localhost",
        username="support", password_encrypted="x",
    )  # fmt: skip
    db.add(box)
    db.flush()
    return agent, box


def sign_in(http: httpx.Client, email: str, password: str, wait: float = 0) -> httpx.Response:
    """The login form, as a browser posts it (with its CSRF token); the response is not
    followed (303 on success). `wait`: seconds to retry while the server is not up yet."""
    deadline = time.monotonic() + wait
    while True:
        try:
            page = http.get("/login").text
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return http.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": token},
        follow_redirects=False,
    )


# --- figures --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def ms(value: float) -> str:
    """Seconds as whole milliseconds (never "-0")."""
    text = f"{value * 1000:.0f}"
    return "0" if text == "-0" else text


STAT_COLUMNS = ("n", "min", "p50", "p95", "p99", "max", "mean")


def stat_row(name: str, values: Sequence[float | None]) -> list[object]:
    """A row under STAT_COLUMNS, in ms; the Nones (not seen) are left out."""
    vals = [v for v in values if v is not None]
    if not vals:
        return [name, 0, "-", "-", "-", "-", "-", "-"]
    return [
        name,
        len(vals),
        ms(min(vals)),
        ms(percentile(vals, 50)),
        ms(percentile(vals, 95)),
        ms(percentile(vals, 99)),
        ms(max(vals)),
        ms(statistics.fmean(vals)),
    ]


def print_stats(title: str, rows: Sequence[Sequence[object]]) -> None:
    """A table of stat_row rows, `title` heading its first column."""
    print_table([title, *STAT_COLUMNS], rows)


def p50_so_far(values: Sequence[float]) -> str:
    """For progress lines: the p50 in ms, or "-" while there is nothing yet."""
    return f"{percentile(values, 50) * 1000:.0f} ms" if values else "-"


def print_failure(title: str, problems: Iterable[str]) -> None:
    """The block that marks a correctness failure, after a blank line."""
    print()
    print("!" * 78)
    print(title)
    for problem in problems:
        print(f"  {problem}")
    print("!" * 78)


def start_serve(url: str, data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`python -m imapdesk serve`, as an install runs it."""
    env = dict(os.environ)
    env.update(
        IMAPDESK_DATABASE_URL=url,
        IMAPDESK_DATA_DIR=str(data_dir),
        IMAPDESK_SECRET_KEY=new_secret_key(),
        IMAPDESK_ENVIRONMENT="development",
        IMAPDESK_HOST="127.0.0.1",
        IMAPDESK_PORT=str(port),
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        # cwd: the data directory, so no developer's .env is read
        return subprocess.Popen(
            [sys.executable, "-m", "imapdesk", "serve"],
            env=env, cwd=data_dir, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


# --- a busy machine ---------------------------------------------------------------------------


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy_machine(processes: int) -> Iterator[None]:
    """`processes` CPU-bound processes (one per core: `os.cpu_count()`) running beside the
    benchmark until the block ends: the machine as busy as a shared CI runner gets."""
    import multiprocessing

    spinners = [
        multiprocessing.Process(target=_spin, name=f"bench-busy-{i}", daemon=True)
        for i in range(processes)
    ]
    for proc in spinners:
        proc.start()
    if spinners:
        say(f"keeping the machine busy: {processes} CPU-bound processes")
    try:
        yield
    finally:
        for proc in spinners:
            proc.terminate()
        for proc in spinners:
            proc.join(timeout=5)
