"""An agent's notifications and choices. Services flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from imapdesk.kernel.models import Agent, Notification, NotificationPreference, utcnow

# what an agent may choose to be told of (NotificationPreference's columns)
CHOICES: tuple[str, ...] = (
    "assigned",
    "customer_replied",
    "mentioned",
    "sla_warning",
    "rule_notify",
)
CHOICE_LABELS: dict[str, str] = {
    "assigned": "A conversation is assigned to me",
    "customer_replied": "A customer replies on a conversation of mine",
    "mentioned": "I am mentioned in a note (@handle)",
    "sla_warning": "A conversation of mine is about to breach its SLA",
    "rule_notify": "A rule notifies me",
}
# told to admins whatever they chose
WEBHOOK_DISABLED = "webhook_disabled"
MAX_TEXT = 500


@dataclass(frozen=True)
class Choices:
    assigned: bool = True
    customer_replied: bool = True
    mentioned: bool = True
    sla_warning: bool = True
    rule_notify: bool = True
    email: bool = False

    def wants(self, kind: str) -> bool:
        return bool(getattr(self, kind, True))


def choices(session: Session, agent_id: int) -> Choices:
    row = session.get(NotificationPreference, agent_id)
    if row is None:
        return Choices()
    return Choices(**{c: getattr(row, c) for c in (*CHOICES, "email")})


def set_choices(session: Session, agent_id: int, **values: bool) -> Choices:
    row = session.get(NotificationPreference, agent_id) or NotificationPreference(agent_id=agent_id)
    for key, value in values.items():
        if key not in (*CHOICES, "email"):
            raise ValueError(f"no notification choice {key}")
        setattr(row, key, bool(value))
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return choices(session, agent_id)


def notify(
    session: Session,
    agent_id: int,
    kind: str,
    text: str,
    *,
    conversation_id: int | None = None,
    event_id: int | None = None,
    always: bool = False,
) -> Notification | None:
    """A notification for the agent, unless they chose not to be told of this kind (or are
    deactivated); by email too when they chose so."""
    agent = session.get(Agent, agent_id)
    if agent is None or not agent.is_active:
        return None
    wanted = choices(session, agent_id)
    if not always and not wanted.wants(kind):
        return None
    row = Notification(
        agent_id=agent_id,
        kind=kind,
        text=text[:MAX_TEXT],
        conversation_id=conversation_id,
        event_id=event_id,
        email_state="pending" if wanted.email else None,
    )
    session.add(row)
    return row


def notify_admins(session: Session, kind: str, text: str) -> int:
    """Every active admin is told (whatever they chose); how many were."""
    admins = session.exec(select(Agent.id).where(col(Agent.is_admin), col(Agent.is_active)))
    count = 0
    for admin_id in admins:
        assert admin_id is not None
        if notify(session, admin_id, kind, text, always=True) is not None:
            count += 1
    return count


def unread_count(session: Session, agent_id: int) -> int:
    return int(
        session.exec(
            select(func.count())
            .select_from(Notification)
            .where(col(Notification.agent_id) == agent_id, col(Notification.read_at).is_(None))
        ).one()
    )


def unread_counts(session: Session, agent_ids: Sequence[int]) -> dict[int, int]:
    if not agent_ids:
        return {}
    rows = session.exec(
        select(Notification.agent_id, func.count())
        .where(col(Notification.agent_id).in_(list(agent_ids)), col(Notification.read_at).is_(None))
        .group_by(col(Notification.agent_id))
    )
    found = {int(a): int(n) for a, n in rows}
    return {a: found.get(a, 0) for a in agent_ids}


def listing(
    session: Session,
    agent_id: int,
    *,
    unread_only: bool = False,
    limit: int = 50,
    before_id: int | None = None,
) -> list[Notification]:
    """The agent's notifications, newest first."""
    query = select(Notification).where(col(Notification.agent_id) == agent_id)
    if unread_only:
        query = query.where(col(Notification.read_at).is_(None))
    if before_id is not None:
        query = query.where(col(Notification.id) < before_id)
    return list(session.exec(query.order_by(col(Notification.id).desc()).limit(limit)))


def mark_read(session: Session, agent_id: int, ids: Sequence[int] | None) -> int:
    """Mark the agent's notifications with these ids read (None: all); how many were unread.
    Another agent's ids are left alone."""
    statement = update(Notification).where(
        col(Notification.agent_id) == agent_id, col(Notification.read_at).is_(None)
    )
    if ids is not None:
        if not ids:
            return 0
        statement = statement.where(col(Notification.id).in_(list(ids)))
    result = session.exec(statement.values(read_at=utcnow()))
    return int(result.rowcount or 0)


def newest_id(session: Session) -> int:
    return int(session.exec(select(func.max(Notification.id))).one() or 0)


def read_since(session: Session, moment: datetime, agent_ids: Sequence[int]) -> set[int]:
    """Of these agents, those who marked a notification read after `moment`."""
    if not agent_ids:
        return set()
    rows = session.exec(
        select(Notification.agent_id)
        .where(
            col(Notification.agent_id).in_(list(agent_ids)),
            col(Notification.read_at) > moment,
        )
        .distinct()
    )
    return {int(a) for a in rows}


def since(session: Session, after_id: int, agent_ids: Sequence[int]) -> list[Notification]:
    """Notifications newer than `after_id` for these agents, oldest first."""
    if not agent_ids:
        return []
    return list(
        session.exec(
            select(Notification)
            .where(col(Notification.id) > after_id, col(Notification.agent_id).in_(list(agent_ids)))
            .order_by(col(Notification.id))
            .limit(500)
        )
    )


# how long a read notification is kept
KEEP_READ = timedelta(days=90)


def prune(session: Session, now: datetime | None = None) -> int:
    """Drop the notifications read longer than KEEP_READ ago; how many."""
    before = (now or utcnow()) - KEEP_READ
    result = session.exec(delete(Notification).where(col(Notification.read_at) < before))
    return int(result.rowcount or 0)
