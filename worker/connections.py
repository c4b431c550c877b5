"""The IMAP connections of one mailbox: few, shared, and fewer when the server says so.

Servers limit the connections of a user: Dovecot 10 per user and client address by default,
Google 15 per account, and the colleagues' mail clients count too (Thunderbird keeps 5). So the
parts of the worker take turns at a few connections, by role:
- `push` hears of new mail: NOTIFY with no folder selected, or IDLE (NOOP polling) on INBOX;
- `watch` checks and takes in the other followed folders (INBOX too where NOTIFY hears it);
- `write` runs the write-back and files the sender's copies.

| how mail is heard | 3 or more allowed   | 2 allowed           | 1 allowed                |
| ----------------- | ------------------- | ------------------- | ------------------------ |
| NOTIFY            | push; watch + write | push; watch + write | all on one, INBOX polled |
| IDLE, polling     | push; watch; write  | push; watch + write | all on one, INBOX polled |

A turn is a first-come, first-served lock per connection; a long job (a folder's first sync)
lets waiting parts go between its batches (`Turn.pause`), so a claim never waits for it.

When the server refuses a connection as one too many (`TooManyConnections`: `[LIMIT]`,
`[UNAVAILABLE]`, or words to that effect), the connections allowed drop to those open and the
roles share them; writes wait for their turn in the outbox, none is dropped; after
`connection_retry_seconds` the full number is tried again. What the mailbox runs on, and the
server's refusal in its own words, is recorded in its capabilities (`connections`) and shown
in its sync health (`imapdesk.domain.mailboxes.capabilities.sync_notes`).
"""

from __future__ import annotations

import collections
import imaplib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from imapdesk.kernel.errors import ImapdeskError
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import ImapAccount, ImapSession
from imapdesk.mail.imap.session import TooManyConnections

log = logging.getLogger(__name__)

# a connection unused for longer is checked with NOOP before its next turn
NOOP_AFTER_SECONDS = 60.0
# more connections are tried again after `connection_retry_seconds`, twice that after a
# second refusal in a row, and so on up to this
RETRY_MAX_SECONDS = 1800.0


class Role(StrEnum):
    PUSH = "push"
    WATCH = "watch"
    WRITE = "write"


class Mode(StrEnum):
    """How new mail is heard."""

    NOTIFY = "notify"  # RFC 5465: one connection hears every folder
    IDLE = "idle"  # IDLE on INBOX, the other folders checked with STATUS
    POLL = "poll"  # NOOP on INBOX every push_poll_seconds (no IDLE, a lazy one, one connection)


def breaks_connection(exc: BaseException) -> bool:
    """Whether a failure leaves the connection unusable (anything but a complete answer)."""
    if isinstance(exc, imaplib.IMAP4.abort | OSError):
        return True
    return not isinstance(exc, imaplib.IMAP4.error | ImapdeskError)


class NoTurn(Exception):
    """No turn at a connection within the time given (or the caller holds it already)."""


class _TurnLock:
    """A lock that serves its waiters in order, says how many wait and who holds it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()
        self.owner: int | None = None

    def acquire(self, timeout: float | None = None) -> None:
        me = object()
        ident = threading.get_ident()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self.owner == ident:
                raise NoTurn("this thread holds the connection already")
            self._queue.append(me)
            try:
                while self.owner is not None or self._queue[0] is not me:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise NoTurn(f"no turn within {timeout} s")
                    self._cond.wait(left)
            except BaseException:
                self._queue.remove(me)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self.owner = ident

    def try_acquire(self) -> bool:
        with self._cond:
            if self.owner is not None or self._queue:
                return False
            self.owner = threading.get_ident()
            return True

    def release(self) -> None:
        with self._cond:
            self.owner = None
            self._cond.notify_all()

    def waiting(self) -> int:
        return len(self._queue)


@dataclass
class Lane:
    """One connection slot: its turn lock and, while open, its session."""

    index: int
    lock: _TurnLock = field(default_factory=_TurnLock)
    session: ImapSession | None = None
    last_used: float = 0.0
    # who had the last turn, on which session: a part that finds them unchanged finds the
    # connection as it left it (its folder still selected)
    last_holder: int | None = None
    last_session: ImapSession | None = None


class Turn:
    """A role's turn at a connection (see `MailboxConnections.turn`)."""

    def __init__(self, pool: MailboxConnections, role: Role, lane: Lane, continued: bool) -> None:
        self.pool = pool
        self.role = role
        self.lane: Lane | None = lane
        # the connection is as this thread left it at its last turn (same session, no other
        # part had it since)
        self.continued = continued

    @property
    def session(self) -> ImapSession:
        assert self.lane is not None and self.lane.session is not None
        return self.lane.session

    def pause(self) -> bool:
        """Let the parts waiting for this connection have it, then take it again; True when
        the connection is not as it was (select again)."""
        lane = self.lane
        assert lane is not None
        if not lane.lock.waiting() and self.pool.lane_for(self.role) is lane:
            return False
        self.lane = None
        self.pool._give_back(lane)
        self.lane, self.continued = self.pool._take(self.role)
        return not self.continued


