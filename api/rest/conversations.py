"""Conversations: the list with filters and cursor pagination, and one with its messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from api.deps import CurrentAgent, SessionDep
from api.errors import error_json
from api.schemas import (
    ConversationDetailPublic,
    ConversationListPublic,
    ErrorPublic,
    conversation_detail_public,
    conversation_list_public,
)
from core import queries
from core.models import ConversationStatus

router = APIRouter(prefix="/conversations", tags=["conversations"])


@router.get(
    "",
    response_model=ConversationListPublic,
    summary="List conversations",
    description=(
        "Newest `last_message_at` first (ties: highest id first; conversations without any "
        "message date come last). Conversations merged into another are never listed.\n\n"
        "Without `status`, every status except `deleted` is listed; repeat `status` to ask for "
        "several (`?status=open&status=pending`), and ask for `deleted` by name.\n\n"
        "Pagination: pass the `next_cursor` of one page as `cursor` to get the next; it is "
        "null on the last page. Cursors are opaque; keep the same filters while paging."
    ),
)
def list_conversations(
    session: SessionDep,
    agent: CurrentAgent,
    mailbox: Annotated[str | None, Query(description="Mailbox name.", max_length=100)] = None,
    status: Annotated[
        list[ConversationStatus] | None,
        Query(description="One or more statuses; default: all but `deleted`."),
    ] = None,
    assignee: Annotated[
        str | None,
        Query(
            description="The assigned agent's email; `none` for unassigned; `me` for yourself.",
            max_length=320,
        ),
    ] = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    q: Annotated[
        str | None,
        Query(
            description="Substring of the subject, customer email or customer name "
            "(case-insensitive).",
            max_length=200,
        ),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE_SIZE)] = queries.DEFAULT_PAGE_SIZE,
) -> ConversationListPublic:
    page = queries.list_conversations(
        session,
        agent,
        queries.ConversationFilters(
            mailbox=mailbox, statuses=status, assignee=assignee, tag=tag, q=q
        ),
        limit=limit,
        cursor=cursor,
    )
    return conversation_list_public(page)


@router.get(
    "/{conversation_id}",
    response_model=ConversationDetailPublic,
    summary="A conversation with its messages",
    description=(
        "Messages come by date, then id, each with its attachments and where it lives on the "
        "IMAP server.\n\n"
        "A conversation that was merged into another answers **308 Permanent Redirect** with "
        "`Location: /api/v1/conversations/{new_id}` and an error body whose `merged_into` holds "
        "the new id (code `conversation_merged`)."
    ),
    responses={
        308: {"model": ErrorPublic, "description": "Merged; `Location` and `merged_into`."},
        404: {"model": ErrorPublic, "description": "No such conversation."},
    },
)
def get_conversation(
    request: Request,
    session: SessionDep,
    agent: CurrentAgent,
    conversation_id: Annotated[int, Path(ge=1)],
) -> ConversationDetailPublic | JSONResponse:
    try:
        detail = queries.get_conversation(session, agent, conversation_id)
    except queries.ConversationMerged as exc:
        location = request.app.url_path_for("get_conversation", conversation_id=exc.merged_into)
        return error_json(exc, headers={"Location": str(location)})
    return conversation_detail_public(detail)
