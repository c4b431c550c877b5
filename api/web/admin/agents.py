"""Agents: the list with each one's mailbox access, adding one, changing one (roles, access,
deactivation) and setting a new password."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlmodel import Session, col, select

from imapdesk.api.deps import IdValue, RowId, SessionDep, WriteSessionDep, release, take_write
from imapdesk.api.web.admin.page import Csrf, all_mailboxes, as_sentence, found, redirect, render
from imapdesk.api.web.auth import WebAdmin, check_csrf
from imapdesk.api.web.flash import flash
from imapdesk.domain.accounts import access, administration
from imapdesk.kernel.errors import Forbidden, ImapdeskError, InvalidInput
from imapdesk.kernel.models import Agent, AgentMailboxAccess

router = APIRouter()

# the access choice on the agent forms: "all" mailboxes, or the "selected" ones
AccessScope = Annotated[str, Form(max_length=20)]
MailboxChoice = Annotated[list[IdValue] | None, Form()]


def _access_map(session: Session) -> dict[int, set[int]]:
    grants: dict[int, set[int]] = {}
    for agent_id, mailbox_id in session.exec(
        select(AgentMailboxAccess.agent_id, AgentMailboxAccess.mailbox_id)
    ):
        grants.setdefault(agent_id, set()).add(mailbox_id)
    return grants


def _agents_page(
    request: Request,
    session: Session,
    admin: Agent,
    *,
    error: str | None = None,
    form: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "admin/agents.html",
        admin,
        section="agents",
        agents=list(session.exec(select(Agent).order_by(col(Agent.name)))),
        mailboxes=all_mailboxes(session),
        grants=_access_map(session),
        error=error,
        form=form or {},
        status_code=status_code,
    )


@router.get("/agents", name="admin_agents")
def agents_page(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    return _agents_page(request, session, admin)


@router.post("/agents", name="admin_agent_add")
def agent_add(
    request: Request,
    session: SessionDep,
    admin: WebAdmin,
    csrf_token: Csrf = "",
    email: Annotated[str, Form(max_length=320)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    is_admin: Annotated[bool, Form()] = False,
    access_scope: AccessScope = "all",
    mailboxes: MailboxChoice = None,
) -> Response:
    check_csrf(request, csrf_token)
    # hashed holding no connection, before the write (it takes a good part of a second)
    release(session)
    try:
        hashed = administration.new_password(password)
        take_write(session)
        with session.begin_nested():
            new = administration.add_agent(
                session,
                email,
                name,
                hashed,
                is_admin=is_admin,
                all_mailboxes=access_scope != "selected",
                mailbox_ids=mailboxes or [],
            )
    except ImapdeskError as exc:
        form = {"email": email, "name": name, "is_admin": is_admin, "scope": access_scope}
        return _agents_page(
            request, session, admin, error=exc.message, form=form, status_code=exc.status_code
        )
    flash(request, f"Added {new.email}.")
    return redirect(request, "admin_agents")


def _agent(session: Session, agent_id: int) -> Agent:
    return found(session, Agent, agent_id, "agent")


@router.get("/agents/{agent_id}", name="admin_agent")
def agent_page(request: Request, session: SessionDep, admin: WebAdmin, agent_id: RowId) -> Response:
    target = _agent(session, agent_id)
    return render(
        request,
        "admin/agent.html",
        admin,
        section="agents",
        target=target,
        mailboxes=all_mailboxes(session),
        granted=access.granted_mailbox_ids(session, target),
        error=None,
    )


@router.post("/agents/{agent_id}", name="admin_agent_save")
def agent_save(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    agent_id: RowId,
    csrf_token: Csrf = "",
    name: Annotated[str, Form(max_length=200)] = "",
    is_admin: Annotated[bool, Form()] = False,
    is_active: Annotated[bool, Form()] = False,
    access_scope: AccessScope = "all",
    mailboxes: MailboxChoice = None,
) -> Response:
    check_csrf(request, csrf_token)
    target = _agent(session, agent_id)
    try:
        administration.change_agent(
            session,
            admin,
            target,
            name=name,
            is_admin=is_admin,
            is_active=is_active,
            all_mailboxes=access_scope != "selected",
            mailbox_ids=mailboxes or [],
        )
    except Forbidden as exc:  # changing themselves: nothing changed
        flash(request, as_sentence(exc.message), error=True)
        return redirect(request, "admin_agent", agent_id=agent_id)
    flash(request, f"Saved {target.email}.")
    return redirect(request, "admin_agent", agent_id=agent_id)


@router.post("/agents/{agent_id}/password", name="admin_agent_password")
def agent_password(
    request: Request,
    session: SessionDep,
    admin: WebAdmin,
    agent_id: RowId,
    csrf_token: Csrf = "",
    password: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    target = _agent(session, agent_id)
    # hashed holding no connection, before the write (it takes a good part of a second)
    release(session)
    try:
        hashed = administration.new_password(password, "new password")
    except InvalidInput as exc:
        flash(request, as_sentence(exc.message), error=True)
        return redirect(request, "admin_agent", agent_id=agent_id)
    take_write(session)
    administration.set_password(session, target, hashed)
    flash(request, f"Set a new password for {target.email}; their browsers are signed out.")
    return redirect(request, "admin_agent", agent_id=agent_id)
