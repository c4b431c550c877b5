"""Write-back: drains one mailbox's outbox (`PendingImapAction` rows) to its IMAP server.

One `WriteBack` per mailbox, on its own connection, with read-write SELECTs. It polls the
outbox every `writeback_poll_seconds` (or is woken at once by `notify_outbox()` from an API in
the same process) and applies the due actions in id order.

Decisions:
- **Order and blocking**: actions run strictly in id order; an action that fails (and waits for
  its retry) blocks the later actions of the same conversation (or message), not those of other
  conversations, so one broken conversation never holds up the whole mailbox. An action that
  ends `failed` no longer blocks: it stays visible (state, `last_error`, an Activity) and the
  database keeps the state.
- **One change, one write**: for `flags`, the folder's messages are read first (`UID FETCH
  FLAGS MODSEQ`), only those that still need the change are written, in one `UID STORE` per
  folder and direction, and a replayed action that already reached the server writes nothing.
  With CONDSTORE the STORE carries `UNCHANGEDSINCE` (the highest MODSEQ just read: any later
  change has a higher one). Messages reported `MODIFIED` were changed by someone else
  meanwhile: they are read again, stored on their locations and re-decided (written again only
  where still needed), never blindly retried. A change made between the database's view and
  the first read is seen by comparing MODSEQs, and taken in the same way.
- **Keywords** are sent only where the mailbox keeps them (`\\*` in PERMANENTFLAGS). A folder's
  distinct keywords are counted from the FLAGS of its SELECT; where the probe recorded a
  `keyword_limit` (Dovecot: 26, its Maildir limit), a new keyword beyond it is not sent. After
  a STORE the flags are read back and every added keyword verified. Whatever could not be kept
  is recorded in `Mailbox.capabilities["keywords_dropped"]` (folder, keyword, reason); the
  state itself stays in the database, never silently lost.
- **Moves** take the conversation's messages out of the conversation folders (roles inbox,
  pending, archive, junk, trash, and watched folders) into the folder of the target role
  (special-use wins, else by name, created and subscribed when missing). Sent and Notes are
  never moved: our replies stay in Sent, where Thunderbird users expect them. `UID MOVE` where
  the server has MOVE, else `UID COPY` + `UID STORE +FLAGS.SILENT (\\Deleted)` + `UID EXPUNGE`
  of exactly those UIDs (UIDPLUS); without either the action fails at once rather than risk a
  bare EXPUNGE of other people's mail. New UIDs come from COPYUID.
- **Crash safety**: the IMAP work and the recording of its result are two steps; the action is
  marked done in the same transaction that records the new locations, flags and MODSEQs. A
  crash between them replays the action: UIDs no longer in the source folder are skipped and
  the messages are found in the target by Message-ID; a flags action finds nothing left to
  write. Messages without a Message-ID cannot be found that way.
- **Messages not where the database has them** (moved or expunged by someone else before the
  read side noticed): the action is applied to the others and retried later, when the read
  side has found them or seen them go; if it never does, the action ends `failed`.
- **Failures**: a lost connection is not the action's fault: reconnect with back-off, the
  action stays as it is. Any other failure counts an attempt, records `last_error` and retries
  with exponential back-off; after `writeback_max_attempts` (or at once when retrying cannot
  help) the action is `failed`.
"""

from __future__ import annotations

import imaplib
import logging
import re
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlmodel import Session, col, select

from imapdesk.domain.mailstate import keywords_kept
from imapdesk.domain.sync.ingest import INGEST_LOCK, lock_for_ingest
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import MailServerError
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Folder,
    FolderRole,
    ImapActionState,
    Mailbox,
    Message,
    MessageLocation,
    PendingImapAction,
    as_utc,
    utcnow,
)
from imapdesk.mail.imap import ImapAccount, ImapSession
from imapdesk.worker.backoff import Backoff
from imapdesk.worker.folder_sync import FolderLog, SyncContext, wrote

log = logging.getLogger(__name__)

# a lost connection: reconnect and try the same action again, without counting an attempt
CONNECTION_LOST: tuple[type[BaseException], ...] = (imaplib.IMAP4.abort, OSError)
# ... or not even made (ImapSession turns every connect failure into MailServerError)
CANNOT_CONNECT: tuple[type[BaseException], ...] = (imaplib.IMAP4.abort, OSError, MailServerError)
# rounds of "changed concurrently, read again, decide again" before the attempt gives up
MAX_REDECIDE_ROUNDS = 3
# at most this many actions are looked at per poll
POLL_BATCH = 200
# a connection unused for longer is checked with NOOP before the next action
NOOP_AFTER_SECONDS = 60.0
# at most this many entries in capabilities["keywords_dropped"]
MAX_DROPPED_RECORDS = 200

