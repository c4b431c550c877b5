"""The conversation list: queues with counts, search, sorting, and bulk actions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlmodel import Session, col, select

from imapdesk.api.deps import IdValue, SessionDep, WriteSessionDep
from imapdesk.api.web.auth import CSRF_FIELD, WebAgent, check_csrf
from imapdesk.api.web.flash import flash, pop_flash
from imapdesk.api.web.session import safe_next
from imapdesk.api.web.templating import templates
from imapdesk.domain.accounts.agents import agent_by_email
from imapdesk.domain.conversations import operations, queues, read_marks, reads
from imapdesk.domain.outbound import drafts
from imapdesk.domain.outbound.delivery import failed_by_conversation, failure_words
from imapdesk.domain.sla import queues as sla_queues
from imapdesk.kernel.errors import ImapdeskError, InvalidInput
from imapdesk.kernel.models import ActivitySource, Agent, ConversationStatus, utcnow

router = APIRouter()

DUE_SORT = "due"
SLA_SLOT = 30

PAGE_SIZE = 50
MAX_BULK = 200
BULK_ACTIONS = {"claim": "Claimed", "assign": "Assigned", "close": "Closed", "tag": "Tagged"}


def _status(value: str | None) -> ConversationStatus | None:
    return ConversationStatus(value) if value and value in ConversationStatus.__members__ else None


# the parts of the list page that live updates replace, each a template of its own
LIST_PARTS = {
    "sidebar": "queues/sidebar.html",
    "rows": "queues/rows.html",
    "pager": "queues/pager.html",
}
SORTS = [
    ("newest", "Newest"),
    ("oldest", "Oldest"),
    ("activity", "Last activity"),
    # imapdesk/domain/sla/queues.py: those with a due time, the earliest first
    (DUE_SORT, "Due time"),
]


@dataclass(frozen=True)
class ListParams:
    """The list's query parameters, as the page and its live parts both take them."""

    queue: str | None = None
    mailbox: str | None = None
    tag: str | None = None
    status: str | None = None
    q: str | None = None
    sort: str | None = None
    cursor: str | None = None


def list_params(
    queue: Annotated[str | None, Query(max_length=20)] = None,
    mailbox: Annotated[str | None, Query(max_length=100)] = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    sort: Annotated[str | None, Query(max_length=20)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ListParams:
    return ListParams(queue, mailbox, tag, status, q, sort, cursor)


ListParamsDep = Annotated[ListParams, Depends(list_params)]


def _names(session: Session, emails: Iterable[str | None]) -> dict[str, str]:
    wanted = {e for e in emails if e}
    if not wanted:
        return {}
    rows = session.exec(select(Agent.email, Agent.name).where(col(Agent.email).in_(wanted)))
    return {email: name for email, name in rows}


def list_context(
    request: Request, session: Session, agent: Agent, params: ListParams
) -> dict[str, Any]:
    """What the list page and its live parts show for these parameters: one count of the
    queues and one page of conversations, the same two queries for both."""
    queue_name = params.queue if params.queue in queues.QUEUE_BY_NAME else queues.DEFAULT_QUEUE
    chosen = _status(params.status)
    sort = params.sort
    sla_queue = queues.QUEUE_BY_NAME[queue_name].sla
    if sla_queue:
        sort = DUE_SORT  # the SLA queues come in due order
    order = (
        sort
        if sort and (sort in reads.SortOrder.__members__ or sort == DUE_SORT)
        else reads.SortOrder.newest.value
    )
    mailbox, tag, q = params.mailbox or "", params.tag or "", params.q or ""
    filters = queues.queue_filters(
        queue_name, mailbox=mailbox or None, tag=tag or None, status=chosen, q=q or None
    )
    search_error = ""
    try:
        if order == DUE_SORT:
            page = sla_queues.list_due(
                session,
                agent,
                sla_queue or sla_queues.WITH_DUE,
                filters,
                limit=PAGE_SIZE,
                cursor=params.cursor or None,
            )
        else:
            page = reads.list_conversations(
                session, agent, filters, limit=PAGE_SIZE, cursor=params.cursor or None, sort=order
            )
    except InvalidInput as exc:
        if exc.details.get("field") != "q":
            raise
        # a search the page cannot read: say so beside the search box, with nothing listed
        page, search_error = reads.ConversationPage(items=[], next_cursor=None), exc.message
    # the current view without the cursor: what the sort, pager and bulk form come back to
    view = {
        "queue": params.queue if queue_name != queues.DEFAULT_QUEUE else "",
        "mailbox": mailbox,
        "tag": tag,
        "status": chosen.value if chosen else "",
        "q": q,
        # the default sort of the view is left out (newest; due time in an SLA queue)
        "sort": "" if order == reads.SortOrder.newest.value or sla_queue else order,
    }
    view = {k: v for k, v in view.items() if v}
    counts = queues.queue_counts(session, agent, request.app.state.queue_counts)
    # url_for walks every route: once per render, not once per row
    list_url = request.url_for("conversations")
    conversation_url = str(request.url_for("conversation", conversation_id=0))
    return {
        "agent": agent,
        "page": page,
        "counts": counts,
        "queues": queues.QUEUES,
        "queue": queue_name,
        "mailboxes": [name for name, _ in counts.mailboxes],
        "statuses": list(ConversationStatus),
        "sorts": SORTS,
        "filters": {
            "queue": queue_name,
            "mailbox": mailbox,
            "tag": tag,
            "status": chosen.value if chosen else "",
            "q": q,
            "sort": order,
        },
        "view": view,
        "search_error": search_error,
        "back": list_url.path + (f"?{urlencode(view)}" if view else ""),
        "next_query": view | {"cursor": page.next_cursor} if page.next_cursor else None,
        "paged": bool(params.cursor),
        "list_url": str(list_url),
        "conversation_prefix": conversation_url[:-1],
        # each row's earliest due time (imapdesk/domain/sla/queues.py)
        "sla": sla_queues.sla_views(session, (r.conversation.id for r in page.items)),
        "now": utcnow(),
        "due_soon_window": sla_queues.due_soon_window(),
        # assignees by name (the address in a title)
        "agent_names": _names(session, (r.assignee for r in page.items)),
        # the rows unread for this agent (imapdesk/domain/conversations/read_marks.py)
        "unread_for_me": read_marks.unread_for(
            session, agent, (r.conversation for r in page.items)
        ),
        # the rows whose reply was not sent, marked with the server's words
        "failed": {
            cid: failure_words(o)
            for cid, o in failed_by_conversation(
                session, (r.conversation.id for r in page.items)
            ).items()
        },
    }


@router.get("/", name="conversations")
def conversations_page(
    request: Request, session: SessionDep, agent: WebAgent, params: ListParamsDep
) -> Response:
    context = list_context(request, session, agent, params)
    agents = session.exec(
        select(Agent).where(col(Agent.is_active).is_(True)).order_by(col(Agent.name))
    ).all()
    # the live parts of exactly this view and page
    shown = context["view"] | ({"cursor": params.cursor} if params.cursor else {})
    context |= {
        "agents": agents,
        "flash": pop_flash(request),
        # the stream pushes this view's parts after every change (api/web/live.py)
        "live_url": request.url_for("live").path + "?" + urlencode({"parts": 1} | shown),
        "parts_url": request.url_for("queue_parts").path
        + (f"?{urlencode(shown)}" if shown else ""),
    }
    return templates.TemplateResponse(request, "queues/list.html", context)


@router.get("/queue-parts", name="queue_parts")
def queue_parts(
    request: Request, session: SessionDep, agent: WebAgent, params: ListParamsDep
) -> Response:
    """The list page's changing parts (sidebar counts, rows, pager) as HTML in JSON, for the
    same parameters as the page: what its live updates put in place.

    Every open list needs them after every change (pushed on its event stream, or fetched
    here after a reconnect), so one agent's tabs on the same view share one rendering per
    change (keyed by the mailboxes the agent may see, so a change of access is never served
    from before it)."""
    return JSONResponse(
        parts_body(request, session, agent, params), headers={"Cache-Control": "no-store"}
    )


def parts_body(
    request: Request, session: Session, agent: Agent, params: ListParams
) -> dict[str, Any]:
    """The parts, from the app's cache while nothing changed (see `queue_parts`)."""
    visible = tuple(reads.visible_mailbox_ids(session, agent))
    # the agent's drafts (the Drafts queue and its count) come and go with no conversation
    # changing: their own stamp
    stamp = queues.change_stamp(session) + drafts.stamp(session, agent.id or 0)
    # and what the agent read (their rows' bold) changes no conversation either
    stamp += read_marks.stamp(session, agent.id or 0)
    # the SLA queues and due marks change with the clock too: at least every SLA_SLOT seconds
    stamp += (int(utcnow().timestamp() // SLA_SLOT),)
    body: dict[str, Any] = request.app.state.queue_parts.get(
        (agent.id, visible, params),
        stamp,
        lambda: _parts(request, session, agent, params),
    )
    return body


def _parts(request: Request, session: Session, agent: Agent, params: ListParams) -> dict[str, Any]:
    context = list_context(request, session, agent, params) | {"request": request}
    body: dict[str, Any] = {
        name: templates.get_template(tpl).render(context) for name, tpl in LIST_PARTS.items()
    }
    items = context["page"].items
    body["ids"] = [row.conversation.id for row in items]
    body["versions"] = {str(row.conversation.id): row.conversation.version for row in items}
    body["paged"] = context["paged"]
    return body


def _bulk_one(
    session: Session,
    agent: Agent,
    conversation_id: int,
    action: str,
    assignee: Agent | None,
    tag: str,
) -> None:
    source = ActivitySource.web
    # each through imapdesk.domain.conversations.operations, which 404s a conversation the agent
    # may not see
    if action == "claim":
        operations.claim(session, conversation_id, agent, source=source)
    elif action == "assign":
        operations.assign(session, conversation_id, assignee, source=source, agent=agent)
    elif action == "close":
        operations.set_status(
            session, conversation_id, ConversationStatus.closed, source=source, agent=agent
        )
    elif action == "tag":
        operations.add_tag(session, conversation_id, tag, source=source, agent=agent)


@router.post("/bulk", name="bulk_action")
def bulk_action(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    action: Annotated[str, Form(max_length=20)] = "",
    ids: Annotated[list[IdValue] | None, Form()] = None,
    assignee: Annotated[str, Form(max_length=320)] = "",
    tag: Annotated[str, Form(max_length=100)] = "",
    back: Annotated[str, Form(max_length=2000)] = "/",
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)] = "",
) -> Response:
    """Apply one action to the selected conversations, each on its own (a savepoint), so that
    one that fails (someone else claimed it) does not undo the others."""
    check_csrf(request, csrf_token)
    target = safe_next(back)
    chosen = list(dict.fromkeys(ids or []))[:MAX_BULK]
    if action not in BULK_ACTIONS:
        flash(request, "Choose what to do with the selected conversations.", error=True)
        return RedirectResponse(target, status_code=303)
    if not chosen:
        flash(request, "Select one or more conversations first.", error=True)
        return RedirectResponse(target, status_code=303)
    assignee_agent: Agent | None = None
    try:
        if action == "assign":
            if not assignee:
                raise InvalidInput("choose whom to assign them to", field="assignee")
            assignee_agent = agent_by_email(session, assignee)
            if assignee_agent is None:
                raise InvalidInput(f"no agent has the email {assignee}", field="assignee")
        if action == "tag":
            tag = operations.normalize_tag(tag)
    except ImapdeskError as exc:
        flash(request, f"Nothing changed: {exc.message}.", error=True)
        return RedirectResponse(target, status_code=303)

    done = 0
    failures: list[str] = []
    for conversation_id in chosen:
        try:
            with session.begin_nested():
                _bulk_one(session, agent, conversation_id, action, assignee_agent, tag)
            done += 1
        except ImapdeskError as exc:
            failures.append(f"#{conversation_id}: {exc.message}")
    noun = "conversation" if done == 1 else "conversations"
    message = f"{BULK_ACTIONS[action]} {done} {noun}."
    if failures:
        message += f" {len(failures)} not changed: " + "; ".join(failures[:5])
    flash(request, message, error=bool(failures))
    return RedirectResponse(target, status_code=303)
