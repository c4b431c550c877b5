"""The worker: which mailboxes and folders to watch, and the parts that keep each in step.

Each mailbox is probed at connect (capabilities, folders and their special-use roles); its watched
folders each get a FolderSync. By default a mailbox's parts share two or three IMAP connections
(worker/connections.py, worker/mailbox_sync.py): a push listener, a watch over the folders, the
write-back and the sender. `imap_connection_mode = per_folder` gives each followed folder, the
write-back and the sender a connection and a thread of their own (the earlier design, kept to
compare with). A mailbox that fails only backs off itself; the others go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Engine
from sqlmodel import select

from imapdesk.domain.conversations.snooze import wake_snoozed
from imapdesk.domain.mailboxes.config import ensure_folder
from imapdesk.domain.mailboxes.folders import folder_problems, folder_settings, setup_record
from imapdesk.domain.mailboxes.oauth2 import blocked_mailbox_ids
from imapdesk.domain.mailboxes.servers import imap_account
from imapdesk.domain.sync.ingest import INGEST_LOCK, lock_for_ingest
from imapdesk.domain.sync.readback import apply_mail_changes
from imapdesk.kernel import wakeups
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Folder, FolderRole, Mailbox, utcnow
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import ImapAccount, ImapSession
from imapdesk.mail.imap.folders import FolderSetup, find_folder, set_up_folders
from imapdesk.mail.imap.probe import probe
from imapdesk.worker.backoff import Backoff
from imapdesk.worker.connections import MailboxConnections
from imapdesk.worker.folder_sync import CONNECTION_ERRORS, FolderSync, ProgressCallback, SyncContext
from imapdesk.worker.housekeeping import Housekeeping
from imapdesk.worker.mailbox_folders import folder_roles
from imapdesk.worker.mailbox_sync import (
    FolderWatch,
    PushListener,
    measure_due,
    measure_push,
    push_mode_for,
)
from imapdesk.worker.notifications import Notifier
from imapdesk.worker.oauth2_tokens import TokenRefresher
from imapdesk.worker.outbox_watch import LOOP_POLL_SECONDS, OutboxWatch
from imapdesk.worker.parse_pool import Parser, default_parse_processes
from imapdesk.worker.rules import RulesLoop
from imapdesk.worker.sender import Sender
from imapdesk.worker.sla_clock import SlaClock
from imapdesk.worker.webhooks import WebhookSender
from imapdesk.worker.writeback import WriteBack

log = logging.getLogger(__name__)

# recorded by the write-back, kept across probes; and the push delay measured, the connections
_KEPT_ACROSS_PROBES = ("keywords_dropped", "push", "connections")


def folder_key(mailbox: Mailbox) -> tuple[object, ...]:
    """The mailbox's folder settings (watched folders, the folder of each role)."""
    return (
        tuple(mailbox.watched_folders or ()),
        tuple(sorted(folder_settings(mailbox).items())),
    )


def watched_folder_names(mailbox: Mailbox, setup: FolderSetup) -> list[tuple[str, FolderRole]]:
    """The configured folders (as the server lists them, so `Sent` is `INBOX.Sent` under an
    `INBOX.` prefix), else INBOX and the Sent folder."""
    roles = folder_roles(setup)
    if mailbox.watched_folders:
        names = [
            find_folder(n, setup.listed, setup.namespace) or setup.namespace.full_name(n)
            for n in mailbox.watched_folders
        ]
        return [(n, roles.get(n, FolderRole.other)) for n in dict.fromkeys(names)]
    chosen = [("INBOX", FolderRole.inbox)]
    sent = setup.choices["sent"]
    if sent.exists:
        chosen.append((sent.name, FolderRole.sent))
    return chosen