# folders a conversation's messages are moved out of (besides watched folders)
CONVERSATION_ROLES = frozenset(
    {FolderRole.inbox, FolderRole.pending, FolderRole.archive, FolderRole.junk, FolderRole.trash}
)
# never moved: our replies stay in Sent, internal notes in Notes
NEVER_MOVED_ROLES = frozenset({FolderRole.sent, FolderRole.notes})
# the folder of a role when no special-use attribute names one
DEFAULT_FOLDER_NAMES = {
    FolderRole.inbox: "INBOX",
    FolderRole.pending: "Pending",
    FolderRole.archive: "Archive",
    FolderRole.junk: "Junk",
    FolderRole.trash: "Trash",
}
# system flags the write-back may store (\Deleted never: imapdesk does not delete mail)
STORABLE_SYSTEM_FLAGS = frozenset({"\\seen", "\\flagged", "\\answered", "\\draft"})

_ATOM = re.compile(r"^[\x21-\x7e]+$")
_ATOM_SPECIALS = frozenset('(){%*"\\]')
_FETCH_UID = re.compile(rb"UID (\d+)")
_FETCH_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_FETCH_MODSEQ = re.compile(rb"MODSEQ \((\d+)\)")
_MODIFIED = re.compile(rb"\[MODIFIED ([0-9:,]+)\]")
_COPYUID = re.compile(rb"\[?COPYUID (\d+) ([0-9:,]+) ([0-9:,]+)\]?")


class WriteBackError(MailServerError):
    """An action could not be applied; `permanent` when retrying cannot help."""

    code = "writeback_error"

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# -- waking the loops ---------------------------------------------------------------------------

_loops: weakref.WeakSet[WriteBack] = weakref.WeakSet()
_loops_lock = threading.Lock()


def notify_outbox(mailbox_id: int | None = None) -> None:
    """Wake the write-back loops of this process (of one mailbox, or all) at once."""
    with _loops_lock:
        loops = list(_loops)
    for loop in loops:
        if mailbox_id is None or loop.mailbox_id == mailbox_id:
            loop.wake.set()


# -- what an action is about, and what came of it -------------------------------------------------


@dataclass
class Target:
    """One location the action applies to, as the database knows it."""

    location_id: int
    message_pk: int
    msgid: str | None  # the Message-ID, None when the message has none (a synthetic key)
    folder_id: int
    folder: str
    role: FolderRole
    watched: bool
    folder_uidvalidity: int | None
    uid: int
    flags: tuple[str, ...]
    modseq: int | None


@dataclass
class Plan:
    action_id: int
    kind: str
    payload: dict[str, Any]
    conversation_id: int | None
    capabilities: dict[str, Any]
    targets: list[Target]


@dataclass
class LocationUpdate:
    location_id: int
    flags: list[str] | None = None
    modseq: int | None = None
    # a move: the new place
    folder_id: int | None = None
    uid: int | None = None


@dataclass
class Outcome:
    """What the IMAP work did, recorded in the transaction that marks the action done (also
    when the action fails half-way: what did happen is recorded all the same)."""

    updates: list[LocationUpdate] = field(default_factory=list)
    dropped: list[dict[str, str]] = field(default_factory=list)
    stores: int = 0
    moved: int = 0


@dataclass
class FolderView:
    """A folder selected read-write: its keywords, what it keeps, its UIDVALIDITY."""

    name: str
    uidvalidity: int
    keywords: set[str]  # lowercased
    permanent: tuple[str, ...]

    @property
    def creates_keywords(self) -> bool:
        return "\\*" in self.permanent


@dataclass
class Seen:
    """Flags and MODSEQ of one message as last read from the server."""

    flags: tuple[str, ...]
    modseq: int | None


# -- the loop -------------------------------------------------------------------------------------


