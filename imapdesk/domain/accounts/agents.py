"""Agents: accounts, password sign-in and API tokens. Services flush, the caller commits."""

from __future__ import annotations

import logging
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from functools import cache

from sqlalchemy import Engine, update
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from imapdesk.kernel.crypto import hash_api_token, hash_password, new_api_token, verify_password
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import Conflict, InvalidInput
from imapdesk.kernel.models import Agent, ApiToken

HANDLE_MAX = 32
HANDLE_PATTERN = re.compile(r"^[a-z0-9_-]{1,32}$")
# a token is "imd_" plus 43 characters; anything much longer is not one of ours
_TOKEN_MAX = 200
_LAST_USED_RESOLUTION = timedelta(minutes=1)
log = logging.getLogger(__name__)
_EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+$")


def _now() -> datetime:
    # the datetime columns are SQLModel UTCDateTime: aware values in, aware UTC out
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def normalize_email(email: str) -> str:
    return email.strip().lower()


def agent_by_email(session: Session, email: str) -> Agent | None:
    """The agent with this address (any case), else None; an address with a NUL character
    belongs to no one (and PostgreSQL would refuse it in a query)."""
    if "\x00" in email:
        return None
    return session.exec(select(Agent).where(Agent.email == normalize_email(email))).first()


def handle_from_email(email: str) -> str:
    """The local part folded to a-z 0-9 _ - (accents dropped, other runs become '-')."""
    local = normalize_email(email).split("@", 1)[0]
    ascii_local = unicodedata.normalize("NFKD", local).encode("ascii", "ignore").decode()
    handle = re.sub(r"[^a-z0-9_-]+", "-", ascii_local).strip("-")[:HANDLE_MAX].strip("-")
    return handle or "agent"


def _handle_taken(session: Session, handle: str) -> bool:
    return session.exec(select(Agent.id).where(Agent.handle == handle)).first() is not None


def _unique_handle(session: Session, base: str) -> str:
    if not _handle_taken(session, base):
        return base
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = base[: HANDLE_MAX - len(suffix)] + suffix
        if not _handle_taken(session, candidate):
            return candidate
        n += 1


def create_agent(
    session: Session,
    email: str,
    name: str,
    password: str,
    is_admin: bool = False,
    handle: str | None = None,
) -> Agent:
    """Add an agent with an argon2 password hash; the handle defaults to the email's local part."""
    email = normalize_email(email)
    if len(email) > 320 or not _EMAIL_PATTERN.match(email):
        raise InvalidInput(f"not an email address: {email!r}", field="email")
    if not password:
        raise InvalidInput("the password must not be empty", field="password")
    name = name.strip() or email.split("@", 1)[0]
    if len(name) > 200:
        raise InvalidInput("the name is longer than 200 characters", field="name")
    if session.exec(select(Agent.id).where(Agent.email == email)).first() is not None:
        raise Conflict(f"an agent with the email {email} exists already", field="email")
    if handle is None:
        handle = _unique_handle(session, handle_from_email(email))
    else:
        if not HANDLE_PATTERN.match(handle):
            raise InvalidInput(
                "a handle is 1 to 32 characters of a-z, 0-9, '_' and '-'", field="handle"
            )
        if _handle_taken(session, handle):
            raise Conflict(f"the handle {handle} is taken", field="handle")
    agent = Agent(
        email=email,
        name=name,
        handle=handle,
        is_admin=is_admin,
        password_hash=hash_password(password),
        created_at=_now(),
    )
    session.add(agent)
    session.flush()
    return agent


@cache
def _dummy_hash() -> str:
    return hash_password("imapdesk-no-such-agent")


def authenticate(session: Session, email: str, password: str) -> Agent | None:
    """The active agent with this email and password, else None (same cost either way)."""
    agent = agent_by_email(session, email)
    if agent is None:
        # spend the time a real check takes, so the answer does not tell which emails exist
        verify_password(password, _dummy_hash())
        return None
    if not verify_password(password, agent.password_hash) or not agent.is_active:
        return None
    return agent


def create_api_token(session: Session, agent: Agent, name: str = "") -> str:
    """A new token for the agent: returned in plain once, stored only as a hash and a prefix."""
    if agent.id is None:
        session.flush()
    assert agent.id is not None
    token = new_api_token()
    session.add(
        ApiToken(
            agent_id=agent.id,
            name=name[:200],
            token_hash=hash_api_token(token),
            prefix=token[:12],
            created_at=_now(),
        )
    )
    session.flush()
    return token


def agent_for_token(session: Session, token: str) -> Agent | None:
    """The agent holding this unrevoked token (active or not: the caller decides), else None."""
    if not token or len(token) > _TOKEN_MAX:
        return None
    row = session.exec(
        select(ApiToken, Agent)
        .join(Agent, col(Agent.id) == col(ApiToken.agent_id))
        .where(ApiToken.token_hash == hash_api_token(token), col(ApiToken.revoked_at).is_(None))
    ).first()
    if row is None:
        return None
    api_token, agent = row
    now = _now()
    # at most one write a minute per token, so reads do not turn into a stream of updates
    last = api_token.last_used_at
    if last is None or now - _aware(last) >= _LAST_USED_RESOLUTION:
        bind = session.get_bind()
        connection = session.connection()
        reading = (
            connection.dialect.name == "sqlite"
            and not connection.get_execution_options().get("sqlite_immediate", False)
        )
        if reading and isinstance(bind, Engine):
            _touch_token(bind, api_token.id, now)
        else:
            api_token.last_used_at = now
            session.add(api_token)
    return agent


def _touch_token(engine: Engine, token_id: int | None, now: datetime) -> None:
    """Record when a token was last used, from a read-only SQLite session: in a short write of
    its own (a read that turns into a write fails at once while the worker writes), best
    effort."""
    try:
        with unit_of_work(engine) as db:
            db.execute(
                update(ApiToken).where(col(ApiToken.id) == token_id).values(last_used_at=now)
            )
    except OperationalError as exc:
        log.warning("could not record the use of API token %s: %s", token_id, exc.orig)
