"""The JSON API under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter

from imapdesk.api.rest import (
    attachments,
    conversations,
    customers,
    drafts,
    mailboxes,
    messages,
    notifications,
    outbound,
    replies,
    reports,
    rules,
    sla,
    teams,
    webhooks,
)
from imapdesk.api.schemas import ErrorPublic

router = APIRouter(
    prefix="/api/v1",
    responses={
        401: {"model": ErrorPublic, "description": "No or an invalid API token."},
        403: {"model": ErrorPublic, "description": "The agent is deactivated."},
        422: {"model": ErrorPublic, "description": "A parameter is invalid; `field` names it."},
    },
)
router.include_router(conversations.router)
router.include_router(messages.router)
router.include_router(attachments.router)
router.include_router(mailboxes.router)
router.include_router(replies.router)
router.include_router(outbound.router)
router.include_router(drafts.router)
router.include_router(customers.router)
router.include_router(rules.router)
router.include_router(teams.router)
router.include_router(webhooks.router)
router.include_router(notifications.router)
router.include_router(sla.router)
router.include_router(reports.router)
