"""Recording outcomes: what the IMAP work did, written to the database.

The IMAP work and the recording of its result are two steps; the action is marked done in the
same transaction that records the new locations, flags and MODSEQs. A crash between them
replays the action, which then finds nothing left to do (see `moves` and `flags`). What an
action did before it failed is recorded all the same.

Keywords a folder refused or cannot keep are recorded per folder (`UnkeptKeyword`, through
`imapdesk.domain.mailboxes.keywords`), whatever became of the action, so no attempt sends them
again. When the action is done, its conversation is told: an Activity naming each keyword (the
tag or assignee it stands for, the folder, why), and a version bump that refreshes open pages.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import sqlalchemy as sa
from sqlmodel import Session, col, select

from imapdesk.domain.mailboxes.keywords import Refusal, record_refusal
from imapdesk.domain.sync.ingest import INGEST_LOCK, lock_for_ingest
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Conversation,
    Folder,
    ImapActionState,
    Message,
    MessageLocation,
    PendingImapAction,
    utcnow,
)
from imapdesk.worker.folder_sync import SyncContext, wrote
from imapdesk.worker.writeback.failures import count_failed_attempt, error_message
from imapdesk.worker.writeback.plan import LocationUpdate, Outcome, Plan, Target

# the actor of what the write-back tells a conversation
WRITE_BACK = "write-back"


class OutcomeRecorder:
    """Writes what came of one mailbox's actions, with INGEST_LOCK held like the read side."""

    def __init__(
        self, ctx: SyncContext, mailbox_id: int, log: logging.LoggerAdapter[logging.Logger]
    ) -> None:
        self.ctx = ctx
        self.mailbox_id = mailbox_id
        self.log = log

    def done(self, plan: Plan, outcome: Outcome) -> None:
        """The action is done: its outcome and its state, in one transaction."""
        with INGEST_LOCK, unit_of_work(self.ctx.engine) as db:
            lock_for_ingest(db)
            flagged = self._write_outcome(db, plan, outcome)
            action = db.get(PendingImapAction, plan.action_id)
            if action is not None:
                action.state = ImapActionState.done
                action.done_at = utcnow()
                action.next_attempt_at = None
            if outcome.refused and plan.conversation_id is not None:
                _tell_conversation(db, plan, outcome.refused)
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
            len(outcome.refused),
        )

    def partial(self, plan: Plan, outcome: Outcome) -> None:
        """The connection was lost half-way: what did happen is recorded, the action stays."""
        try:
            with INGEST_LOCK, unit_of_work(self.ctx.engine) as db:
                lock_for_ingest(db)
                self._write_outcome(db, plan, outcome)
        except Exception:
            self.log.exception("action %d: could not record what was done", plan.action_id)

    def failed(self, plan: Plan, outcome: Outcome, exc: BaseException) -> None:
        """The attempt failed: what it did, and the failure policy's verdict on the action."""
        with INGEST_LOCK, unit_of_work(self.ctx.engine) as db:
            lock_for_ingest(db)
            self._write_outcome(db, plan, outcome)
            action = db.get(PendingImapAction, plan.action_id)
            if action is None:
                return
            verdict = count_failed_attempt(db, action, exc, self.ctx.settings)
        if verdict.retry_in is None:
            self.log.warning(
                "action %d (%s) failed for good after %d attempts: %s",
                plan.action_id,
                plan.kind,
                verdict.attempts,
                error_message(exc),
            )
        else:
            self.log.warning(
                "action %d (%s) attempt %d failed, retrying in %.0f s: %s",
                plan.action_id,
                plan.kind,
                verdict.attempts,
                verdict.retry_in,
                error_message(exc),
            )

    def _write_outcome(self, db: Session, plan: Plan, outcome: Outcome) -> set[int]:
        """Record the new places and flags; returns the ids of messages whose flags were read."""
        if outcome.updates:
            wrote(self.mailbox_id)
        counts: dict[int, int] = defaultdict(int)
        flagged: set[int] = set()
        targets = {t.location_id: t for t in plan.targets}
        for update in outcome.updates:
            loc = db.get(MessageLocation, update.location_id)
            if loc is None:
                # the read side saw it leave before this record: it is where our move put it
                loc = _where_moved(db, targets[update.location_id], update, counts)
                if loc is None:
                    continue  # gone meanwhile, and not seen where a move of ours put it
            moved = update.folder_id is not None and update.uid is not None
            if moved and (loc.folder_id, loc.uid) != (update.folder_id, update.uid):
                assert update.folder_id is not None and update.uid is not None
                there = _location_at(db, update.folder_id, update.uid)
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
        for refusal in outcome.refused:
            if record_refusal(db, self.mailbox_id, refusal):
                self.log.warning(
                    "%s does not keep the keyword %s (%s%s): it stays in the database only and "
                    "is not sent there again",
                    refusal.folder,
                    refusal.keyword,
                    refusal.reason.value,
                    f": {refusal.detail}" if refusal.detail else "",
                )
        return flagged


def _tell_conversation(db: Session, plan: Plan, refused: list[Refusal]) -> None:
    """An Activity on the action's conversation naming what its mailbox did not keep, and a
    version bump (one UPDATE: no lost bump beside a concurrent change) so open pages show the
    mark."""
    assert plan.conversation_id is not None
    unique = {(r.folder, r.keyword.lower()): r for r in refused}
    db.add(
        Activity(
            conversation_id=plan.conversation_id,
            created_at=utcnow(),
            source=ActivitySource.system,
            actor=WRITE_BACK,
            action="keyword_not_kept",
            details={
                "action_id": plan.action_id,
                "keywords": [r.details() for r in unique.values()],
            },
        )
    )
    db.exec(
        sa.update(Conversation)
        .where(col(Conversation.id) == plan.conversation_id)
        .values(version=col(Conversation.version) + 1, updated_at=utcnow())
    )


def _location_at(db: Session, folder_id: int, uid: int) -> MessageLocation | None:
    return db.exec(
        select(MessageLocation).where(
            MessageLocation.folder_id == folder_id, MessageLocation.uid == uid
        )
    ).first()


def _where_moved(
    db: Session, moved: Target, update: LocationUpdate, counts: dict[int, int]
) -> MessageLocation | None:
    """The place a move of ours gave a message whose old location the read side deleted
    before the move was recorded: the one the target's sync took in, else a new one. Without
    it the message would be nowhere until the target's sync catches up, and judged deleted."""
    if update.folder_id is None or update.uid is None or update.flags is None:
        return None  # not a move, or the new copy was not seen in the target
    there = _location_at(db, update.folder_id, update.uid)
    if there is None:
        if db.get(Message, moved.message_pk) is None:
            return None  # dropped meanwhile (a rebuild)
        there = MessageLocation(
            message_id=moved.message_pk,
            folder_id=update.folder_id,
            uid=update.uid,
            flags=list(update.flags),
            modseq=update.modseq,
            content_hash=moved.content_hash,
            internal_date=moved.internal_date,
        )
        db.add(there)
        counts[update.folder_id] += 1
    return there
