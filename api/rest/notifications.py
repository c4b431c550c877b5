"""The calling agent's notifications: the list with the unread count, marking read, and what
they choose to be told of. Thin: the rules live in `imapdesk.domain.notifications`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, model_validator

from imapdesk.api.deps import MAX_ROW_ID, CurrentAgent, IdValue, SessionDep, WriteSessionDep
from imapdesk.api.schemas import UtcDatetime
from imapdesk.domain.notifications import inbox
from imapdesk.kernel.models import Notification

router = APIRouter(prefix="/notifications", tags=["notifications"])


class NotificationPublic(BaseModel):
    id: int
    kind: str = Field(
        description="assigned, customer_replied, mentioned, sla_warning, rule_notify, "
        "or (admins) webhook_disabled."
    )
    text: str
    conversation_id: int | None
    created_at: UtcDatetime
    read_at: UtcDatetime | None
    email_state: str | None = Field(description="null (no email), pending, sent or failed.")


class NotificationList(BaseModel):
    unread_count: int
    notifications: list[NotificationPublic]


class ReadRequest(BaseModel):
    ids: list[IdValue] | None = Field(default=None, max_length=1000)
    all: bool = False

    @model_validator(mode="after")
    def _one(self) -> ReadRequest:
        if (self.ids is None) == (not self.all):
            raise ValueError('send either "ids" or "all": true')
        return self


class ReadResult(BaseModel):
    marked: int = Field(description="How many were unread and are read now.")
    unread_count: int


class Preferences(BaseModel):
    assigned: bool = True
    customer_replied: bool = True
    mentioned: bool = True
    sla_warning: bool = True
    rule_notify: bool = True
    email: bool = Field(default=False, description="By email too.")


class PreferencesUpdate(BaseModel):
    assigned: bool | None = None
    customer_replied: bool | None = None
    mentioned: bool | None = None
    sla_warning: bool | None = None
    rule_notify: bool | None = None
    email: bool | None = None


def notification_public(row: Notification) -> NotificationPublic:
    assert row.id is not None
    return NotificationPublic(
        id=row.id,
        kind=row.kind,
        text=row.text,
        conversation_id=row.conversation_id,
        created_at=row.created_at,
        read_at=row.read_at,
        email_state=row.email_state,
    )


@router.get("", response_model=NotificationList, summary="Your notifications, newest first")
def list_notifications(
    session: SessionDep,
    agent: CurrentAgent,
    unread: Annotated[bool, Query(description="Only the unread ones.")] = False,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> NotificationList:
    assert agent.id is not None
    rows = inbox.listing(session, agent.id, unread_only=unread, limit=limit, before_id=before_id)
    return NotificationList(
        unread_count=inbox.unread_count(session, agent.id),
        notifications=[notification_public(r) for r in rows],
    )


@router.post("/read", response_model=ReadResult, summary="Mark notifications read")
def read_notifications(
    session: WriteSessionDep, agent: CurrentAgent, data: ReadRequest
) -> ReadResult:
    """`{"ids": [...]}` marks those (only your own), `{"all": true}` every one."""
    assert agent.id is not None
    marked = inbox.mark_read(session, agent.id, None if data.all else data.ids)
    return ReadResult(marked=marked, unread_count=inbox.unread_count(session, agent.id))


@router.get("/preferences", response_model=Preferences, summary="What you are notified of")
def get_preferences(session: SessionDep, agent: CurrentAgent) -> Preferences:
    assert agent.id is not None
    return Preferences(**inbox.choices(session, agent.id).__dict__)


@router.patch("/preferences", response_model=Preferences, summary="Change what you are told")
def set_preferences(
    session: WriteSessionDep, agent: CurrentAgent, data: PreferencesUpdate
) -> Preferences:
    assert agent.id is not None
    values = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
    return Preferences(**inbox.set_choices(session, agent.id, **values).__dict__)
