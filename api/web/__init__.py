"""Server-rendered pages for agents (no JSON API here; see imapdesk.api.rest)."""

from __future__ import annotations

from fastapi import APIRouter

from imapdesk.api.web import admin, compose, conversation, live, queues, session

router = APIRouter(include_in_schema=False)
router.include_router(session.router)
router.include_router(queues.router)
router.include_router(admin.router)
router.include_router(conversation.router)
router.include_router(compose.router)
router.include_router(live.router)
