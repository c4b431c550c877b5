"""Write-back latency: from an API claim (or a status change) until another client IDLEing on the
same server sees it, beside a plain client's own STORE / MOVE seen by the same IDLE client.

Dovecot holds every IDLE notification for about 500 ms (see docs/DOVECOT.md), so a plain
client's change seen by another plain client is the floor: what we add on top of it (the API
call, the outbox poll or wake-up, the write-back's own IMAP work) is what this measures.

Set-up per worker mode: a fresh Dovecot, a box with `--seed-count` synthetic messages, a fresh
database, our worker caught up (a subprocess, a thread, or a thread also woken explicitly
after each API call), the API app under uvicorn in a thread, two independent raw IDLE clients
(INBOX and Archive, read-only, each on its own connection in its own thread) and a third raw
connection, "the colleague", which makes the baseline's changes.

Each round makes four changes, each timed from just before its command goes out until the IDLE
clients have seen all of it:
1. ours, flag: `POST /claim` (or `/release` on the next visit) of a conversation;
2. raw, flag: the colleague's `UID STORE +FLAGS (\\Flagged)` (or `-FLAGS`) on another one;
3. ours, move: `PATCH {"status": "closed"}` (or `"open"`) of a third;
4. raw, move: the colleague's `UID MOVE` INBOX -> Archive (or back) of a fourth.
Seen means: FETCH FLAGS with (without) `\\Flagged` for every UID of the conversation in INBOX;
for a move, EXPUNGE of every UID in the source folder and as many EXISTS in the target folder.

    python -m bench.writeback_latency [--trials 200] [--worker subprocess,thread-notify]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from select import select as poll_sockets
from typing import Any, TypeVar

import httpx
from imapclient import IMAPClient
from imapclient.imapclient import _parse_untagged_response
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from bench.common import (
    SeededBox,
    add_bench_mailbox,
    add_run_arguments,
    api_client,
    bench_api_token,
    command_line,
    connect_imaps,
    latency_parser,
    ms,
    p50_so_far,
    percentile,
    print_failure,
    print_stats,
    say,
    seeded_box,
    setup_logging,
    started_worker,
    stat_row,
    verdict,
    wait_caught_up,
    wait_until,
    wall_seconds,
)
from imapdesk.devtools.demo_data import synthetic_corpus
from imapdesk.devtools.mailserver import MailAccount
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Conversation,
    ConversationStatus,
    Folder,
    ImapActionState,
    Message,
    MessageLocation,
    PendingImapAction,
)
from imapdesk.kernel.settings import Settings

TRIAL_GAP = 0.3
TRIAL_JITTER = 0.25
TRIAL_TIMEOUT = 10.0
QUIET_TIMEOUT = 10.0
# the colleague's change must be in the database before the next trial (else it is a miss of
# the read side: reported, but not this benchmark's failure; see bench.readback_latency)
READBACK_TIMEOUT = 5.0
P99_TARGET = 1.0
FLAGGED = "\\Flagged"
WORKER_MODES = ("subprocess", "thread", "thread-notify")

T = TypeVar("T")


# --- a plain client IDLEing on one folder ----------------------------------------------------


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _flag_set(value: Any) -> frozenset[str]:
    return frozenset(_text(f) for f in (value or ()) if _text(f).lower() != "\\recent")


def _fetch_items(data: Any) -> dict[bytes, Any]:
    """The (key, value) pairs of an unsolicited FETCH as imapclient's idle_check parses it."""
    items = list(data) if isinstance(data, list | tuple) else []
    out: dict[bytes, Any] = {}
    for key, value in zip(items[::2], items[1::2], strict=False):
        if isinstance(key, bytes):
            out[key.upper()] = value
    return out


def _buffered(client: IMAPClient) -> bool:
    """Whether bytes already read from the socket wait in imaplib's read buffer (or in the TLS
    layer): there poll() cannot see them. Peeks without consuming and without waiting."""
    sock = client.socket()
    sock.setblocking(False)
    try:
        return len(client._imap.file.peek(1)) > 0
    except OSError:  # would block (TLS: SSLWantReadError)
        return False
    finally:
        sock.setblocking(True)
        client._set_read_timeout()


def idle_responses(client: IMAPClient, timeout: float) -> list[Any]:
    """imapclient's idle_check(), made safe: it reads lines in non-blocking mode, and when a
    TLS record ends in the middle of a line CPython's buffered readline drops the part it had
    read (the next line then starts mid-line: ProtocolError); and it polls the socket only, so
    responses already in the read buffer (those right behind `+ idling`) wait for the next
    packet. Here: poll the socket unless something is buffered, then read whole lines in
    blocking mode while more is buffered or readable."""
    sock = client.socket()
    if not _buffered(client):
        ready, _w, _x = poll_sockets([sock], [], [], timeout)
        if not ready:
            return []
    out: list[Any] = []
    while True:
        line = client._imap._get_line()  # blocking, with the client's read timeout
        out.append(_parse_untagged_response(line))
        if not _buffered(client) and not poll_sockets([sock], [], [], 0)[0]:
            return out