@dataclass
class MailboxRunner:
    """Probes one mailbox, then runs a FolderSync thread per watched folder."""

    ctx: SyncContext
    mailbox_id: int
    name: str
    stop: threading.Event = field(default_factory=threading.Event)
    syncs: list[FolderSync] = field(default_factory=list)
    planned: int = 0
    thread: threading.Thread | None = None
    writeback: WriteBack | None = None
    sender: Sender | None = None
    connections: MailboxConnections | None = None
    _listening_failed: bool = False
    # the folder settings it was started with (`folder_key`): new ones start it again
    folder_key: tuple[object, ...] = ()

    def halt(self) -> None:
        """Stop its parts; the write-back and the sender, waiting for a wake-up (or for their
        seldom look), are woken to see it."""
        self.stop.set()
        wakeups.wake(wakeups.Loop.WRITEBACK, self.mailbox_id)
        wakeups.wake(wakeups.Loop.SENDER, self.mailbox_id)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"mailbox-{self.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        settings = self.ctx.settings
        backoff = Backoff(settings.reconnect_initial_seconds, settings.reconnect_max_seconds)
        while not self.stop.is_set():
            try:
                account, plan = self._probe()
                capabilities = self._capabilities()
                break
            except CONNECTION_ERRORS as exc:
                self._record_error(exc)
            except Exception as exc:
                log.exception("[%s] unexpected error while probing", self.name)
                self._record_error(exc)
            if backoff.wait(self.stop):
                return
        else:
            return
        folder_ctx = SyncContext(
            settings=settings,
            engine=self.ctx.engine,
            stop=self.stop,
            progress=self.ctx.progress,
            parser=self.ctx.parser,
            on_change=self.ctx.on_change,
            on_mail_change=self.ctx.on_mail_change,
        )
        self.planned = len(plan)
        syncs = [
            FolderSync(
                folder_ctx,
                self.mailbox_id,
                folder_id,
                folder_name,
                account,
                label=f"{self.name}/{folder_name}",
            )
            for folder_id, folder_name in plan
        ]
        self.syncs.extend(syncs)
        if settings.imap_connection_mode == "per_folder":
            threads = self._per_folder(folder_ctx, account)
        else:
            threads = self._shared(folder_ctx, account, capabilities)
        for t in threads:
            t.join()
        if self.connections is not None:
            self.connections.close()

    def _thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"{name}-{self.name}", daemon=True)
        thread.start()
        return thread

    def _per_folder(self, ctx: SyncContext, account: ImapAccount) -> list[threading.Thread]:
        """A connection and a thread for each followed folder, the write-back and the sender."""
        self.writeback = WriteBack(ctx, self.mailbox_id, self.name, account)
        self.sender = Sender(ctx, self.mailbox_id, self.name, account)
        return [
            self._thread(self.writeback.run, "writeback"),
            self._thread(self.sender.run, "sender"),
            *(self._thread(s.run, f"sync-{s.folder_name}") for s in self.syncs),
        ]

    def _capabilities(self) -> dict[str, Any]:
        with unit_of_work(self.ctx.engine) as db:
            mailbox = db.get(Mailbox, self.mailbox_id)
            return dict(mailbox.capabilities or {}) if mailbox is not None else {}

    def _shared(
        self, ctx: SyncContext, account: ImapAccount, capabilities: dict[str, Any]
    ) -> list[threading.Thread]:
        """The mailbox's parts on its few shared connections (worker/mailbox_sync.py); the push
        delay is measured first when due (on the connections the parts will use)."""
        settings = ctx.settings
        pool = MailboxConnections(
            account,
            settings,
            name=self.name,
            mode=push_mode_for(settings, capabilities),
            on_health=lambda health: self._remember("connections", health),
        )
        self.connections = pool
        mechanism = measure_due(settings, capabilities)
        if mechanism is not None and pool.planned() >= 2:
            measured = measure_push(pool, mechanism, settings)
            log.info("[%s] push delay: %s", self.name, measured)
            if "error" not in measured:
                capabilities["push"] = measured
                self._remember("push", measured)
                pool.use(push_mode_for(settings, capabilities))  # a lazy IDLE: polled
        push_sync = self.syncs[0] if self.syncs else None
        push_folder = push_sync.folder_name if push_sync is not None else None
        watch = FolderWatch(
            ctx,
            pool,
            self.syncs,
            push_folder,
            self.name,
            condstore="CONDSTORE" in (capabilities.get("capabilities") or ()),
        )
        listener = PushListener(
            ctx,
            pool,
            watch,
            push_sync,
            [s.folder_name for s in self.syncs],
            self.name,
            on_error=self._listening,
        )
        self.writeback = WriteBack(ctx, self.mailbox_id, self.name, account, connections=pool)
        self.sender = Sender(ctx, self.mailbox_id, self.name, account, connections=pool)
        # the worker's one outbox watch wakes them (Worker.run): they look themselves seldom
        self.writeback.poll_seconds = self.sender.poll_seconds = LOOP_POLL_SECONDS
        return [
            self._thread(listener.run, "push"),
            self._thread(watch.run, "watch"),
            self._thread(self.writeback.run, "writeback"),
            self._thread(self.sender.run, "sender"),
        ]

    def _remember(self, key: str, value: dict[str, Any]) -> bool:
        """Keep what the worker found (the push delay, the connections' health) in the
        mailbox's capabilities, as the write-back keeps what it records there; False when it
        could not be written now."""
        try:
            with INGEST_LOCK, unit_of_work(self.ctx.engine) as db:
                lock_for_ingest(db)
                mailbox = db.get(Mailbox, self.mailbox_id)
                if mailbox is not None:
                    mailbox.capabilities = {**(mailbox.capabilities or {}), key: value}
        except Exception:
            log.exception("[%s] could not record %s", self.name, key)
            return False
        return True

    def _listening(self, exc: BaseException | None) -> None:
        """The push listener failed (recorded as the mailbox's error) or works again."""
        if exc is not None:
            self._record_error(exc)
            self._listening_failed = True
            return
        if not self._listening_failed:
            return
        try:
            with unit_of_work(self.ctx.engine) as db:
                mailbox = db.get(Mailbox, self.mailbox_id)
                if mailbox is not None:
                    mailbox.last_error = None
            self._listening_failed = False
        except Exception:
            log.exception("[%s] could not clear the error", self.name)

    def _probe(self) -> tuple[ImapAccount, list[tuple[int, str]]]:
        with unit_of_work(self.ctx.engine) as db:
            mailbox = db.get(Mailbox, self.mailbox_id)
            assert mailbox is not None
            account = imap_account(mailbox, self.ctx.settings)
            folder_names = folder_settings(mailbox)
        imap = ImapSession(account)
        try:
            capabilities = probe(imap)
            # the folder of each role, created where missing and the server allows; a folder
            # it refuses is reported in the mailbox's health, and the rest syncs all the same
            setup = set_up_folders(imap, folder_names)
        finally:
            imap.close()
        plan: list[tuple[int, str]] = []
        with unit_of_work(self.ctx.engine) as db:
            mailbox = db.get(Mailbox, self.mailbox_id)
            assert mailbox is not None and mailbox.id is not None
            for key in _KEPT_ACROSS_PROBES:  # write-back: what it recorded stays
                if key in (mailbox.capabilities or {}):
                    capabilities[key] = mailbox.capabilities[key]
            capabilities.update(setup_record(setup))
            mailbox.capabilities = capabilities
            mailbox.last_connected_at = utcnow()
            mailbox.last_error = None
            watched = watched_folder_names(mailbox, setup)
            watched_names = {n for n, _ in watched}
            roles = folder_roles(setup)
            listed = {f.name for f in setup.listed}
            for row in db.exec(select(Folder).where(Folder.mailbox_id == mailbox.id)):
                if row.name not in listed:
                    row.role = FolderRole.other  # gone from the server: it plays no part now
            for on_server in setup.listed:
                ensure_folder(
                    db,
                    mailbox.id,
                    on_server.name,
                    roles.get(on_server.name, FolderRole.other),
                    watched=on_server.name in watched_names,
                )
            for name, role in watched:
                folder = ensure_folder(db, mailbox.id, name, role, watched=True)
                assert folder.id is not None
                plan.append((folder.id, name))
            # the other folders of the mapping are followed too: what plain clients move
            # there (Archive, Junk, Trash, Pending, Notes) flows back into the helpdesk
            for choice in setup.choices.values():
                if not choice.exists or choice.name in watched_names:
                    continue
                folder = ensure_folder(
                    db, mailbox.id, choice.name, FolderRole(choice.role), watched=False
                )
                assert folder.id is not None
                plan.append((folder.id, choice.name))
            if setup.refused:
                log.warning(
                    "[%s] %s",
                    self.name,
                    "; ".join(p.describe(self.name) for p in folder_problems(capabilities)),
                )
        log.info("[%s] watching %s", self.name, ", ".join(n for _, n in plan))
        return account, plan

    def _record_error(self, exc: BaseException) -> None:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        log.warning("[%s] cannot connect: %s", self.name, message)
        try:
            with unit_of_work(self.ctx.engine) as db:
                mailbox = db.get(Mailbox, self.mailbox_id)
                if mailbox is not None:
                    mailbox.last_error = f"{utcnow():%Y-%m-%d %H:%M:%S} UTC: {message}"[:2000]
        except Exception:
            log.exception("[%s] could not record the error", self.name)

    def ready(self) -> bool:
        return 0 < self.planned == len(self.syncs) and all(s.ready.is_set() for s in self.syncs)


