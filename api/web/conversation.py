"""One conversation: the page, its live parts, the actions on it, the message body frame,
attachments, presence heartbeats and saved replies.

Every action is a plain form POST (it works without JavaScript: 303 back to the page);
`conversation.js` sends the same forms with fetch and gets the page's changed parts as JSON.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlmodel import Session, col, select

from imapdesk.api.deps import (
    IdValue,
    RowId,
    SessionDep,
    SettingsDep,
    WriteSessionDep,
    bookkeeping_write,
)
from imapdesk.api.downloads import attachment_path, attachment_response
from imapdesk.api.web.auth import WebAgent, check_csrf, csrf_token
from imapdesk.api.web.templating import STATIC_DIR, templates
from imapdesk.domain.accounts.profile import local_to_utc, zone_of
from imapdesk.domain.conversations import operations, read_marks, reading, reads, snooze
from imapdesk.domain.customers.views import customer_card
from imapdesk.domain.live import presence
from imapdesk.domain.outbound import drafts, saved_replies
from imapdesk.domain.outbound.delivery import failure_words, public_state
from imapdesk.domain.outbound.replies import outbound_for_messages
from imapdesk.domain.sla import queues as sla_queues
from imapdesk.kernel.errors import ImapdeskError, InvalidInput, NotFound
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    Attachment,
    ConversationStatus,
    Direction,
    OutboundMail,
    OutboundState,
    PresenceState,
    as_utc,
    utcnow,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail.parsing import sanitize_html
from imapdesk.mail.quoting import collapse_quoted, split_quoted

router = APIRouter(include_in_schema=False)

# The mail's HTML runs in a sandboxed frame (an opaque origin, no script, no forms, no popups)
# under a policy that loads nothing from anywhere: inline images come as data: URLs.
MESSAGE_BODY_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'; sandbox"
)
# ...and once the agent asks for remote images: images only, without a referrer
MESSAGE_BODY_CSP_IMAGES = MESSAGE_BODY_CSP.replace("img-src data:", "img-src data: https: http:")
CSRF_HEADER = "x-csrf-token"
FETCH_HEADER = "x-requested-with"
INLINE_IMAGE_MAX = 5 * 1024 * 1024  # bytes of cid: images inlined into one body
SNOOZE_CHOICES = (
    (1, "1 hour"),
    (4, "4 hours"),
    (24, "tomorrow"),
    (72, "3 days"),
    (168, "1 week"),
)
ACTIONS = (
    "claim",
    "release",
    "assign",
    "status",
    "tags",
    "read",
    "unread",
    "snooze",
    "unsnooze",
)
WEB_STATUSES = (
    ConversationStatus.open,
    ConversationStatus.pending,
    ConversationStatus.closed,
    ConversationStatus.spam,
)

_REMOTE_IMAGE = re.compile(r"""<img\b[^>]*\bsrc\s*=\s*["']?\s*(?:https?:)?//""", re.I)
_CID_SRC = re.compile(r"""(\bsrc\s*=\s*["']?)cid:([^"'\s>]+)""", re.I)

RULE_REASONS = {
    "references": "joined by its In-Reply-To/References headers",
    "in_reply_to": "joined by its In-Reply-To header",
    "token": "joined by the [#id] token in its subject",
    "subject": "joined by the subject fallback: same subject and customer, within days",
    "new": "started this conversation",
}

_ACTION_TEXT = {
    "claimed": "claimed it",
    "released": "released it",
    "unassigned": "unassigned it",
    "read": "marked it read",
    "unread": "marked it unread",
    "snoozed": "snoozed it",
    "unsnoozed": "cancelled the snooze",
    "taken_back": "took a reply back before it was sent",
    "send_retried": "sent a failed reply again",
    "send_failed": "could not send a reply",
}
_SOURCE_TEXT = {
    ActivitySource.web: "in the helpdesk",
    ActivitySource.api: "through the API",
    ActivitySource.imap: "from a mail client",
    ActivitySource.system: "automatically",
}


# --- presentation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageItem:
    view: reads.MessageView
    why: str
    replies_to: str | None
    text: str
    quoted: str
    remote_images: bool
    # shown as one line (sender, date, first words) until opened: an older message of a long
    # thread, so that the page opens at the newest
    folded: bool = False


