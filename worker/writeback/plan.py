"""What an action is about (its plan, read from the database), what came of it (its outcome),
and the folder it is applied in (selected read-write)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.mailboxes.keywords import Refusal, unkept_by_folder
from imapdesk.kernel.models import (
    Folder,
    FolderRole,
    ImapActionState,
    Mailbox,
    Message,
    MessageLocation,
    PendingImapAction,
)
from imapdesk.mail.imap import ImapSession
from imapdesk.worker.writeback.failures import WriteBackError


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
    # the copy's bytes and arrival time, which a move keeps
    content_hash: str
    internal_date: datetime | None


@dataclass
class Plan:
    action_id: int
    kind: str
    payload: dict[str, Any]
    conversation_id: int | None
    capabilities: dict[str, Any]
    targets: list[Target]
    # folder -> lowercased keyword -> why that folder does not keep it (never sent again)
    unkept: dict[str, dict[str, Refusal]] = field(default_factory=dict)

    def not_kept(self, folder: str, keyword: str) -> Refusal | None:
        """The recorded refusal of this keyword in this folder, if any."""
        return self.unkept.get(folder, {}).get(keyword.lower())


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
    # keywords not written to a folder: refused now, or recorded before (never sent again)
    refused: list[Refusal] = field(default_factory=list)
    stores: int = 0
    moved: int = 0


@dataclass
class FolderView:
    """A folder selected read-write: its keywords, what it keeps, its UIDVALIDITY."""

    name: str
    uidvalidity: int
    # lowercased, in the order of the SELECT's FLAGS (Dovecot lists them in the order its
    # index numbered them: on Maildir, those from the 27th on are not kept)
    keywords: list[str]
    permanent: tuple[str, ...]

    @property
    def creates_keywords(self) -> bool:
        return "\\*" in self.permanent

    def position(self, keyword: str) -> int | None:
        """The keyword's place among the folder's distinct keywords (0-based), if it has it."""
        key = keyword.lower()
        return self.keywords.index(key) if key in self.keywords else None

    def admit(self, keyword: str) -> None:
        """The keyword is sent to the folder: it counts among its keywords from now on."""
        if keyword.lower() not in self.keywords:
            self.keywords.append(keyword.lower())

    def refuse(self, keyword: str) -> None:
        """The folder refused it after all: it does not count."""
        key = keyword.lower()
        if key in self.keywords:
            self.keywords.remove(key)


def load_plan(engine: Engine, mailbox_id: int, action_id: int) -> Plan | None:
    """The pending action with the locations of its conversation (or message); None when it
    is no longer pending."""
    with Session(engine) as db:
        action = db.get(PendingImapAction, action_id)
        if action is None or action.state != ImapActionState.pending:
            return None
        mailbox = db.get(Mailbox, mailbox_id)
        assert mailbox is not None
        q = (
            select(MessageLocation, Folder, Message)
            .join(Folder, col(Folder.id) == col(MessageLocation.folder_id))
            .join(Message, col(Message.id) == col(MessageLocation.message_id))
            .where(Folder.mailbox_id == mailbox_id)
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
                content_hash=loc.content_hash,
                internal_date=loc.internal_date,
            )
            for loc, folder, msg in db.exec(q).all()
            if loc.id is not None and folder.id is not None and msg.id is not None
        ]
        assert action.id is not None
        unkept: dict[str, dict[str, Refusal]] = {}
        if action.kind == "flags":
            unkept = {
                folder: {
                    keyword: Refusal(folder, row.keyword, row.reason, row.detail)
                    for keyword, row in rows.items()
                }
                for folder, rows in unkept_by_folder(db, mailbox_id).items()
            }
        return Plan(
            action_id=action.id,
            kind=action.kind,
            payload=dict(action.payload or {}),
            conversation_id=action.conversation_id,
            capabilities=dict(mailbox.capabilities or {}),
            targets=targets,
            unkept=unkept,
        )


def select_read_write(imap: ImapSession, folder: str, uidvalidity: int | None) -> FolderView:
    """SELECT the folder to write in it; its stored UIDs must still mean the same messages."""
    status = imap.select(folder, readonly=False)
    keywords: list[str] = []
    for flag in status.flags:
        if not flag.startswith("\\") and flag.lower() not in keywords:
            keywords.append(flag.lower())
    view = FolderView(
        name=folder,
        uidvalidity=status.uidvalidity,
        keywords=keywords,
        permanent=status.permanent_flags,
    )
    if uidvalidity is not None and view.uidvalidity != uidvalidity:
        # the stored UIDs mean other messages now: wait until the read side has re-read it
        raise WriteBackError(
            f"{folder}: UIDVALIDITY changed ({uidvalidity} -> {view.uidvalidity}); "
            "waiting for the folder to be read again"
        )
    return view


def by_folder(targets: Iterable[Target]) -> dict[int, list[Target]]:
    out: dict[int, list[Target]] = defaultdict(list)
    for t in targets:
        out[t.folder_id].append(t)
    return dict(out)
