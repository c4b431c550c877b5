"""Browser sign-in: a signed cookie holding the key of a session stored server-side
(imapdesk.domain.accounts.sessions), and a per-session CSRF token."""

from __future__ import annotations

import os
import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from imapdesk.api.capacity import ServerBusy, Turns
from imapdesk.api.deps import SessionDep, bookkeeping_write
from imapdesk.domain.accounts import sessions
from imapdesk.domain.accounts.agents import password_matches
from imapdesk.domain.accounts.sessions import SessionPolicy
from imapdesk.kernel.errors import Forbidden, NotAuthenticated
from imapdesk.kernel.models import Agent

SESSION_KEY = "sid"
SESSION_CSRF = "csrf"
CSRF_FIELD = "csrf_token"
# password checks at once per process: each takes a core and 64 MiB (argon2's defaults); the
# others wait without a thread, and after PASSWORD_CHECK_WAIT_SECONDS answer 503
PASSWORD_CHECKS_AT_ONCE = max(1, min(os.cpu_count() or 1, 8))
PASSWORD_CHECK_WAIT_SECONDS = 30.0


def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use."""
    token = request.session.get(SESSION_CSRF)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return token


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.session.get(SESSION_CSRF)
    if not (
        isinstance(expected, str)
        and expected
        and submitted
        and secrets.compare_digest(expected.encode(), submitted.encode())
    ):
        raise Forbidden(
            "this form has expired or did not come from this site; reload the page and try again"
        )


def session_policy(request: Request) -> SessionPolicy:
    return SessionPolicy.of(request.app.state.settings)


def client_address(request: Request) -> str:
    """The peer's address (behind a proxy, run uvicorn with --proxy-headers)."""
    return request.client.host if request.client else "unknown"


async def check_password(request: Request, candidate: Agent | None, password: str) -> Agent | None:
    """`password_matches` in a thread, at most PASSWORD_CHECKS_AT_ONCE at a time: a burst of
    sign-ins waits its turn on the event loop instead of taking every thread (and core)."""
    state = request.app.state
    checks: Turns | None = getattr(state, "password_checks", None)
    if checks is None:
        checks = state.password_checks = Turns(PASSWORD_CHECKS_AT_ONCE)
    if not await checks.take(PASSWORD_CHECK_WAIT_SECONDS):
        raise ServerBusy.refusing("a password check")
    try:
        return await run_in_threadpool(password_matches, candidate, password)
    finally:
        checks.give_back()


def sign_in(request: Request, db: Session, agent: Agent, policy: SessionPolicy) -> None:
    """A new stored session for the agent (in `db`'s transaction), its key in the cookie."""
    key = sessions.start_session(
        db,
        agent,
        policy,
        user_agent=request.headers.get("user-agent"),
        client_address=client_address(request),
    )
    # a fresh cookie: nothing from before sign-in carries over, not even the CSRF token
    request.session.clear()
    request.session[SESSION_KEY] = key
    request.session[SESSION_CSRF] = secrets.token_urlsafe(32)


def sign_out(request: Request, db: Session) -> None:
    """The stored session revoked (a copy of the cookie signs no one in), the cookie emptied."""
    key = request.session.get(SESSION_KEY)
    if isinstance(key, str):
        sessions.end_session(db, key)
    request.session.clear()


def signed_in_agent(request: Request, session: Session) -> Agent | None:
    """The agent the cookie's session signs in, else None (and the cookie forgets the key).
    Records the session's use now and then (apart from the request's read: bookkeeping_write).
    `request.state.browser_session_id` names the session for pages that stay open."""
    key = request.session.get(SESSION_KEY)
    if not isinstance(key, str):
        return None
    found = sessions.signed_in(session, key, session_policy(request))
    if found is None:
        request.session.pop(SESSION_KEY, None)
        return None
    row, agent = found
    if sessions.activity_due(row) and row.id is not None:
        with bookkeeping_write(session):
            sessions.record_activity(session, row.id)
    request.state.browser_session_id = row.id
    # the zone the pages show the agent's times in (api/web/templating.py)
    request.state.timezone = agent.timezone
    return agent


def current_web_agent(request: Request, session: SessionDep) -> Agent:
    agent = signed_in_agent(request, session)
    if agent is None:
        raise NotAuthenticated("sign in first")
    return agent


WebAgent = Annotated[Agent, Depends(current_web_agent)]


def current_web_admin(agent: WebAgent) -> Agent:
    """Admin pages: an agent who is not an admin is told so (403)."""
    if not agent.is_admin:
        raise Forbidden("only admins can open the admin pages")
    return agent


WebAdmin = Annotated[Agent, Depends(current_web_admin)]
