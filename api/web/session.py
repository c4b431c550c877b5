"""Sign-in and sign-out pages."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.api import capacity
from imapdesk.api.deps import SessionDep, WriteSessionDep, get_engine
from imapdesk.api.web.auth import (
    CSRF_FIELD,
    check_csrf,
    check_password,
    client_address,
    session_policy,
    sign_in,
    sign_out,
    signed_in_agent,
)
from imapdesk.api.web.templating import templates
from imapdesk.domain.accounts import login_attempts
from imapdesk.domain.accounts.agents import agent_by_email
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent

router = APIRouter()
# a turn at the database for one step of a route that takes several (api/capacity.py)
database_turn = asynccontextmanager(capacity.database_turn)


def safe_next(target: str | None) -> str:
    """Only a path on this site: no scheme, no host, no protocol-relative `//`."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login", name="login")
def login_page(request: Request, session: SessionDep, next: str | None = None) -> Response:
    if signed_in_agent(request, session) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return templates.TemplateResponse(
        request, "auth/login.html", {"next": safe_next(next), "error": None, "email": ""}
    )


def _locked_page(
    request: Request, locked: login_attempts.Lockout, email: str, next: str
) -> Response:
    return templates.TemplateResponse(
        request,
        "auth/login.html",
        {"next": safe_next(next), "error": locked.message, "email": email},
        status_code=429,
        headers={"Retry-After": str(int(locked.retry_after.total_seconds()) + 1)},
    )


def _look_up(engine: Engine, email: str, address: str) -> login_attempts.Lockout | Agent | None:
    """Sign-in's read: a lockout, else the agent with this email (None: no such agent)."""
    with Session(engine, expire_on_commit=False) as db:
        locked = login_attempts.lockout(db, email, address)
        return locked if locked is not None else agent_by_email(db, email)


def _record(
    request: Request, engine: Engine, email: str, address: str, agent: Agent | None
) -> login_attempts.Lockout | None:
    """Sign-in's write: the lockout again (now counting the attempts made while the password
    was checked), else the attempt counted and, for the right password, the session."""
    with unit_of_work(engine) as db:
        locked = login_attempts.lockout(db, email, address)
        if locked is not None:
            return locked
        login_attempts.record_attempt(db, email, address, succeeded=agent is not None)
        if agent is not None:
            sign_in(request, db, agent, session_policy(request))
    return None


@router.post("/login", name="login_submit")
async def login_submit(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Three steps, so that the password's hash (a good part of a second of a core) is worked
    out holding no database connection, lock or turn, and no thread while it waits for a
    core: read (a lockout, the agent), check the password, write (the lockout again, the
    attempt, the session), each database step in a turn of its own (api/capacity.py)."""
    check_csrf(request, csrf_token)
    agent = None
    if email:
        engine = get_engine(request)
        address = client_address(request)
        async with database_turn(request):
            found = await run_in_threadpool(_look_up, engine, email, address)
        if isinstance(found, login_attempts.Lockout):
            return _locked_page(request, found, email, next)
        if password:
            agent = await check_password(request, found, password)
        async with database_turn(request):
            locked = await run_in_threadpool(_record, request, engine, email, address, agent)
        if locked is not None:
            return _locked_page(request, locked, email, next)
    if agent is None:
        return templates.TemplateResponse(
            request,
            "auth/login.html",
            {"next": safe_next(next), "error": "Wrong email or password.", "email": email},
            status_code=400,
        )
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/logout", name="logout")
def logout(
    request: Request,
    session: WriteSessionDep,
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    sign_out(request, session)
    return RedirectResponse(request.url_for("login").path, status_code=303)
