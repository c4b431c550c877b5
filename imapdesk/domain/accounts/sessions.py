"""Browser sessions, stored server-side: signing in makes a row, and the browser's cookie
carries only the row's random key (stored as a hash). A session signs its agent in until it is
revoked (sign-out; the agent deactivated or given a new password: every session of theirs),
goes unused for `idle`, reaches `expires_at` (`lifetime` after sign-in), or the agent's
password changes by any other way (the row keeps a stamp of the hash).

Reading a session writes nothing; when it was last seen is recorded at most once a minute
(`activity_due`, `record_activity`), so the caller can do that write apart from its read.
Services flush, the caller commits."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, update
from sqlmodel import Session, col, delete, select

from imapdesk.kernel.models import Agent, BrowserSession, as_utc
from imapdesk.kernel.settings import Settings

# when a session was last seen is written at most this often (so reads stay reads)
ACTIVITY_RESOLUTION = timedelta(minutes=1)
# a key is 43 characters; anything much longer is not one of ours
_KEY_MAX = 100


@dataclass(frozen=True)
class SessionPolicy:
    """How long sessions last: unused (`idle`) and at most (`lifetime`)."""

    idle: timedelta
    lifetime: timedelta

    @classmethod
    def of(cls, settings: Settings) -> SessionPolicy:
        return cls(
            idle=timedelta(seconds=settings.session_idle_seconds),
            lifetime=timedelta(seconds=settings.session_lifetime_seconds),
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _password_stamp(agent: Agent) -> str:
    """Changes with the password's hash: a session made before a new password (however it was
    set) signs no one in."""
    return hashlib.sha256(agent.password_hash.encode()).hexdigest()[:32]


def _key_hash(key: str) -> str:
    # the key carries 256 random bits: a fast hash is enough (nothing to guess from)
    return hashlib.sha256(key.encode()).hexdigest()


def start_session(
    db: Session,
    agent: Agent,
    policy: SessionPolicy,
    *,
    user_agent: str | None = None,
    client_address: str | None = None,
) -> str:
    """A new session for the agent; returns its key (for the cookie: stored only as a hash).
    Forgets the sessions that can sign no one in any more."""
    assert agent.id is not None
    now = _now()
    db.exec(
        delete(BrowserSession).where(
            or_(
                col(BrowserSession.revoked_at).is_not(None),
                col(BrowserSession.expires_at) <= now,
                col(BrowserSession.last_seen_at) <= now - policy.idle,
            )
        )
    )
    key = secrets.token_urlsafe(32)
    db.add(
        BrowserSession(
            agent_id=agent.id,
            key_hash=_key_hash(key),
            password_stamp=_password_stamp(agent),
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.lifetime,
            user_agent=(user_agent or None) and user_agent[:300],
            client_address=(client_address or None) and client_address[:64],
        )
    )
    db.flush()
    return key


def _live(row: BrowserSession, agent: Agent, policy: SessionPolicy, now: datetime) -> bool:
    return (
        row.revoked_at is None
        and now < as_utc(row.expires_at)
        and now - as_utc(row.last_seen_at) < policy.idle
        and agent.is_active
        and secrets.compare_digest(row.password_stamp, _password_stamp(agent))
    )


def signed_in(db: Session, key: str, policy: SessionPolicy) -> tuple[BrowserSession, Agent] | None:
    """The session this key names and its agent, if it still signs them in; else None."""
    if not key or len(key) > _KEY_MAX:
        return None
    row = db.exec(
        select(BrowserSession, Agent)
        .join(Agent, col(Agent.id) == col(BrowserSession.agent_id))
        .where(BrowserSession.key_hash == _key_hash(key))
    ).first()
    if row is None or not _live(row[0], row[1], policy, _now()):
        return None
    return row


def session_agent(db: Session, session_id: int, policy: SessionPolicy) -> Agent | None:
    """The agent this session (by its row's id) still signs in, else None: revoked, expired,
    idle too long or the agent deactivated. For pages that stay open (the live stream) to
    end when the session does."""
    row = db.exec(
        select(BrowserSession, Agent)
        .join(Agent, col(Agent.id) == col(BrowserSession.agent_id))
        .where(BrowserSession.id == session_id)
    ).first()
    if row is None or not _live(row[0], row[1], policy, _now()):
        return None
    return row[1]


def activity_due(row: BrowserSession) -> bool:
    """Whether to record that the session is in use (at most once per ACTIVITY_RESOLUTION)."""
    return _now() - as_utc(row.last_seen_at) >= ACTIVITY_RESOLUTION


def record_activity(db: Session, session_id: int) -> None:
    """The session is in use now: its idle time starts again."""
    now = _now()
    db.execute(
        update(BrowserSession)
        .where(col(BrowserSession.id) == session_id, col(BrowserSession.revoked_at).is_(None))
        .values(last_seen_at=now)
    )


def end_session(db: Session, key: str) -> None:
    """Revoke the session this key names (sign-out): a copy of the cookie signs no one in."""
    if not key or len(key) > _KEY_MAX:
        return
    db.execute(
        update(BrowserSession)
        .where(
            col(BrowserSession.key_hash) == _key_hash(key), col(BrowserSession.revoked_at).is_(None)
        )
        .values(revoked_at=_now())
    )


def end_sessions_of(db: Session, agent_id: int) -> None:
    """Revoke every session of the agent (deactivated, or given a new password)."""
    db.execute(
        update(BrowserSession)
        .where(col(BrowserSession.agent_id) == agent_id, col(BrowserSession.revoked_at).is_(None))
        .values(revoked_at=_now())
    )
