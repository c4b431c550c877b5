"""The sign-in rate limit: failed attempts per account and per client address, in the database,
so every API process counts the same attempts.

An account is locked after ACCOUNT_LIMIT failures within WINDOW since its last successful
sign-in; a client address after ADDRESS_LIMIT failures within WINDOW, whichever accounts they
were for. While locked, sign-in is refused before the password is looked at (so guessing on
is useless) and refused attempts are not counted (so an attacker cannot keep a colleague
locked out for longer than WINDOW after stopping).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, delete, select

from imapdesk.domain.accounts.agents import normalize_email
from imapdesk.kernel.models import LoginAttempt

WINDOW = timedelta(minutes=15)
ACCOUNT_LIMIT = 5
ADDRESS_LIMIT = 20


@dataclass(frozen=True)
class Lockout:
    reason: str  # "account" or "address"
    retry_after: timedelta

    @property
    def minutes(self) -> int:
        return max(1, -(-int(self.retry_after.total_seconds()) // 60))

    @property
    def message(self) -> str:
        who = "this account" if self.reason == "account" else "this network address"
        unit = "minute" if self.minutes == 1 else "minutes"
        return (
            f"Too many failed sign-in attempts for {who}. "
            f"Sign-in is locked; try again in {self.minutes} {unit}."
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def lockout(session: Session, email: str, client_address: str) -> Lockout | None:
    """Whether a sign-in for `email` from `client_address` must be refused now, and how long."""
    now = _now()
    since = now - WINDOW
    email = normalize_email(email)
    last_success = session.exec(
        select(func.max(LoginAttempt.created_at)).where(
            col(LoginAttempt.email) == email,
            col(LoginAttempt.succeeded).is_(True),
            col(LoginAttempt.created_at) >= since,
        )
    ).one()
    account_since = max(since, _aware(last_success)) if last_success else since
    checks = (
        ("account", col(LoginAttempt.email) == email, account_since, ACCOUNT_LIMIT),
        ("address", col(LoginAttempt.client_address) == client_address, since, ADDRESS_LIMIT),
    )
    for reason, condition, start, limit in checks:
        count, oldest = session.exec(
            select(func.count(), func.min(LoginAttempt.created_at)).where(
                condition,
                col(LoginAttempt.succeeded).is_(False),
                col(LoginAttempt.created_at) > start,
            )
        ).one()
        if count >= limit and oldest is not None:
            # the failures of a window are at most `limit`: the lock ends when the oldest ages out
            return Lockout(reason, max(_aware(oldest) + WINDOW - now, timedelta(seconds=1)))
    return None


def record_attempt(session: Session, email: str, client_address: str, *, succeeded: bool) -> None:
    """Count an attempt, and forget those too old to matter."""
    now = _now()
    session.exec(delete(LoginAttempt).where(col(LoginAttempt.created_at) < now - WINDOW))
    session.add(
        LoginAttempt(
            email=normalize_email(email)[:320],
            client_address=client_address[:64],
            succeeded=succeeded,
            created_at=now,
        )
    )
    session.flush()
