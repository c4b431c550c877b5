"""What every admin page shares: the page around its template, the redirect after a change,
the row a path names (or 404), and the mailboxes to choose from."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session, col, select

from imapdesk.api.web.auth import CSRF_FIELD
from imapdesk.api.web.flash import pop_flash
from imapdesk.api.web.templating import templates
from imapdesk.kernel.errors import NotFound
from imapdesk.kernel.models import Agent, Mailbox

Csrf = Annotated[str, Form(alias=CSRF_FIELD, max_length=200)]
T = TypeVar("T")


def render(request: Request, template: str, admin: Agent, **context: Any) -> Response:
    """An admin page, with what the layout shows (the admin, a flash message)."""
    status_code = context.pop("status_code", 200)
    return templates.TemplateResponse(
        request,
        template,
        {"agent": admin, "flash": pop_flash(request), **context},
        status_code=status_code,
    )


def redirect(request: Request, route: str, **params: Any) -> Response:
    return RedirectResponse(request.url_for(route, **params).path, status_code=303)


def found(session: Session, model: type[T], key: int, what: str) -> T:
    """The row of `model` with this id, else 404 "no <what> <id>"."""
    row = session.get(model, key)
    if row is None:
        raise NotFound(f"no {what} {key}")
    return row


def as_sentence(message: str) -> str:
    """An error's message for a flash: capitalised, with a full stop."""
    return message[:1].upper() + message[1:] + "."


def all_mailboxes(session: Session) -> list[Mailbox]:
    return list(session.exec(select(Mailbox).order_by(col(Mailbox.name))))
