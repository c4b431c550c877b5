"""One watched folder: initial sync in batches, then IDLE; its state is stored, so a restart
(even after kill -9) resumes at the checkpoint with no gap and no duplicate.

States: `initial` (catching up on everything below the server's UIDNEXT), `poll` (IDLE and take
in what arrives), `uidinvalid` (the server renumbered the folder: locations are dropped and the
folder is read again; messages are matched by Message-ID or content hash, so nothing doubles).

A folder either keeps a connection of its own (`run`: IDLE on it, the `per_folder` design) or is
one of several on a mailbox's shared connections (worker/mailbox_sync.py): then it is checked
(`check`) when the push connection hears it changed, or polled (`poll`) where IDLE is lazy.
"""

from __future__ import annotations

import imaplib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from imapclient.exceptions import IMAPClientError
from sqlalchemy import Engine, delete, or_
from sqlmodel import Session, col, select

from imapdesk.domain.mailboxes.config import our_addresses
from imapdesk.domain.sync.ingest import INGEST_LOCK, ingest_batch, lock_for_ingest
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import ImapdeskError
from imapdesk.kernel.models import (
    Conversation,
    ConversationStatus,
    Folder,
    FolderRole,
    FolderState,
    Mailbox,
    Message,
    MessageLocation,
    utcnow,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import FetchedMessage, FolderStatus, ImapAccount, ImapSession
from imapdesk.mail.parsing import ParsedMessage
from imapdesk.worker.backoff import Backoff
from imapdesk.worker.parse_pool import Parser

log = logging.getLogger(__name__)


# What may go wrong with a connection: each one discards the connection and backs off.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ImapdeskError,
    IMAPClientError,
    imaplib.IMAP4.error,
    OSError,
)

ProgressCallback = Callable[[str, int, int], None]


# How many times the write-back recorded what it wrote, per mailbox (read and bumped with
# INGEST_LOCK held). A read that began before a write and is recorded after it would put back
# what was just overwritten (flags) or moved away (arrivals): the read side compares the count
# and reads again.
_WRITE_EPOCHS: dict[int, int] = {}
STALE_READ_ATTEMPTS = 3
# a vanished message waits at most this long for the other folders to be looked at
LOOK_ELSEWHERE_MAX_SECONDS = 60.0


def write_epoch(mailbox_id: int) -> int:
    return _WRITE_EPOCHS.get(mailbox_id, 0)


def wrote(mailbox_id: int) -> None:
    """Called by the write-back, with INGEST_LOCK held, as it records a write."""
    _WRITE_EPOCHS[mailbox_id] = _WRITE_EPOCHS.get(mailbox_id, 0) + 1


@dataclass
class SyncContext:
    settings: Settings
    engine: Engine
    stop: threading.Event
    progress: ProgressCallback | None = None
    parser: Parser = field(default_factory=lambda: Parser(0))
    # called after each committed batch with the conversation ids it touched (live updates)
    on_change: Callable[[set[int]], None] | None = None
    # called inside the transaction that records flag changes and vanished messages, with
    # the mailbox id and the ids of the messages whose places or flags changed (read-back)
    on_mail_change: Callable[[Session, int, set[int]], set[int]] | None = None


class FolderLog(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['label']}] {msg}", kwargs  # type: ignore[index]