class WriteBack:
    """Applies one mailbox's outbox. `run()` returns only when asked to stop."""

    def __init__(self, ctx: SyncContext, mailbox_id: int, name: str, account: ImapAccount) -> None:
        self.ctx = ctx
        self.mailbox_id = mailbox_id
        self.name = name
        self.account = account
        self.log = FolderLog(log, {"label": name})
        settings = ctx.settings
        self.backoff = Backoff(settings.reconnect_initial_seconds, settings.reconnect_max_seconds)
        self.wake = threading.Event()
        self._imap: ImapSession | None = None
        self._last_used = 0.0
        with _loops_lock:
            _loops.add(self)

    # -- outer loop ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.ctx.stop.is_set():
                self.wake.clear()  # a wake-up during the drain makes the wait below return
                try:
                    busy = self.drain()
                    self.backoff.reset()
                except CANNOT_CONNECT as exc:
                    self._discard()
                    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                    self.log.warning("write-back connection failed: %s", message)
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
                    self.wake.wait(self.ctx.settings.writeback_poll_seconds)
        finally:
            self._discard()

    def drain(self) -> bool:
        """Apply every due action once, in id order; True when some action was applied."""
        now = utcnow()
        with Session(self.ctx.engine) as db:
            rows = db.exec(
                select(
                    PendingImapAction.id,
                    PendingImapAction.conversation_id,
                    PendingImapAction.message_id,
                    PendingImapAction.next_attempt_at,
                )
                .where(
                    PendingImapAction.mailbox_id == self.mailbox_id,
                    PendingImapAction.state == ImapActionState.pending,
                )
                .order_by(col(PendingImapAction.id))
                .limit(POLL_BATCH)
            ).all()
        blocked: set[tuple[str, int | None]] = set()
        applied = False
        for action_id, conversation_id, message_id, next_attempt_at in rows:
            if self.ctx.stop.is_set():
                break
            key = ("c", conversation_id) if conversation_id is not None else ("m", message_id)
            if key in blocked:
                continue
            due = as_utc(next_attempt_at)
            if due is not None and due > now:
                blocked.add(key)  # waiting for its retry: later ones of it wait too
                continue
            assert action_id is not None
            if self.apply_action(action_id):
                applied = True
            else:
                blocked.add(key)
        return applied

    def apply_action(self, action_id: int) -> bool:
        """Apply one action and record it; False when it failed (and waits or is failed)."""
        plan = self._load(action_id)
        if plan is None:
            return True
        imap = self._session()  # cannot connect: the loop backs off, no attempt is counted
        outcome = Outcome()
        try:
            self._apply(imap, plan, outcome)
        except CONNECTION_LOST:
            if outcome.updates:
                self._record_partial(plan, outcome)
            raise
        except Exception as exc:
            if not isinstance(exc, WriteBackError | imaplib.IMAP4.error | MailServerError):
                self.log.exception("action %d: unexpected error", plan.action_id)
            self._fail(plan, outcome, exc)
            return False
        self._record(plan, outcome)
        return True

    # -- the connection -----------------------------------------------------------------------
    def _session(self) -> ImapSession:
        if self._imap is not None and time.monotonic() - self._last_used > NOOP_AFTER_SECONDS:
            try:
                self._imap.client.noop()
            except (imaplib.IMAP4.error, OSError):
                self._discard()
        if self._imap is None:
            self._imap = ImapSession(self.account)
            self.log.info("write-back connected")
        self._last_used = time.monotonic()
        return self._imap

    def _discard(self) -> None:
        if self._imap is not None:
            self._imap.close()
            self._imap = None

    # -- reading the action ---------------------------------------------------------------------
    def _load(self, action_id: int) -> Plan | None:
        with Session(self.ctx.engine) as db:
            action = db.get(PendingImapAction, action_id)
            if action is None or action.state != ImapActionState.pending:
                return None
            mailbox = db.get(Mailbox, self.mailbox_id)
            assert mailbox is not None
            q = (
                select(MessageLocation, Folder, Message)
                .join(Folder, col(Folder.id) == col(MessageLocation.folder_id))
                .join(Message, col(Message.id) == col(MessageLocation.message_id))
                .where(Folder.mailbox_id == self.mailbox_id)
                .order_by(col(Folder.id), col(MessageLocation.uid))
            )
            if action.message_id is not None:
                q = q.where(Message.id == action.message_id)
            elif action.conversation_id is not None:
                q = q.where(Message.conversation_id == action.conversation_id)
            else:
                q = q.where(col(Message.id).is_(None))
            targets = [
                Target(
                    location_id=loc.id,
                    message_pk=msg.id,
                    msgid=msg.message_id if msg.has_message_id else None,
                    folder_id=folder.id,
                    folder=folder.name,
                    role=folder.role,
                    watched=folder.watched,
                    folder_uidvalidity=folder.uidvalidity,
                    uid=loc.uid,
                    flags=tuple(loc.flags or ()),
                    modseq=loc.modseq,
                )
                for loc, folder, msg in db.exec(q).all()
                if loc.id is not None and folder.id is not None and msg.id is not None
            ]
            assert action.id is not None
            return Plan(
                action_id=action.id,
                kind=action.kind,
                payload=dict(action.payload or {}),
                conversation_id=action.conversation_id,
                capabilities=dict(mailbox.capabilities or {}),
                targets=targets,
            )

    # -- applying ---------------------------------------------------------------------------------
    def _apply(self, imap: ImapSession, plan: Plan, outcome: Outcome) -> None:
        if plan.kind == "flags":
            self._apply_flags(imap, plan, outcome)
        elif plan.kind == "move":
            self._apply_move(imap, plan, outcome)
        else:
            raise WriteBackError(f"unknown action kind {plan.kind!r}", permanent=True)

    def _select(self, imap: ImapSession, folder: str, uidvalidity: int | None) -> FolderView:
        info = imap.client.select_folder(folder, readonly=False)
        view = FolderView(
            name=folder,
            uidvalidity=int(info[b"UIDVALIDITY"]),
            keywords={
                _text(f).lower() for f in info.get(b"FLAGS", ()) if not _text(f).startswith("\\")
            },
            permanent=tuple(_text(f) for f in info.get(b"PERMANENTFLAGS", ())),
        )
        if uidvalidity is not None and view.uidvalidity != uidvalidity:
            # the stored UIDs mean other messages now: wait until the read side has re-read it
            raise WriteBackError(
                f"{folder}: UIDVALIDITY changed ({uidvalidity} -> {view.uidvalidity}); "
                "waiting for the folder to be read again"
            )
        return view

    # flags ------------------------------------------------------------------------------------
    def _apply_flags(self, imap: ImapSession, plan: Plan, outcome: Outcome) -> None:
        add = _flag_list(plan.payload.get("add"))
        remove = _flag_list(plan.payload.get("remove"))
        for flag in add:
            if flag.startswith("\\") and flag.lower() not in STORABLE_SYSTEM_FLAGS:
                raise WriteBackError(f"the flag {flag} is not written back", permanent=True)
        remove = [f for f in remove if not f.startswith("\\") or f.lower() in STORABLE_SYSTEM_FLAGS]
        keywords = keywords_kept(plan.capabilities)
        limit = plan.capabilities.get("keyword_limit")
        limit = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
        add_system = [f for f in add if f.startswith("\\")]
        add_keywords = [f for f in add if not f.startswith("\\")] if keywords else []
        remove_list = [f for f in remove if f.startswith("\\") or keywords]
        if not keywords and len(add_system) < len(add):
            self.log.debug("action %d: the mailbox keeps no keywords", plan.action_id)
        gone = 0
        for targets in _group(plan.targets).values():
            first = targets[0]
            view = self._select(imap, first.folder, first.folder_uidvalidity)
            add_here = list(add_system)
            for keyword in add_keywords:
                reason = self._keyword_refused(view, keyword, limit)
                if reason:
                    outcome.dropped.append(
                        {"folder": view.name, "keyword": keyword, "reason": reason}
                    )
                    continue
                view.keywords.add(keyword.lower())
                add_here.append(keyword)
            gone += self._store_folder(imap, view, targets, add_here, remove_list, outcome)
        if gone:
            # moved or expunged by someone else: applied to the rest; once the read side has
            # found them (or seen them go), the retry writes only what is still missing
            raise WriteBackError(
                f"{gone} messages are no longer where the database has them; retrying once "
                "the read side has caught up"
            )

    @staticmethod
    def _keyword_refused(view: FolderView, keyword: str, limit: int | None) -> str | None:
        if not _ATOM.match(keyword) or _ATOM_SPECIALS.intersection(keyword):
            return "not an IMAP keyword"
        if keyword.lower() in view.keywords:
            return None
        if not view.creates_keywords and keyword.lower() not in {p.lower() for p in view.permanent}:
            return "the folder keeps no new keywords"
        if limit is not None and len(view.keywords) >= limit:
            return f"the folder has {len(view.keywords)} keywords, the server keeps {limit}"
        return None

    def _store_folder(
        self,
        imap: ImapSession,
        view: FolderView,
        targets: list[Target],
        add: Sequence[str],
        remove: Sequence[str],
        outcome: Outcome,
    ) -> int:
        """Apply the change to one folder's messages; returns how many of them are gone."""
        by_uid = {t.uid: t for t in targets}
        current = fetch_flags(imap, list(by_uid))
        gone = sorted(set(by_uid) - set(current))
        if gone:
            self.log.info("%s: UID %s gone meanwhile", view.name, ",".join(map(str, gone)))
        for uid, seen in current.items():
            known = by_uid[uid].modseq
            if seen.modseq is not None and known is not None and seen.modseq > known:
                self.log.info(
                    "%s: UID %d was changed by someone else (MODSEQ %d -> %d): deciding on "
                    "what it has now",
                    view.name,
                    uid,
                    known,
                    seen.modseq,
                )
        written: set[int] = set()
        written |= self._store(imap, view, "+", add, current, outcome)
        written |= self._store(imap, view, "-", remove, current, outcome)
        if written:
            current.update(fetch_flags(imap, sorted(written)))
        added_keywords = [k for k in add if not k.startswith("\\")]
        for keyword in added_keywords:
            lost = [uid for uid, s in current.items() if keyword.lower() not in _lower(s.flags)]
            if lost:
                self.log.warning(
                    "%s: keyword %s did not stick on UID %s: kept in the database only",
                    view.name,
                    keyword,
                    ",".join(map(str, lost)),
                )
                outcome.dropped.append(
                    {"folder": view.name, "keyword": keyword, "reason": "not kept by the server"}
                )
        for uid, seen in current.items():
            outcome.updates.append(
                LocationUpdate(
                    by_uid[uid].location_id,
                    flags=sorted(f for f in seen.flags if f.lower() != "\\recent"),
                    modseq=seen.modseq,
                )
            )
        return len(gone)

    def _store(
        self,
        imap: ImapSession,
        view: FolderView,
        op: str,
        flags: Sequence[str],
        current: dict[int, Seen],
        outcome: Outcome,
    ) -> set[int]:
        """`UID STORE <op>FLAGS.SILENT` on the messages that still need it; re-read and
        re-decide those changed concurrently. Updates `current`; returns the UIDs written."""
        if not flags:
            return set()
        written: set[int] = set()
        for _round in range(MAX_REDECIDE_ROUNDS):
            need = sorted(uid for uid, s in current.items() if _needs(op, flags, s.flags))
            if not need:
                return written
            item = f"{op}FLAGS.SILENT ({' '.join(flags)})"
            modseqs = [current[uid].modseq for uid in need]
            if imap.condstore and all(m is not None for m in modseqs):
                # any change after the read has a higher MODSEQ than every one just read
                item = f"(UNCHANGEDSINCE {max(m for m in modseqs if m is not None)}) {item}"
            typ, data = raw_command(imap, "UID", "STORE", uid_set(need), item)
            outcome.stores += 1
            if typ != "OK":
                raise WriteBackError(f"{view.name}: UID STORE {item} refused: {_said(data)}")
            modified = set(_parse_modified(data)) & set(need)
            for uid in need:
                if uid not in modified:
                    written.add(uid)
                    current[uid] = Seen(_applied(op, flags, current[uid].flags), None)
            if not modified:
                return written
            self.log.info(
                "%s: UID %s changed concurrently: reading again and deciding again",
                view.name,
                ",".join(map(str, sorted(modified))),
            )
            current.update(fetch_flags(imap, sorted(modified)))
        raise WriteBackError(
            f"{view.name}: messages kept changing concurrently ({MAX_REDECIDE_ROUNDS} rounds)"
        )

    # moves -------------------------------------------------------------------------------------
    def _apply_move(self, imap: ImapSession, plan: Plan, outcome: Outcome) -> None:
        try:
            role = FolderRole(str(plan.payload.get("role", "")))
        except ValueError:
            role = FolderRole.other
        if role not in DEFAULT_FOLDER_NAMES:
            raise WriteBackError(
                f"cannot move to role {plan.payload.get('role')!r}", permanent=True
            )
        if not imap.has("MOVE") and not imap.has("UIDPLUS"):
            raise WriteBackError(
                "the server has neither MOVE nor UIDPLUS: imapdesk will not move mail there "
                "(it would need an EXPUNGE that can remove other people's deleted mail)",
                permanent=True,
            )
        movable = [
            t
            for t in plan.targets
            if t.role not in NEVER_MOVED_ROLES and (t.role in CONVERSATION_ROLES or t.watched)
        ]
        target_id, target_name = self._target_folder(imap, role)
        sources = _group([t for t in movable if t.folder_id != target_id])
        if not sources:
            return
        # UIDs tracked in the target (-> their message): a Message-ID search picks none of
        # another message's (the target's folder sync may have taken ours in already)
        with Session(self.ctx.engine) as db:
            taken = dict(
                db.exec(
                    select(MessageLocation.uid, MessageLocation.message_id).where(
                        MessageLocation.folder_id == target_id
                    )
                ).all()
            )
        lost = 0
        for targets in sources.values():
            first = targets[0]
            self._select(imap, first.folder, first.folder_uidvalidity)
            present = set(search_uids(imap, [t.uid for t in targets]))
            here = [t for t in targets if t.uid in present]
            gone = [t for t in targets if t.uid not in present]
            mapping: dict[int, int] = {}
            if here:
                if imap.has("MOVE"):
                    mapping = self._move(imap, first.folder, target_name, here, outcome)
                else:
                    mapping = self._copy_and_expunge(
                        imap, first.folder, target_name, here, taken, outcome
                    )
            unmapped = gone + [t for t in here if t.uid not in mapping]
            found = self._find_in(imap, target_name, unmapped, taken) if unmapped else {}
            for t in targets:
                new_uid = mapping.get(t.uid) or found.get(t.location_id)
                if new_uid is None:
                    self.log.warning(
                        "%s: UID %d is neither there nor found in %s",
                        first.folder,
                        t.uid,
                        target_name,
                    )
                    lost += 1
                    continue
                taken[new_uid] = t.message_pk
                outcome.updates.append(
                    LocationUpdate(t.location_id, folder_id=target_id, uid=new_uid)
                )
        moved = [u for u in outcome.updates if u.folder_id == target_id and u.uid is not None]
        if moved:
            self._read_moved(imap, target_name, moved)
        if lost:
            # someone else moved or expunged them: once the read side knows where they are
            # (or that they are gone), the retry moves what is left
            raise WriteBackError(
                f"{lost} messages were neither where the database has them nor in "
                f"{target_name}; retrying once the read side has caught up"
            )

    def _read_moved(self, imap: ImapSession, target_name: str, moved: list[LocationUpdate]) -> None:
        """The flags and MODSEQ of the new copies, so the read side knows them as they are."""
        self._select(imap, target_name, None)
        seen = fetch_flags(imap, [u.uid for u in moved if u.uid is not None])
        for u in moved:
            s = seen.get(u.uid) if u.uid is not None else None
            if s is not None:
                u.flags = sorted(f for f in s.flags if f.lower() != "\\recent")
                u.modseq = s.modseq

    def _move(
        self, imap: ImapSession, source: str, target: str, here: list[Target], outcome: Outcome
    ) -> dict[int, int]:
        uids = sorted(t.uid for t in here)
        typ, data = self._copy_command(imap, "MOVE", uids, target)
        if typ != "OK":
            raise WriteBackError(f"{source}: UID MOVE to {target} refused: {_said(data)}")
        outcome.moved += len(uids)
        self.log.info("moved %d messages from %s to %s", len(uids), source, target)
        return _copyuid(imap, data)

    def _copy_and_expunge(
        self,
        imap: ImapSession,
        source: str,
        target: str,
        here: list[Target],
        taken: dict[int, int],
        outcome: Outcome,
    ) -> dict[int, int]:
        """MOVE without MOVE: COPY what the target lacks, then \\Deleted and UID EXPUNGE
        exactly those UIDs. A message already in the target (an earlier attempt copied it,
        then died) is not copied twice."""
        by_uid = {t.uid: t for t in here}
        already = self._find_in(imap, target, here, taken)
        self._select(imap, source, None)
        mapping = {t.uid: already[t.location_id] for t in here if t.location_id in already}
        to_copy = sorted(uid for uid in by_uid if uid not in mapping)
        if to_copy:
            typ, data = self._copy_command(imap, "COPY", to_copy, target)
            if typ != "OK":
                raise WriteBackError(f"{source}: UID COPY to {target} refused: {_said(data)}")
            mapping.update(_copyuid(imap, data))
        uids = uid_set(sorted(by_uid))
        typ, data = raw_command(imap, "UID", "STORE", uids, "+FLAGS.SILENT (\\Deleted)")
        outcome.stores += 1
        if typ != "OK":
            raise WriteBackError(f"{source}: UID STORE \\Deleted refused: {_said(data)}")
        typ, data = raw_command(imap, "UID", "EXPUNGE", uids)
        if typ != "OK":
            raise WriteBackError(f"{source}: UID EXPUNGE refused: {_said(data)}")
        outcome.moved += len(by_uid)
        self.log.info(
            "moved %d messages from %s to %s (COPY, \\Deleted, UID EXPUNGE)",
            len(by_uid),
            source,
            target,
        )
        return mapping

    def _copy_command(
        self, imap: ImapSession, command: str, uids: list[int], target: str
    ) -> tuple[str, list[Any]]:
        folder = _quoted_folder(imap, target)
        typ, data = raw_command(imap, "UID", command, uid_set(uids), folder)
        if typ == "NO" and b"TRYCREATE" in b" ".join(_bytes(d) for d in data):
            self._create(imap, target)
            typ, data = raw_command(imap, "UID", command, uid_set(uids), folder)
        return typ, data

    def _find_in(
        self, imap: ImapSession, folder: str, targets: Iterable[Target], taken: dict[int, int]
    ) -> dict[int, int]:
        """location id -> UID of the same message in `folder`, found by Message-ID."""
        wanted = [t for t in targets if t.msgid]
        if not wanted:
            return {}
        self._select(imap, folder, None)
        found: dict[int, int] = {}
        for t in wanted:
            assert t.msgid is not None
            if not t.msgid.isascii() or any(c in t.msgid for c in '"\\\r\n'):
                continue
            candidates = search(imap, f'HEADER Message-ID "<{t.msgid}>"')
            free = [
                u
                for u in candidates
                if taken.get(u, t.message_pk) == t.message_pk and u not in found.values()
            ]
            if free:
                found[t.location_id] = max(free)
        return found

    def _target_folder(self, imap: ImapSession, role: FolderRole) -> tuple[int, str]:
        """The mailbox's folder of this role: special-use (as the probe stored it), else by
        name, created and subscribed when missing; a Folder row with that role."""
        default = DEFAULT_FOLDER_NAMES[role]
        with Session(self.ctx.engine) as db:
            folders = list(db.exec(select(Folder).where(Folder.mailbox_id == self.mailbox_id)))
        chosen = next((f for f in folders if f.role == role), None)
        if chosen is None:
            chosen = next((f for f in folders if f.name.lower() == default.lower()), None)
        name = chosen.name if chosen is not None else default
        if chosen is None or chosen.role != role:
            on_server = {n.lower(): n for n, _role in imap.list_folders()}
            if name.lower() in on_server:
                name = on_server[name.lower()]
            else:
                self._create(imap, name)
        with unit_of_work(self.ctx.engine) as db:
            folder = db.exec(
                select(Folder).where(Folder.mailbox_id == self.mailbox_id, Folder.name == name)
            ).first()
            if folder is None:
                folder = Folder(mailbox_id=self.mailbox_id, name=name, role=role, watched=False)
                db.add(folder)
                db.flush()
            elif folder.role != role and folder.role == FolderRole.other:
                folder.role = role
            assert folder.id is not None
            return folder.id, name

    def _create(self, imap: ImapSession, name: str) -> None:
        try:
            imap.client.create_folder(name)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            if "exist" not in str(exc).lower():
                raise WriteBackError(f"cannot create the folder {name}: {exc}") from exc
        imap.client.subscribe_folder(name)
        self.log.info("created and subscribed the folder %s", name)

    # -- recording ------------------------------------------------------------------------------
    def _record(self, plan: Plan, outcome: Outcome) -> None:
        with INGEST_LOCK, unit_of_work(self.ctx.engine) as db:
            lock_for_ingest(db)
            flagged = self._write_outcome(db, outcome)
            action = db.get(PendingImapAction, plan.action_id)
            if action is not None:
                action.state = ImapActionState.done
                action.done_at = utcnow()
                action.next_attempt_at = None
            if flagged and self.ctx.on_mail_change is not None:
                # the flags just read may hold another client's change made meanwhile: it is
                # recorded here, so the read side will see no difference; judge it now
                db.flush()
                self.ctx.on_mail_change(db, self.mailbox_id, flagged)
        self.log.info(
            "action %d (%s) done: %d STORE, %d moved, %d keywords not kept",
            plan.action_id,
            plan.kind,
            outcome.stores,
            outcome.moved,
            len(outcome.dropped),
        )

    def _record_partial(self, plan: Plan, outcome: Outcome) -> None:
        try:
            with INGEST_LOCK, unit_of_work(self.ctx.engine) as db:
                lock_for_ingest(db)
                self._write_outcome(db, outcome)
        except Exception:
            self.log.exception("action %d: could not record what was done", plan.action_id)

    def _fail(self, plan: Plan, outcome: Outcome, exc: BaseException) -> None:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        settings = self.ctx.settings
        with INGEST_LOCK, unit_of_work(self.ctx.engine) as db:
            lock_for_ingest(db)
            self._write_outcome(db, outcome)
            action = db.get(PendingImapAction, plan.action_id)
            if action is None:
                return
            action.attempts += 1
            action.last_error = f"{utcnow():%Y-%m-%d %H:%M:%S} UTC: {message}"[:2000]
            permanent = isinstance(exc, WriteBackError) and exc.permanent
            if permanent or action.attempts >= settings.writeback_max_attempts:
                action.state = ImapActionState.failed
                action.next_attempt_at = None
                if action.conversation_id is not None:
                    db.add(
                        Activity(
                            conversation_id=action.conversation_id,
                            source=ActivitySource.system,
                            actor="write-back",
                            action="writeback_failed",
                            details={"action_id": action.id, "kind": action.kind, "error": message},
                        )
                    )
                self.log.warning(
                    "action %d (%s) failed for good after %d attempts: %s",
                    plan.action_id,
                    plan.kind,
                    action.attempts,
                    message,
                )
                return
            delay = min(
                settings.writeback_retry_max_seconds,
                settings.writeback_retry_initial_seconds * 2 ** (action.attempts - 1),
            )
            action.next_attempt_at = utcnow() + timedelta(seconds=delay)
            self.log.warning(
                "action %d (%s) attempt %d failed, retrying in %.0f s: %s",
                plan.action_id,
                plan.kind,
                action.attempts,
                delay,
                message,
            )

    def _write_outcome(self, db: Session, outcome: Outcome) -> set[int]:
        """Record the new places and flags; returns the ids of messages whose flags were read."""
        if outcome.updates:
            wrote(self.mailbox_id)
        counts: dict[int, int] = defaultdict(int)
        flagged: set[int] = set()
        for update in outcome.updates:
            loc = db.get(MessageLocation, update.location_id)
            if loc is None:
                continue  # the read side saw it vanish meanwhile
            moved = update.folder_id is not None and update.uid is not None
            if moved and (loc.folder_id, loc.uid) != (update.folder_id, update.uid):
                assert update.folder_id is not None and update.uid is not None
                there = db.exec(
                    select(MessageLocation).where(
                        MessageLocation.folder_id == update.folder_id,
                        MessageLocation.uid == update.uid,
                    )
                ).first()
                counts[loc.folder_id] -= 1
                if there is not None:
                    # the target's folder sync took the new copy in first: one location
                    db.delete(loc)
                    loc = there
                else:
                    loc.folder_id = update.folder_id
                    loc.uid = update.uid
                    counts[update.folder_id] += 1
            if update.flags is not None:
                loc.flags = list(update.flags)
                loc.modseq = update.modseq
                flagged.add(loc.message_id)
            db.flush()
        for folder_id, delta in counts.items():
            folder = db.get(Folder, folder_id)
            if folder is not None and delta:
                folder.message_count = max(0, folder.message_count + delta)
        if outcome.dropped:
            mailbox = db.get(Mailbox, self.mailbox_id)
            if mailbox is not None:
                caps = dict(mailbox.capabilities or {})
                records = list(caps.get("keywords_dropped") or [])
                for entry in outcome.dropped:
                    known = next(
                        (
                            r
                            for r in records
                            if r.get("folder") == entry["folder"]
                            and r.get("keyword") == entry["keyword"]
                        ),
                        None,
                    )
                    if known is not None:
                        records.remove(known)
                    records.append({**entry, "at": utcnow().isoformat(timespec="seconds")})
                caps["keywords_dropped"] = records[-MAX_DROPPED_RECORDS:]
                mailbox.capabilities = caps
        return flagged


