"""One-time messages: set before a redirect, shown once by the next page (in the signed
session cookie, so they survive the redirect and nothing else)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

FLASH = "flash"


def flash(request: Request, message: str, *, error: bool = False) -> None:
    """A one-time message for the next page."""
    request.session[FLASH] = {"message": message, "error": error}


def pop_flash(request: Request) -> dict[str, Any] | None:
    value = request.session.pop(FLASH, None)
    return value if isinstance(value, dict) else None