class MailboxConnections:
    """At most `limit` IMAP connections of one mailbox, opened when first needed and shared by
    role (see the module's table). Thread-safe."""

    def __init__(
        self,
        account: ImapAccount,
        settings: Settings,
        *,
        name: str,
        mode: Mode,
        limit: int | None = None,
        on_health: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.account = account
        self.settings = settings
        self.name = name
        self.mode = mode
        self.configured = max(1, limit or settings.imap_max_connections)
        self.limit = self.configured
        self.lanes = [Lane(i) for i in range(3)]
        # grows whenever the layout changes: a part holding a connection for long (the push
        # listener) lets it go and asks again
        self.version = 0
        self.on_health = on_health
        self._mutex = threading.Lock()
        self._refused_at: float | None = None
        self._retry_in = settings.connection_retry_seconds
        self._retrying = False  # the full number is being tried again
        self._refusal: str | None = None
        self._refused_index: int | None = None
        self._refusal_wall: str | None = None
        self._recorded: dict[str, Any] | None = None

    # -- the layout -----------------------------------------------------------------------------
    def planned(self) -> int:
        """How many connections the layout uses now."""
        return min(self.limit, 2 if self.mode is Mode.NOTIFY else 3)

    def push_mode(self) -> Mode:
        """How INBOX is heard now: one connection for everything can only poll."""
        return Mode.POLL if self.planned() < 2 else self.mode

    def lane_for(self, role: Role) -> Lane:
        n = self.planned()
        if n == 1 or role is Role.PUSH:
            return self.lanes[0]
        if role is Role.WRITE and n >= 3:
            return self.lanes[2]
        return self.lanes[1]

    def open_count(self) -> int:
        return sum(1 for lane in self.lanes if lane.session is not None)

    # -- turns ---------------------------------------------------------------------------------
    @contextmanager
    def turn(self, role: Role, *, wait: float | None = None) -> Iterator[Turn]:
        """A turn at the role's connection, opened if needed. A refusal for too many
        connections makes the roles share the ones open (and the turn is at one of those);
        with none open, TooManyConnections is raised: the caller backs off. With `wait`,
        NoTurn when the connection is not free within that many seconds."""
        lane, continued = self._take(role, wait)
        turn = Turn(self, role, lane, continued)
        try:
            yield turn
        except BaseException as exc:
            if turn.lane is not None and breaks_connection(exc):
                self._close(turn.lane)
            raise
        finally:
            if turn.lane is not None:
                self._give_back(turn.lane)

    @contextmanager
    def hold(self, role: Role, *, wait: float | None = None) -> Iterator[ImapSession]:
        """A turn at the role's connection, for a short job."""
        with self.turn(role, wait=wait) as turn:
            yield turn.session

    def _take(self, role: Role, wait: float | None = None) -> tuple[Lane, bool]:
        while True:
            self._try_more_again()
            lane = self.lane_for(role)
            lane.lock.acquire(wait)
            if self.lane_for(role) is not lane:  # the layout changed while this one waited
                lane.lock.release()
                continue
            try:
                self._open(lane)
            except TooManyConnections as exc:
                lane.lock.release()
                if self._refused(lane, exc):
                    continue  # the role now shares a connection that is open
                raise
            except BaseException:
                lane.lock.release()
                raise
            me = threading.get_ident()
            continued = lane.last_holder == me and lane.last_session is lane.session
            lane.last_holder, lane.last_session = me, lane.session
            return lane, continued

    def _give_back(self, lane: Lane) -> None:
        lane.last_used = time.monotonic()
        if lane.index >= self.planned():  # left over from a larger layout
            self._close(lane)
        lane.lock.release()

    def _open(self, lane: Lane) -> None:
        if lane.session is not None and time.monotonic() - lane.last_used > NOOP_AFTER_SECONDS:
            try:
                lane.session.noop()
            except (imaplib.IMAP4.error, OSError):
                self._close(lane)
        if lane.session is not None:
            return
        lane.session = ImapSession(self.account)
        lane.last_used = time.monotonic()
        log.info("[%s] IMAP connection %d of %d open", self.name, self.open_count(), self.limit)
        with self._mutex:
            if self._refused_index is not None and lane.index >= self._refused_index:
                # the connection once refused could be had: no refusal stands
                self._refusal = self._refusal_wall = None
                self._refused_index = None
                self._retrying = False
                self._retry_in = self.settings.connection_retry_seconds
        self.record_health()

    def _close(self, lane: Lane) -> None:
        session, lane.session = lane.session, None
        if session is not None:
            session.close()

    def _refused(self, lane: Lane, exc: TooManyConnections) -> bool:
        """The server refused `lane` a connection as one too many: share those open. True when
        the caller's role now has an open connection to go to."""
        with self._mutex:
            open_lanes = [x for x in self.lanes if x is not lane and x.session is not None]
            if self._retrying:  # refused again: wait longer before the next try
                self._retry_in = min(self._retry_in * 2, RETRY_MAX_SECONDS)
                self._retrying = False
            self._refused_at = time.monotonic()
            self._refused_index = lane.index
            self._refusal = exc.message
            self._refusal_wall = datetime.now(UTC).isoformat(timespec="seconds")
            before = self.limit
            self.limit = max(1, len(open_lanes))
            if self.limit != before:
                self.version += 1
        # a connection beyond the new layout is closed (now, or when its holder gives it
        # back), so that the one refused can be had next time
        for extra in open_lanes:
            if extra.index >= self.limit and extra.lock.try_acquire():
                self._close(extra)
                extra.lock.release()
        log.warning(
            "[%s] the server refused another IMAP connection (%s): working on %d",
            self.name,
            exc.message,
            self.limit,
        )
        self.record_health()
        return bool(open_lanes) and lane.index >= self.limit

    def _try_more_again(self) -> None:
        with self._mutex:
            if (
                self.limit >= self.configured
                or self._refused_at is None
                or time.monotonic() - self._refused_at < self._retry_in
            ):
                return
            self._refused_at = None
            self._retrying = True
            self.limit = self.configured
            self.version += 1
        log.info("[%s] trying %d IMAP connections again", self.name, self.configured)

    def use(self, mode: Mode) -> None:
        """Hear new mail this way (chosen before the parts start)."""
        with self._mutex:
            if mode is self.mode:
                return
            self.mode = mode
            self.version += 1
        self.record_health()

    def fall_back(self, mode: Mode, why: str) -> None:
        """Hear new mail another way from now on (NOTIFY refused: IDLE)."""
        log.warning("[%s] %s: hearing new mail by %s instead", self.name, why, mode.value)
        with self._mutex:
            self.mode = mode
            self.version += 1
        self.record_health()

    def close(self) -> None:
        """Close every connection (the parts have stopped)."""
        for lane in self.lanes:
            self._close(lane)
        self.record_health()  # none open

    # -- health --------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """What the mailbox runs on, for its sync health."""
        return {
            "mode": self.mode.value,
            "push": self.push_mode().value,
            "max": self.configured,
            "allowed": self.limit,
            "open": self.open_count(),
            "refused": self._refusal,
            "refused_at": self._refusal_wall,
        }

    def record_health(self) -> None:
        """Tell `on_health` what changed (only what changed: it writes to the database); what
        it could not record is told again with the next change."""
        now = self.health()
        if now == self._recorded or self.on_health is None:
            return
        try:
            if self.on_health(now):
                self._recorded = now
        except Exception:  # health is told, never a reason to fail a connection
            log.exception("[%s] could not record the connections' health", self.name)
