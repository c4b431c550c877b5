"""What agents see of SLAs: each conversation's due times (`sla_views`), and the Due soon and
Breached queues, sorted by the earliest due time.

Due soon: a target not attained yet falls due within `window` (settings.sla_due_soon_minutes).
Breached: a target not attained yet is past its due time (the work to do now; a conversation
answered late keeps `breached` in its record but leaves the queue). Both read the SLA table in
due order off its index (`ix_conversationsla_next_due`) and the conversation by its key, with
the same visibility and filters as every other list (imapdesk.domain.conversations.reads).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, bindparam, func, literal_column, or_, text
from sqlmodel import Session, col, select

from imapdesk.domain.conversations import reads
from imapdesk.domain.sla.clock import active_dues
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import (
    Agent,
    Conversation,
    ConversationSla,
    SlaPolicy,
    as_utc,
    utcnow,
)
from imapdesk.kernel.settings import get_settings

DUE_SOON = "due_soon"
BREACHED = "breached"
# any conversation with a due time: what sorting a list by due time shows
WITH_DUE = "with_due"
SLA_QUEUES = (DUE_SOON, BREACHED, WITH_DUE)
COUNT_CAP = 1000


def due_soon_window() -> timedelta:
    """What counts as due soon (settings.sla_due_soon_minutes): the queue, the warning style."""
    return timedelta(minutes=get_settings().sla_due_soon_minutes)


@dataclass(frozen=True)
class SlaView:
    policy: str | None
    first_response_due: datetime | None
    first_response_at: datetime | None
    first_response_met: bool | None
    next_response_due: datetime | None
    resolution_due: datetime | None
    resolved_at: datetime | None
    resolution_met: bool | None
    breached: bool
    # the earliest due time not attained, and which target it is
    next_due: datetime | None
    next_target: str | None
    # pending, the policy pausing: since when the next-response and resolution clocks stand
    # still (their due times above are as they were when the pause began)
    paused_at: datetime | None = None

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def state(self, now: datetime | None = None, window: timedelta | None = None) -> str:
        """`breached` (past a due time now), `due_soon` (within the window), `ok` or `none`."""
        if self.next_due is None:
            return "none"
        moment = now or utcnow()
        if self.next_due <= moment:
            return BREACHED
        soon = moment + (window if window is not None else due_soon_window())
        return DUE_SOON if self.next_due <= soon else "ok"


TARGET_LABELS = {
    "first_response": "First response",
    "next_response": "Next response",
    "resolution": "Resolution",
}


def _view(row: ConversationSla, policy: str | None) -> SlaView:
    dues = sorted(active_dues(row), key=lambda d: d.due)
    return SlaView(
        policy=policy,
        first_response_due=as_utc(row.first_response_due),
        first_response_at=as_utc(row.first_response_at),
        first_response_met=row.first_response_met,
        next_response_due=as_utc(row.next_response_due),
        resolution_due=as_utc(row.resolution_due) if row.resolved_at is None else None,
        resolved_at=as_utc(row.resolved_at),
        resolution_met=row.resolution_met,
        breached=row.breached,
        next_due=dues[0].due if dues else None,
        next_target=dues[0].target if dues else None,
        paused_at=as_utc(row.paused_at) if row.resolved_at is None else None,
    )


def sla_views(session: Session, conversation_ids: Iterable[int | None]) -> dict[int, SlaView]:
    """The SLA record of each of these conversations that has one (two queries)."""
    ids = [i for i in conversation_ids if i is not None]
    if not ids:
        return {}
    rows = list(
        session.exec(select(ConversationSla).where(col(ConversationSla.conversation_id).in_(ids)))
    )
    policy_ids = {r.policy_id for r in rows if r.policy_id is not None}
    names = (
        {
            pid: name
            for pid, name in session.exec(
                select(SlaPolicy.id, SlaPolicy.name).where(col(SlaPolicy.id).in_(policy_ids))
            )
        }
        if policy_ids
        else {}
    )
    return {
        r.conversation_id: _view(r, names.get(r.policy_id) if r.policy_id else None) for r in rows
    }


# --- the queues -------------------------------------------------------------------------------


def _encode(due: datetime, conversation_id: int) -> str:
    raw = json.dumps([due.isoformat(), conversation_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        due, cid = json.loads(raw)
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise ValueError("id")
        when = datetime.fromisoformat(due)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)), cid
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "the cursor is not one this API handed out; start again without it", field="cursor"
        ) from exc


def list_due(
    session: Session,
    agent: Agent,
    which: str,
    filters: reads.ConversationFilters | None = None,
    *,
    limit: int = reads.DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
    now: datetime | None = None,
    window: timedelta | None = None,
) -> reads.ConversationPage:
    """The Due soon or Breached queue (or every conversation with a due time: `with_due`),
    earliest due first (then id), keyset-paginated."""
    if which not in SLA_QUEUES:
        raise InvalidInput(f"sla must be one of {', '.join(SLA_QUEUES)}", field="sla")
    if not 1 <= limit <= reads.MAX_PAGE_SIZE:
        raise InvalidInput(f"limit must be between 1 and {reads.MAX_PAGE_SIZE}", field="limit")
    position = _decode(cursor) if cursor else None
    filters = filters or reads.ConversationFilters()
    query_text = reads.search.parse_query(filters.q) if filters.q else None
    found = reads._filter_conditions(session, agent, filters, query_text)
    if found is None:
        return reads.ConversationPage(items=[], next_cursor=None)
    conds, names = found
    if session.get_bind().dialect.name == "sqlite":
        # walk the SLA table in due order and look each conversation up by its key: told that
        # the list's conditions hold for most rows, SQLite no longer reads every open
        # conversation off the status index to sort them
        conds = [func.likelihood(c, literal_column("0.9375")) for c in conds]
    moment = now or utcnow()
    due = col(ConversationSla.next_due_at)
    cid = col(ConversationSla.conversation_id)
    if which == BREACHED:
        conds.append(due <= moment)
    elif which == WITH_DUE:
        conds.append(due.is_not(None))
    else:
        conds.extend([due > moment, due <= moment + (window or due_soon_window())])
    if position is not None:
        at, last = position
        conds.append(or_(due > at, and_(due == at, cid > last)))
    statement = (
        select(Conversation, ConversationSla.next_due_at)
        .join(ConversationSla, col(ConversationSla.conversation_id) == col(Conversation.id))
        .where(*conds)
        .order_by(due, cid)
        .limit(limit + 1)
    )
    got = list(session.exec(statement))
    more = len(got) > limit
    got = got[:limit]
    conversations = [c for c, _ in got]
    next_cursor = None
    if more:
        last_conv, last_due = got[-1]
        assert last_conv.id is not None and last_due is not None
        next_cursor = _encode(as_utc(last_due), last_conv.id)
    return reads.ConversationPage(
        items=reads._rows(session, conversations, names), next_cursor=next_cursor
    )


def count_due(
    session: Session,
    mailbox_ids: list[int],
    *,
    now: datetime | None = None,
    window: timedelta | None = None,
) -> dict[str, int]:
    """How many conversations each SLA queue holds in these mailboxes (up to COUNT_CAP + 1)."""
    if not mailbox_ids:
        return {DUE_SOON: 0, BREACHED: 0}
    moment = now or utcnow()
    soon = moment + (window or due_soon_window())
    when = ConversationSla.__table__.c.next_due_at.type  # type: ignore[attr-defined]

    def capped(where: str) -> str:
        return (
            "(SELECT count(*) FROM (SELECT 1 AS one FROM conversationsla s JOIN conversation c "
            "ON c.id = s.conversation_id WHERE c.merged_into_id IS NULL "
            "AND c.status IN ('open', 'pending') AND c.mailbox_id IN :mailboxes "
            f"AND {where} LIMIT {COUNT_CAP + 1}) AS capped)"
        )

    statement = text(
        f"SELECT {capped('s.next_due_at > :now AND s.next_due_at <= :soon')} AS due_soon, "
        f"{capped('s.next_due_at <= :now')} AS breached"
    ).bindparams(
        bindparam("mailboxes", value=mailbox_ids, expanding=True),
        bindparam("now", value=moment, type_=when),
        bindparam("soon", value=soon, type_=when),
    )
    row = session.connection().execute(statement).one()._mapping
    return {DUE_SOON: int(row["due_soon"]), BREACHED: int(row["breached"])}
