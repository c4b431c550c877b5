"""The worker: which mailboxes and folders to watch, one thread per watched folder.

Each mailbox is probed at connect (capabilities, folders and their special-use roles); its watched
folders each get a FolderSync. A mailbox that fails only backs off itself; the others go on.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Engine
from sqlmodel import select

from imapdesk.domain.conversations.snooze import wake_snoozed
from imapdesk.domain.mailboxes.config import ensure_folder
from imapdesk.domain.mailboxes.servers import imap_account
from imapdesk.domain.sync.readback import apply_mail_changes
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Folder, FolderRole, Mailbox, utcnow
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import ImapAccount, ImapSession
from imapdesk.mail.imap.probe import probe
from imapdesk.worker.backoff import Backoff
from imapdesk.worker.folder_sync import CONNECTION_ERRORS, FolderSync, ProgressCallback, SyncContext
from imapdesk.worker.parse_pool import Parser, default_parse_processes
from imapdesk.worker.sender import Sender
from imapdesk.worker.writeback import WriteBack

log = logging.getLogger(__name__)

_ROLES = {r.value: r for r in FolderRole}
_NAMED_ROLES = (FolderRole.pending, FolderRole.notes)


# recorded by the write-back, kept across probes
_KEPT_ACROSS_PROBES = ("keywords_dropped",)


def watched_folder_names(
    mailbox: Mailbox, folders: list[tuple[str, str | None]]
) -> list[tuple[str, FolderRole]]:
    """The configured folders, else INBOX and the \\Sent folder."""
    roles = {name: _ROLES.get(role or "other", FolderRole.other) for name, role in folders}
    if mailbox.watched_folders:
        return [(n, roles.get(n, FolderRole.other)) for n in mailbox.watched_folders]
    chosen = [("INBOX", FolderRole.inbox)]
    sent = next((n for n, r in folders if r == "sent"), None)
    if sent is None:
        sent = next((n for n, _ in folders if n.lower() in ("sent", "sent items")), None)
    if sent:
        chosen.append((sent, FolderRole.sent))
    return chosen


# folders of the mapping (IMAP-MAPPING.md) found by name where no special-use attribute says
_MAPPED_NAMES = {
    FolderRole.archive: ("archive",),
    FolderRole.junk: ("junk", "spam"),
    FolderRole.trash: ("trash", "deleted items", "deleted messages"),
    FolderRole.pending: ("pending",),
    FolderRole.notes: ("notes",),
}
# created when missing (special-use folders are the server's to create)
_CREATED_WHEN_MISSING = {
    FolderRole.pending: "Pending",
    FolderRole.notes: "Notes",
    FolderRole.archive: "Archive",
}


def mapped_folder_names(folders: list[tuple[str, str | None]]) -> list[tuple[str, FolderRole]]:
    """The folder of each role of the mapping: special-use first, else by name."""
    out: list[tuple[str, FolderRole]] = []
    for role, names in _MAPPED_NAMES.items():
        found = next((n for n, r in folders if r == role.value), None)
        if found is None:
            found = next((n for n, _ in folders if n.lower() in names), None)
        if found is not None:
            out.append((found, role))
    return out


def ensure_mapped_folders(imap: ImapSession, folders: list[tuple[str, str | None]]) -> list[str]:
    """Create the folders of the mapping that are missing (never touching any mail)."""
    have = {role for _, role in mapped_folder_names(folders)}
    created = []
    for role, name in _CREATED_WHEN_MISSING.items():
        if role not in have:
            imap.create_folder(name)
            created.append(name)
    return created


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

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"mailbox-{self.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        settings = self.ctx.settings
        backoff = Backoff(settings.reconnect_initial_seconds, settings.reconnect_max_seconds)
        while not self.stop.is_set():
            try:
                account, plan = self._probe()
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
        threads = []
        # write-back: one outbox loop per mailbox, on its own connection
        self.writeback = WriteBack(folder_ctx, self.mailbox_id, self.name, account)
        wb_thread = threading.Thread(
            target=self.writeback.run, name=f"writeback-{self.name}", daemon=True
        )
        wb_thread.start()
        threads.append(wb_thread)
        # sending: replies and notes queued in imapdesk (worker/sender.py)
        self.sender = Sender(folder_ctx, self.mailbox_id, self.name, account)
        sender_thread = threading.Thread(
            target=self.sender.run, name=f"sender-{self.name}", daemon=True
        )
        sender_thread.start()
        threads.append(sender_thread)
        self.planned = len(plan)
        for folder_id, folder_name in plan:
            sync = FolderSync(
                folder_ctx,
                self.mailbox_id,
                folder_id,
                folder_name,
                account,
                label=f"{self.name}/{folder_name}",
            )
            self.syncs.append(sync)
            t = threading.Thread(
                target=sync.run, name=f"sync-{self.name}/{folder_name}", daemon=True
            )
            t.start()
            threads.append(t)
        for t in threads:
            t.join()

    def _probe(self) -> tuple[ImapAccount, list[tuple[int, str]]]:
        with unit_of_work(self.ctx.engine) as db:
            mailbox = db.get(Mailbox, self.mailbox_id)
            assert mailbox is not None
            account = imap_account(mailbox, self.ctx.settings)
        imap = ImapSession(account)
        try:
            folders = imap.list_folders()
            capabilities = probe(imap)
            created = ensure_mapped_folders(imap, folders)
            if created:
                log.info("[%s] created the folders %s", self.name, ", ".join(created))
                folders = imap.list_folders()
        finally:
            imap.close()
        plan: list[tuple[int, str]] = []
        with unit_of_work(self.ctx.engine) as db:
            mailbox = db.get(Mailbox, self.mailbox_id)
            assert mailbox is not None and mailbox.id is not None
            for key in _KEPT_ACROSS_PROBES:  # write-back: what it recorded stays
                if key in (mailbox.capabilities or {}):
                    capabilities[key] = mailbox.capabilities[key]
            mailbox.capabilities = capabilities
            mailbox.last_connected_at = utcnow()
            mailbox.last_error = None
            watched = watched_folder_names(mailbox, folders)
            watched_names = {n for n, _ in watched}
            # write-back: roles imapdesk gave by name (a `Pending` or `Notes` folder it created)
            # are not in LIST's special-use attributes; keep them
            by_name = {
                f.name: f.role
                for f in db.exec(select(Folder).where(Folder.mailbox_id == mailbox.id))
                if f.role in _NAMED_ROLES
            }
            for name, role in folders:
                ensure_folder(
                    db,
                    mailbox.id,
                    name,
                    _ROLES[role] if role in _ROLES else by_name.get(name, FolderRole.other),
                    watched=name in watched_names,
                )
            for name, role in watched:
                if role == FolderRole.other:
                    role = by_name.get(name, role)
                folder = ensure_folder(db, mailbox.id, name, role, watched=True)
                assert folder.id is not None
                plan.append((folder.id, name))
            # the other folders of the mapping are followed too: what plain clients move
            # there (Archive, Junk, Trash, Pending, Notes) flows back into the helpdesk
            for name, role in mapped_folder_names(folders):
                if name in watched_names:
                    continue
                folder = ensure_folder(db, mailbox.id, name, role, watched=False)
                assert folder.id is not None
                plan.append((folder.id, name))
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

    def refresh(self) -> None:
        with unit_of_work(self.ctx.engine) as db:
            boxes = {
                m.id: m.name
                for m in db.exec(select(Mailbox).where(Mailbox.enabled))
                if self.only is None or m.name in self.only
            }
        for mailbox_id, name in boxes.items():
            assert mailbox_id is not None
            if mailbox_id not in self.runners:
                log.info("[%s] starting", name)
                runner = MailboxRunner(self.ctx, mailbox_id, name)
                self.runners[mailbox_id] = runner
                runner.start()
        for mailbox_id in list(self.runners):
            if mailbox_id not in boxes:
                log.info("[%s] stopping: removed or disabled", self.runners[mailbox_id].name)
                self.runners.pop(mailbox_id).stop.set()

    def run(self) -> None:
        """Until ctx.stop is set."""
        while not self.ctx.stop.is_set():
            try:
                self.refresh()
            except Exception:
                log.exception("cannot read the mailbox list; retrying")
            wake_snoozed(self.ctx.engine)  # snoozed conversations whose time has come reopen
            self.ctx.stop.wait(self.ctx.settings.mailbox_refresh_seconds)
        for runner in self.runners.values():
            runner.stop.set()
        for runner in self.runners.values():
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
