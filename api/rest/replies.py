"""Replies, notes and new outbound conversations. Thin: the rules live in
`imapdesk.domain.outbound.replies`; the worker's sender delivers what is queued here, woken by
the request's commit (`imapdesk.kernel.wakeups`)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from imapdesk.api.deps import CurrentAgent, SettingsDep, WriteSessionDep
from imapdesk.api.rest.conversations import MERGED_DESCRIPTION, ConversationId, _merged
from imapdesk.api.schemas import ErrorPublic, OutboundPublic, outbound_public
from imapdesk.domain.conversations import reads
from imapdesk.domain.outbound import replies
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import ActivitySource
from imapdesk.mail.compose import Upload, recipient_entries

router = APIRouter(tags=["replies"])

_MAX_FIELD = 1_000_000
_RECIPIENTS = (
    "One address per entry, `local@domain` or `Name <local@domain>`, sent to exactly as "
    "written: an entry that is not exactly one address is refused (422), never guessed at. "
    "In multipart, repeat the field or separate entries with commas. A domain may be "
    "international (it is sent in its IDNA form); an address with non-ASCII characters "
    "before the @ only through an SMTP server that offers SMTPUTF8 (422 when the mailbox's "
    "is known not to)."
)
_HTML = (
    "Optional HTML, as the web UI's rich-text composer writes it: sanitised as the web UI's is "
    "(no script, style, form or remote image; links http, https, mailto), sent with a "
    "plain-text alternative rendered from it (`body` is then not sent: it may be empty). An "
    'image is shown from an attached file (multipart) as `<img src="cid:<its file name>">`: '
    "that file goes as an inline part rather than an attachment; a `cid:` that names none of "
    "the attached images is refused (422, field `html`)."
)
_UNDO_WINDOW = (
    "Hold it for the agent's undo window (`undo_send_seconds`, as the web UI does): "
    "`delivery.state` is `scheduled` until `delivery.not_before`, and "
    "`POST /api/v1/outbound/{id}/cancel` takes it back meanwhile. Default: sent at once."
)


class ReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: str = Field(
        default="",
        max_length=_MAX_FIELD,
        description="The text (a signature is added); may be empty when `html` is given.",
    )
    html: str | None = Field(default=None, max_length=_MAX_FIELD, description=_HTML)
    to: list[str] | None = Field(
        default=None,
        max_length=100,
        description="Default: who the answered message came from. " + _RECIPIENTS,
    )
    cc: list[str] | None = Field(default=None, max_length=100, description=_RECIPIENTS)
    kind: str = Field(default="reply", pattern="^(reply|reply_all|forward)$")
    version: int | None = Field(
        default=None,
        description="The conversation's `version` the agent saw; 409 when newer messages or "
        "notes arrived since.",
    )
    force: bool = Field(default=False, description="Send even though newer messages arrived.")
    undo_window: bool = Field(default=False, description=_UNDO_WINDOW)


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: str = Field(default="", max_length=_MAX_FIELD)
    html: str | None = Field(default=None, max_length=_MAX_FIELD, description=_HTML)
    version: int | None = None
    force: bool = False


class NewConversationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mailbox: str = Field(max_length=100)
    to: list[str] = Field(min_length=1, max_length=100, description=_RECIPIENTS)
    cc: list[str] | None = Field(default=None, max_length=100, description=_RECIPIENTS)
    subject: str = Field(
        min_length=1,
        max_length=998,
        description="One line: no line break or other control character (422 otherwise).",
    )
    body: str = Field(default="", max_length=_MAX_FIELD)
    html: str | None = Field(default=None, max_length=_MAX_FIELD, description=_HTML)
    undo_window: bool = Field(default=False, description=_UNDO_WINDOW)


class NotePublic(BaseModel):
    id: int
    message_id: str
    conversation_id: int | None
    version: int = Field(description="The conversation's version after the note.")


_Form = dict[str, Any]


async def _read(request: Request) -> tuple[_Form, list[Upload]]:
    """JSON, or multipart/form-data whose files are attachments (repeat `to`, `cc`)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        data: _Form = {}
        uploads: list[Upload] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                uploads.append(
                    Upload(
                        filename=value.filename or "attachment",
                        content_type=value.content_type or "application/octet-stream",
                        data=await value.read(),
                    )
                )
            elif key in ("to", "cc"):
                data.setdefault(key, []).extend(recipient_entries(str(value)))
            elif key in ("force", "undo_window"):
                data[key] = str(value).lower() in ("1", "true", "yes", "on")
            elif key == "version":
                data[key] = int(value) if str(value).strip().isdigit() else None
            else:
                data[key] = str(value)
        return data, uploads
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not JSON: {exc}", field="body") from exc
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    return body, []


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], data: _Form) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidInput(f"invalid {field}: {first.get('msg', 'invalid')}", field=field) from exc


def _input(
    model: type[M],
) -> Callable[[Request], Awaitable[tuple[M, list[Upload]]]]:
    """The dependency that reads the request (`_read`) and validates it as `model`."""

    async def read_input(request: Request) -> tuple[M, list[Upload]]:
        data, uploads = await _read(request)
        return _validate(model, data), uploads

    return read_input


reply_input = _input(ReplyIn)
note_input = _input(NoteIn)
new_conversation_input = _input(NewConversationIn)


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    multipart = {
        "type": "object",
        "properties": {
            **schema.get("properties", {}),
            "attachments": {"type": "array", "items": {"type": "string", "format": "binary"}},
        },
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "multipart/form-data": {"schema": multipart},
            },
        }
    }


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Send the same key again (a retry) and get the same reply, sent once.",
    ),
]

