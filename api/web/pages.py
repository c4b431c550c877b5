"""Where the agent's pages live: the conversation list and queues in imapdesk.api.web.queues, one
conversation in imapdesk.api.web.conversation. Kept for the names older code imports from here."""

from __future__ import annotations

from fastapi import APIRouter

from imapdesk.api.web.conversation import MESSAGE_BODY_CSP

__all__ = ["MESSAGE_BODY_CSP", "router"]

router = APIRouter()
