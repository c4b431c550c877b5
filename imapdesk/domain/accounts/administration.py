"""What an admin changes on agents and API tokens (the admin pages): adding an agent with its
mailbox access, changing one, setting a password, revoking a token. The rules: a password an
admin sets has at least `MIN_PASSWORD_LENGTH` characters; no admin removes their own admin
rights or deactivates themselves (someone must be left to undo it); deactivating an agent or
setting their password ends every browser session of theirs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlmodel import Session

from imapdesk.domain.accounts import access, sessions
from imapdesk.domain.accounts.agents import HashedPassword, create_agent
from imapdesk.kernel.errors import Forbidden, InvalidInput, NotFound
from imapdesk.kernel.models import Agent, ApiToken

MIN_PASSWORD_LENGTH = 8


def check_password(password: str, what: str = "password") -> None:
    """InvalidInput unless the password is long enough; `what` names it in the message."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"the {what} needs at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )


def new_password(password: str, what: str = "password") -> HashedPassword:
    """A password an admin sets, checked and hashed (slow: before the write lock)."""
    check_password(password, what)
    return HashedPassword.of(password)


def add_agent(
    session: Session,
    email: str,
    name: str,
    password: str | HashedPassword,
    *,
    is_admin: bool,
    all_mailboxes: bool,
    mailbox_ids: Iterable[int] = (),
) -> Agent:
    """A new agent who works in every mailbox, or in exactly `mailbox_ids`."""
    if isinstance(password, str):
        check_password(password)
    agent = create_agent(session, email, name, password, is_admin=is_admin)
    access.set_mailbox_access(session, agent, all_mailboxes=all_mailboxes, mailbox_ids=mailbox_ids)
    return agent


def change_agent(
    session: Session,
    admin: Agent,
    agent: Agent,
    *,
    name: str,
    is_admin: bool,
    is_active: bool,
    all_mailboxes: bool,
    mailbox_ids: Iterable[int] = (),
) -> None:
    """The agent's name (a blank one keeps it), roles and mailbox access, as `admin` sets them."""
    if agent.id == admin.id and not (is_admin and is_active):
        raise Forbidden("you cannot remove your own admin rights or deactivate yourself")
    # first, as it refuses an unknown mailbox: nothing is changed then
    access.set_mailbox_access(session, agent, all_mailboxes=all_mailboxes, mailbox_ids=mailbox_ids)
    agent.name = name.strip() or agent.name
    agent.is_admin = is_admin
    agent.is_active = is_active
    if not is_active and agent.id is not None:
        sessions.end_sessions_of(session, agent.id)


def set_password(session: Session, agent: Agent, password: str | HashedPassword) -> None:
    """A new password; every browser signed in as this agent is signed out."""
    hashed = new_password(password, "new password") if isinstance(password, str) else password
    agent.password_hash = hashed.hash
    session.add(agent)
    if agent.id is not None:
        sessions.end_sessions_of(session, agent.id)


def revoke_api_token(session: Session, token_id: int) -> ApiToken:
    """The token, revoked from now on (revoking it again changes nothing)."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no API token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = datetime.now(UTC)
        session.add(token)
    return token