# -- IMAP helpers (on an ImapSession, kept here so imap.py stays the read side's) -----------------


def raw_command(imap: ImapSession, *args: str) -> tuple[str, list[Any]]:
    """A command imapclient has no helper for; untagged responses start empty."""
    raw: Any = imap.client._imap
    raw.untagged_responses.clear()
    typ, data = raw._simple_command(*args)
    return str(typ), list(data or [])


def fetch_flags(imap: ImapSession, uids: Sequence[int]) -> dict[int, Seen]:
    """FLAGS (and MODSEQ) of these UIDs in the selected folder; missing ones are gone."""
    if not uids:
        return {}
    items = "(UID FLAGS MODSEQ)" if imap.condstore else "(UID FLAGS)"
    typ, data = raw_command(imap, "UID", "FETCH", uid_set(sorted(set(uids))), items)
    if typ != "OK":
        raise WriteBackError(f"UID FETCH FLAGS failed: {_said(data)}")
    raw: Any = imap.client._imap
    lines = raw.untagged_responses.pop("FETCH", [])
    wanted = set(uids)
    out: dict[int, Seen] = {}
    for line in lines:
        line = _bytes(line)
        m_uid = _FETCH_UID.search(line)
        m_flags = _FETCH_FLAGS.search(line)
        if not m_uid or not m_flags:
            continue  # an unsolicited update without UID or FLAGS
        uid = int(m_uid.group(1))
        if uid not in wanted:
            continue
        m_modseq = _FETCH_MODSEQ.search(line)
        flags = tuple(f for f in m_flags.group(1).decode("utf-8", "replace").split() if f)
        out[uid] = Seen(flags, int(m_modseq.group(1)) if m_modseq else None)
    return out


def search(imap: ImapSession, criteria: str) -> list[int]:
    typ, data = raw_command(imap, "UID", "SEARCH", criteria)
    if typ != "OK":
        raise WriteBackError(f"UID SEARCH {criteria} failed: {_said(data)}")
    raw: Any = imap.client._imap
    found: list[int] = []
    for line in raw.untagged_responses.pop("SEARCH", []):
        found.extend(int(x) for x in _bytes(line).split() if x.isdigit())
    return sorted(set(found))


def search_uids(imap: ImapSession, uids: Sequence[int]) -> list[int]:
    """Which of these UIDs are still in the selected folder."""
    if not uids:
        return []
    wanted = set(uids)
    return [u for u in search(imap, f"UID {uid_set(sorted(wanted))}") if u in wanted]


def uid_set(uids: Sequence[int]) -> str:
    """Compact sequence set of ascending UIDs: 1:5,7,9:12."""
    parts: list[str] = []
    start = prev = uids[0]
    for uid in uids[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if start != prev else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


def expand_set(value: str) -> list[int]:
    """A sequence set in its written order (COPYUID pairs sets position by position)."""
    out: list[int] = []
    for part in value.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":", 1))
            out.extend(range(a, b + 1) if a <= b else range(a, b - 1, -1))
        elif part:
            out.append(int(part))
    return out


