"""The one Jinja2Templates instance, with its filters and globals."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import object_session

from imapdesk import frontend
from imapdesk.api.web.auth import csrf_token
from imapdesk.api.web.inline_images import inline_body
from imapdesk.domain.accounts.profile import zone_named, zone_of
from imapdesk.domain.mailboxes.capabilities import sync_notes
from imapdesk.kernel.models import Agent, AgentAvailability

FRONTEND_DIR = Path(frontend.__file__).parent
TEMPLATES_DIR = FRONTEND_DIR / "templates"
STATIC_DIR = FRONTEND_DIR / "static"


def _zone(context: Context) -> tzinfo:
    """The zone of the agent the page is for (imapdesk/domain/accounts/profile.py): the
    context's `agent`, else the signed-in one's (auth.signed_in_agent); UTC without either."""
    agent = context.get("agent")
    if isinstance(agent, Agent):
        return zone_of(agent)
    request = context.get("request")
    state = getattr(request, "state", None)
    return zone_named(getattr(state, "timezone", None) if state is not None else None)


@pass_context
def _when(context: Context, value: datetime | None) -> str:
    """A time as the agent reads it: in their timezone."""
    if value is None:
        return ""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(_zone(context)).strftime("%Y-%m-%d %H:%M")


@pass_context
def _local_input(context: Context, value: datetime | None) -> str:
    """A `datetime-local` input's value, in the agent's timezone."""
    if not isinstance(value, datetime):
        return ""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(_zone(context)).strftime("%Y-%m-%dT%H:%M")


@pass_context
def _zone_name(context: Context, _: object = None) -> str:
    return str(_zone(context))


@pass_context
def _header_availability(context: Context) -> bool | None:
    """Whether the page's signed-in agent is available (the header's switch): one read by
    primary key on the request's own session (none when the row is at hand already); None
    without an agent, or once that session is gone or unusable."""
    agent = context.get("agent")
    if not isinstance(agent, Agent) or agent.id is None:
        return None
    session = object_session(agent)
    if session is None:
        return None
    try:
        row = session.get(AgentAvailability, agent.id)
    except SQLAlchemyError:  # a session an error left unusable: the page without the switch
        return None
    return True if row is None else bool(row.available)


def _iso(value: datetime | None) -> str:
    if value is None:
        return ""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _address(value: dict[str, str] | None) -> str:
    if not value:
        return ""
    name, email = value.get("name") or "", value.get("email") or ""
    return f"{name} <{email}>" if name and email else name or email


def _common(request: Request) -> dict[str, Any]:
    # error pages may render outside the session middleware's reach (never in practice)
    return {"csrf_token": csrf_token(request) if "session" in request.scope else ""}


templates = Jinja2Templates(directory=TEMPLATES_DIR, context_processors=[_common])
templates.env.filters["when"] = _when
templates.env.filters["iso"] = _iso
# the agent's timezone: a `datetime-local` value in it, and its name
templates.env.filters["local_input"] = _local_input
templates.env.globals["zone_name"] = _zone_name
templates.env.filters["address"] = _address
# the header's availability switch (base.html)
templates.env.globals["header_availability"] = _header_availability
# a mailbox's capabilities -> how the worker keeps it in step (the admin's sync health)
templates.env.filters["sync_notes"] = sync_notes
# a message's text with its inline images in place (conversation/message_text.html)
templates.env.globals["inline_body"] = inline_body


def _compose_image_limit() -> int:
    """The largest image the composer takes (compose.js refuses a larger one at once)."""
    from imapdesk.kernel.settings import get_settings

    return get_settings().max_compose_image_bytes


templates.env.globals["compose_image_limit"] = _compose_image_limit
