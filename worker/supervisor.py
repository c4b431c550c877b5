"""The worker: which mailboxes and folders to watch, one thread per watched folder.

Each mailbox is probed at connect (capabilities, folders and their special-use roles); its watched
folders each get a FolderSync. A mailbox that fails only backs off itself; the others go on.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlmodel import select

from core.db import unit_of_work
from core.mailboxes import ensure_folder, mailbox_password
from core.models import FolderRole, Mailbox, utcnow
from core.settings import Settings
from worker.backoff import Backoff
from worker.folder_sync import CONNECTION_ERRORS, FolderSync, SyncContext
from worker.imap import ImapAccount, ImapSession
from worker.parse_pool import Parser, default_parse_processes

log = logging.getLogger(__name__)

_ROLES = {r.value: r for r in FolderRole}


def account_for(mailbox: Mailbox, settings: Settings) -> ImapAccount:
    return ImapAccount(
        host=mailbox.imap_host,
        port=mailbox.imap_port,
        security=mailbox.imap_security.value,
        username=mailbox.username,
        password=mailbox_password(mailbox, settings),
        ca_file=mailbox.ca_file,
        label=mailbox.name,
    )


def probe(imap: ImapSession) -> dict[str, object]:
    """What this server can do, stored on the mailbox and shown to the admin."""
    caps = imap.capabilities
    return {
        "capabilities": sorted(caps),
        "idle": "IDLE" in caps,
        "condstore": "CONDSTORE" in caps,
        "qresync": "QRESYNC" in caps,
        "move": "MOVE" in caps,
        "uidplus": "UIDPLUS" in caps,
        "objectid": "OBJECTID" in caps,
        "notify": "NOTIFY" in caps,
        "special_use": "SPECIAL-USE" in caps,
        "probed_at": utcnow().isoformat(timespec="seconds"),
    }


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


@dataclass
class MailboxRunner:
    """Probes one mailbox, then runs a FolderSync thread per watched folder."""

    ctx: SyncContext
    mailbox_id: int
    name: str
    stop: threading.Event = field(default_factory=threading.Event)
    syncs: list[FolderSync] = field(default_factory=list)
    thread: threading.Thread | None = None

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
        )
        threads = []
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
            account = account_for(mailbox, self.ctx.settings)
        imap = ImapSession(account)
        try:
            folders = imap.list_folders()
            capabilities = probe(imap)
        finally:
            imap.close()
        plan: list[tuple[int, str]] = []
        with unit_of_work(self.ctx.engine) as db:
            mailbox = db.get(Mailbox, self.mailbox_id)
            assert mailbox is not None and mailbox.id is not None
            mailbox.capabilities = capabilities
            mailbox.last_connected_at = utcnow()
            mailbox.last_error = None
            watched = watched_folder_names(mailbox, folders)
            watched_names = {n for n, _ in watched}
            for name, role in folders:
                ensure_folder(
                    db,
                    mailbox.id,
                    name,
                    _ROLES.get(role or "other", FolderRole.other),
                    watched=name in watched_names,
                )
            for name, role in watched:
                folder = ensure_folder(db, mailbox.id, name, role, watched=True)
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
        return bool(self.syncs) and all(s.ready.is_set() for s in self.syncs)


class Worker:
    """Runs every enabled mailbox; picks up added, disabled and removed ones while running."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.runners: dict[int, MailboxRunner] = {}

    def refresh(self) -> None:
        with unit_of_work(self.ctx.engine) as db:
            boxes = {m.id: m.name for m in db.exec(select(Mailbox).where(Mailbox.enabled))}
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
    ctx = SyncContext(settings=settings, engine=engine, stop=stop, parser=parser, **kwargs)  # type: ignore[arg-type]
    return Worker(ctx)