class FolderWatcher:
    """A raw imapclient client IDLEing read-only on one folder, in its own thread.

    It keeps the folder's UIDs in sequence order (EXPUNGE removes one, EXISTS is followed by a
    short break out of IDLE to fetch the new UIDs) so that every event is tied to a UID, and
    notes, per UID, when its FLAGS last changed, when it was expunged and when it arrived. The
    timestamps (perf_counter) are taken when a burst of responses has been read, before parsing.
    """

    def __init__(self, account: MailAccount, folder: str) -> None:
        self.folder = folder
        self.client: IMAPClient = connect_imaps(account)
        self.client.select_folder(folder, readonly=True)
        self.uids: list[int] = []
        self.flags: dict[int, frozenset[str]] = {}
        self.flag_at: dict[int, float] = {}
        self.expunged_at: dict[int, float] = {}
        self.arrived_at: dict[int, float] = {}
        self.error: BaseException | None = None
        self.buffered = 0  # times changes were found behind `+ idling`
        self._exists = 0
        self._arrivals: list[tuple[int, float]] = []  # (EXISTS count, when)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._idling = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"raw-idle-{folder}", daemon=True)
        self._load_all()

    def start(self) -> None:
        self._thread.start()
        if not self._idling.wait(10):
            raise RuntimeError(f"the raw IDLE client on {self.folder} did not enter IDLE")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.client.logout()

    # -- the thread ---------------------------------------------------------------------------
    def _load_all(self, now: float | None = None) -> None:
        """Read the folder's UIDs and FLAGS; on a re-read (`now`), what differs from what was
        known counts as seen at `now` (arrivals at their EXISTS when one announced them)."""
        uids = sorted(self.client.search("ALL"))
        data = self.client.fetch(uids, ["FLAGS"]) if uids else {}
        raw: Any = self.client._imap
        for kind in ("EXISTS", "EXPUNGE", "FETCH", "RECENT"):  # the re-read covers them
            raw.untagged_responses.pop(kind, None)
        with self._cond:
            known = set(self.uids)
            flags = {u: _flag_set(data.get(u, {}).get(b"FLAGS")) for u in uids}
            if now is not None:
                for uid in known - set(uids):
                    self.expunged_at.setdefault(uid, now)
                for position, uid in enumerate(uids, start=1):
                    if uid not in known:
                        self.arrived_at[uid] = min(
                            (t for n, t in self._arrivals if n >= position), default=now
                        )
                    elif flags[uid] != self.flags.get(uid):
                        self.flag_at[uid] = now
            self.uids = uids
            self.flags = flags
            self._exists = len(uids)
            self._arrivals.clear()
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            self._enter_idle()
            self._idling.set()
            while not self._stop.is_set():
                responses = idle_responses(self.client, 0.2)
                if not responses:
                    continue
                self._apply(responses, time.perf_counter())
                if self._exists != len(self.uids):
                    self._leave_idle_and_reread()
                    self._enter_idle()
            self.client.idle_done()
        except BaseException as exc:  # reported by the waits, so a trial cannot hang on it
            self.error = exc
            with self._cond:
                self._cond.notify_all()

    def _leave_idle_and_reread(self) -> None:
        _reply, more = self.client.idle_done()
        now = time.perf_counter()
        self._apply(more, now)
        self._load_all(now)

    def _enter_idle(self) -> None:
        """IDLE, and take in what the server sent right behind its `+ idling` (the changes made
        since the last command): imapclient's idle() leaves them in imaplib's read buffer,
        where imapclient's idle_check(), which polls the socket, does not see them."""
        while True:
            self.client.idle()
            buffered = idle_responses(self.client, 0)
            if buffered:
                self.buffered += 1
                self._apply(buffered, time.perf_counter())
            if self._exists == len(self.uids):
                return
            self._leave_idle_and_reread()

    def _apply(self, responses: Sequence[Any], now: float) -> None:
        with self._cond:
            for resp in responses:
                if not isinstance(resp, tuple) or len(resp) < 2 or not isinstance(resp[0], int):
                    continue
                number, kind = resp[0], resp[1]
                if kind == b"EXISTS":
                    if number > self._exists:
                        self._arrivals.append((number, now))
                    self._exists = number
                elif kind == b"EXPUNGE":
                    self._exists -= 1
                    if 1 <= number <= len(self.uids):
                        uid = self.uids.pop(number - 1)
                        self.expunged_at[uid] = now
                        self.flags.pop(uid, None)
                    else:  # an arrival not mapped yet went away: start over
                        self._exists = -1
                elif kind == b"FETCH" and len(resp) >= 3:
                    items = _fetch_items(resp[2])
                    if b"FLAGS" in items and 1 <= number <= len(self.uids):
                        uid = self.uids[number - 1]
                        self.flags[uid] = _flag_set(items[b"FLAGS"])
                        self.flag_at[uid] = now
            self._cond.notify_all()

    # -- waiting for what a trial expects -----------------------------------------------------
    def wait(self, probe: Callable[[], T | None], timeout: float) -> T | None:
        """Until `probe()` (called under the lock) answers something, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = probe()
                if found is not None or self.error is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def wait_flag(
        self, uids: Sequence[int], flag: str, present: bool, since: float, timeout: float
    ) -> float | None:
        """When the FETCH FLAGS of every UID had (or lacked) `flag`, seen after `since`."""
        want = flag.lower()

        def probe() -> float | None:
            times = []
            for uid in uids:
                at = self.flag_at.get(uid)
                have = any(f.lower() == want for f in self.flags.get(uid, ()))
                if at is None or at < since or have != present:
                    return None
                times.append(at)
            return max(times) if times else None

        return self.wait(probe, timeout)

    def wait_expunged(self, uids: Sequence[int], since: float, timeout: float) -> float | None:
        def probe() -> float | None:
            times = [self.expunged_at.get(u) for u in uids]
            if not times or any(t is None or t < since for t in times):
                return None
            return max(t for t in times if t is not None)

        return self.wait(probe, timeout)

    def wait_arrivals(
        self, count: int, since: float, timeout: float
    ) -> tuple[float, list[int]] | None:
        """When `count` messages had arrived after `since` (their UIDs known), and which."""

        def probe() -> tuple[float, list[int]] | None:
            new = sorted((t, u) for u, t in self.arrived_at.items() if t >= since)
            if len(new) < count:
                return None
            return max(t for t, _ in new), sorted(u for _, u in new)

        return self.wait(probe, timeout)


# --- the conversations and the colleague -----------------------------------------------------


@dataclass
class Pick:
    """A conversation the trials toggle, with the Message-IDs of its messages."""

    conversation_id: int
    message_ids: list[str]
    state: bool = False  # claimed (flag pools) / closed (move pools)


def pick_conversations(
    engine: Engine, mailbox_id: int, count: int, rng: random.Random, max_messages: int = 4
) -> list[Pick]:
    """`count` open, unclaimed conversations of 1..max_messages messages, all with a
    Message-ID and all in INBOX only."""
    with Session(engine) as db:
        inbox_id = db.exec(
            select(Folder.id).where(Folder.mailbox_id == mailbox_id, Folder.name == "INBOX")
        ).one()
        rows = db.exec(
            select(Message.conversation_id, Message.id, Message.message_id, Message.has_message_id)
            .join(Conversation, col(Conversation.id) == col(Message.conversation_id))
            .where(
                Conversation.mailbox_id == mailbox_id,
                col(Conversation.merged_into_id).is_(None),
                Conversation.status == ConversationStatus.open,
                col(Conversation.claimed).is_(False),
            )
        ).all()
        places = db.exec(select(MessageLocation.message_id, MessageLocation.folder_id)).all()
    where: dict[int, set[int]] = {}
    for message_pk, folder_id in places:
        where.setdefault(message_pk, set()).add(folder_id)
    by_conversation: dict[int, list[tuple[int, str, bool]]] = {}
    for cid, pk, msgid, has_id in rows:
        if cid is not None and pk is not None:
            by_conversation.setdefault(cid, []).append((pk, msgid, has_id))
    eligible = sorted(
        cid
        for cid, msgs in by_conversation.items()
        if 1 <= len(msgs) <= max_messages
        and all(has_id and where.get(pk) == {inbox_id} for pk, _, has_id in msgs)
    )
    if len(eligible) < count:
        raise RuntimeError(
            f"only {len(eligible)} eligible conversations for {count}: raise --seed-count"
        )
    chosen = rng.sample(eligible, count)
    return [Pick(cid, [m for _, m, _ in by_conversation[cid]]) for cid in chosen]


class Colleague:
    """The other plain client: finds UIDs by Message-ID and makes the baseline's changes.

    UIDs are looked up on a read-only connection (EXAMINE), and the changes go out on one
    read-write connection per folder that stays selected: a read-write SELECT claims the
    `\\Recent` flag of messages moved in meanwhile, and that write starts Dovecot's 500 ms
    notification timer for every idler of the folder, so a SELECT just before a trial would let
    the IDLE clients see a change made up to 500 ms later sooner than 500 ms after it.
    """

    def __init__(self, account: MailAccount, folders: Sequence[str] = ("INBOX", "Archive")) -> None:
        self.lookup: IMAPClient = connect_imaps(account)
        self.examined: str | None = None
        self.writers: dict[str, IMAPClient] = {}
        for folder in folders:
            self.writers[folder] = connect_imaps(account)
            self.writers[folder].select_folder(folder)

    def uids(self, folder: str, message_ids: Sequence[str]) -> list[int]:
        if self.examined != folder:
            self.lookup.select_folder(folder, readonly=True)
            self.examined = folder
        found: set[int] = set()
        for mid in message_ids:
            found.update(self.lookup.search(["HEADER", "Message-ID", mid.strip("<>")]))
        return sorted(found)

    def prepare(self, folder: str) -> None:
        """Before t0: bring the writer's view of `folder` up to date (a session does not act
        on UIDs it has not been told about). Its `\\Recent` claim starts the idlers' timer a
        millisecond or two before the change: raw trials only."""
        self.writers[folder].noop()

    def flag(self, uids: Sequence[int], on: bool, folder: str = "INBOX") -> None:
        """`UID STORE +FLAGS (\\Flagged)` (or `-FLAGS`), as a plain client flags mail."""
        if on:
            self.writers[folder].add_flags(uids, [FLAGGED])
        else:
            self.writers[folder].remove_flags(uids, [FLAGGED])

    def move(self, source: str, uids: Sequence[int], target: str) -> None:
        self.writers[source].move(uids, target)

    def close(self) -> None:
        for client in (self.lookup, *self.writers.values()):
            with contextlib.suppress(Exception):
                client.logout()


@dataclass
class RawClients:
    """The IDLE clients (one per folder) and the colleague, all on their own connections."""

    watchers: dict[str, FolderWatcher]
    colleague: Colleague
    buffered: int = 0  # summed up when they stop

    def check(self) -> None:
        """A failed IDLE client fails the run (its trials could only time out)."""
        for w in self.watchers.values():
            if w.error is not None:
                raise RuntimeError(f"the raw IDLE client failed: {w.error!r}")


@contextlib.contextmanager
def raw_clients(account: MailAccount) -> Iterator[RawClients]:
    """IDLE clients on INBOX and Archive, started, and the colleague; closed at the end."""
    watchers: dict[str, FolderWatcher] = {}
    clients: RawClients | None = None
    try:
        for folder in ("INBOX", "Archive"):
            watchers[folder] = FolderWatcher(account, folder)
            watchers[folder].start()
        clients = RawClients(watchers, Colleague(account))
        yield clients
    finally:
        for w in watchers.values():
            if clients is not None:
                clients.buffered += w.buffered
            w.stop()
        if clients is not None:
            clients.colleague.close()


# --- one run: samples ------------------------------------------------------------------------


@dataclass
class Sample:
    side: str  # ours | raw
    kind: str  # claim | release | close | open (raw: the same change by the colleague)
    conversation_id: int
    uids: int
    command: float  # the HTTP request or the IMAP command itself, s
    seen: float | None  # s from t0 until the IDLE clients saw all of it
    expunge: float | None = None  # moves: the source folder's EXPUNGEs
    exists: float | None = None  # moves: the target folder's EXISTS
    action_created: float | None = None  # ours: PendingImapAction.created_at - t0
    action_done: float | None = None  # ours: PendingImapAction.done_at - t0
    readback: float | None = None  # raw: until the database showed it (not a latency figure)


@dataclass
class RunResult:
    mode: str
    poll_seconds: float
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    buffered: int = 0
    readback_misses: list[str] = field(default_factory=list)


class Run:
    def __init__(
        self,
        args: argparse.Namespace,
        mode: str,
        settings: Settings,
        engine: Engine,
        mailbox_id: int,
        http: httpx.Client,
        watchers: dict[str, FolderWatcher],
        colleague: Colleague,
        result: RunResult,
    ) -> None:
        self.args = args
        self.mode = mode
        self.settings = settings
        self.engine = engine
        self.mailbox_id = mailbox_id
        self.http = http
        self.watchers = watchers
        self.colleague = colleague
        self.result = result
        self._arrived: list[int] = []

    def _wake(self) -> None:
        if self.mode == "thread-notify":
            from imapdesk.kernel.wakeups import Loop, wake

            wake(Loop.WRITEBACK, self.mailbox_id)

    def _last_action_id(self) -> int:
        with Session(self.engine) as db:
            return int(db.exec(select(func.max(PendingImapAction.id))).one() or 0)

    def _quiet(self) -> None:
        """No action waiting in the outbox; a failed one is a correctness failure."""

        def idle() -> bool:
            with Session(self.engine) as db:
                states = db.exec(
                    select(
                        PendingImapAction.id, PendingImapAction.state, PendingImapAction.last_error
                    ).where(PendingImapAction.state != ImapActionState.done)
                ).all()
            for action_id, state, error in states:
                if ImapActionState(state) == ImapActionState.failed:
                    problem = f"action {action_id} failed: {error}"
                    if problem not in self.result.problems:
                        self.result.problems.append(problem)
            return all(ImapActionState(s) != ImapActionState.pending for _, s, _ in states)

        if not wait_until(idle, timeout=QUIET_TIMEOUT, interval=0.01):
            self.result.problems.append(f"the outbox was not empty after {QUIET_TIMEOUT:.0f} s")

    def _action_times(self, after_id: int, t0_wall: float, sample: Sample) -> None:
        with Session(self.engine) as db:
            rows = db.exec(
                select(
                    PendingImapAction.id,
                    PendingImapAction.state,
                    PendingImapAction.created_at,
                    PendingImapAction.done_at,
                    PendingImapAction.last_error,
                )
                .where(
                    col(PendingImapAction.id) > after_id,
                    PendingImapAction.conversation_id == sample.conversation_id,
                )
                .order_by(col(PendingImapAction.id))
            ).all()
        if len(rows) != 1:
            self.result.problems.append(
                f"{sample.kind} of conversation {sample.conversation_id}: {len(rows)} outbox "
                "actions, expected 1"
            )
        if not rows:
            return
        _id, state, created, done, error = rows[-1]
        if ImapActionState(state) != ImapActionState.done:
            self.result.problems.append(
                f"{sample.kind} of conversation {sample.conversation_id}: action {state} ({error})"
            )
        sample.action_created = wall_seconds(created) - t0_wall
        if done is not None:
            sample.action_done = wall_seconds(done) - t0_wall

    # -- flags ----------------------------------------------------------------------------------
    def ours_flag(self, pick: Pick) -> Sample:
        claim = not pick.state
        kind = "claim" if claim else "release"
        uids = self.colleague.uids("INBOX", pick.message_ids)
        after = self._last_action_id()
        route = f"/api/v1/conversations/{pick.conversation_id}/{kind}"
        t0_wall = time.time()
        t0 = time.perf_counter()
        response = self.http.post(route)
        command = time.perf_counter() - t0
        self._wake()
        if response.status_code != 200 or response.json().get("claimed") is not claim:
            raise RuntimeError(f"POST {route}: {response.status_code} {response.text[:300]}")
        seen = self.watchers["INBOX"].wait_flag(uids, FLAGGED, claim, t0, TRIAL_TIMEOUT)
        sample = Sample("ours", kind, pick.conversation_id, len(uids), command, since(seen, t0))
        if seen is None:
            self.result.problems.append(
                f"{kind} of conversation {pick.conversation_id}: the IDLE client never saw "
                f"{FLAGGED} {'set' if claim else 'cleared'} on UIDs {uids}"
            )
        self._quiet()
        self._action_times(after, t0_wall, sample)
        self._check_flags(pick, claim)
        pick.state = claim
        return sample

    def raw_flag(self, pick: Pick) -> Sample:
        flag = not pick.state
        kind = "claim" if flag else "release"
        uids = self.colleague.uids("INBOX", pick.message_ids)
        self.colleague.prepare("INBOX")
        t0 = time.perf_counter()
        self.colleague.flag(uids, flag)
        command = time.perf_counter() - t0
        seen = self.watchers["INBOX"].wait_flag(uids, FLAGGED, flag, t0, TRIAL_TIMEOUT)
        sample = Sample("raw", kind, pick.conversation_id, len(uids), command, since(seen, t0))
        if seen is None:
            self.result.problems.append(f"raw {kind}: the IDLE client never saw it on {uids}")
        sample.readback = self._read_back(pick, t0, claimed=flag)
        pick.state = flag
        return sample

    def _check_flags(self, pick: Pick, claimed: bool) -> None:
        """The database's flags of the conversation's INBOX locations say what the server does."""
        with Session(self.engine) as db:
            rows = db.exec(
                select(MessageLocation.uid, MessageLocation.flags)
                .join(Message, col(Message.id) == col(MessageLocation.message_id))
                .join(Folder, col(Folder.id) == col(MessageLocation.folder_id))
                .where(Message.conversation_id == pick.conversation_id, Folder.name == "INBOX")
            ).all()
        wrong = [uid for uid, flags in rows if (FLAGGED in (flags or ())) != claimed]
        if wrong or not rows:
            self.result.problems.append(
                f"conversation {pick.conversation_id}: database flags of INBOX UIDs {wrong or '-'} "
                f"do not say {FLAGGED} {'set' if claimed else 'cleared'}"
            )

    # -- moves ----------------------------------------------------------------------------------
    def ours_move(self, pick: Pick) -> Sample:
        close = not pick.state
        kind = "close" if close else "open"
        source, target = ("INBOX", "Archive") if close else ("Archive", "INBOX")
        uids = self.colleague.uids(source, pick.message_ids)
        after = self._last_action_id()
        route = f"/api/v1/conversations/{pick.conversation_id}"
        status = "closed" if close else "open"
        t0_wall = time.time()
        t0 = time.perf_counter()
        response = self.http.patch(route, json={"status": status})
        command = time.perf_counter() - t0
        self._wake()
        if response.status_code != 200 or response.json().get("status") != status:
            raise RuntimeError(f"PATCH {route}: {response.status_code} {response.text[:300]}")
        sample = self._wait_move("ours", kind, pick, uids, source, target, t0, command)
        self._quiet()
        self._action_times(after, t0_wall, sample)
        self._check_places(pick, target, sample)
        pick.state = close
        return sample

    def raw_move(self, pick: Pick) -> Sample:
        close = not pick.state
        kind = "close" if close else "open"
        source, target = ("INBOX", "Archive") if close else ("Archive", "INBOX")
        uids = self.colleague.uids(source, pick.message_ids)
        self.colleague.prepare(source)
        t0 = time.perf_counter()
        self.colleague.move(source, uids, target)
        command = time.perf_counter() - t0
        sample = self._wait_move("raw", kind, pick, uids, source, target, t0, command)
        sample.readback = self._read_back(pick, t0, status="closed" if close else "open")
        pick.state = close
        return sample

    def _wait_move(
        self,
        side: str,
        kind: str,
        pick: Pick,
        uids: list[int],
        source: str,
        target: str,
        t0: float,
        command: float,
    ) -> Sample:
        expunged = self.watchers[source].wait_expunged(uids, t0, TRIAL_TIMEOUT)
        arrived = self.watchers[target].wait_arrivals(len(uids), t0, TRIAL_TIMEOUT)
        exists = arrived[0] if arrived is not None else None
        seen = max(expunged, exists) if expunged is not None and exists is not None else None
        sample = Sample(
            side,
            kind,
            pick.conversation_id,
            len(uids),
            command,
            since(seen, t0),
            expunge=since(expunged, t0),
            exists=since(exists, t0),
        )
        if seen is None:
            self.result.problems.append(
                f"{side} {kind} of conversation {pick.conversation_id}: the IDLE clients saw "
                f"EXPUNGE {'yes' if expunged else 'no'}, EXISTS {'yes' if exists else 'no'} "
                f"({source} UIDs {uids} -> {target})"
            )
        elif arrived is not None and len(arrived[1]) != len(uids):
            self.result.problems.append(
                f"{side} {kind}: {len(arrived[1])} arrivals in {target}, expected {len(uids)}"
            )
        self._arrived = arrived[1] if arrived is not None else []
        return sample

    def _check_places(self, pick: Pick, target: str, sample: Sample) -> None:
        """The database has the messages in the target folder under the UIDs that arrived."""
        with Session(self.engine) as db:
            rows = db.exec(
                select(Folder.name, MessageLocation.uid)
                .join(Folder, col(Folder.id) == col(MessageLocation.folder_id))
                .join(Message, col(Message.id) == col(MessageLocation.message_id))
                .where(Message.conversation_id == pick.conversation_id)
            ).all()
        places = sorted(rows)
        expected = sorted((target, uid) for uid in self._arrived)
        if places != expected:
            self.result.problems.append(
                f"{sample.kind} of conversation {pick.conversation_id}: the database has "
                f"{places}, the server {expected}"
            )

    # -- the read side of the baseline's changes (keeps trials from overlapping) ---------------
    def _read_back(
        self, pick: Pick, t0: float, *, claimed: bool | None = None, status: str | None = None
    ) -> float | None:
        def shown() -> bool:
            with Session(self.engine) as db:
                conversation = db.get(Conversation, pick.conversation_id)
            assert conversation is not None
            if claimed is not None:
                return conversation.claimed is claimed
            return str(conversation.status) == status

        if wait_until(shown, timeout=READBACK_TIMEOUT, interval=0.01):
            return time.perf_counter() - t0
        what = f"claimed={claimed}" if claimed is not None else f"status={status}"
        self.result.readback_misses.append(
            f"the colleague's change to conversation {pick.conversation_id} ({what}) was not "
            f"in the database after {READBACK_TIMEOUT:.0f} s"
        )
        return None

    def check_echo(self, ours: list[Pick], raw: list[Pick]) -> None:
        """No echo either way: our writes read back as no change (no `imap` activity on our
        conversations), the colleague's changes written back as nothing (no outbox rows)."""
        ours_ids = [p.conversation_id for p in ours]
        raw_ids = [p.conversation_id for p in raw]
        with Session(self.engine) as db:
            echoes = db.exec(
                select(Activity.conversation_id, Activity.action, Activity.details).where(
                    col(Activity.conversation_id).in_(ours_ids),
                    Activity.source == ActivitySource.imap,
                )
            ).all()
            writes = db.exec(
                select(func.count())
                .select_from(PendingImapAction)
                .where(col(PendingImapAction.conversation_id).in_(raw_ids))
            ).one()
            imap_activity = db.exec(
                select(Activity.action, func.count())
                .where(
                    col(Activity.conversation_id).in_(raw_ids),
                    Activity.source == ActivitySource.imap,
                )
                .group_by(Activity.action)
            ).all()
        if echoes:
            self.result.problems.append(
                f"echo: {len(echoes)} activities read back from the mailbox on conversations "
                f"changed only through the API, e.g. {echoes[:3]}"
            )
        if writes:
            self.result.problems.append(
                f"echo: {writes} outbox actions on conversations changed only by the colleague"
            )
        counts = ", ".join(f"{a} {n}" for a, n in sorted(imap_activity))
        self.result.notes.append(f"read back from the colleague's changes: {counts or 'nothing'}")


