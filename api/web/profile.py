"""`/account`: the agent's own name, signature, timezone, undo window, how the composer opens
(rich text or plain text) and password
(imapdesk/domain/accounts/profile.py). A new password signs out every other browser."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from imapdesk.api.deps import SessionDep, WriteSessionDep, release, take_write
from imapdesk.api.web.admin.page import Csrf, as_sentence, render
from imapdesk.api.web.auth import WebAgent, check_csrf, session_policy, sign_in
from imapdesk.api.web.flash import flash
from imapdesk.domain.accounts import profile
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import Agent

router = APIRouter()


def _page(request: Request, agent: Agent, status_code: int = 200) -> Response:
    return render(
        request,
        "account/settings.html",
        agent,
        timezones=profile.timezone_names(),
        max_undo=profile.MAX_UNDO_SECONDS,
        status_code=status_code,
    )


@router.get("/account", name="account")
def account_page(request: Request, session: SessionDep, agent: WebAgent) -> Response:
    return _page(request, agent)


@router.post("/account", name="account_save")
def account_save(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    csrf_token: Csrf = "",
    name: Annotated[str, Form(max_length=400)] = "",
    signature: Annotated[str, Form(max_length=10_000)] = "",
    timezone: Annotated[str, Form(max_length=100)] = "",
    undo_send_seconds: Annotated[str, Form(max_length=12)] = "10",
    # "rich" (the editor, the default) or "plain" (the text area)
    composer: Annotated[str, Form(max_length=10)] = "rich",
) -> Response:
    check_csrf(request, csrf_token)
    if composer not in ("rich", "plain"):
        flash(request, "The composer starts as rich text or plain text.", error=True)
        return RedirectResponse(request.url_for("account").path, status_code=303)
    change = profile.ProfileChange(
        name, signature, timezone, undo_send_seconds, composer_plain_text=composer == "plain"
    )
    try:
        with session.begin_nested():
            profile.update_profile(session, agent, change)
    except InvalidInput as exc:
        session.refresh(agent)
        flash(request, as_sentence(exc.message), error=True)
    else:
        flash(request, "Your account is saved.")
    return RedirectResponse(request.url_for("account").path, status_code=303)


@router.post("/account/timezone", name="account_timezone")
def account_timezone(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    csrf_token: Csrf = "",
    timezone: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """The browser's zone, taken from the offer in the header (zone.js)."""
    check_csrf(request, csrf_token)
    agent.timezone = profile.check_timezone(timezone)
    session.add(agent)
    return JSONResponse({"timezone": agent.timezone})


@router.post("/account/password", name="account_password")
def account_password(
    request: Request,
    session: SessionDep,
    agent: WebAgent,
    csrf_token: Csrf = "",
    current_password: Annotated[str, Form(max_length=1000)] = "",
    new_password: Annotated[str, Form(max_length=1000)] = "",
    repeat_password: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    target = request.url_for("account").path
    assert agent.id is not None
    agent_id, old_hash = agent.id, agent.password_hash
    # argon2 twice, holding no transaction; the write after it
    release(session)
    try:
        hashed = profile.check_password_change(
            agent, current_password, new_password, repeat_password
        )
    except InvalidInput as exc:
        flash(request, as_sentence(exc.message), error=True)
        return RedirectResponse(target, status_code=303)
    take_write(session)
    current = session.get(Agent, agent_id, populate_existing=True)
    if current is None or current.password_hash != old_hash:
        flash(request, "Your password was changed meanwhile; sign in again.", error=True)
        return RedirectResponse(target, status_code=303)
    profile.change_password(session, current, hashed)
    # every session of the agent ended; this browser goes on in a new one
    sign_in(request, session, current, session_policy(request))
    flash(request, "Your password is changed; your other browsers are signed out.")
    return RedirectResponse(target, status_code=303)