def _copyuid(imap: ImapSession, data: list[Any]) -> dict[int, int]:
    """Old UID -> new UID from COPYUID (RFC 4315): in the tagged OK (COPY) or an untagged OK
    before the EXPUNGEs (MOVE)."""
    raw: Any = imap.client._imap
    texts = [_bytes(d) for d in data]
    texts += [b"COPYUID " + _bytes(d) for d in raw.untagged_responses.get("COPYUID", [])]
    texts += [_bytes(d) for d in raw.untagged_responses.get("OK", [])]
    mapping: dict[int, int] = {}
    for text in texts:
        for m in _COPYUID.finditer(text):
            old = expand_set(m.group(2).decode())
            new = expand_set(m.group(3).decode())
            if len(old) == len(new):
                mapping.update(zip(old, new, strict=True))
    return mapping


def _parse_modified(data: list[Any]) -> list[int]:
    for d in data:
        m = _MODIFIED.search(_bytes(d))
        if m:
            return expand_set(m.group(1).decode())
    return []


def _quoted_folder(imap: ImapSession, name: str) -> str:
    normalised: Any = imap.client._normalise_folder(name)
    return normalised.decode("ascii") if isinstance(normalised, bytes) else str(normalised)


def _needs(op: str, flags: Sequence[str], have: Sequence[str]) -> bool:
    present = _lower(have)
    if op == "+":
        return any(f.lower() not in present for f in flags)
    return any(f.lower() in present for f in flags)


def _applied(op: str, flags: Sequence[str], have: Sequence[str]) -> tuple[str, ...]:
    if op == "+":
        present = _lower(have)
        return tuple(have) + tuple(f for f in flags if f.lower() not in present)
    gone = {f.lower() for f in flags}
    return tuple(f for f in have if f.lower() not in gone)


def _group(targets: Iterable[Target]) -> dict[int, list[Target]]:
    out: dict[int, list[Target]] = defaultdict(list)
    for t in targets:
        out[t.folder_id].append(t)
    return dict(out)


def _flag_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise WriteBackError(f"flags must be a list, not {value!r}", permanent=True)
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise WriteBackError(f"not a flag: {item!r}", permanent=True)
        if item.lower() not in {f.lower() for f in out}:
            out.append(item)
    return out


def _lower(flags: Iterable[str]) -> set[str]:
    return {f.lower() for f in flags}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, tuple):
        return b" ".join(_bytes(v) for v in value)
    return str(value).encode()


def _said(data: list[Any]) -> str:
    return " ".join(_text(d) for d in data if d is not None)[:300]
