"""Waking the worker's loops at once when work for them has been committed.

The API and the worker know each other only through this module and the database. A loop
(a mailbox's write-back or sender) registers an event here; a transaction that writes work for
it (a `PendingImapAction` or an `OutboundMail` row) wakes it after the commit, whichever code
path wrote the row: web UI, REST API, bulk action, rule or read-back. In one process
(`imapdesk run`) that is immediate; across processes (`imapdesk serve` beside `imapdesk
worker`) the loops find the rows by polling the database on their own schedule.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from enum import StrEnum
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from imapdesk.kernel.models import OutboundMail, PendingImapAction


class Loop(StrEnum):
    WRITEBACK = "writeback"  # drains PendingImapAction rows
    SENDER = "sender"  # delivers OutboundMail rows


_lock = threading.Lock()
_events: dict[tuple[Loop, int], set[threading.Event]] = defaultdict(set)

_WORK: dict[type, Loop] = {PendingImapAction: Loop.WRITEBACK, OutboundMail: Loop.SENDER}
_PENDING_KEY = "imapdesk.wakeups"


def register(loop: Loop, mailbox_id: int) -> threading.Event:
    """An event that is set whenever work for this loop of this mailbox is committed."""
    wake = threading.Event()
    with _lock:
        _events[(loop, mailbox_id)].add(wake)
    return wake


def unregister(loop: Loop, mailbox_id: int, wake: threading.Event) -> None:
    with _lock:
        events = _events.get((loop, mailbox_id))
        if events is not None:
            events.discard(wake)
            if not events:
                del _events[(loop, mailbox_id)]


def wake(loop: Loop, mailbox_id: int | None = None) -> None:
    """Wake this process's loops of one kind, for one mailbox or all."""
    with _lock:
        events = [
            e
            for (kind, box), found in _events.items()
            if kind == loop and (mailbox_id is None or box == mailbox_id)
            for e in found
        ]
    for e in events:
        e.set()


def wake_after_commit(session: Session, loop: Loop, mailbox_id: int) -> None:
    """Wake this loop of this mailbox once `session` commits: for work written by an UPDATE
    (a failed reply queued again), which the flush hook below does not see."""
    session.info.setdefault(_PENDING_KEY, set()).add((loop, mailbox_id))


@event.listens_for(Session, "after_flush")
def _note_new_work(session: Session, _context: Any) -> None:
    for obj in session.new:
        loop = _WORK.get(type(obj))
        if loop is not None:
            session.info.setdefault(_PENDING_KEY, set()).add((loop, obj.mailbox_id))


@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    for loop, mailbox_id in session.info.pop(_PENDING_KEY, ()):
        wake(loop, mailbox_id)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)
