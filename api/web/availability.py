"""The agent's own availability switch and capacity: an agent who is away, or holds as many
conversations as their capacity, gets no new assignments. The header's switch (base.html)
posts here with `toggle` (the capacity stays as it is) and `back` (the page it was on, where
it returns)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from imapdesk.api.deps import SessionDep, WriteSessionDep
from imapdesk.api.web.admin.page import Csrf, as_sentence, render
from imapdesk.api.web.auth import WebAgent, check_csrf
from imapdesk.api.web.flash import flash
from imapdesk.api.web.session import safe_next
from imapdesk.domain.teams import administration as teams
from imapdesk.domain.teams.assignment import workloads
from imapdesk.kernel.errors import InvalidInput

router = APIRouter()


@router.get("/account/availability", name="account_availability")
def availability_page(request: Request, session: SessionDep, agent: WebAgent) -> Response:
    assert agent.id is not None
    return render(
        request,
        "account/availability.html",
        agent,
        state=teams.availability(session, agent.id),
        holds=workloads(session, [agent.id])[agent.id],
    )


@router.post("/account/availability", name="account_availability_save")
def availability_save(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    csrf_token: Csrf = "",
    available: Annotated[bool, Form()] = False,
    capacity: Annotated[str, Form(max_length=12)] = "",
    toggle: Annotated[bool, Form()] = False,
    back: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    assert agent.id is not None
    value = capacity.strip()
    try:
        if value and not value.isdigit():
            raise InvalidInput("the capacity is a whole number, or empty", field="capacity")
        with session.begin_nested():
            teams.set_availability(
                session,
                agent.id,
                available=available,
                capacity=int(value) if value else None,
                capacity_set=not toggle,
            )
    except InvalidInput as exc:
        flash(request, as_sentence(exc.message), error=True)
    else:
        if not toggle:  # the header's switch shows the new state itself
            flash(
                request, "You are available." if available else "You are away: no new assignments."
            )
    if toggle and back:
        return RedirectResponse(safe_next(back), status_code=303)
    target = request.url_for("account_availability").path
    return RedirectResponse(target, status_code=303)
