"""The one Jinja2Templates instance, with its filters and globals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

from imapdesk import frontend
from imapdesk.api.web.auth import csrf_token

FRONTEND_DIR = Path(frontend.__file__).parent
TEMPLATES_DIR = FRONTEND_DIR / "templates"
STATIC_DIR = FRONTEND_DIR / "static"


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M")


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
templates.env.filters["address"] = _address