class Worker:
    """Runs every enabled mailbox; picks up added, disabled and removed ones while running."""

    def __init__(self, ctx: SyncContext, only: frozenset[str] | None = None) -> None:
        self.ctx = ctx
        self.only = only  # mailbox names; None: all enabled ones
        self.runners: dict[int, MailboxRunner] = {}
        # runners stopped for new folder settings: their mailbox starts again once they ended
        self.retiring: dict[int, MailboxRunner] = {}

    def refresh(self) -> None:
        with unit_of_work(self.ctx.engine) as db:
            # an OAuth2 mailbox not connected, or whose grant was refused, waits for an admin
            blocked = blocked_mailbox_ids(db)
            boxes = {
                m.id: m.name
                for m in db.exec(select(Mailbox).where(Mailbox.enabled))
                if (self.only is None or m.name in self.only) and m.id not in blocked
            }
            folder_keys = {m.id: folder_key(m) for m in db.exec(select(Mailbox))}
        self._retire_changed(folder_keys)
        for mailbox_id, name in boxes.items():
            assert mailbox_id is not None
            if mailbox_id not in self.runners and mailbox_id not in self.retiring:
                log.info("[%s] starting", name)
                runner = MailboxRunner(self.ctx, mailbox_id, name)
                runner.folder_key = folder_keys.get(mailbox_id, ())
                self.runners[mailbox_id] = runner
                runner.start()
        for mailbox_id in list(self.runners):
            if mailbox_id not in boxes:
                log.info(
                    "[%s] stopping: removed, disabled or its OAuth2 grant refused",
                    self.runners[mailbox_id].name,
                )
                self.runners.pop(mailbox_id).halt()

    def _retire_changed(self, folder_keys: dict[int | None, tuple[object, ...]]) -> None:
        """Stop the runners whose mailbox has new folder settings (they connect again and set
        up the folders anew: `refresh` starts them once the old one has ended)."""
        for mailbox_id, runner in list(self.runners.items()):
            if runner.folder_key != folder_keys.get(mailbox_id, runner.folder_key):
                log.info("[%s] new folder settings: connecting again", runner.name)
                runner.halt()
                self.retiring[mailbox_id] = self.runners.pop(mailbox_id)
        for mailbox_id, runner in list(self.retiring.items()):
            if runner.thread is None or not runner.thread.is_alive():
                del self.retiring[mailbox_id]

    def run(self) -> None:
        """Until ctx.stop is set."""
        tokens = threading.Thread(
            target=TokenRefresher(self.ctx).run, name="oauth2-tokens", daemon=True
        )
        tokens.start()
        # the event log's webhooks and agents' notifications (worker/webhooks.py, notifications.py)
        for name, part in (
            ("webhooks", WebhookSender(self.ctx.engine, self.ctx.settings, self.ctx.stop)),
            ("notifications", Notifier(self.ctx.engine, self.ctx.settings, self.ctx.stop)),
        ):
            threading.Thread(target=part.run, name=name, daemon=True).start()
        if self.ctx.settings.imap_connection_mode == "shared":
            # one look at every mailbox's outbox, rather than each write-back and sender's own
            outboxes = OutboxWatch(self.ctx.engine, self.ctx.settings, self.ctx.stop)
            threading.Thread(target=outboxes.run, name="outboxes", daemon=True).start()
        rules = RulesLoop(self.ctx.engine, self.ctx.settings, self.ctx.stop)
        threading.Thread(target=rules.run, name="rules", daemon=True).start()
        # SLA due times, warnings and breaches (worker/sla_clock.py)
        sla = SlaClock(self.ctx.engine, self.ctx.settings, self.ctx.stop)
        threading.Thread(target=sla.run, name="sla-clock", daemon=True).start()
        housekeeping = Housekeeping(self.ctx.engine, self.ctx.settings)
        while not self.ctx.stop.is_set():
            try:
                self.refresh()
            except Exception:
                log.exception("cannot read the mailbox list; retrying")
            wake_snoozed(self.ctx.engine)  # snoozed conversations whose time has come reopen
            housekeeping.maybe_run()  # pasted images never sent (worker/housekeeping.py)
            self.ctx.stop.wait(self.ctx.settings.mailbox_refresh_seconds)
        for runner in self.runners.values():
            runner.halt()
        for runner in [*self.runners.values(), *self.retiring.values()]:
            if runner.thread is not None:
                runner.thread.join(timeout=10)
        self.ctx.parser.close()

    def ready(self) -> bool:
        return bool(self.runners) and all(r.ready() for r in self.runners.values())


def make_worker(
    settings: Settings, engine: Engine, stop: threading.Event, **kwargs: object
) -> Worker:
    processes = settings.parse_processes
    parser = Parser(default_parse_processes() if processes is None else processes)
    kwargs.setdefault("on_mail_change", apply_mail_changes)
    only = cast("frozenset[str] | None", kwargs.pop("only", None))
    ctx = SyncContext(settings=settings, engine=engine, stop=stop, parser=parser, **kwargs)  # type: ignore[arg-type]
    return Worker(ctx, only=only)


def sync_until_caught_up(
    settings: Settings,
    engine: Engine,
    *,
    only: frozenset[str] | None = None,
    progress: ProgressCallback | None = None,
    timeout: float | None = None,
) -> bool:
    """Run the worker until every followed folder of the mailboxes has been read once (what
    `imapdesk rebuild` does); False on timeout."""
    stop = threading.Event()
    worker = make_worker(settings, engine, stop, only=only, progress=progress)
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not worker.ready():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True
    finally:
        stop.set()
        thread.join(timeout=30)
