"""Agents: accounts, password sign-in and API tokens. Services flush, the caller commits."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from sqlalchemy import update
from sqlmodel import Session, col, select

from imapdesk.kernel.crypto import hash_api_token, hash_password, new_api_token, verify_password
from imapdesk.kernel.errors import Conflict, InvalidInput
from imapdesk.kernel.models import Agent, ApiToken

HANDLE_MAX = 32
HANDLE_PATTERN = re.compile(r"^[a-z0-9_-]{1,32}$")
# a token is "imd_" plus 43 characters; anything much longer is not one of ours
_TOKEN_MAX = 200
_LAST_USED_RESOLUTION = timedelta(minutes=1)
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


@dataclass(frozen=True)
class HashedPassword:
    """A password hashed ahead: argon2 takes a good part of a second, so a request hashes
    before it takes the database's write lock, and passes this instead of the password."""

    hash: str

    @classmethod
    def of(cls, password: str) -> HashedPassword:
        if not password:
            raise InvalidInput("the password must not be empty", field="password")
        return cls(hash_password(password))


def create_agent(
    session: Session,
    email: str,
    name: str,
    password: str | HashedPassword,
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
        password_hash=(
            password.hash if isinstance(password, HashedPassword) else hash_password(password)
        ),
        created_at=_now(),
    )
    session.add(agent)
    session.flush()
    return agent


@cache
def _dummy_hash() -> str:
    return hash_password("imapdesk-no-such-agent")


def password_matches(agent: Agent | None, password: str) -> Agent | None:
    """The agent, if active and the password is theirs; else None (same cost either way).
    Reads no database: argon2 takes a good part of a second, so a caller checks with no
    transaction open (look the agent up first, record the outcome after)."""
    if agent is None:
        # spend the time a real check takes, so the answer does not tell which emails exist
        verify_password(password, _dummy_hash())
        return None
    if not verify_password(password, agent.password_hash) or not agent.is_active:
        return None
    return agent


def authenticate(session: Session, email: str, password: str) -> Agent | None:
    """The active agent with this email and password, else None (same cost either way)."""
    return password_matches(agent_by_email(session, email), password)


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


def token_holder(session: Session, token: str) -> tuple[ApiToken, Agent] | None:
    """The unrevoked token and the agent holding it (active or not: the caller decides), else
    None. Reads only."""
    if not token or len(token) > _TOKEN_MAX:
        return None
    row = session.exec(
        select(ApiToken, Agent)
        .join(Agent, col(Agent.id) == col(ApiToken.agent_id))
        .where(ApiToken.token_hash == hash_api_token(token), col(ApiToken.revoked_at).is_(None))
    ).first()
    return row


def token_use_due(api_token: ApiToken) -> bool:
    """Whether to record the token's use: at most one write a minute per token, so reads do
    not turn into a stream of updates."""
    last = api_token.last_used_at
    return last is None or _now() - _aware(last) >= _LAST_USED_RESOLUTION


def record_token_use(session: Session, token_id: int) -> None:
    """The token is in use now (a write: see token_use_due)."""
    session.execute(
        update(ApiToken).where(col(ApiToken.id) == token_id).values(last_used_at=_now())
    )


def agent_for_token(session: Session, token: str) -> Agent | None:
    """The agent holding this unrevoked token (active or not: the caller decides), else None;
    records the use in `session` when due (a writing session: a request that only reads does
    the write apart, `imapdesk.api.deps.current_agent`)."""
    found = token_holder(session, token)
    if found is None:
        return None
    api_token, agent = found
    if token_use_due(api_token) and api_token.id is not None:
        record_token_use(session, api_token.id)
    return agent