class FolderSync:
    """Keeps one folder of one mailbox taken in. `run()` returns only when asked to stop."""

    def __init__(
        self,
        ctx: SyncContext,
        mailbox_id: int,
        folder_id: int,
        folder_name: str,
        account: ImapAccount,
        label: str,
    ) -> None:
        self.ctx = ctx
        self.mailbox_id = mailbox_id
        self.folder_id = folder_id
        self.folder_name = folder_name
        self.account = account
        self.label = label
        self.log = FolderLog(log, {"label": label})
        self.backoff = Backoff(
            ctx.settings.reconnect_initial_seconds, ctx.settings.reconnect_max_seconds
        )
        self.ready = threading.Event()  # set once the first catch-up is done
        self._last_rescan = float("-inf")
        self._expunge_hint = True  # look for vanished messages after every (re)connect
        self._flags_hint = True
        # (due, message ids, settled): vanished messages to judge once due and settled
        self._deferred: list[tuple[float, set[int], Callable[[], bool] | None]] = []
        # -- on a mailbox's shared connections (worker/mailbox_sync.py) --
        # asks for a look at the mailbox's other folders (a message that left this one may be
        # arriving there); returns whether that look is done
        self.look_elsewhere: Callable[[], Callable[[], bool]] | None = None
        # between two batches of a catch-up: lets others have a shared connection; returns the
        # session to go on with, the folder selected again
        self.between_batches: Callable[[ImapSession], ImapSession] | None = None
        # only one thread checks a folder at a time (the push folder moves between the watch
        # and the push listener when the way mail is heard changes)
        self.busy = threading.Lock()
        self.selected_uidvalidity: int | None = None  # of the last `check`

    # -- the outer loop: connect, sync, on failure back off and reconnect ----------------------
    def run(self) -> None:
        """On a connection of its own: sync until asked to stop, reconnecting with back-off."""
        while not self.ctx.stop.is_set():
            session: ImapSession | None = None
            try:
                session = ImapSession(self.account)
                self._sync(session)
            except CONNECTION_ERRORS as exc:
                self.record_error(exc)
            except Exception as exc:  # a bug must not end the worker: record it and go on
                self.log.exception("unexpected error")
                self.record_error(exc)
            finally:
                if session is not None:
                    session.close()
            if self.ctx.stop.is_set():
                break
            delay = self.backoff.next_delay()
            self.log.info("reconnecting in %.1f s", delay)
            if self.ctx.stop.wait(delay):
                break

    def record_error(self, exc: BaseException) -> None:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        self.log.warning("sync failed: %s", message)
        try:
            with unit_of_work(self.ctx.engine) as db:
                folder = db.get(Folder, self.folder_id)
                if folder is not None:
                    folder.last_error = f"{utcnow():%Y-%m-%d %H:%M:%S} UTC: {message}"[:2000]
        except Exception:
            self.log.exception("could not record the error")

    # -- on a shared connection: look when told, or when due ------------------------------------
    def check(self, imap: ImapSession) -> None:
        """Select the folder and take in what changed since the checkpoint. On a connection
        others use too, whatever the server told before is gone with their commands: flags
        and vanished messages are looked at every time."""
        status = imap.select(self.folder_name, readonly=True)
        self.selected_uidvalidity = status.uidvalidity
        self._check_uidvalidity(status)
        self._flags_hint = self._expunge_hint = True
        self._catch_up(imap)
        self.backoff.reset()
        self.ready.set()

    def poll(self, imap: ImapSession) -> bool:
        """Ask the selected folder for news with a NOOP and take in what it told; True when
        there was some."""
        news = self._note_kinds(imap.take_news())
        _text, said = imap.client.noop()
        imap.take_news()  # the same as `said`
        if not (self._note(said) or news):
            return False
        self._catch_up(imap)
        return True

    def judge_vanished(self) -> None:
        """Judge the vanished messages whose time has come (see `_due`)."""
        self._run_deferred()

    # -- one connection's life: catch up, then IDLE ---------------------------------------------
    def _sync(self, imap: ImapSession) -> None:
        status = imap.select(self.folder_name, readonly=True)
        self._check_uidvalidity(status)
        self._catch_up(imap)
        self.backoff.reset()
        self.ready.set()
        settings = self.ctx.settings
        # IDLE is re-issued at least every 29 minutes (RFC 2177) and broken off now and then to
        # select the folder again: a deleted and recreated folder sends no news to an idler.
        period = min(
            settings.idle_reissue_seconds,
            settings.folder_check_seconds,
            settings.idle_refresh_seconds,
        )
        next_check = time.monotonic() + settings.folder_check_seconds
        while not self.ctx.stop.is_set():
            if self._idle(imap, period):
                self._catch_up(imap)
            elif not self._deferred_due() and time.monotonic() >= next_check:
                next_check = time.monotonic() + settings.folder_check_seconds
                if self._folder_changed(imap):
                    self._catch_up(imap)
            self._run_deferred()

    def _folder_changed(self, imap: ImapSession) -> bool:
        """Select the folder again: True when it has new UIDs or was replaced (new UIDVALIDITY).

        STATUS is no use here: on the selected folder Dovecot answers from the open (possibly
        deleted) view.
        """
        current = imap.select(self.folder_name, readonly=True)
        # what the folder's news would have said may be lost with the new SELECT: look again
        self._flags_hint = self._expunge_hint = True
        with Session(self.ctx.engine) as db:
            folder = db.get(Folder, self.folder_id)
            assert folder is not None
            known_uidvalidity = folder.uidvalidity
        if known_uidvalidity != current.uidvalidity:
            self._check_uidvalidity(current)
        return True

    def _idle(self, imap: ImapSession, seconds: float) -> bool:
        """IDLE until the folder changes (True), time is up or stop is asked (False).

        Dovecot reports during an IDLE only what changes after the IDLE began: a change made
        since the last DONE waits for the next DONE. A NOOP right before asks for it now.
        """
        client = imap.client
        if self._note_kinds(imap.take_news()):
            return True
        _text, said = client.noop()
        imap.take_news()  # the same as `said`
        if self._note(said):
            return True
        client.idle()
        deadline = time.monotonic() + seconds
        changed = False
        try:
            while (
                not self.ctx.stop.is_set()
                and time.monotonic() < deadline
                and not self._deferred_due()
            ):
                changed = self._note(client.idle_check(timeout=min(1.0, seconds))) or changed
                if changed:
                    break
        finally:
            # news that arrives as IDLE ends comes with the DONE reply: it counts too
            _text, late = client.idle_done()
            imap.take_news()  # the same as `late`
            changed = self._note(late) or changed
        return changed

    def _note_kinds(self, kinds: set[str]) -> bool:
        """Like `_note`, for the kinds of news `ImapSession.take_news` found."""
        if "EXPUNGE" in kinds or "VANISHED" in kinds:
            self._expunge_hint = True
        if "FETCH" in kinds:
            self._flags_hint = True
        return bool(kinds)

    def _note(self, responses: list[Any]) -> bool:
        """Whether untagged responses say the folder changed (and what to look at)."""
        changed = False
        for resp in responses:
            if not isinstance(resp, tuple) or not resp:
                continue
            if resp[0] == b"BYE":
                raise imaplib.IMAP4.abort(f"server closed the connection: {resp!r}")
            if len(resp) >= 2 and resp[1] in (b"EXISTS", b"EXPUNGE", b"FETCH"):
                changed = True
                if resp[1] == b"EXPUNGE":
                    self._expunge_hint = True
                elif resp[1] == b"FETCH":
                    self._flags_hint = True
        return changed

    def _check_uidvalidity(self, status: FolderStatus) -> None:
        with unit_of_work(self.ctx.engine) as db:
            folder = db.get(Folder, self.folder_id)
            assert folder is not None
            if folder.uidvalidity is None:
                folder.uidvalidity = status.uidvalidity
                folder.initial_target_uid = status.uidnext
            elif folder.uidvalidity != status.uidvalidity:
                self.log.warning(
                    "UIDVALIDITY changed from %s to %s: reading the folder again",
                    folder.uidvalidity,
                    status.uidvalidity,
                )
                db.execute(delete(MessageLocation).where(MessageLocation.folder_id == folder.id))  # type: ignore[arg-type]
                folder.uidvalidity = status.uidvalidity
                folder.uidnext = 1
                folder.message_count = 0
                folder.highestmodseq = None
                folder.initial_target_uid = status.uidnext
                folder.state = FolderState.uidinvalid
            folder.last_error = None

    def _catch_up(self, imap: ImapSession) -> None:
        """Take in every message at or above the checkpoint, batch by batch."""
        with Session(self.ctx.engine) as db:
            folder = db.get(Folder, self.folder_id)
            assert folder is not None
            start_uid = folder.uidnext
        uids = imap.uids_from(start_uid)
        total = len(uids)
        done = 0
        if self.ctx.progress and total:
            self.ctx.progress(self.label, 0, total)
        settings = self.ctx.settings
        sizes = imap.sizes(uids) if uids else {}
        parser = self.ctx.parser
        # a pipeline: batch N is parsed on another core while N+1 is fetched and N-1 stored
        pending: _FetchedBatch | None = None
        for batch in [
            *_batches(uids, sizes, settings.fetch_batch_size, settings.fetch_batch_bytes),
            [],
        ]:
            if self.ctx.stop.is_set():
                return
            if self.between_batches is not None and pending is not None:
                imap = self.between_batches(imap)  # others may have had a shared connection
            submitted = None
            if batch:
                epoch = write_epoch(self.mailbox_id)
                fetched = self._fetch(imap, batch, sizes)
                future = parser.submit([m.raw for m in fetched])
                submitted = _FetchedBatch(batch, epoch, fetched, future)
            if pending is not None:
                parsed = parser.result(pending.parsed, [m.raw for m in pending.fetched])
                touched = self._store(imap, pending, parsed)
                done += len(pending.uids)
                if self.ctx.progress:
                    self.ctx.progress(self.label, done, total)
                if self.ctx.on_change and touched:
                    self.ctx.on_change(touched)
            pending = submitted
        self._sync_flags_and_expunges(imap)
        with unit_of_work(self.ctx.engine) as db:
            folder = db.get(Folder, self.folder_id)
            assert folder is not None
            if folder.state != FolderState.poll:
                self.log.info("caught up: %d messages", folder.message_count)
            folder.state = FolderState.poll
            folder.last_sync_at = utcnow()
            folder.last_error = None

    def _sync_flags_and_expunges(self, imap: ImapSession) -> None:
        """Take in what other clients changed: flags (CHANGEDSINCE where the server has
        CONDSTORE, else a rescan at most every `flag_rescan_seconds`) and vanished messages."""
        with Session(self.ctx.engine) as db:
            folder = db.get(Folder, self.folder_id)
            assert folder is not None
            modseq = folder.highestmodseq
        rescan_due = self._flags_hint or (
            time.monotonic() - self._last_rescan >= self.ctx.settings.flag_rescan_seconds
        )
        if not imap.condstore and not rescan_due and not self._expunge_hint:
            return
        self._expunge_hint = self._flags_hint = False
        for attempt in range(STALE_READ_ATTEMPTS):
            epoch = write_epoch(self.mailbox_id)
            # a server may answer FETCH and SEARCH from the folder as its session last looked
            # (Courier: at the last NOOP or IDLE poll), before a write recorded up to `epoch`
            imap.command("NOOP")
            changed = imap.flags_since(modseq) if imap.condstore or rescan_due else []
            present = set(imap.all_uids())
            if not imap.condstore:
                self._last_rescan = time.monotonic()
            last = attempt == STALE_READ_ATTEMPTS - 1
            if self._take_in(imap, changed, present, epoch=None if last else epoch):
                return
            self.log.info("the write-back wrote while flags were read: reading again")

    def _take_in(
        self,
        imap: ImapSession,
        changed: list[Any],
        present: set[int],
        *,
        epoch: int | None,
    ) -> bool:
        """Record flags read and messages gone. False (and nothing recorded) when the
        write-back recorded a write since `epoch`: what was read may predate it."""
        with INGEST_LOCK, unit_of_work(self.ctx.engine) as db:
            if epoch is not None and write_epoch(self.mailbox_id) != epoch:
                return False
            lock_for_ingest(db)
            folder = db.get(Folder, self.folder_id)
            assert folder is not None
            checkpoint = folder.uidnext
            locations = {
                loc.uid: loc
                for loc in db.exec(
                    select(MessageLocation).where(MessageLocation.folder_id == self.folder_id)
                )
            }
            touched: set[int] = set()
            for item in changed:
                loc = locations.get(item.uid)
                if loc is None:
                    continue  # not taken in yet (above the checkpoint): the next catch-up
                if item.modseq is not None and loc.modseq is not None and item.modseq < loc.modseq:
                    continue  # read before a write of ours that is recorded already
                flags = sorted(f for f in item.flags if f != "\\Recent")
                if sorted(loc.flags) != flags:
                    loc.flags = flags
                    touched.add(loc.message_id)
                if item.modseq is not None:
                    loc.modseq = item.modseq
            vanished = [
                loc for uid, loc in locations.items() if uid < checkpoint and uid not in present
            ]
            for loc in vanished:
                touched.add(loc.message_id)
                db.delete(loc)
            folder.message_count = max(0, folder.message_count - len(vanished))
            seen_modseqs = [m.modseq for m in changed if m.modseq is not None]
            if imap.condstore and seen_modseqs:
                folder.highestmodseq = max([folder.highestmodseq or 0, *seen_modseqs])
            db.flush()
            if vanished:
                # a message that left this folder may be arriving in another one (a move): one
                # already seen there is judged now, the others after a grace period (not as
                # deleted right away)
                gone = {loc.message_id for loc in vanished}
                elsewhere = set(
                    db.exec(
                        select(MessageLocation.message_id)
                        .join(Folder, col(Folder.id) == col(MessageLocation.folder_id))
                        .where(
                            col(MessageLocation.message_id).in_(gone),
                            Folder.mailbox_id == self.mailbox_id,
                        )
                    ).all()
                )
                waiting = gone - elsewhere
                if waiting:
                    due = time.monotonic() + self.ctx.settings.vanish_grace_seconds
                    # the folders it may have gone to are looked at before it is judged
                    settled = self.look_elsewhere() if self.look_elsewhere is not None else None
                    self._deferred.append((due, waiting, settled))
                touched -= waiting
            if touched or vanished:
                self.log.info(
                    "flags changed on %d messages, %d vanished", len(touched), len(vanished)
                )
            if touched:
                self._tell(db, touched)
        return True

    def _tell(self, db: Session, message_ids: set[int]) -> None:
        if self.ctx.on_mail_change is None:
            return
        conversations = self.ctx.on_mail_change(db, self.mailbox_id, message_ids)
        if self.ctx.on_change and conversations:
            self.ctx.on_change(conversations)

    def _deferred_due(self) -> bool:
        now = time.monotonic()
        return any(_due(entry, now) for entry in self._deferred)

    def _run_deferred(self) -> None:
        now = time.monotonic()
        due = [entry for entry in self._deferred if _due(entry, now)]
        if not due:
            return
        self._deferred = [entry for entry in self._deferred if not _due(entry, now)]
        with INGEST_LOCK, unit_of_work(self.ctx.engine) as db:
            lock_for_ingest(db)
            self._tell(db, set().union(*(ids for _t, ids, _settled in due)))

    def _fetch(
        self, imap: ImapSession, batch: list[int], sizes: dict[int, int]
    ) -> list[FetchedMessage]:
        settings = self.ctx.settings
        small = [u for u in batch if sizes.get(u, 0) <= settings.large_message_bytes]
        fetched = imap.fetch_messages(small) if small else []
        for uid in batch:
            size = sizes.get(uid, 0)
            if size <= settings.large_message_bytes:
                continue
            # large ones alone, so one huge attachment never holds up a whole batch
            header_only = size > settings.max_message_bytes
            if header_only:
                self.log.warning("UID %d has %d bytes: storing its header only", uid, size)
            fetched.extend(imap.fetch_messages([uid], header_only=header_only))
        fetched.sort(key=lambda m: m.uid)
        return fetched

    def _store(
        self, imap: ImapSession, batch: _FetchedBatch, parsed: list[ParsedMessage]
    ) -> set[int]:
        """Take in a fetched batch and move the checkpoint past it."""
        fetched = batch.fetched
        with INGEST_LOCK:
            if write_epoch(self.mailbox_id) != batch.epoch:
                fetched, parsed = self._still_here(imap, fetched, parsed)
            return self._store_batch(fetched, parsed, next_uid=batch.uids[-1] + 1)

    def _still_here(
        self, imap: ImapSession, fetched: list[FetchedMessage], parsed: list[ParsedMessage]
    ) -> tuple[list[FetchedMessage], list[ParsedMessage]]:
        """What of a fetched batch is still in the folder, asked with INGEST_LOCK held (so no
        write of ours is recorded between the answer and the store).

        The write-back recorded a write since the batch was fetched: a move of ours may have
        taken some of it on, and is recorded already. Taking those in would put the messages
        back where they were, as if a mail client had moved them back (an echo). A UID gone
        now is gone for good: UIDs are never reused.
        """
        # a server may keep what left in a session's view until it reports it at the end of
        # a command (RFC 3501 7.4.1; Dovecot does): a NOOP first, then the search
        imap.command("NOOP")
        present = set(imap.uids_present([m.uid for m in fetched]))
        kept = [(m, p) for m, p in zip(fetched, parsed, strict=True) if m.uid in present]
        if len(kept) < len(fetched):
            self._expunge_hint = True
            self.log.info(
                "%d messages left the folder while they were fetched: not taken in",
                len(fetched) - len(kept),
            )
        return [m for m, _ in kept], [p for _, p in kept]

    def _store_batch(
        self, fetched: list[FetchedMessage], parsed: list[ParsedMessage], *, next_uid: int
    ) -> set[int]:
        with unit_of_work(self.ctx.engine) as db:
            lock_for_ingest(db)
            folder = db.get(Folder, self.folder_id)
            mailbox = db.get(Mailbox, self.mailbox_id)
            assert folder is not None and mailbox is not None
            result = ingest_batch(
                db,
                settings=self.ctx.settings,
                mailbox=mailbox,
                folder=folder,
                fetched=fetched,
                parsed=parsed,
                our_addresses=our_addresses(db),
            )
            # the checkpoint commits with the messages: all or nothing
            folder.uidnext = max(folder.uidnext, next_uid)
            folder.message_count += result.new_locations
            folder.last_sync_at = utcnow()
            touched = set(result.conversation_ids)
            if self.ctx.on_mail_change is not None:
                db.flush()
                telling = self._telling_arrivals(db, folder, fetched)
                if telling:
                    touched |= self.ctx.on_mail_change(db, self.mailbox_id, telling)
        return touched

    def _telling_arrivals(
        self, db: Session, folder: Folder, fetched: list[FetchedMessage]
    ) -> set[int]:
        """The arrivals that say something about state: anything outside INBOX and Sent (a
        move by a plain client, or the whole mailbox during a rebuild), flagged or keyworded
        mail, and mail that also sits in another folder (moved back)."""
        uids = [m.uid for m in fetched]
        rows = db.exec(
            select(MessageLocation.message_id, MessageLocation.flags).where(
                MessageLocation.folder_id == folder.id, col(MessageLocation.uid).in_(uids)
            )
        ).all()
        if folder.role not in (FolderRole.inbox, FolderRole.sent) and not folder.watched:
            return {message_id for message_id, _ in rows}
        telling = {
            message_id
            for message_id, flags in rows
            if any(f == "\\Flagged" or not f.startswith("\\") for f in flags or ())
        }
        ids = [message_id for message_id, _ in rows]
        elsewhere = db.exec(
            select(MessageLocation.message_id).where(
                col(MessageLocation.message_id).in_(ids), MessageLocation.folder_id != folder.id
            )
        ).all()
        # mail of a conversation that is not plain open (moved back into INBOX reopens it)
        settled = db.exec(
            select(Message.id)
            .join(Conversation, Conversation.id == Message.conversation_id)  # type: ignore[arg-type]
            .where(
                col(Message.id).in_(ids),
                or_(col(Conversation.status) != ConversationStatus.open, col(Conversation.claimed)),
            )
        ).all()
        return telling | set(elsewhere) | {m for m in settled if m is not None}


def _due(entry: tuple[float, set[int], Callable[[], bool] | None], now: float) -> bool:
    """A vanished message is judged once its grace is over and the other folders were looked
    at (or, should that look not come, after LOOK_ELSEWHERE_MAX_SECONDS)."""
    due, _ids, settled = entry
    if due > now:
        return False
    return settled is None or settled() or now - due > LOOK_ELSEWHERE_MAX_SECONDS


@dataclass
class _FetchedBatch:
    """A batch on its way through the pipeline: fetched, being parsed, to be stored."""

    uids: list[int]
    epoch: int  # the write epoch before it was fetched
    fetched: list[FetchedMessage]
    parsed: Future[list[ParsedMessage]]


def _batches(
    uids: list[int], sizes: dict[int, int], max_count: int, max_bytes: int
) -> Iterator[list[int]]:
    batch: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if batch and (len(batch) >= max_count or total + size > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch
