"""Conversations: the list with filters and cursor pagination, one with its messages, and
the changes (PATCH, claim, release) with their activity log. The routes are thin: the rules
live in `imapdesk.domain.conversations.operations`."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session

from imapdesk.api.deps import CurrentAgent, RowId, SessionDep, WriteSessionDep
from imapdesk.api.errors import error_json
from imapdesk.api.schemas import (
    ActivityListPublic,
    ConversationDetailPublic,
    ConversationListPublic,
    ConversationUpdate,
    ErrorPublic,
    activity_list_public,
    conversation_detail_public,
    conversation_list_public,
    with_sla,
)
from imapdesk.domain.accounts.agents import agent_by_email
from imapdesk.domain.conversations import operations, reads
from imapdesk.domain.sla import queues as sla_queues
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import ActivitySource, Agent, ConversationStatus

router = APIRouter(prefix="/conversations", tags=["conversations"])

MERGED_DESCRIPTION = (
    "A conversation that was merged into another answers **308 Permanent Redirect** with "
    "`Location` pointing at the same request for the new id and an error body whose "
    "`merged_into` holds it (code `conversation_merged`)."
)
_MERGED_RESPONSES: dict[int | str, dict[str, object]] = {
    308: {"model": ErrorPublic, "description": "Merged; `Location` and `merged_into`."},
    404: {"model": ErrorPublic, "description": "No such conversation (or not yours to see)."},
}


ConversationId = RowId


RemoteContent = Annotated[
    Literal["block", "allow"],
    Query(
        description="`block` (the default): the messages' `html` has no images from other "
        "hosts (each keeps its `alt`), as the web UI shows mail until the agent asks, so "
        "that rendering it fetches nothing from the sender's servers (a tracking pixel "
        "would tell them it was read). `allow`: the `html` as stored, remote images "
        "included, for an integration that blocks them itself or wants them."
    ),
]


def _merged(request: Request, route: str, exc: reads.ConversationMerged) -> JSONResponse:
    location = str(request.app.url_path_for(route, conversation_id=exc.merged_into))
    if request.url.query:  # the same request for the new id: its parameters too
        location += f"?{request.url.query}"
    return error_json(exc, headers={"Location": location})


def _detail(session: Session, agent: Agent, conversation_id: int) -> ConversationDetailPublic:
    public = conversation_detail_public(reads.conversation_detail(session, agent, conversation_id))
    with_sla(session, [public])
    return public


def _agent_by_email(session: Session, email: str) -> Agent:
    agent = agent_by_email(session, email)
    if agent is None:
        raise InvalidInput(f"no agent has the email {email!r}", field="assignee")
    return agent


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
            description="The assigned agent's email; `none` for those nobody holds (no "
            "assignee, and not claimed from a mail client); `me` for yourself.",
            max_length=320,
        ),
    ] = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    q: Annotated[
        str | None,
        Query(
            description="A search: words to find in the subjects, the people (names and "
            "addresses) or the text of the conversation's messages and notes, in any script "
            "(Chinese, Japanese, Korean and Thai too, anywhere in a sentence); every word must "
            'be found; `"a phrase"` in that order; the last word, when `q` ends with it, also '
            "as the start of a word. Operators: `from:`, `to:` (and `cc:`), `subject:` (words "
            "or a quoted phrase in that field), `has:attachment`, `is:unread` / `is:read`, "
            "`tag:NAME`, `before:YYYY-MM-DD` and `after:YYYY-MM-DD` (the last message's date, "
            "UTC; `after:` includes the day). A value an operator cannot take answers 422 "
            "(`invalid_input`, field `q`). Each item then has a `snippet`.",
            max_length=200,
        ),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=reads.MAX_PAGE_SIZE)] = reads.DEFAULT_PAGE_SIZE,
    sla: Annotated[
        Literal["due_soon", "breached", "with_due"] | None,
        Query(
            description="The SLA queues, earliest due time first: `due_soon` (a target falls "
            "due within the next `sla_due_soon_minutes`), `breached` (a target is past its "
            "due time and not attained), `with_due` (any conversation with a due time)."
        ),
    ] = None,
) -> ConversationListPublic:
    filters = reads.ConversationFilters(
        mailbox=mailbox, statuses=status, assignee=assignee, tag=tag, q=q
    )
    if sla is not None:
        page = sla_queues.list_due(session, agent, sla, filters, limit=limit, cursor=cursor)
    else:
        page = reads.list_conversations(session, agent, filters, limit=limit, cursor=cursor)
    public = conversation_list_public(page)
    with_sla(session, public.items)
    return public


@router.get(
    "/{conversation_id}",
    response_model=ConversationDetailPublic,
    summary="A conversation with its messages",
    description=(
        "Messages come by date, then id, each with its attachments and where it lives on the "
        "IMAP server. Their `html` loads nothing from elsewhere unless asked "
        "(`remote_content`).\n\n" + MERGED_DESCRIPTION
    ),
    responses=_MERGED_RESPONSES,
)
def get_conversation(
    request: Request,
    session: SessionDep,
    agent: CurrentAgent,
    conversation_id: ConversationId,
    remote_content: RemoteContent = "block",
) -> ConversationDetailPublic | JSONResponse:
    try:
        detail = reads.conversation_detail(session, agent, conversation_id)
    except reads.ConversationMerged as exc:
        return _merged(request, "get_conversation", exc)
    public = conversation_detail_public(detail, remote_images=remote_content == "allow")
    with_sla(session, [public])
    return public


@router.patch(
    "/{conversation_id}",
    response_model=ConversationDetailPublic,
    summary="Change status, assignee or tags",
    description=(
        "Only the fields sent change, in one transaction: `status`, `assignee` (an agent's "
        "email, which claims it for them whoever held it; `null` unassigns and releases it), "
        "`tags` (the complete new set). Each change goes to the activity log and is written "
        "back to the mailbox (a folder move, `\\Flagged` and keywords). Answers the "
        "conversation as `GET` does.\n\n" + MERGED_DESCRIPTION
    ),
    responses=_MERGED_RESPONSES,
)
def update_conversation(
    request: Request,
    session: WriteSessionDep,
    agent: CurrentAgent,
    conversation_id: ConversationId,
    body: ConversationUpdate,
) -> ConversationDetailPublic | JSONResponse:
    try:
        conversation = reads.visible_conversation(session, agent, conversation_id)
    except reads.ConversationMerged as exc:
        return _merged(request, "update_conversation", exc)
    changes = body.model_dump(exclude_unset=True)
    assignee: Agent | None = None
    if changes.get("assignee") is not None:
        assignee = _agent_by_email(session, changes["assignee"])
    source = ActivitySource.api
    if "status" in changes:
        operations.set_status(session, conversation, changes["status"], source=source, agent=agent)
    if "assignee" in changes:
        operations.assign(session, conversation, assignee, source=source, agent=agent)
    if "tags" in changes:
        operations.set_tags(session, conversation, changes["tags"], source=source, agent=agent)
    return _detail(session, agent, conversation_id)


@router.post(
    "/{conversation_id}/claim",
    response_model=ConversationDetailPublic,
    summary="Claim a conversation",
    description=(
        "Takes the conversation for the calling agent (written back as `\\Flagged` and "
        "`$Assigned_<handle>`). Claiming one's own again succeeds and changes nothing. When "
        "someone else holds it, answers **409** with `holder`: their email, or "
        "`someone via mail client` when a colleague flagged it in a mail client. Of two "
        "simultaneous claims exactly one wins.\n\n" + MERGED_DESCRIPTION
    ),
    responses={
        **_MERGED_RESPONSES,
        409: {"model": ErrorPublic, "description": "Someone else holds it; `holder` says who."},
    },
)
def claim_conversation(
    request: Request,
    session: WriteSessionDep,
    agent: CurrentAgent,
    conversation_id: ConversationId,
) -> ConversationDetailPublic | JSONResponse:
    try:
        conversation = reads.visible_conversation(session, agent, conversation_id)
    except reads.ConversationMerged as exc:
        return _merged(request, "claim_conversation", exc)
    operations.claim(session, conversation, agent, source=ActivitySource.api)
    return _detail(session, agent, conversation_id)


@router.post(
    "/{conversation_id}/release",
    response_model=ConversationDetailPublic,
    summary="Release a claimed conversation",
    description=(
        "Nobody holds it afterwards (no assignee, not claimed). Only the holder or an admin "
        "may release it (**403** otherwise, with `holder`); releasing what nobody holds "
        "succeeds and changes nothing.\n\n" + MERGED_DESCRIPTION
    ),
    responses={
        **_MERGED_RESPONSES,
        403: {"model": ErrorPublic, "description": "Held by someone else; `holder` says who."},
    },
)
def release_conversation(
    request: Request,
    session: WriteSessionDep,
    agent: CurrentAgent,
    conversation_id: ConversationId,
) -> ConversationDetailPublic | JSONResponse:
    try:
        conversation = reads.visible_conversation(session, agent, conversation_id)
    except reads.ConversationMerged as exc:
        return _merged(request, "release_conversation", exc)
    operations.release(session, conversation, source=ActivitySource.api, agent=agent)
    return _detail(session, agent, conversation_id)


@router.get(
    "/{conversation_id}/activity",
    response_model=ActivityListPublic,
    summary="The activity log of a conversation",
    description=(
        "Every change, newest first, with where it came from (`web`, `api`, `imap` for a "
        "mail client, `system`) and who made it; includes the log of conversations merged "
        "into this one.\n\n" + MERGED_DESCRIPTION
    ),
    responses=_MERGED_RESPONSES,
)
def conversation_activity(
    request: Request,
    session: SessionDep,
    agent: CurrentAgent,
    conversation_id: ConversationId,
) -> ActivityListPublic | JSONResponse:
    try:
        reads.visible_conversation(session, agent, conversation_id)
    except reads.ConversationMerged as exc:
        return _merged(request, "conversation_activity", exc)
    activities = reads.conversation_activity(session, conversation_id)
    emails = operations.agent_emails(session, activities)
    actors = {a.id: operations.activity_actor(a, emails) for a in activities if a.id is not None}
    return activity_list_public(activities, actors)
