"""One look at the outboxes for the whole worker, rather than one per mailbox.

A mailbox's write-back and sender are woken at once by commits made in this process
(`imapdesk.kernel.wakeups`); what another process commits (`imapdesk serve` beside `imapdesk
worker`) each used to find by polling the database on its own, every `writeback_poll_seconds`
(50 ms) and `sender_poll_seconds`: with hundreds of mailboxes, thousands of queries a second
while nothing happens, and a worker busy with them. Here one thread asks at that pace which
mailboxes have work, and wakes their loops; the loops themselves look only every
`LOOP_POLL_SECONDS`, should a wake-up be missed.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select

from imapdesk.kernel import wakeups
from imapdesk.kernel.models import (
    ImapActionState,
    OutboundMail,
    OutboundState,
    PendingImapAction,
    utcnow,
)
from imapdesk.kernel.settings import Settings

log = logging.getLogger(__name__)

# how often a write-back or a sender looks at its outbox itself, beside the wake-ups
LOOP_POLL_SECONDS = 5.0
# outbound mail that no sender has left to do
_SETTLED = (OutboundState.sent, OutboundState.failed, OutboundState.sending)


class OutboxWatch:
    """Wakes the write-back and the sender of each mailbox that has work in the database."""

    def __init__(self, engine: Engine, settings: Settings, stop: threading.Event) -> None:
        self.engine = engine
        self.settings = settings
        self.stop = stop

    def run(self) -> None:
        settings = self.settings
        interval = min(settings.writeback_poll_seconds, settings.sender_poll_seconds)
        every = max(1, round(settings.sender_poll_seconds / interval))
        turn = 0
        while not self.stop.wait(interval):
            try:
                for mailbox_id in self._writeback_due():
                    wakeups.wake(wakeups.Loop.WRITEBACK, mailbox_id)
                if turn % every == 0:
                    for mailbox_id in self._sender_due():
                        wakeups.wake(wakeups.Loop.SENDER, mailbox_id)
            except Exception:  # the loops' own looks carry on meanwhile
                log.exception("cannot look at the outboxes; trying again")
                self.stop.wait(1.0)
            turn += 1

    def _writeback_due(self) -> list[int]:
        with Session(self.engine) as db:
            return list(
                db.exec(
                    select(PendingImapAction.mailbox_id)
                    .where(
                        col(PendingImapAction.state) == ImapActionState.pending,
                        or_(
                            col(PendingImapAction.next_attempt_at).is_(None),
                            col(PendingImapAction.next_attempt_at) <= utcnow(),
                        ),
                    )
                    .distinct()
                ).all()
            )

    def _sender_due(self) -> list[int]:
        """Mailboxes with mail to send (the sender judges whether it is due) or a copy to file."""
        with Session(self.engine) as db:
            return list(
                db.exec(
                    select(OutboundMail.mailbox_id)
                    .where(
                        or_(
                            col(OutboundMail.state).not_in(_SETTLED),
                            col(OutboundMail.copy_uid).is_(None)
                            & col(OutboundMail.sent_at).is_not(None),
                        )
                    )
                    .distinct()
                ).all()
            )