@dataclass(frozen=True)
class DeliveryView:
    """An outgoing message's delivery as the page shows it (`state` as agents see it)."""

    outbound: OutboundMail
    state: str
    message_id: int
    # scheduled: the undo window's seconds left when the page was made (the page counts down
    # from there, whatever its own clock says)
    seconds_left: float | None = None
    # failed (or queued after a failed attempt): why, in the server's words where it answered
    words: str = ""


def delivery_views(session: Session, detail: reads.ConversationDetail) -> dict[int, DeliveryView]:
    """The delivery of each outgoing message of the conversation (not notes), by message id."""
    ids = [v.message.id for v in detail.messages if v.message.direction == Direction.outbound]
    found = outbound_for_messages(session, [i for i in ids if i is not None])
    now = utcnow()
    views = {}
    for mid, o in found.items():
        if o.kind == "note":
            continue
        state = public_state(o, now)
        due = as_utc(o.next_attempt_at)
        left = (due - now).total_seconds() if state == OutboundState.scheduled and due else None
        failed = state == OutboundState.failed
        words = failure_words(o) if failed or (o.last_error and not o.sent_at) else ""
        views[mid] = DeliveryView(o, state.value, mid, left, words)
    return views


@dataclass(frozen=True)
class ActivityItem:
    activity: Activity
    who: str
    what: str
    where: str
    # the agent's address, where `who` is their name (a title on it)
    email: str = ""


def _sender(view: reads.MessageView) -> str:
    m = view.message
    return m.from_name or m.from_email or "unknown sender"


# a thread longer than this opens with its older messages folded
FOLD_AFTER = 3


def _folded(detail: reads.ConversationDetail, keep_open: set[int]) -> set[int]:
    """The messages a long thread shows folded: all but the newest, except those still
    unread and those in `keep_open` (a reply whose delivery needs the agent)."""
    views = detail.messages
    if len(views) <= FOLD_AFTER:
        return set()
    return {
        v.message.id
        for v in views[:-1]
        if v.message.id is not None and v.message.seen and v.message.id not in keep_open
    }


def message_items(
    detail: reads.ConversationDetail, keep_open: set[int] | None = None
) -> list[MessageItem]:
    by_msgid = {v.message.message_id: v for v in detail.messages}
    folded = _folded(detail, keep_open or set())
    items = []
    for view in detail.messages:
        m = view.message
        why = RULE_REASONS.get(m.thread_rule, f"joined by the rule {m.thread_rule!r}")
        if m.direction == Direction.note:
            why = "an internal note" + ("" if m.thread_rule == "new" else f"; {why}")
        parent = by_msgid.get((m.in_reply_to or "").strip("<>"))
        replies_to = (
            f"{_sender(parent)}, {parent.message.date:%Y-%m-%d %H:%M}"
            if parent is not None and parent is not view and parent.message.date
            else None
        )
        text, quoted = split_quoted(m.text or "")
        items.append(
            MessageItem(
                view=view,
                why=why,
                replies_to=replies_to,
                text=text,
                quoted=quoted,
                remote_images=bool(m.html and _REMOTE_IMAGE.search(m.html)),
                folded=m.id in folded,
            )
        )
    return items


def _describe(activity: Activity, names: dict[str, str] | None = None, zone: tzinfo = UTC) -> str:
    d = activity.details or {}
    action = activity.action
    if action == "status":
        return f"set the status to {d.get('to')}" if d.get("to") != "open" else "reopened it"
    if action == "assigned":
        to = d.get("to")
        to = (names or {}).get(to, to) if isinstance(to, str) else to
        return f"assigned it to {to or d.get('handle') or 'nobody'}"
    if action in ("tagged", "untagged"):
        return f"{action} it {', '.join(d.get('tags') or [])}"
    if action == "snoozed":
        return f"snoozed it until {_local(d.get('until'), zone)}"
    if action == "keyword_not_kept":
        return "; ".join(_not_kept(k) for k in d.get("keywords") or [] if isinstance(k, dict))
    if action in _ACTION_TEXT:
        return _ACTION_TEXT[action]
    return action.replace("_", " ")


def _not_kept(keyword: dict[str, Any]) -> str:
    """The write-back's word on a keyword the server refused or cannot keep: "the tag X is not
    kept in the mailbox (INBOX: why)"."""
    if keyword.get("tag"):
        what = f"the tag {keyword['tag']}"
    elif keyword.get("assignee"):
        what = f"the assignee {keyword['assignee']}"
    else:
        what = f"the keyword {keyword.get('keyword')}"
    return f"{what} is not kept in the mailbox ({keyword.get('folder')}: {keyword.get('why')})"


def _local(value: object, zone: tzinfo) -> str:
    """A time the log recorded (ISO, UTC), in the agent's zone."""
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value or "")
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return f"{when.astimezone(zone):%Y-%m-%d %H:%M} {zone}"


def activity_items(
    session: Session, conversation_id: int, zone: tzinfo = UTC
) -> list[ActivityItem]:
    activities = reads.conversation_activity(session, conversation_id)
    emails = operations.agent_emails(session, activities)
    # agents by name, where the log has their address (a title keeps the address)
    names = agent_names(session)
    items = []
    for a in activities:
        actor = operations.activity_actor(a, emails)
        items.append(
            ActivityItem(
                activity=a,
                who=names.get(actor, actor),
                what=_describe(a, names, zone),
                where=_SOURCE_TEXT.get(ActivitySource(a.source), str(a.source)),
                email=actor if actor in names else "",
            )
        )
    return items


def agent_names(session: Session) -> dict[str, str]:
    """Every agent's name by address (a team's worth: one small query)."""
    return {email: name for email, name in session.exec(select(Agent.email, Agent.name))}


_ID_MARK = 9_876_543_210


def page_urls(request: Request, conversation_id: int) -> dict[str, str]:
    """The page's links. Route lookups (url_for) are the slowest part of a render, so they are
    made once per host and app, with a mark where the conversation's id goes."""
    cache: dict[str, dict[str, str]] = getattr(request.app.state, "conversation_urls", {})
    key = str(request.base_url)
    urls = cache.get(key)
    if urls is None:
        urls = {
            "conversation": str(request.url_for("conversation", conversation_id=_ID_MARK)),
            "attachments": str(request.url_for("attachment", attachment_id=1))[:-1],
            "live": str(request.url_for("live")),
            "list": str(request.url_for("conversations")),
            "saved_replies": str(request.url_for("saved_replies")),
            # + "<id>/cancel", "<id>/retry"
            "outbound": str(request.url_for("outbound_retry", outbound_id=1))[: -len("1/retry")],
            "static": str(request.url_for("static", path="/")),
        }
        if len(cache) < 16:  # a few hosts; not one entry per forged Host header
            request.app.state.conversation_urls = {**cache, key: urls}
    mark = str(_ID_MARK)
    return {name: url.replace(mark, str(conversation_id)) for name, url in urls.items()}


def page_context(
    request: Request, session: Session, agent: Agent, conversation_id: int
) -> dict[str, Any]:
    detail = reads.conversation_detail(session, agent, conversation_id)
    c = detail.row.conversation
    agents = list(session.exec(select(Agent).where(col(Agent.is_active)).order_by(col(Agent.name))))
    here = presence.present(session, [conversation_id]).get(conversation_id, [])
    deliveries = delivery_views(session, detail)
    assert agent.id is not None and c.id is not None
    # a reply whose delivery needs the agent (undo, retry, edit, discard) is never folded
    keep_open = {mid for mid, d in deliveries.items() if d.state != OutboundState.sent.value}
    drafting = drafts.holders(session, [c.id]).get(c.id, [])
    return {
        "urls": page_urls(request, conversation_id),
        "request": request,
        "csrf_token": csrf_token(request),
        "agent": agent,
        "detail": detail,
        "c": c,
        "items": message_items(detail, keep_open),
        "activity": activity_items(session, conversation_id, zone_of(agent)),
        "agents": agents,
        "assignee_handle": next((a.handle for a in agents if a.id == c.assignee_id), ""),
        "agent_names": {a.email: a.name for a in agents},
        "unknown_handle": operations.unknown_assignee_handle(session, c),
        "presence": [p for p in here if p.agent_id != agent.id],
        # colleagues with a draft on it (the agent's own opens in the composer: the page's)
        "drafters": [h for h in drafting if h.agent_id != agent.id],
        "statuses": WEB_STATUSES,
        "snooze_choices": SNOOZE_CHOICES,
        "saved_replies": saved_replies.list_saved_replies(session),
        "heartbeat_seconds": presence.HEARTBEAT_SECONDS,
        "deliveries": deliveries,
        "failed": [d for d in deliveries.values() if d.state == OutboundState.failed.value],
        # its SLA due times (imapdesk/domain/sla/), with a warning style before breach
        "sla": sla_queues.sla_views(session, [c.id]).get(c.id),
        "now": utcnow(),
        "due_soon_window": sla_queues.due_soon_window(),
    }


PARTS = {
    "state": "conversation/state.html",
    "presence": "conversation/presence.html",
    "messages": "conversation/messages.html",
    "activity": "conversation/activity.html",
    "delivery": "conversation/delivery_alert.html",
}


def render_parts(context: dict[str, Any]) -> dict[str, Any]:
    c = context["c"]
    out: dict[str, Any] = {
        name: templates.get_template(tpl).render(context) for name, tpl in PARTS.items()
    }
    badge = templates.get_template("conversation/delivery_badge.html")
    # each outgoing message's delivery, put in place on its own (the messages stay as they are)
    out["deliveries"] = {
        str(mid): badge.render({**context, "d": d}) for mid, d in context["deliveries"].items()
    }
    out["version"] = c.version
    out["message_ids"] = [i.view.message.id for i in context["items"]]
    out["status"] = c.status.value
    return out


def wants_json(request: Request) -> bool:
    return request.headers.get(FETCH_HEADER) == "fetch"


# --- the page -----------------------------------------------------------------------------------


@router.get("/conversations/{conversation_id}", name="conversation")
def conversation_page(
    request: Request,
    session: SessionDep,
    agent: WebAgent,
    conversation_id: RowId,
) -> Response:
    _read_on_open(session, agent, conversation_id)
    context = _context_or_target(request, session, agent, conversation_id)
    if isinstance(context, str):
        return RedirectResponse(context, status_code=303)
    # the sidebar: rendered with the page only (live updates leave a note being typed alone)
    context["customer"] = customer_card(session, agent, context["c"])
    # the agent's draft opens in the composer, which live updates leave alone too
    assert agent.id is not None
    context["draft"] = drafts.own(session, agent.id, context["c"].id)
    return templates.TemplateResponse(request, "conversation/page.html", context)


def _read_on_open(session: Session, agent: Agent, conversation_id: int) -> None:
    """Opening it marks it read, as in a mail client, where its mailbox says so
    (imapdesk/domain/conversations/reading.py): a short write of its own before the page is
    read, only when there is something to mark. A conversation the agent may not see, or that
    was merged, is answered by the page as ever (404, a redirect to where it lives now)."""
    try:
        conversation = reads.visible_conversation(session, agent, conversation_id)
    except (reads.ConversationMerged, NotFound):
        return
    if reading.reads_on_open(session, conversation):
        with bookkeeping_write(session):
            reading.read_on_open(session, agent, conversation_id)
    # read by this agent (imapdesk/domain/conversations/read_marks.py), whatever the mailbox says
    if agent.id is not None and read_marks.needs_mark(session, agent, conversation):
        with bookkeeping_write(session):
            read_marks.mark_read_for(session, agent.id, conversation_id)


@router.get("/conversations/{conversation_id}/parts", name="conversation_parts")
def conversation_parts(
    request: Request,
    session: SessionDep,
    agent: WebAgent,
    conversation_id: RowId,
) -> Response:
    """The page's changing parts as HTML in JSON, for the live updates."""
    context = _context_or_target(request, session, agent, conversation_id)
    if isinstance(context, str):
        return JSONResponse({"redirect": context})
    return JSONResponse(render_parts(context))


def _context_or_target(
    request: Request, session: Session, agent: Agent, conversation_id: int
) -> dict[str, Any] | str:
    """The page's context, or the path of the conversation it was merged into."""
    try:
        return page_context(request, session, agent, conversation_id)
    except reads.ConversationMerged as exc:
        return request.url_for("conversation", conversation_id=exc.merged_into).path


def check_form_csrf(request: Request, submitted: str) -> None:
    check_csrf(request, submitted or request.headers.get(CSRF_HEADER))


