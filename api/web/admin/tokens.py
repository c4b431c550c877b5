"""API tokens: the list, a new one (shown once), revoking one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlmodel import Session, col, select

from imapdesk.api.deps import IdValue, RowId, SessionDep, WriteSessionDep
from imapdesk.api.web.admin.page import Csrf, found, redirect, render
from imapdesk.api.web.auth import WebAdmin, check_csrf
from imapdesk.api.web.flash import flash
from imapdesk.domain.accounts import administration
from imapdesk.domain.accounts.agents import create_api_token
from imapdesk.kernel.models import Agent, ApiToken

router = APIRouter()


def _tokens_page(
    request: Request,
    session: Session,
    admin: Agent,
    *,
    created: str | None = None,
) -> Response:
    rows = list(
        session.exec(
            select(ApiToken, Agent)
            .join(Agent, col(Agent.id) == col(ApiToken.agent_id))
            .order_by(col(ApiToken.revoked_at).is_not(None), col(ApiToken.created_at).desc())
        )
    )
    return render(
        request,
        "admin/tokens.html",
        admin,
        section="tokens",
        rows=rows,
        agents=list(
            session.exec(select(Agent).where(col(Agent.is_active)).order_by(col(Agent.name)))
        ),
        created=created,
    )


@router.get("/tokens", name="admin_tokens")
def tokens_page(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    return _tokens_page(request, session, admin)


@router.post("/tokens", name="admin_token_create")
def token_create(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    csrf_token: Csrf = "",
    agent_id: Annotated[IdValue, Form()] = 0,
    name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    owner = found(session, Agent, agent_id, "agent")
    token = create_api_token(session, owner, name=name.strip())
    # shown in this response only: never stored in plain, never put in a redirect or the session
    return _tokens_page(request, session, admin, created=token)


@router.post("/tokens/{token_id}/revoke", name="admin_token_revoke")
def token_revoke(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    token_id: RowId,
    csrf_token: Csrf = "",
) -> Response:
    check_csrf(request, csrf_token)
    token = administration.revoke_api_token(session, token_id)
    flash(request, f"Revoked the token {token.prefix}….")
    return redirect(request, "admin_tokens")
