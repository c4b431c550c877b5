"""Sign-in and sign-out pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from imapdesk.api.deps import SessionDep, WriteSessionDep
from imapdesk.api.web.auth import CSRF_FIELD, check_csrf, sign_in, sign_out, signed_in_agent
from imapdesk.api.web.templating import templates
from imapdesk.domain.accounts import login_attempts
from imapdesk.domain.accounts.agents import authenticate

router = APIRouter()


def client_address(request: Request) -> str:
    """The peer's address (behind a proxy, run uvicorn with --proxy-headers)."""
    return request.client.host if request.client else "unknown"


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


@router.post("/login", name="login_submit")
def login_submit(
    request: Request,
    # the attempt is counted in this request's transaction
    session: WriteSessionDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    check_csrf(request, csrf_token)
    address = client_address(request)
    locked = login_attempts.lockout(session, email, address) if email else None
    if locked is not None:
        return templates.TemplateResponse(
            request,
            "auth/login.html",
            {"next": safe_next(next), "error": locked.message, "email": email},
            status_code=429,
            headers={"Retry-After": str(int(locked.retry_after.total_seconds()) + 1)},
        )
    agent = authenticate(session, email, password) if email and password else None
    if email:
        login_attempts.record_attempt(session, email, address, succeeded=agent is not None)
    if agent is None:
        return templates.TemplateResponse(
            request,
            "auth/login.html",
            {"next": safe_next(next), "error": "Wrong email or password.", "email": email},
            status_code=400,
        )
    sign_in(request, agent)
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/logout", name="logout")
def logout(
    request: Request,
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    sign_out(request)
    return RedirectResponse(request.url_for("login").path, status_code=303)
