"""The sender: delivers one mailbox's queued replies by SMTP and files their copies.

One `Sender` per mailbox (a thread started by the MailboxRunner, like the write-back), polling
`OutboundMail` every `sender_poll_seconds`, or woken at once when a transaction that queued mail
for its mailbox commits in this process (`imapdesk.kernel.wakeups`, `Loop.SENDER`).

Each message goes through steps, each recorded before the next begins, so that a worker
killed at any point neither loses a reply nor sends it twice:
0. **scheduled**: a reply in its undo window is not touched before `next_attempt_at`; the
   claim itself says so, so no sender ever sends it earlier, and one that was killed meanwhile
   leaves nothing behind (the next takes it when it is due). Until a sender claims it, an
   agent can take it back (`imapdesk.domain.outbound.actions`).
1. **claim**: `queued` (or `scheduled` and due) `-> sending` with a conditional UPDATE (one
   sender wins, and an agent taking it back at the same moment finds it gone), committed
   before connecting.
2. **send**: MAIL, RCPT, DATA; just before the final "." the row records `final_dot_at`
   (committed). A sender that dies before it leaves an incomplete message the server drops:
   the row goes back to `queued` and is sent again. Once it is recorded the message is taken
   as sent: a sender that dies before it recorded the server's answer never sends it again.
3. **sent**: `sent`, the server's words, and in the same transaction `\\Answered` on the
   answered message and the mailbox's status after a reply
   (`imapdesk.domain.outbound.delivery.after_sent`, written back by the write-back).
4. **copy**: the copy goes to Sent (`\\Seen`), a note to Notes; first looked for by
   Message-ID, so a copy appended just before a crash is found, not appended twice.

The one window left is between recording `final_dot_at` and writing the "." itself (one
socket write): a process killed exactly there has its message taken as sent though the server
dropped it; the row says so ("taken as sent: ...") so that an agent can check. The opposite
order would send twice instead; imapdesk prefers never sending twice.

A dead sender's `sending` rows (its process gone, or its claim older than a lease) are taken
over by the next sender. SMTP failures are named for what they are (`imapdesk.mail.smtp`):
temporary ones (a 4xx reply, no connection) are retried with exponential back-off; permanent
ones (a 5xx reply, or settings that cannot work with the server: a login it offers no AUTH for,
a certificate it cannot verify, an address that needs SMTPUTF8 where it is not offered) fail at
once, with the server's words on the conversation (`last_error`, an activity). Every change of
state moves the conversation's version (`delivery_changed`): open pages show it live.
"""

from __future__ import annotations

import hashlib
import imaplib
import logging
import os
import re
import signal
import smtplib
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from imapclient.exceptions import IMAPClientError
from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from imapdesk.domain.mailboxes.servers import smtp_account
from imapdesk.domain.outbound.delivery import after_sent, delivery_changed
from imapdesk.domain.sync.ingest import INGEST_LOCK, lock_for_ingest
from imapdesk.kernel import wakeups
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import MailServerError
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Folder,
    FolderRole,
    Mailbox,
    MessageLocation,
    OutboundMail,
    OutboundState,
    as_utc,
    utcnow,
)
from imapdesk.mail import smtp
from imapdesk.mail.compose import envelope_address
from imapdesk.mail.imap import ImapAccount, ImapSession
from imapdesk.mail.imap.folders import create_folder
from imapdesk.worker.backoff import Backoff
from imapdesk.worker.connections import MailboxConnections, Role
from imapdesk.worker.folder_sync import FolderLog, SyncContext
from imapdesk.worker.mailbox_folders import FolderUnavailable, folder_for_role, refusal

log = logging.getLogger(__name__)

# fault injection for the crash tests: the process kills itself (SIGKILL) at this step
CRASH_ENV = "IMAPDESK_TEST_CRASH_AT"
CRASH_POINTS = ("claimed", "final_dot", "accepted", "recorded", "appended")
# a claim older than this is a dead sender's, whatever its process id says
LEASE = timedelta(minutes=10)
# what a sender claims once it is due (scheduled: once its undo window is over)
_SENDABLE = (OutboundState.queued, OutboundState.scheduled)
# how `last_error` begins while a sent reply's copy (a note) could not be filed
_NOT_FILED = "the copy was not filed: "
_APPENDUID = re.compile(rb"APPENDUID (\d+) (\d+)")
_IMAP_ERRORS: tuple[type[BaseException], ...] = (
    imaplib.IMAP4.error,
    IMAPClientError,
    OSError,
    MailServerError,
)


