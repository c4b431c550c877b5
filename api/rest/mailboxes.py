"""Mailboxes and the sync state of their folders (never their secrets)."""

from __future__ import annotations

from fastapi import APIRouter

from imapdesk.api.deps import CurrentAgent, SessionDep
from imapdesk.api.schemas import MailboxPublic, mailbox_public
from imapdesk.domain.conversations import reads

router = APIRouter(prefix="/mailboxes", tags=["mailboxes"])


@router.get(
    "",
    response_model=list[MailboxPublic],
    summary="List mailboxes with their folders' sync state",
    description="Sorted by name. Passwords and other secrets are never included.",
)
def list_mailboxes(session: SessionDep, agent: CurrentAgent) -> list[MailboxPublic]:
    return [mailbox_public(v) for v in reads.list_mailboxes(session, agent)]
