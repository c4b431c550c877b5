"""Admin pages: agents (roles, mailbox access, passwords), mailboxes (settings, the connection
tests, what plain clients will see, sync health per folder) and API tokens. Admins only: any
other agent gets 403. The rules live in imapdesk.domain.accounts.administration and
imapdesk.domain.mailboxes (server_settings, connection_check)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from imapdesk.api.web.admin import (
    agents,
    mailboxes,
    oauth2,
    rules,
    slas,
    teams,
    tokens,
    webhooks,
)
from imapdesk.api.web.admin.page import redirect
from imapdesk.api.web.auth import WebAdmin

router = APIRouter(prefix="/admin")


@router.get("", name="admin")
def admin_home(request: Request, admin: WebAdmin) -> Response:
    return redirect(request, "admin_agents")


router.include_router(agents.router)
router.include_router(mailboxes.router)
router.include_router(oauth2.router)
router.include_router(tokens.router)
router.include_router(teams.router)
router.include_router(rules.router)
router.include_router(webhooks.router)
router.include_router(slas.router)