def _crash(point: str) -> None:
    if os.environ.get(CRASH_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _owner_alive(claimed_by: str | None, me: str) -> bool:
    if not claimed_by:
        return False
    host, _, pid = claimed_by.rpartition(":")
    if claimed_by == me:
        return False  # our own, left by an earlier run of this thread
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's: only the lease tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Sender:
    """Sends one mailbox's outgoing mail. `run()` returns only when asked to stop."""

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
        # the mailbox's shared connections (worker/connections.py): the copies are filed on the
        # write connection, in turn with the write-back; None: a connection of its own
        self.connections = connections
        self._held: ImapSession | None = None
        # how often the queue is looked at beside the wake-ups (longer where the worker's one
        # outbox watch wakes it: worker/outbox_watch.py)
        self.poll_seconds = ctx.settings.sender_poll_seconds
        self.log = FolderLog(log, {"label": f"{name}/sender"})
        settings = ctx.settings
        self.backoff = Backoff(settings.reconnect_initial_seconds, settings.reconnect_max_seconds)
        # set by a commit that queued mail for this mailbox; unregistered when run() ends
        self.wake = wakeups.register(wakeups.Loop.SENDER, mailbox_id)
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        # whether the SMTP server offered SMTPUTF8, as last written on the mailbox
        self._smtputf8: bool | None = None
        self._connection: ImapSession | None = None

    # -- loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.ctx.stop.is_set():
                self.wake.clear()
                try:
                    self.recover()
                    busy = self.drain()
                    self.backoff.reset()
                except _IMAP_ERRORS as exc:
                    self._discard()
                    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                    self.log.warning("sender: IMAP failed: %s", message)
                    if self.backoff.wait(self.ctx.stop):
                        break
                    continue
                except Exception:  # a bug must not end the worker
                    self._discard()
                    self.log.exception("sender: unexpected error")
                    if self.backoff.wait(self.ctx.stop):
                        break
                    continue
                if not busy:
                    self.wake.wait(self.poll_seconds)
        finally:
            self._discard()
            wakeups.unregister(wakeups.Loop.SENDER, self.mailbox_id, self.wake)

    def drain(self) -> bool:
        """Send what is due, then file the copies; True when something was done."""
        now = utcnow()
        with Session(self.ctx.engine) as db:
            due = db.exec(
                select(OutboundMail.id)
                .where(
                    col(OutboundMail.mailbox_id) == self.mailbox_id,
                    col(OutboundMail.state).in_(_SENDABLE),
                    col(OutboundMail.kind) != "note",
                    or_(
                        col(OutboundMail.next_attempt_at).is_(None),
                        col(OutboundMail.next_attempt_at) <= now,
                    ),
                )
                .order_by(col(OutboundMail.id))
                .limit(50)
            ).all()
            copies = db.exec(
                select(OutboundMail.id)
                .where(
                    col(OutboundMail.mailbox_id) == self.mailbox_id,
                    col(OutboundMail.copy_uid).is_(None),
                    or_(
                        col(OutboundMail.sent_at).is_not(None),
                        (col(OutboundMail.kind) == "note")
                        & (col(OutboundMail.state) == OutboundState.queued),
                    ),
                )
                .order_by(col(OutboundMail.id))
                .limit(50)
            ).all()
        busy = False
        client: smtplib.SMTP | None = None
        try:
            for outbound_id in due:
                if self.ctx.stop.is_set():
                    break
                assert outbound_id is not None
                client = self.send_one(outbound_id, client)
                busy = True
        finally:
            smtp.close(client)
        for outbound_id in copies:
            if self.ctx.stop.is_set():
                break
            assert outbound_id is not None
            with self._imap_turn():
                busy = self.file_copy(outbound_id) or busy
        if due:
            # what was just sent gets its copy without waiting for the next poll
            self.wake.set()
        return busy

    # -- recovery -------------------------------------------------------------------------------
    def recover(self) -> None:
        """Take over the `sending` rows of senders that died."""
        with Session(self.ctx.engine) as db:
            rows = db.exec(
                select(OutboundMail.id, OutboundMail.claimed_by, OutboundMail.claimed_at).where(
                    col(OutboundMail.mailbox_id) == self.mailbox_id,
                    col(OutboundMail.state) == OutboundState.sending,
                )
            ).all()
        for outbound_id, claimed_by, claimed_at in rows:
            claimed = as_utc(claimed_at)
            expired = claimed is None or utcnow() - claimed > LEASE
            if not expired and _owner_alive(claimed_by, self.me):
                continue
            with unit_of_work(self.ctx.engine) as db:
                outbound = db.get(OutboundMail, outbound_id)
                if outbound is None or outbound.state != OutboundState.sending:
                    continue
                if outbound.claimed_by != claimed_by:
                    continue
                delivery_changed(db, outbound.conversation_id)
                if outbound.final_dot_at is not None:
                    # the whole message went out: taken as sent, never sent twice
                    outbound.state = OutboundState.sent
                    outbound.sent_at = outbound.final_dot_at
                    outbound.smtp_response = (
                        "taken as sent: the worker stopped after the whole message had gone "
                        "to the SMTP server"
                    )
                    outbound.updated_at = utcnow()
                    after_sent(db, outbound)
                    self.log.warning(
                        "outbound %d: the sender stopped after the final dot; taken as sent",
                        outbound_id,
                    )
                else:
                    outbound.state = OutboundState.queued
                    outbound.claimed_by = None
                    outbound.next_attempt_at = None
                    outbound.updated_at = utcnow()
                    self.log.info(
                        "outbound %d: the sender stopped before sending; queued", outbound_id
                    )

    # -- sending --------------------------------------------------------------------------------
    def _claim(self, outbound_id: int) -> bool:
        """`sending`, if it still waits to be sent and is due (its undo window over): the
        condition is the guarantee, whatever the list of due rows said a moment ago."""
        now = utcnow()
        with unit_of_work(self.ctx.engine) as db:
            conversation_id = db.exec(
                select(OutboundMail.conversation_id).where(col(OutboundMail.id) == outbound_id)
            ).first()
            # the conversation's row first, as every change to it (an agent's undo or retry
            # too) takes them: never the other way round, which could deadlock
            delivery_changed(db, conversation_id)
            result = db.exec(
                update(OutboundMail)
                .where(
                    col(OutboundMail.id) == outbound_id,
                    col(OutboundMail.state).in_(_SENDABLE),
                    or_(
                        col(OutboundMail.next_attempt_at).is_(None),
                        col(OutboundMail.next_attempt_at) <= now,
                    ),
                )
                .values(
                    state=OutboundState.sending,
                    claimed_by=self.me,
                    claimed_at=utcnow(),
                    final_dot_at=None,
                    attempts=col(OutboundMail.attempts) + 1,
                    updated_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                db.rollback()  # not ours to send: nothing changed
                return False
            return True

    def send_one(self, outbound_id: int, client: smtplib.SMTP | None) -> smtplib.SMTP | None:
        """Claim, send and record one message; returns the SMTP connection to reuse."""
        if not self._claim(outbound_id):
            return client
        _crash("claimed")
        with Session(self.ctx.engine) as db:
            outbound = db.get(OutboundMail, outbound_id)
            mailbox = db.get(Mailbox, self.mailbox_id)
            assert outbound is not None and mailbox is not None
            account = smtp_account(mailbox, self.ctx.settings)
            envelope_from, recipients, raw = (
                envelope_address(outbound.envelope_from),
                [envelope_address(r) for r in outbound.recipients or []],
                outbound.raw,
            )
        if account is None:
            self._failed(
                outbound_id,
                smtp.SmtpError(f"the mailbox {self.name} has no SMTP server", permanent=True),
            )
            return client
        if not recipients:
            self._failed(outbound_id, smtp.SmtpError("no recipients", permanent=True))
            return client
        dot = False

        def before_final_dot() -> None:
            nonlocal dot
            with unit_of_work(self.ctx.engine) as db:
                db.exec(
                    update(OutboundMail)
                    .where(col(OutboundMail.id) == outbound_id)
                    .values(final_dot_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
            dot = True
            _crash("final_dot")

        try:
            if client is None:
                client = smtp.connect(account)
                self._note_smtputf8(client.has_extn("smtputf8"))
            result = smtp.send_message(
                client,
                envelope_from,
                recipients,
                raw,
                before_final_dot=before_final_dot,
                where=account.describe(),
            )
        except smtp.AnswerLost as exc:
            smtp.close(client)
            self._sent(outbound_id, f"taken as sent: {exc.message}", {})
            return None
        except smtp.SmtpError as exc:
            smtp.close(client)
            self._retry_or_fail(outbound_id, exc, dot_sent=dot)
            return None
        except Exception as exc:
            smtp.close(client)
            self._retry_or_fail(
                outbound_id, smtp.SmtpError(f"unexpected: {exc}", permanent=False), dot_sent=dot
            )
            raise
        _crash("accepted")
        self._sent(outbound_id, result.said, result.refused)
        _crash("recorded")
        return client

    def _sent(self, outbound_id: int, said: str, refused: dict[str, str]) -> None:
        with unit_of_work(self.ctx.engine) as db:
            outbound = db.get(OutboundMail, outbound_id)
            if outbound is None:
                return
            delivery_changed(db, outbound.conversation_id)
            outbound.state = OutboundState.sent
            outbound.sent_at = utcnow()
            outbound.smtp_response = said[:2000]
            outbound.last_error = (
                (
                    "some recipients were refused: "
                    + "; ".join(f"{k}: {v}" for k, v in refused.items())
                )[:2000]
                if refused
                else None
            )
            outbound.next_attempt_at = None
            outbound.updated_at = utcnow()
            after_sent(db, outbound)
        self.log.info("outbound %d sent: %s", outbound_id, said)

    def _note_smtputf8(self, offered: bool) -> None:
        """Keep whether the server offers SMTPUTF8 on the mailbox, for the composer to refuse
        an address that needs it before anything is queued (written only when it changed)."""
        if self._smtputf8 == offered:
            return
        with unit_of_work(self.ctx.engine) as db:
            mailbox = db.get(Mailbox, self.mailbox_id)
            if mailbox is not None and mailbox.smtputf8 != offered:
                mailbox.smtputf8 = offered
        self._smtputf8 = offered

    def _retry_or_fail(self, outbound_id: int, exc: smtp.SmtpError, *, dot_sent: bool) -> None:
        settings = self.ctx.settings
        with unit_of_work(self.ctx.engine) as db:
            outbound = db.get(OutboundMail, outbound_id)
            if outbound is None:
                return
            delivery_changed(db, outbound.conversation_id)
            words = f"{exc.message}" + (f" (the server said: {exc.said})" if exc.said else "")
            outbound.last_error = f"{utcnow():%Y-%m-%d %H:%M:%S} UTC: {words}"[:2000]
            outbound.smtp_response = (exc.said or None) and exc.said[:2000]
            outbound.final_dot_at = None  # the server answered: it did not take it
            outbound.claimed_by = None
            outbound.updated_at = utcnow()
            if exc.permanent or outbound.attempts >= settings.smtp_max_attempts:
                outbound.state = OutboundState.failed
                outbound.next_attempt_at = None
                if outbound.conversation_id is not None:
                    db.add(
                        Activity(
                            conversation_id=outbound.conversation_id,
                            source=ActivitySource.system,
                            actor="sender",
                            action="send_failed",
                            details={
                                "outbound_id": outbound.id,
                                "message_id": outbound.message_id,
                                "error": words,
                                "said": exc.said,
                            },
                        )
                    )
                self.log.warning(
                    "outbound %d failed for good (%s): %s", outbound_id, exc.code, words
                )
                return
            delay = min(
                settings.smtp_retry_max_seconds,
                settings.smtp_retry_initial_seconds * 2 ** max(0, outbound.attempts - 1),
            )
            outbound.state = OutboundState.queued
            outbound.next_attempt_at = utcnow() + timedelta(seconds=delay)
            self.log.warning(
                "outbound %d: attempt %d failed (%s), retrying in %.1f s: %s",
                outbound_id,
                outbound.attempts,
                exc.code,
                delay,
                words,
            )

    def _failed(self, outbound_id: int, exc: smtp.SmtpError) -> None:
        self._retry_or_fail(outbound_id, exc, dot_sent=False)

    # -- the copy in Sent (or the note in Notes) ---------------------------------------------
    @contextmanager
    def _imap_turn(self) -> Iterator[None]:
        """A turn at the mailbox's write connection for one copy, whose session
        `_imap_session` gives (nothing to take when the sender has a connection of its own)."""
        if self.connections is None:
            yield
            return
        with self.connections.hold(Role.WRITE) as imap:
            self._held = imap
            try:
                yield
            finally:
                self._held = None

    def _imap_session(self) -> ImapSession:
        if self._held is not None:
            return self._held
        if self._connection is None:
            self._connection = ImapSession(self.account)
        return self._connection

    def _discard(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def file_copy(self, outbound_id: int) -> bool:
        """Append the copy to Sent (a note to Notes) unless it is there already; False when
        nothing was filed (done before, or the folder cannot be had: said on the row)."""
        with Session(self.ctx.engine) as db:
            outbound = db.get(OutboundMail, outbound_id)
            if outbound is None or outbound.copy_uid is not None:
                return False
            role = FolderRole.notes if outbound.kind == "note" else FolderRole.sent
            msgid, raw = outbound.msgid, outbound.raw
        try:
            # the folder the mailbox's settings, special-use or its name make Sent (Notes),
            # created under the namespace's prefix when the mailbox has none: never a guess
            _folder_id, name = folder_for_role(
                self.ctx.engine, self.mailbox_id, role, self._imap_session
            )
        except FolderUnavailable as exc:
            self._copy_not_filed(outbound_id, exc.message)
            return False
        imap = self._imap_session()
        client = imap.client
        if not client.folder_exists(name):
            said = create_folder(imap, name)  # deleted since the worker connected
            if said is not None:
                refused = refusal(
                    self.ctx.engine, self.mailbox_id, role, name, f"the server said: {said}"
                )
                self._copy_not_filed(outbound_id, refused.message)
                return False
        info = client.select_folder(name, readonly=True)
        uidvalidity = int(info[b"UIDVALIDITY"])
        found = client.search(["HEADER", "Message-ID", f"<{msgid}>"])
        client.close_folder()  # read-only: CLOSE expunges nothing
        if found:
            uid = int(max(found))
        else:
            answer = client.append(name, raw, flags=[b"\\Seen"])
            match = _APPENDUID.search(answer if isinstance(answer, bytes) else str(answer).encode())
            if match is None:
                # no UIDPLUS: find it again by its Message-ID
                client.select_folder(name, readonly=True)
                again = client.search(["HEADER", "Message-ID", f"<{msgid}>"])
                client.close_folder()
                if not again:
                    raise MailServerError(f"{name}: the appended copy of {msgid} is not found")
                uid = int(max(again))
            else:
                uidvalidity, uid = int(match.group(1)), int(match.group(2))
        _crash("appended")
        self._record_copy(outbound_id, name, uidvalidity, uid)
        return True

    def _copy_not_filed(self, outbound_id: int, why: str) -> None:
        """Say on the row why its copy is not filed; it is tried again once the worker
        connects anew (a restart, or new folder settings)."""
        words = f"{_NOT_FILED}{why}"[:2000]
        with unit_of_work(self.ctx.engine) as db:
            outbound = db.get(OutboundMail, outbound_id)
            if outbound is None or outbound.last_error == words:
                return
            outbound.last_error = words
            outbound.updated_at = utcnow()
        self.log.warning("outbound %d: %s", outbound_id, words)

    def _record_copy(self, outbound_id: int, name: str, uidvalidity: int, uid: int) -> None:
        with INGEST_LOCK, unit_of_work(self.ctx.engine) as db:
            lock_for_ingest(db)
            outbound = db.get(OutboundMail, outbound_id)
            if outbound is None:
                return
            outbound.copy_folder = name
            outbound.copy_uid = uid
            if (outbound.last_error or "").startswith(_NOT_FILED):
                outbound.last_error = None  # filed after all
            outbound.updated_at = utcnow()
            if outbound.kind == "note":
                outbound.state = OutboundState.sent
                outbound.sent_at = outbound.sent_at or utcnow()
            folder = db.exec(
                select(Folder).where(
                    col(Folder.mailbox_id) == self.mailbox_id, col(Folder.name) == name
                )
            ).first()
            # the place, at once (the folder's sync finds it known and adds nothing)
            if (
                folder is not None
                and folder.id is not None
                and folder.uidvalidity == uidvalidity
                and outbound.message_id is not None
            ):
                exists = db.exec(
                    select(MessageLocation.id).where(
                        col(MessageLocation.folder_id) == folder.id,
                        col(MessageLocation.uid) == uid,
                    )
                ).first()
                if exists is None:
                    db.add(
                        MessageLocation(
                            message_id=outbound.message_id,
                            folder_id=folder.id,
                            uid=uid,
                            flags=["\\Seen"],
                            content_hash=hashlib.sha256(outbound.raw).hexdigest(),
                            internal_date=utcnow(),
                        )
                    )
        self.log.info("outbound %d: copy in %s (UID %d)", outbound_id, name, uid)