def since(at: float | None, t0: float) -> float | None:
    return None if at is None else at - t0


def add_pool_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pool", type=int, default=10, help="conversations per kind of change (default 10)"
    )


# --- one worker mode, on its own Dovecot and database ----------------------------------------


def run_mode(args: argparse.Namespace, mode: str) -> RunResult:
    with seeded_box(
        f"imapdesk-bench-writeback-{mode}-",
        args.keep,
        args.db,
        synthetic_corpus(args.seed_count, seed=7),
        label=f"[{mode}] ",
        stopping_note=False,
    ) as box:
        return _measure(args, mode, box)


def _measure(args: argparse.Namespace, mode: str, box: SeededBox) -> RunResult:
    engine, settings = box.engine, box.settings
    result = RunResult(mode=mode, poll_seconds=settings.writeback_poll_seconds)
    mailbox_id = add_bench_mailbox(engine, settings, box.account)
    token = bench_api_token(engine, "write-back latency benchmark")
    rng = random.Random(args.seed)
    with started_worker(mode, settings, engine, box.data_dir / "worker.log") as worker:
        wait_caught_up(worker, engine, mailbox_id, box.seeded, 180)
        pools = pick_conversations(engine, mailbox_id, 4 * args.pool, rng)
        ours_flag, raw_flag, ours_move, raw_move = (
            pools[i * args.pool : (i + 1) * args.pool] for i in range(4)
        )
        say(f"[{mode}] worker caught up; starting the API, the IDLE clients, the colleague")
        with raw_clients(box.account) as raw:
            time.sleep(1.0)  # let the worker settle into IDLE
            with api_client(settings, engine, token) as http:
                run = Run(
                    args,
                    mode,
                    settings,
                    engine,
                    mailbox_id,
                    http,
                    raw.watchers,
                    raw.colleague,
                    result,
                )
                rounds = args.warmup + (args.trials + 1) // 2
                for r in range(rounds):
                    k = r % args.pool
                    for trial, pick in (
                        (run.ours_flag, ours_flag[k]),
                        (run.raw_flag, raw_flag[k]),
                        (run.ours_move, ours_move[k]),
                        (run.raw_move, raw_move[k]),
                    ):
                        sample = trial(pick)
                        if r >= args.warmup:
                            result.samples.append(sample)
                        # jitter wider than the outbox poll, so trials do not lock onto its phase
                        time.sleep(TRIAL_GAP + rng.uniform(0, TRIAL_JITTER))
                    raw.check()
                    if (r + 1) % 10 == 0 or r + 1 == rounds:
                        done = [s.seen for s in result.samples if s.side == "ours" and s.seen]
                        say(f"[{mode}] {r + 1}/{rounds} rounds; ours p50 so far {p50_so_far(done)}")
                run.check_echo(ours_flag + ours_move, raw_flag + raw_move)
        result.buffered += raw.buffered
    return result


