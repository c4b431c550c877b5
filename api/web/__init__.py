"""Server-rendered pages for agents (no JSON API here; see imapdesk.api.rest)."""

from __future__ import annotations

from fastapi import APIRouter

from imapdesk.api.web import (
    admin,
    availability,
    compose,
    composer_tools,
    conversation,
    customers,
    drafts,
    live,
    notifications,
    profile,
    queues,
    reports,
    session,
)

router = APIRouter(include_in_schema=False)
router.include_router(session.router)
router.include_router(queues.router)
router.include_router(admin.router)
router.include_router(conversation.router)
router.include_router(compose.router)
router.include_router(composer_tools.router)
router.include_router(customers.router)
router.include_router(drafts.router)
router.include_router(live.router)
router.include_router(notifications.router)
router.include_router(availability.router)
router.include_router(profile.router)
router.include_router(reports.router)
