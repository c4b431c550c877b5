"""Browser sign-in: a signed session cookie holding the agent id, and a per-session CSRF token."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from imapdesk.api.deps import SessionDep
from imapdesk.kernel.errors import Forbidden, NotAuthenticated
from imapdesk.kernel.models import Agent

SESSION_AGENT = "agent_id"
SESSION_STAMP = "stamp"
SESSION_CSRF = "csrf"
CSRF_FIELD = "csrf_token"


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


def _credential_stamp(agent: Agent) -> str:
    """Changes when the password does, so a reset signs every browser out."""
    return hashlib.sha256(agent.password_hash.encode()).hexdigest()[:32]


def sign_in(request: Request, agent: Agent) -> None:
    # a fresh session: nothing from before sign-in carries over, not even the CSRF token
    request.session.clear()
    request.session[SESSION_AGENT] = agent.id
    request.session[SESSION_STAMP] = _credential_stamp(agent)
    request.session[SESSION_CSRF] = secrets.token_urlsafe(32)


def sign_out(request: Request) -> None:
    request.session.clear()


def signed_in_agent(request: Request, session: Session) -> Agent | None:
    agent_id = request.session.get(SESSION_AGENT)
    if not isinstance(agent_id, int):
        return None
    agent = session.get(Agent, agent_id)
    stamp = request.session.get(SESSION_STAMP)
    if (
        agent is None
        or not agent.is_active
        or not isinstance(stamp, str)
        or not secrets.compare_digest(stamp, _credential_stamp(agent))
    ):
        request.session.pop(SESSION_AGENT, None)
        request.session.pop(SESSION_STAMP, None)
        return None
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
