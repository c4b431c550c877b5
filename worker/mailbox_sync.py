"""One mailbox's folders on its few shared connections (worker/connections.py): a push listener
hears of new mail, a watch checks the folders, the write-back and the sender take their turns.

How new mail is heard (`push_mode_for`):
- **IDLE, with NOTIFY where the server has it**: the push connection selects the first followed
  folder (INBOX) read-only and stays in IDLE; with NOTIFY (RFC 5465) it also hears the other
  followed folders. It takes nothing in itself: whatever it hears has the watch check that
  folder on the shared connection, so it never leaves its IDLE to catch up. What changed
  between two IDLEs (one is re-issued, or broken off for the periodic look) is told right after
  the next begins, in the same packet as its continuation (Dovecot), which `Idle` reads from
  the buffer; and each IDLE it begins has INBOX checked once the server's watch is on, for a
  server that tells nothing of what came before its IDLE. Folders NOTIFY does not tell of are
  polled with STATUS (see `imapdesk.mail.imap.push` on Dovecot's NOTIFY), and every
  `folder_check_seconds` STATUS of the others is compared on the push connection.
- **Polling**: INBOX is asked with NOOP every `push_poll_seconds` where the server has no IDLE,
  where the probe measured its IDLE lazy (`measure_push`), or when one connection must do
  everything.

Without NOTIFY, the folders other than INBOX are polled with STATUS every `folder_poll_seconds`
and checked when it changed; without CONDSTORE their flags are read again every
`flag_rescan_seconds`. A message that leaves a folder has the watch look at every folder at
once (a move by a plain client is an arrival elsewhere), and it is judged only once that look
is done.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from imapclient.exceptions import IMAPClientError

from imapdesk.kernel.errors import MailServerError
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import ImapSession
from imapdesk.mail.imap.push import (
    Idle,
    StatusNews,
    measure_push_delay,
    notifiable,
    notify_set,
    status,
    take_statuses,
)
from imapdesk.mail.imap.session import TooManyConnections
from imapdesk.worker.backoff import Backoff
from imapdesk.worker.connections import MailboxConnections, Mode, NoTurn, Role, Turn
from imapdesk.worker.folder_sync import CONNECTION_ERRORS, FolderLog, FolderSync, SyncContext

log = logging.getLogger(__name__)

# a push delay measured this long ago is measured again at the next connect
MEASURE_AGAIN_SECONDS = 24 * 3600


def push_mode_for(settings: Settings, capabilities: dict[str, Any]) -> Mode:
    """How new mail is heard: the setting, what the server offers and what the probe found."""
    names = {str(c).upper() for c in capabilities.get("capabilities") or ()}
    idle, notify = "IDLE" in names, "NOTIFY" in names
    want = settings.imap_push
    if want == "poll" or not (idle or notify):
        return Mode.POLL
    if want == "idle":
        return Mode.IDLE if idle else Mode.POLL
    if want == "notify" and notify:
        return Mode.NOTIFY
    measured = capabilities.get("push") or {}
    if want == "auto" and measured.get("lazy"):
        return Mode.POLL
    if notify:
        return Mode.NOTIFY
    return Mode.IDLE if idle else Mode.POLL


def measure_due(settings: Settings, capabilities: dict[str, Any]) -> str | None:
    """The mechanism whose delay is to be measured now (None: nothing to measure): IDLE on a
    selected folder, which is how INBOX is heard (NOTIFY or not)."""
    if settings.imap_push != "auto":
        return None
    names = {str(c).upper() for c in capabilities.get("capabilities") or ()}
    mechanism = "idle" if "IDLE" in names else None
    measured = capabilities.get("push") or {}
    if mechanism is None:
        return None
    at = measured.get("measured_at")
    try:
        age = time.time() - datetime.fromisoformat(str(at)).timestamp() if at else None
    except ValueError:
        age = None
    if measured.get("mechanism") == mechanism and age is not None and age < MEASURE_AGAIN_SECONDS:
        return None
    return mechanism


def measure_push(pool: MailboxConnections, mechanism: str, settings: Settings) -> dict[str, Any]:
    """Time how soon the push connection hears of an APPEND made on another one (the probe's
    push delay, stored in the mailbox's capabilities as `push`)."""
    record: dict[str, Any] = {
        "mechanism": mechanism,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        with pool.hold(Role.PUSH) as listener, pool.hold(Role.WATCH, wait=0) as writer:
            prefix = _personal_prefix(listener)
            delay = measure_push_delay(listener, writer, mechanism=mechanism, prefix=prefix)
    except (NoTurn, TooManyConnections):
        record["error"] = "not measured: one connection only"
        return record
    except CONNECTION_ERRORS as exc:
        record["error"] = f"not measured: {getattr(exc, 'message', None) or exc}"
        return record
    record["delay_ms"] = None if delay.seconds is None else round(delay.seconds * 1000)
    record["waited_s"] = delay.waited
    record["lazy"] = delay.lazy(settings.push_lazy_seconds)
    return record


def _personal_prefix(imap: ImapSession) -> str:
    """The personal namespace's prefix (`INBOX.` on Courier, Cyrus and many hosts)."""
    if not imap.has("NAMESPACE"):
        return ""
    try:
        personal = imap.client.namespace().personal
    except (IMAPClientError, OSError):
        return ""
    if not personal:
        return ""
    prefix = personal[0][0]
    return prefix.decode() if isinstance(prefix, bytes) else str(prefix or "")


class FolderWatch:
    """Checks the mailbox's folders on the watch connection: each folder when told it changed
    (NOTIFY, a look asked for), the others whose STATUS changed since the last poll."""

    def __init__(
        self,
        ctx: SyncContext,
        pool: MailboxConnections,
        syncs: list[FolderSync],
        push_folder: str | None,
        name: str,
        *,
        condstore: bool = True,
    ) -> None:
        self.ctx = ctx
        self.pool = pool
        self.syncs = {s.folder_name: s for s in syncs}
        self.push_folder = push_folder
        # without CONDSTORE neither NOTIFY nor STATUS tells of a flag change: every folder is
        # polled, and its flags read again every `flag_rescan_seconds`
        self.condstore = condstore
        self.log = FolderLog(log, {"label": f"{name}/watch"})
        settings = ctx.settings
        self.backoff = Backoff(settings.reconnect_initial_seconds, settings.reconnect_max_seconds)
        self._cond = threading.Condition()
        self._pending: set[str] = set(self.syncs)  # everything is checked once at the start
        self._asked = 0  # looks asked for so far
        self._looked: dict[str, int] = dict.fromkeys(self.syncs, 0)
        self._known: dict[str, StatusNews] = {}
        self._next_poll: dict[str, float] = {}
        self._checked_at: dict[str, float] = {}
        for sync in syncs:
            sync.look_elsewhere = self.look

    # -- what others tell it ----------------------------------------------------------------
    def poke(self, names: Iterable[str]) -> None:
        """These folders changed (or may have): check them."""
        with self._cond:
            self._pending.update(n for n in names if n in self.syncs)
            self._cond.notify_all()

    def look(self) -> Callable[[], bool]:
        """Ask for every folder to be checked; returns whether that is done."""
        with self._cond:
            self._asked += 1
            asked = self._asked
            self._pending.update(self.syncs)
            self._cond.notify_all()

        def done() -> bool:
            with self._cond:
                return all(seen >= asked for n, seen in self._looked.items() if self._watches(n))

        return done

    def check_now(self, name: str) -> None:
        """Check a folder from the calling thread (the push listener, which just heard of it:
        no wait for this watch's thread to wake). When the folder is being checked already,
        or the check fails, this watch's thread does it."""
        sync = self.syncs[name]
        with self._cond:
            self._pending.discard(name)
        if not sync.busy.acquire(blocking=False):
            self.poke([name])  # checked now: checked again after, for what came meanwhile
            return
        try:
            self._check(sync, polled=False)
            sync.judge_vanished()
        except Exception as exc:  # the watch's thread tries again, backing off
            self.log.info("checking %s at once failed: %s", name, exc)
            self.poke([name])
        finally:
            sync.busy.release()

    def _watches(self, name: str) -> bool:
        """Whether this watch checks the folder (the push folder is the listener's while it
        polls it)."""
        return name != self.push_folder or self.pool.push_mode() is not Mode.POLL

    def _polls(self, name: str) -> bool:
        """Whether the folder's STATUS is polled: nobody tells of its changes (the push folder
        is heard by IDLE or polled by the listener)."""
        if name == self.push_folder:
            return False
        heard = self.pool.push_mode() is Mode.NOTIFY and notifiable(name) and self.condstore
        return not heard

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        while not self.ctx.stop.is_set():
            name, polled = self._next()
            if name is None:
                self._run_deferred()
                self._wait()
                continue
            sync = self.syncs[name]
            if not self._watches(name) or not sync.busy.acquire(blocking=False):
                continue  # the push listener has it
            try:
                self._check(sync, polled)
                self.backoff.reset()
            except CONNECTION_ERRORS as exc:
                sync.record_error(exc)
                self.poke([name])
                if self.backoff.wait(self.ctx.stop):
                    break
            except Exception as exc:  # a bug must not end the worker: record it and go on
                self.log.exception("unexpected error checking %s", name)
                sync.record_error(exc)
                self.poke([name])
                if self.backoff.wait(self.ctx.stop):
                    break
            finally:
                sync.busy.release()
            self._run_deferred()

    def _next(self) -> tuple[str | None, bool]:
        """The next folder to check: one told of first (the push folder before the others),
        else one whose poll is due."""
        with self._cond:
            told = [n for n in self._pending if self._watches(n)]
            if told:
                name = min(told, key=lambda n: (n != self.push_folder, n))
                self._pending.discard(name)
                return name, False
            now = time.monotonic()
            due = [n for n in self.syncs if self._polls(n) and self._next_poll.get(n, 0) <= now]
            if due:
                name = min(due, key=lambda n: self._next_poll.get(n, 0))
                self._next_poll[name] = now + self.ctx.settings.folder_poll_seconds
                return name, True
            return None, False

    def _wait(self) -> None:
        now = time.monotonic()
        polls = [t for n, t in self._next_poll.items() if self._polls(n)]
        timeout = min([1.0, *(max(0.0, t - now) for t in polls)])
        with self._cond:
            if not any(self._watches(n) for n in self._pending):
                self._cond.wait(timeout)

    def _check(self, sync: FolderSync, polled: bool) -> None:
        name = sync.folder_name
        with self._cond:
            started = self._asked
        with self.pool.turn(Role.WATCH) as turn:
            if polled and not self._changed(turn.session, sync):
                with self._cond:
                    self._looked[name] = max(self._looked[name], started)
                return
            sync.between_batches = _going_on(turn, sync)
            try:
                sync.check(turn.session)
            finally:
                sync.between_batches = None
        self._checked_at[name] = time.monotonic()
        with self._cond:
            self._looked[name] = max(self._looked[name], started)

    def _changed(self, imap: ImapSession, sync: FolderSync) -> bool:
        """Whether a polled folder's STATUS changed since the last poll (or a flag rescan is
        due where STATUS cannot tell flag changes)."""
        name = sync.folder_name
        now_status, _others = status(imap, name)
        before = self._known.get(name)
        self._known[name] = now_status
        if before is None or before.differs(now_status):
            return True
        rescan = self.ctx.settings.flag_rescan_seconds
        return not imap.condstore and time.monotonic() - self._checked_at.get(name, 0) >= rescan

    def _run_deferred(self) -> None:
        for name, sync in self.syncs.items():
            if not self._watches(name) or not sync.busy.acquire(blocking=False):
                continue
            try:
                sync.judge_vanished()
            except Exception:
                self.log.exception("judging vanished messages of %s failed", name)
            finally:
                sync.busy.release()


def _going_on(turn: Turn, sync: FolderSync) -> Callable[[ImapSession], ImapSession]:
    """Between two batches of a catch-up: others waiting for the connection have it, then the
    folder is selected again (it must still be the same folder)."""
    first = sync.folder_name

    def go_on(imap: ImapSession) -> ImapSession:
        uidvalidity = sync.selected_uidvalidity
        if not turn.pause():
            return imap
        session = turn.session
        again = session.select(first, readonly=True)
        if uidvalidity is not None and again.uidvalidity != uidvalidity:
            raise MailServerError(f"{first} was replaced while it was read: reading it again")
        return session

    return go_on


class PushListener:
    """Hears of new mail on the push connection, in the way the connections' layout says."""

    def __init__(
        self,
        ctx: SyncContext,
        pool: MailboxConnections,
        watch: FolderWatch,
        push_sync: FolderSync | None,
        followed: list[str],
        name: str,
        on_error: Callable[[BaseException | None], None],
    ) -> None:
        self.ctx = ctx
        self.pool = pool
        self.watch = watch
        self.push_sync = push_sync
        self.followed = followed
        self.log = FolderLog(log, {"label": f"{name}/push"})
        self.on_error = on_error
        settings = ctx.settings
        self.backoff = Backoff(settings.reconnect_initial_seconds, settings.reconnect_max_seconds)

    def run(self) -> None:
        while not self.ctx.stop.is_set():
            version = self.pool.version
            try:
                if self.push_sync is None:
                    self.ctx.stop.wait(1.0)
                elif self.pool.push_mode() is Mode.POLL:
                    self._poll(self.push_sync, version)
                else:
                    self._listen(self.push_sync, version)
                continue
            except CONNECTION_ERRORS as exc:
                self.log.warning("listening failed: %s", getattr(exc, "message", None) or exc)
                self.on_error(exc)
            except Exception as exc:  # a bug must not end the worker: record it and go on
                self.log.exception("unexpected error")
                self.on_error(exc)
            if self.backoff.wait(self.ctx.stop):
                break

    # -- IDLE (and NOTIFY) ----------------------------------------------------------------------
    def _listen(self, sync: FolderSync, version: int) -> None:
        """Select the push folder read-only and stay in IDLE, telling the watch what changed."""
        settings = self.ctx.settings
        folder = sync.folder_name
        others = [n for n in self.followed if n != folder]
        with self.pool.turn(Role.PUSH) as turn:
            imap = turn.session
            heard_others = self._notify(imap, others)
            imap.select(folder, readonly=True)
            self.on_error(None)
            self.backoff.reset()
            known: dict[str, StatusNews] = {}
            idle = Idle(imap)
            compared = started = time.monotonic()
            # whatever changed before this connection listened: every folder is looked at
            unheard = self.followed
            try:
                while not self.ctx.stop.is_set() and self.pool.version == version:
                    if not idle.idling:
                        self.before_idle()
                        idle.start()
                        started = time.monotonic()
                        # what changed before this IDLE began goes untold: looked at now that
                        # the server's watch is on, so nothing falls between
                        self.watch.poke(unheard)
                        unheard = [folder]
                    idle.wait(1.0)
                    if imap.take_news():
                        # taken in from this thread, on the watch's connection: the IDLE goes on
                        # (what comes meanwhile waits in the socket)
                        self.watch.check_now(folder)
                    self._heard(take_statuses(imap), known)
                    now = time.monotonic()
                    check = heard_others and now - compared >= settings.folder_check_seconds
                    if check or now - started >= settings.idle_reissue_seconds:
                        idle.done()
                        if imap.take_news():
                            self.watch.poke([folder])
                        self._heard(take_statuses(imap), known)
                        if check:
                            self._compare(imap, [n for n in others if notifiable(n)], known)
                            compared = time.monotonic()
            finally:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    idle.done()
                    if self.pool.version != version and heard_others:
                        imap.command("NOTIFY", "NONE")  # the connection may serve others now
                        take_statuses(imap)

    def _notify(self, imap: ImapSession, others: list[str]) -> bool:
        """Where the layout hears by NOTIFY: ask it for the other folders (and the selected
        one, as IDLE tells of it). False when it is not to be used."""
        if self.pool.push_mode() is not Mode.NOTIFY:
            return False
        reply = notify_set(imap, [n for n in others if notifiable(n)], selected=True)
        if not reply.ok:
            self.pool.fall_back(Mode.IDLE, f"the server refused NOTIFY ({reply.said})")
            return False
        return True

    def before_idle(self) -> None:
        """Called right before each IDLE begins: the instant no server tells of (the tests make
        a change here)."""

    def _heard(self, statuses: list[StatusNews], known: dict[str, StatusNews]) -> None:
        told = []
        for news in statuses:
            if news.folder in self.watch.syncs:
                before = known.get(news.folder)
                known[news.folder] = before.merged(news) if before is not None else news
                told.append(news.folder)
        if told:
            self.watch.poke(told)

    def _compare(self, imap: ImapSession, names: list[str], known: dict[str, StatusNews]) -> None:
        """STATUS of these folders, against what was heard: a difference is checked (NOTIFY
        may have stopped telling of one: see `imapdesk.mail.imap.push`)."""
        for name in names:
            now, others = status(imap, name)
            self._heard(others, known)
            before = known.get(name)
            known[name] = now
            if before is None or before.differs(now):
                self.watch.poke([name])

    # -- polling the push folder -------------------------------------------------------------
    def _poll(self, sync: FolderSync, version: int) -> None:
        fresh = True
        while not self.ctx.stop.is_set() and self.pool.version == version:
            with sync.busy:
                with self.pool.turn(Role.PUSH) as turn:
                    imap = turn.session
                    if fresh or not turn.continued:
                        sync.check(imap)  # selected anew: whatever it had is read again
                        fresh = False
                        self.on_error(None)
                        self.backoff.reset()
                    else:
                        sync.poll(imap)
                sync.judge_vanished()
            self.ctx.stop.wait(self.ctx.settings.push_poll_seconds)
