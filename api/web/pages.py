"""Where the agent's pages live: the conversation list and queues in api.web.queues, one
conversation in api.web.conversation. Kept for the names older code imports from here."""

from __future__ import annotations

from fastapi import APIRouter

from api.web.conversation import MESSAGE_BODY_CSP

__all__ = ["MESSAGE_BODY_CSP", "router"]

router = APIRouter()