def _apply(
    session: Session,
    agent: Agent,
    cid: int,
    action: str,
    *,
    assignee: str,
    status: str,
    tags: str,
    hours: int | None,
    until: str = "",
) -> None:
    web = ActivitySource.web
    if action == "claim":
        operations.claim(session, cid, agent, source=web)
    elif action == "release":
        operations.release(session, cid, source=web, agent=agent)
    elif action == "assign":
        operations.assign(session, cid, assignee.strip() or None, source=web, agent=agent)
    elif action == "status":
        if status not in {s.value for s in WEB_STATUSES}:
            raise InvalidInput("status must be open, pending, closed or spam", field="status")
        operations.set_status(session, cid, status, source=web, agent=agent)
    elif action == "tags":
        wanted = [t for t in (part.strip() for part in tags.split(",")) if t]
        operations.set_tags(session, cid, wanted, source=web, agent=agent)
    elif action in ("read", "unread"):
        operations.mark_read(session, cid, action == "read", source=web, agent=agent)
        if agent.id is not None:
            (read_marks.mark_read_for if action == "read" else read_marks.mark_unread_for)(
                session, agent.id, cid
            )
    elif action == "snooze" and until.strip():
        # a date-time picked in the agent's own zone (imapdesk/domain/accounts/profile.py)
        snooze.snooze(session, cid, local_to_utc(until, agent), source=web, agent=agent)
    elif action == "snooze":
        if hours is None or not 1 <= hours <= 24 * 365:
            raise InvalidInput("snooze for 1 hour to a year", field="hours")
        snooze.snooze(session, cid, utcnow() + timedelta(hours=hours), source=web, agent=agent)
    elif action == "unsnooze":
        snooze.unsnooze(session, cid, source=web, agent=agent)
    else:
        raise NotFound(f"no action {action!r}")


@router.post("/conversations/{conversation_id}/actions/{action}", name="conversation_action")
def conversation_action(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    conversation_id: RowId,
    action: Annotated[str, Path(max_length=20)],
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
    assignee: Annotated[str, Form(max_length=64)] = "",
    status: Annotated[str, Form(max_length=20)] = "",
    tags: Annotated[str, Form(max_length=4000)] = "",
    hours: Annotated[int | None, Form()] = None,
    until: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    check_form_csrf(request, csrf)
    cid = reads.visible_conversation_id(session, agent, conversation_id)
    try:
        _apply(
            session,
            agent,
            cid,
            action,
            assignee=assignee,
            status=status,
            tags=tags,
            hours=hours,
            until=until,
        )
        session.flush()
    except ImapdeskError as exc:
        if not wants_json(request):
            raise
        session.rollback()
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status_code
        )
    if wants_json(request):
        return JSONResponse(render_parts(page_context(request, session, agent, cid)))
    target = request.url_for("conversation", conversation_id=cid)
    return RedirectResponse(target.path, status_code=303)


@router.post("/conversations/{conversation_id}/presence", name="conversation_presence")
def conversation_presence(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    conversation_id: RowId,
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
    state: Annotated[str, Form(max_length=20)] = "viewing",
) -> Response:
    """A heartbeat: the agent has the page open (viewing), is writing (replying), or left."""
    check_form_csrf(request, csrf)
    cid = reads.visible_conversation_id(session, agent, conversation_id)
    if state == "left":
        presence.leave(session, cid, agent)
        presence.prune(session)  # long-dead rows of tabs that never said goodbye
    elif state in PresenceState.__members__:
        presence.touch(session, cid, agent, PresenceState(state))
    else:
        raise InvalidInput("state is viewing, replying or left", field="state")
    return Response(status_code=204)


# --- the message body and attachments -----------------------------------------------------------

# the frame's own style (the collapsed quote), inline: the frame may load no stylesheet
MESSAGE_FRAME_STYLE = (
    "<style>" + (STATIC_DIR / "message_frame.css").read_text(encoding="utf-8") + "</style>"
)
# every formatted message is fitted to the frame's width (a newsletter on a phone)
MESSAGE_FIT_STYLE = (
    '<meta name="viewport" content="width=device-width, initial-scale=1"><style>'
    + (STATIC_DIR / "message_fit.css").read_text(encoding="utf-8")
    + "</style>"
)


