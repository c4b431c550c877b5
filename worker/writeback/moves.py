"""Moves: a conversation's messages into the folder of its new role.

The messages are taken out of the conversation folders (roles inbox, pending, archive, junk,
trash, and watched folders) into the folder of the target role (the mailbox's setting, else
special-use, else by name; created and subscribed under the namespace's prefix when missing:
`imapdesk.worker.mailbox_folders`). Sent and Notes are never moved. `UID MOVE` where
the server has MOVE, else `UID COPY` + `UID STORE +FLAGS.SILENT (\\Deleted)` + `UID EXPUNGE`
of exactly those UIDs (UIDPLUS); without either the action fails at once. New UIDs come from
COPYUID, or, on a replay, from a Message-ID search in the target.
"""

from __future__ import annotations

import imaplib
import logging
from collections.abc import Iterable

from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.domain.mailboxes.config import ensure_folder
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Folder, FolderRole, MessageLocation
from imapdesk.mail.imap import ImapReply, ImapSession
from imapdesk.worker.mailbox_folders import FolderUnavailable, folder_for_role
from imapdesk.worker.writeback.failures import WriteBackError
from imapdesk.worker.writeback.plan import (
    LocationUpdate,
    Outcome,
    Plan,
    Target,
    by_folder,
    select_read_write,
)

# folders a conversation's messages are moved out of (besides watched folders)
CONVERSATION_ROLES = frozenset(
    {FolderRole.inbox, FolderRole.pending, FolderRole.archive, FolderRole.junk, FolderRole.trash}
)
# never moved: our replies stay in Sent, internal notes in Notes
NEVER_MOVED_ROLES = frozenset({FolderRole.sent, FolderRole.notes})
# the roles a conversation's messages are moved into, one per status
TARGET_ROLES = CONVERSATION_ROLES


class Moves:
    """Applies `move` actions of one mailbox."""

    def __init__(
        self, engine: Engine, mailbox_id: int, log: logging.LoggerAdapter[logging.Logger]
    ) -> None:
        self.engine = engine
        self.mailbox_id = mailbox_id
        self.log = log

    def apply(self, imap: ImapSession, plan: Plan, outcome: Outcome) -> None:
        try:
            role = FolderRole(str(plan.payload.get("role", "")))
        except ValueError:
            role = FolderRole.other
        if role not in TARGET_ROLES:
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
        sources = by_folder([t for t in movable if t.folder_id != target_id])
        if not sources:
            return
        # UIDs tracked in the target (-> their message): a Message-ID search picks none of
        # another message's (the target's folder sync may have taken ours in already)
        with Session(self.engine) as db:
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
            select_read_write(imap, first.folder, first.folder_uidvalidity)
            present = set(imap.uids_present([t.uid for t in targets]))
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
        select_read_write(imap, target_name, None)
        seen = imap.fetch_flags([u.uid for u in moved if u.uid is not None])
        for u in moved:
            s = seen.get(u.uid) if u.uid is not None else None
            if s is not None:
                u.flags = sorted(f for f in s.flags if f.lower() != "\\recent")
                u.modseq = s.modseq

    def _move(
        self, imap: ImapSession, source: str, target: str, here: list[Target], outcome: Outcome
    ) -> dict[int, int]:
        uids = sorted(t.uid for t in here)
        reply = self._copy_or_move(imap, "MOVE", uids, target)
        if not reply.ok:
            raise WriteBackError(f"{source}: UID MOVE to {target} refused: {reply.said}")
        outcome.moved += len(uids)
        self.log.info("moved %d messages from %s to %s", len(uids), source, target)
        return reply.copied

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
        select_read_write(imap, source, None)
        mapping = {t.uid: already[t.location_id] for t in here if t.location_id in already}
        to_copy = sorted(uid for uid in by_uid if uid not in mapping)
        if to_copy:
            reply = self._copy_or_move(imap, "COPY", to_copy, target)
            if not reply.ok:
                raise WriteBackError(f"{source}: UID COPY to {target} refused: {reply.said}")
            mapping.update(reply.copied)
        uids = sorted(by_uid)
        reply = imap.store_flags(uids, "+", ["\\Deleted"])
        outcome.stores += 1
        if not reply.ok:
            raise WriteBackError(f"{source}: UID STORE \\Deleted refused: {reply.said}")
        reply = imap.expunge(uids)
        if not reply.ok:
            raise WriteBackError(f"{source}: UID EXPUNGE refused: {reply.said}")
        outcome.moved += len(by_uid)
        self.log.info(
            "moved %d messages from %s to %s (COPY, \\Deleted, UID EXPUNGE)",
            len(by_uid),
            source,
            target,
        )
        return mapping

    def _copy_or_move(
        self, imap: ImapSession, command: str, uids: list[int], target: str
    ) -> ImapReply:
        """UID MOVE or COPY; a target the server says to create first (TRYCREATE) is created
        and the command sent once more."""
        send = imap.move if command == "MOVE" else imap.copy
        reply = send(uids, target)
        if reply.status == "NO" and reply.tells("TRYCREATE"):
            self._create(imap, target)
            reply = send(uids, target)
        return reply

    def _find_in(
        self, imap: ImapSession, folder: str, targets: Iterable[Target], taken: dict[int, int]
    ) -> dict[int, int]:
        """location id -> UID of the same message in `folder`, found by Message-ID."""
        wanted = [t for t in targets if t.msgid]
        if not wanted:
            return {}
        select_read_write(imap, folder, None)
        found: dict[int, int] = {}
        for t in wanted:
            assert t.msgid is not None
            if not t.msgid.isascii() or any(c in t.msgid for c in '"\\\r\n'):
                continue
            candidates = imap.search(f'HEADER Message-ID "<{t.msgid}>"')
            free = [
                u
                for u in candidates
                if taken.get(u, t.message_pk) == t.message_pk and u not in found.values()
            ]
            if free:
                found[t.location_id] = max(free)
        return found

    def _target_folder(self, imap: ImapSession, role: FolderRole) -> tuple[int, str]:
        """The mailbox's folder of this role (`imapdesk.worker.mailbox_folders`: the one rule
        of the whole worker), set up when it has none yet; a folder the server will not
        create fails the action at once, naming the folder and what to set."""
        if role == FolderRole.inbox:
            with unit_of_work(self.engine) as db:
                inbox = db.exec(
                    select(Folder).where(
                        Folder.mailbox_id == self.mailbox_id, Folder.role == FolderRole.inbox
                    )
                ).first() or ensure_folder(db, self.mailbox_id, "INBOX", role, watched=False)
                assert inbox.id is not None
                return inbox.id, inbox.name
        try:
            return folder_for_role(self.engine, self.mailbox_id, role, lambda: imap)
        except FolderUnavailable as exc:
            raise WriteBackError(exc.message, permanent=True) from exc

    def _create(self, imap: ImapSession, name: str) -> None:
        try:
            imap.create_folder(name)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            if "exist" not in str(exc).lower():
                raise WriteBackError(f"cannot create the folder {name}: {exc}") from exc
            imap.subscribe(name)  # there already (another client made it): subscribed all the same
        self.log.info("created and subscribed the folder %s", name)
