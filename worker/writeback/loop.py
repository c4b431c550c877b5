"""The write-back loop of one mailbox: its connection, its wake-ups, one pass over the outbox.

The jobs are elsewhere in this package: `ordering` (which actions are due), `flags` and `moves`
(the IMAP work), `failures` (what a failed attempt costs), `recording` (what came of it).
"""

from __future__ import annotations

import imaplib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from imapdesk.kernel import wakeups
from imapdesk.kernel.models import utcnow
from imapdesk.kernel.wakeups import Loop
from imapdesk.mail.imap import ImapAccount, ImapSession
from imapdesk.worker.backoff import Backoff
from imapdesk.worker.connections import MailboxConnections, Role
from imapdesk.worker.folder_sync import FolderLog, SyncContext
from imapdesk.worker.writeback.failures import (
    CANNOT_CONNECT,
    CONNECTION_LOST,
    WriteBackError,
    error_message,
    expected,
)
from imapdesk.worker.writeback.flags import FlagStores
from imapdesk.worker.writeback.moves import Moves
from imapdesk.worker.writeback.ordering import ActionOrder, queued_actions
from imapdesk.worker.writeback.plan import Outcome, Plan, load_plan
from imapdesk.worker.writeback.recording import OutcomeRecorder

log = logging.getLogger(__name__)

# a connection unused for longer is checked with NOOP before the next action
NOOP_AFTER_SECONDS = 60.0


class WriteBack:
    """Applies one mailbox's outbox. `run()` returns only when asked to stop."""

    def __init__(
        self,
        ctx: SyncContext,
        mailbox_id: int,
        name: str,
        account: ImapAccount,
        connections: MailboxConnections | None = None,
    ) -> None:
        self.ctx = ctx
        self.mailbox_id = mailbox_id
        self.name = name
        self.account = account
        self.log = FolderLog(log, {"label": name})
        settings = ctx.settings
        self.backoff = Backoff(settings.reconnect_initial_seconds, settings.reconnect_max_seconds)
        self.flags = FlagStores(self.log)
        self.moves = Moves(ctx.engine, mailbox_id, self.log)
        self.recorder = OutcomeRecorder(ctx, mailbox_id, self.log)
        # the mailbox's shared connections (worker/connections.py); None: one of its own
        self.connections = connections
        self._connection: ImapSession | None = None
        # how often the outbox is looked at beside the wake-ups (longer where the worker's one
        # outbox watch wakes it: worker/outbox_watch.py)
        self.poll_seconds = settings.writeback_poll_seconds
        self._last_used = 0.0

    # -- outer loop ---------------------------------------------------------------------------
    def run(self) -> None:
        # woken at once when a commit in this process adds work for this mailbox; the poll
        # finds what other processes (`imapdesk serve` beside `imapdesk worker`) committed
        wake = wakeups.register(Loop.WRITEBACK, self.mailbox_id)
        try:
            while not self.ctx.stop.is_set():
                wake.clear()  # a wake-up during the drain makes the wait below return
                try:
                    busy = self.drain()
                    self.backoff.reset()
                except CANNOT_CONNECT as exc:
                    self._discard()
                    self.log.warning("write-back connection failed: %s", error_message(exc))
                    if self.backoff.wait(self.ctx.stop):
                        break
                    continue
                except Exception:  # a bug must not end the worker: log it and go on
                    self._discard()
                    self.log.exception("write-back: unexpected error")
                    if self.backoff.wait(self.ctx.stop):
                        break
                    continue
                if not busy:
                    wake.wait(self.poll_seconds)
        finally:
            wakeups.unregister(Loop.WRITEBACK, self.mailbox_id, wake)
            self._discard()

    def drain(self) -> bool:
        """Apply every due action once, in id order; True when some action was applied."""
        order = ActionOrder(utcnow())
        applied = False
        for action in queued_actions(self.ctx.engine, self.mailbox_id):
            if self.ctx.stop.is_set():
                break
            if not order.may_run(action):
                continue
            if self.apply_action(action.id):
                applied = True
            else:
                order.failed(action)
        return applied

    def apply_action(self, action_id: int) -> bool:
        """Apply one action and record it; False when it failed (and waits or is failed)."""
        plan = load_plan(self.ctx.engine, self.mailbox_id, action_id)
        if plan is None:
            return True
        # cannot connect: the loop backs off, no attempt is counted
        with self._turn() as imap:
            outcome = Outcome()
            try:
                self._apply(imap, plan, outcome)
            except CONNECTION_LOST:
                if outcome.updates:
                    self.recorder.partial(plan, outcome)
                raise
            except Exception as exc:
                if not expected(exc):
                    self.log.exception("action %d: unexpected error", plan.action_id)
                self.recorder.failed(plan, outcome, exc)
                return False
            self.recorder.done(plan, outcome)
            return True

    def _apply(self, imap: ImapSession, plan: Plan, outcome: Outcome) -> None:
        if plan.kind == "flags":
            self.flags.apply(imap, plan, outcome)
        elif plan.kind == "move":
            self.moves.apply(imap, plan, outcome)
        else:
            raise WriteBackError(f"unknown action kind {plan.kind!r}", permanent=True)

    # -- the connection -----------------------------------------------------------------------
    @contextmanager
    def _turn(self) -> Iterator[ImapSession]:
        """The connection for one action: the mailbox's write connection, in turn with the
        other parts that share it, or one of its own."""
        if self.connections is None:
            yield self._session()
            return
        with self.connections.hold(Role.WRITE) as imap:
            yield imap

    def _session(self) -> ImapSession:
        if self._connection is not None and time.monotonic() - self._last_used > NOOP_AFTER_SECONDS:
            try:
                self._connection.noop()
            except (imaplib.IMAP4.error, OSError):
                self._discard()
        if self._connection is None:
            self._connection = ImapSession(self.account)
            self.log.info("write-back connected")
        self._last_used = time.monotonic()
        return self._connection

    def _discard(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