# --- the report ------------------------------------------------------------------------------


def print_notes(notes: Sequence[str], buffered: int) -> None:
    """The run's notes, and how often the IDLE clients found changes behind `+ idling`."""
    for note in notes:
        print(note)
    if buffered:
        print(
            f"note: {buffered} times the raw IDLE clients found changes sent right "
            "behind `+ idling` (made while they were out of IDLE)"
        )


CHANGES = {
    "claim": ("POST /claim", "STORE +FLAGS \\Flagged"),
    "release": ("POST /release", "STORE -FLAGS \\Flagged"),
    "close": ('PATCH status "closed"', "MOVE INBOX -> Archive"),
    "open": ('PATCH status "open"', "MOVE Archive -> INBOX"),
}


def report(args: argparse.Namespace, result: RunResult) -> bool:
    ss = result.samples
    ours = [s for s in ss if s.side == "ours"]
    raw = [s for s in ss if s.side == "raw"]
    print()
    print(f"=== worker mode: {result.mode} ===")
    wake = (
        "woken by the API's commit (and explicitly after each API response)"
        if result.mode == "thread-notify"
        else "woken by the API's commit (imapdesk/kernel/wakeups.py)"
        if result.mode == "thread"
        else f"NOT woken: the outbox is polled every {result.poll_seconds * 1000:.0f} ms "
        "(writeback_poll_seconds)"
    )
    print(f"write-back: {wake}")
    print()
    rows: list[list[object]] = []
    for kind, (ours_name, raw_name) in CHANGES.items():
        rows.append(stat_row(f"raw {raw_name}", [s.seen for s in raw if s.kind == kind]))
        rows.append(stat_row(f"ours {ours_name}", [s.seen for s in ours if s.kind == kind]))
    rows.append(stat_row("raw, all changes", [s.seen for s in raw]))
    rows.append(stat_row("ours, all changes", [s.seen for s in ours]))
    print_stats("ms from t0 until seen", rows)
    print()
    moves = [s for s in ss if s.kind in ("close", "open")]
    print_stats(
        "moves: ms until the IDLE client saw",
        [
            stat_row("raw: EXPUNGE in the source", [s.expunge for s in moves if s.side == "raw"]),
            stat_row("raw: EXISTS in the target", [s.exists for s in moves if s.side == "raw"]),
            stat_row("ours: EXPUNGE in the source", [s.expunge for s in moves if s.side == "ours"]),
            stat_row("ours: EXISTS in the target", [s.exists for s in moves if s.side == "ours"]),
        ],
    )
    print()
    flags = [s for s in ours if s.kind in ("claim", "release")]
    ours_moves = [s for s in ours if s.kind in ("close", "open")]
    print_stats(
        "ours, where the time goes (ms from t0)",
        [
            stat_row("the HTTP request (claim/release)", [s.command for s in flags]),
            stat_row("the HTTP request (PATCH status)", [s.command for s in ours_moves]),
            stat_row("outbox row committed (created_at)", [s.action_created for s in ours]),
            stat_row("write-back done, flags (done_at)", [s.action_done for s in flags]),
            stat_row("write-back done, moves (done_at)", [s.action_done for s in ours_moves]),
            stat_row(
                "seen minus write-back done",
                [s.seen - s.action_done for s in ours if s.seen and s.action_done is not None],
            ),
            stat_row("raw: the IMAP command itself", [s.command for s in raw]),
            stat_row("raw: read back into the database", [s.readback for s in raw]),
        ],
    )
    print()
    raw_seen = [s.seen for s in raw if s.seen is not None]
    ours_seen = [s.seen for s in ours if s.seen is not None]
    if raw_seen and ours_seen:
        ours_p99 = percentile(ours_seen, 99)
        print(
            f"p50 difference (ours - raw): "
            f"{ms(percentile(ours_seen, 50) - percentile(raw_seen, 50))} ms; "
            f"p99 difference: {ms(ours_p99 - percentile(raw_seen, 99))} ms"
        )
        print(
            f"target: ours p99 {ms(ours_p99)} ms <= {ms(P99_TARGET)} ms: "
            f"{verdict(ours_p99 <= P99_TARGET)}"
        )
    print_notes(result.notes, result.buffered)
    if result.readback_misses:
        print()
        print(f"SUSPICIOUS, read side ({len(result.readback_misses)} of {len(raw)} raw changes):")
        for miss in result.readback_misses[:10]:
            print(f"  {miss}")
    if result.problems:
        print_failure(f"CORRECTNESS FAILURE ({len(result.problems)})", result.problems[:20])
        return False
    print(
        "correctness: every change reached the server on exactly the conversation's UIDs, the "
        "database agrees, no echo"
    )
    return True