_REPLY_RESPONSES: dict[int | str, dict[str, Any]] = {
    308: {"model": ErrorPublic, "description": "Merged; `Location` and `merged_into`."},
    404: {"model": ErrorPublic, "description": "No such conversation (or not yours to see)."},
    409: {
        "model": ErrorPublic,
        "description": "Newer messages or notes arrived since `version` (code "
        "`version_conflict`): `current_version` and `newer` (the messages); send again with "
        "the new version, or with `force`.",
    },
}


@router.post(
    "/conversations/{conversation_id}/replies",
    status_code=202,
    response_model=OutboundPublic,
    summary="Reply (or reply to all, or forward)",
    description=(
        "Queues the reply; the worker sends it by SMTP (retrying temporary failures; one that "
        "retrying cannot fix, a 5xx answer or an address the server cannot take, fails at "
        "once), files a copy in Sent, marks the answered message `\\Answered` and sets the "
        "status the mailbox names (default pending). The answer's `delivery` (scheduled, "
        "queued, sending, sent, failed, with the SMTP server's words) shows on the "
        "conversation's messages too; a failed one is sent again with "
        "`POST /api/v1/outbound/{id}/retry`. JSON, or multipart/form-data with files as "
        "attachments.\n\n" + MERGED_DESCRIPTION
    ),
    responses=_REPLY_RESPONSES,
    openapi_extra=_body_schema(ReplyIn),
)
def create_reply(
    request: Request,
    session: WriteSessionDep,
    agent: CurrentAgent,
    settings: SettingsDep,
    conversation_id: ConversationId,
    data: Annotated[tuple[ReplyIn, list[Upload]], Depends(reply_input)],
    idempotency_key: IdempotencyKey = None,
) -> OutboundPublic | JSONResponse:
    body, uploads = data
    try:
        reads.visible_conversation(session, agent, conversation_id)
    except reads.ConversationMerged as exc:
        return _merged(request, "create_reply", exc)
    mail = replies.queue_reply(
        session,
        agent,
        conversation_id,
        kind=body.kind,
        body=body.body,
        composed_html=body.html if body.html is not None and body.html.strip() else None,
        composed_field="html",
        to=body.to,
        cc=body.cc,
        attachments=uploads,
        expected_version=body.version,
        force=body.force,
        idempotency_key=idempotency_key,
        source=ActivitySource.api,
        settings=settings,
        undo_seconds=agent.undo_send_seconds if body.undo_window else 0,
    )
    return outbound_public(mail)


@router.post(
    "/conversations/{conversation_id}/notes",
    status_code=201,
    response_model=NotePublic,
    summary="Add an internal note",
    description=(
        "Stored at once and filed by the worker in the mailbox's Notes folder (so a rebuild "
        "restores it); never sent to anyone.\n\n" + MERGED_DESCRIPTION
    ),
    responses=_REPLY_RESPONSES,
    openapi_extra=_body_schema(NoteIn),
)
def create_note(
    request: Request,
    session: WriteSessionDep,
    agent: CurrentAgent,
    settings: SettingsDep,
    conversation_id: ConversationId,
    data: Annotated[tuple[NoteIn, list[Upload]], Depends(note_input)],
) -> NotePublic | JSONResponse:
    body, uploads = data
    try:
        conversation = reads.visible_conversation(session, agent, conversation_id)
    except reads.ConversationMerged as exc:
        return _merged(request, "create_note", exc)
    message = replies.add_note(
        session,
        agent,
        conversation_id,
        body=body.body,
        composed_html=body.html if body.html is not None and body.html.strip() else None,
        composed_field="html",
        attachments=uploads,
        expected_version=body.version,
        force=body.force,
        source=ActivitySource.api,
        settings=settings,
    )
    assert message.id is not None
    session.refresh(conversation)
    return NotePublic(
        id=message.id,
        message_id=message.message_id,
        conversation_id=message.conversation_id,
        version=conversation.version,
    )


@router.post(
    "/conversations",
    status_code=202,
    response_model=OutboundPublic,
    summary="Start a conversation with an outgoing message",
    description="Queues the message; the worker sends it as it sends replies.",
    responses={409: {"model": ErrorPublic, "description": "Idempotency key reused."}},
    openapi_extra=_body_schema(NewConversationIn),
)
def create_conversation(
    session: WriteSessionDep,
    agent: CurrentAgent,
    settings: SettingsDep,
    data: Annotated[tuple[NewConversationIn, list[Upload]], Depends(new_conversation_input)],
    idempotency_key: IdempotencyKey = None,
) -> OutboundPublic:
    body, uploads = data
    if body.mailbox not in {
        name for name, in_view in _mailbox_names(session, agent).items() if in_view
    }:
        raise InvalidInput(f"no mailbox named {body.mailbox!r}", field="mailbox")
    mail = replies.start_conversation(
        session,
        agent,
        body.mailbox,
        to=body.to,
        cc=body.cc,
        subject=body.subject,
        body=body.body,
        composed_html=body.html if body.html is not None and body.html.strip() else None,
        composed_field="html",
        attachments=uploads,
        idempotency_key=idempotency_key,
        source=ActivitySource.api,
        settings=settings,
        undo_seconds=agent.undo_send_seconds if body.undo_window else 0,
    )
    return outbound_public(mail)


def _mailbox_names(session: Any, agent: Any) -> dict[str, bool]:
    from sqlmodel import col, select

    from imapdesk.kernel.models import Mailbox

    visible = set(reads.visible_mailbox_ids(session, agent))
    return {
        m.name: m.id in visible for m in session.exec(select(Mailbox).order_by(col(Mailbox.id)))
    }