def _inline_images(session: Session, settings: Settings, message_id: int, html: str) -> str:
    """cid: references to the message's own images, as data: URLs (the frame loads nothing)."""
    if "cid:" not in html.lower():
        return html
    budget = INLINE_IMAGE_MAX
    urls: dict[str, str] = {}
    for a in session.exec(select(Attachment).where(col(Attachment.message_id) == message_id)):
        if not a.content_id or not a.content_type.startswith("image/") or a.size > budget:
            continue
        path = attachment_path(settings, a.sha256.lower())
        if not path.is_file():
            continue
        budget -= a.size
        data = base64.b64encode(path.read_bytes()).decode()
        urls[a.content_id.strip("<>").lower()] = f"data:{a.content_type};base64,{data}"

    def swap(match: re.Match[str]) -> str:
        found = urls.get(match.group(2).strip("<>").lower())
        return match.group(1) + found if found else match.group(0)

    return _CID_SRC.sub(swap, html)


@router.get("/conversations/{conversation_id}/messages/{message_id}/body", name="message_body")
def message_body(
    session: SessionDep,
    settings: SettingsDep,
    agent: WebAgent,
    conversation_id: RowId,
    message_id: RowId,
    images: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    message = reads.get_message(session, agent, message_id)
    if message.conversation_id != conversation_id or message.html is None:
        raise NotFound(f"no formatted body for message {message_id} here")
    assert message.id is not None
    # stored HTML is sanitised at ingest; once remote content may load, sanitise again, so that
    # only images (never prefetches, styles or frames) can reach the remote host
    html = sanitize_html(message.html) if images else message.html
    # the quoted history is wrapped after sanitising, so the wrapper is the helpdesk's own
    collapsed = collapse_quoted(html)
    if collapsed != html:
        html = MESSAGE_FRAME_STYLE + collapsed
    return HTMLResponse(
        MESSAGE_FIT_STYLE + _inline_images(session, settings, message.id, html),
        headers={
            "Content-Security-Policy": MESSAGE_BODY_CSP_IMAGES if images else MESSAGE_BODY_CSP,
            "X-Frame-Options": "SAMEORIGIN",
            "Referrer-Policy": "no-referrer",
        },
    )


@router.get("/attachments/{attachment_id}", name="attachment")
def attachment_download(
    session: SessionDep,
    settings: SettingsDep,
    agent: WebAgent,
    attachment_id: RowId,
) -> FileResponse:
    return attachment_response(settings, reads.get_attachment(session, agent, attachment_id))


# --- saved replies ------------------------------------------------------------------------------


@router.get("/saved-replies", name="saved_replies")
def saved_replies_page(request: Request, session: SessionDep, agent: WebAgent) -> Response:
    return templates.TemplateResponse(
        request,
        "saved_replies/list.html",
        {"agent": agent, "replies": saved_replies.list_saved_replies(session)},
    )


@router.get("/saved-replies.json", name="saved_replies_json")
def saved_replies_json(session: SessionDep, agent: WebAgent) -> Response:
    replies = saved_replies.list_saved_replies(session)
    return JSONResponse([{"id": r.id, "name": r.name, "body": r.body} for r in replies])


@router.post("/saved-replies", name="saved_reply_save")
def saved_reply_save(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    body: Annotated[str, Form(max_length=saved_replies.BODY_MAX)] = "",
    saved_reply_id: Annotated[IdValue | None, Form()] = None,
) -> Response:
    check_form_csrf(request, csrf)
    saved_replies.save_reply(session, agent, name, body, saved_reply_id=saved_reply_id)
    return RedirectResponse(request.url_for("saved_replies").path, status_code=303)


@router.post("/saved-replies/{saved_reply_id}/delete", name="saved_reply_delete")
def saved_reply_delete(
    request: Request,
    session: WriteSessionDep,
    agent: WebAgent,
    saved_reply_id: RowId,
    csrf: Annotated[str, Form(alias="csrf_token", max_length=200)] = "",
) -> Response:
    check_form_csrf(request, csrf)
    saved_replies.delete_saved_reply(session, saved_reply_id)
    return RedirectResponse(request.url_for("saved_replies").path, status_code=303)