def main(argv: list[str] | None = None) -> int:
    parser = latency_parser(
        __doc__,
        "python -m bench.writeback_latency",
        trials_help="measured changes of ours (default 200)",
        warmup=1,
        warmup_help="rounds not counted (default 1)",
        worker={
            "default": "subprocess,thread-notify",
            "help": "comma-separated worker modes, each on a fresh Dovecot and database: "
            f"{', '.join(WORKER_MODES)} or all (default subprocess,thread-notify)",
        },
    )
    add_pool_argument(parser)
    parser.add_argument("--seed", type=int, default=1, help="picks the conversations")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    modes = list(WORKER_MODES) if args.worker == "all" else args.worker.split(",")
    if any(m not in WORKER_MODES for m in modes):
        parser.error(f"--worker: choose from {', '.join(WORKER_MODES)} or all")
    if args.trials < 2 or args.pool < 1:
        parser.error("--trials must be at least 2 and --pool positive")
    setup_logging(args.verbose)
    # the raw IDLE clients share this process with uvicorn (and a thread worker): a short GIL
    # switch interval keeps their wake-up timestamps from waiting behind them
    sys.setswitchinterval(0.001)
    results = [run_mode(args, mode) for mode in modes]
    say("done")
    print()
    print(f"command:  {command_line()}")
    print(
        f"set-up:   per worker mode a fresh Dovecot (Maildir, IMAPS) and {args.db} database, a "
        f"box with {args.seed_count} messages, uvicorn in a thread, httpx; raw IDLE clients on "
        "INBOX and Archive and the colleague's connection in this process"
    )
    print(
        f"trials:   per mode {args.trials // 2 * 2} of ours + as many raw (+{args.warmup} "
        f"warm-up round(s) of 4, not counted), {TRIAL_GAP * 1000:.0f}-"
        f"{(TRIAL_GAP + TRIAL_JITTER) * 1000:.0f} ms apart (random), "
        f"{args.pool} conversations per kind of change (1-4 messages each)"
    )
    ok = all([report(args, r) for r in results])
    if len(results) > 1:
        print()
        print("=== summary: ours, all changes, ms from t0 until seen ===")
        rows = []
        for r in results:
            rows.append(
                stat_row(f"raw ({r.mode} run)", [s.seen for s in r.samples if s.side == "raw"])
            )
            rows.append(
                stat_row(f"ours, worker {r.mode}", [s.seen for s in r.samples if s.side == "ours"])
            )
        print_stats("", rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
