"""Server-rendered pages for agents (no JSON here; see imapdesk.api.rest)."""

from __future__ import annotations

from fastapi import APIRouter

from imapdesk.api.web import admin, pages, queues, session

router = APIRouter(include_in_schema=False)
router.include_router(session.router)
router.include_router(queues.router)
router.include_router(pages.router)
router.include_router(admin.router)
