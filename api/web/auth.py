"""Browser sign-in: a signed session cookie holding the agent id, and a per-session CSRF token."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from api.deps import SessionDep
from core.errors import Forbidden, NotAuthenticated
from core.models import Agent

SESSION_AGENT = "agent_id"
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


def sign_in(request: Request, agent: Agent) -> None:
    # a fresh session: nothing from before sign-in carries over, not even the CSRF token
    request.session.clear()
    request.session[SESSION_AGENT] = agent.id
    request.session[SESSION_CSRF] = secrets.token_urlsafe(32)


def sign_out(request: Request) -> None:
    request.session.clear()


def signed_in_agent(request: Request, session: Session) -> Agent | None:
    agent_id = request.session.get(SESSION_AGENT)
    if not isinstance(agent_id, int):
        return None
    agent = session.get(Agent, agent_id)
    if agent is None or not agent.is_active:
        request.session.pop(SESSION_AGENT, None)
        return None
    return agent


def current_web_agent(request: Request, session: SessionDep) -> Agent:
    agent = signed_in_agent(request, session)
    if agent is None:
        raise NotAuthenticated("sign in first")
    return agent


WebAgent = Annotated[Agent, Depends(current_web_agent)]
