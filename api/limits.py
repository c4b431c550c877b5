"""Request limits: what a request may be, held before any of it is parsed.

Two places see a request before a route does, and each holds what only it can see:

- The server's HTTP protocol (`LimitedHttpToolsProtocol`, which `server_options` names in the
  uvicorn config): the request line and headers together at most `max_header_bytes` (else 431),
  sent within `header_timeout_seconds` of the connection opening or the request's first byte
  (else the connection closes: a client that sends its headers a byte at a time holds a
  connection forever otherwise); an idle keep-alive connection closes after
  `keep_alive_seconds`. uvicorn's httptools protocol has neither limit. Its h11 protocol bounds
  the headers but has no timeout either, and takes about 70% more server time for a bare request
  (about 170 against 100 microseconds); the subclass here adds about 15 to httptools'.
- `RequestLimitsMiddleware`, before the app reads a body. The sender comes first: a route that
  needs a signed-in agent or an API token refuses a request without a valid one (the sign-in
  redirect, 401) before a byte of its body is read or spooled, since FastAPI reads a form before
  the route's dependencies run. Then the body is held to its kind's limit, from Content-Length
  and again as it arrives (chunked bodies too): JSON (`max_json_body_bytes`, nested at most
  `max_json_depth` deep, checked before the parser recurses: 422), forms (`max_form_body_bytes`,
  `max_form_fields` fields), uploads (the attachments, `max_outbound_attachment_bytes`, counted
  while they stream to disk, at most `max_upload_files` files, and a JSON body's worth of text).
  Over a limit: 413 naming it (JSON for the API and the pages' scripts, an error page
  otherwise). A body that stops arriving for `body_timeout_seconds` ends with 408. An answer
  given before the body was read closes the connection, so the rest is never read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import anyio
from fastapi.security import HTTPBearer
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from imapdesk.api.capacity import database_turn
from imapdesk.api.deps import current_agent
from imapdesk.api.errors import refusal_response
from imapdesk.api.web.auth import current_web_agent
from imapdesk.kernel.errors import ImapdeskError, InvalidInput
from imapdesk.kernel.settings import Settings

log = logging.getLogger(__name__)

# the routes that take attachments (multipart/form-data with files), by route name
UPLOAD_ROUTES = frozenset(
    {"create_reply", "create_note", "create_conversation", "conversation_compose"}
    # the composer's pasted images (each held to max_compose_image_bytes by its route) and
    # the "New conversation" page (api/web/composer_tools.py)
    | {"compose_image_upload", "new_conversation_send"}
)
# an upload's multipart framing (boundaries, each part's headers) beside its text and files
UPLOAD_FRAMING_BYTES = 1024 * 1024
# the part headers kept while counting a multipart body (a name and a filename fit easily)
_PART_HEADER_BYTES = 16 * 1024


class RequestTooLarge(ImapdeskError):
    status_code = 413
    code = "request_too_large"


class RequestTimeout(ImapdeskError):
    status_code = 408
    code = "request_timeout"


def _too_large(message: str, limit: int, setting: str) -> RequestTooLarge:
    return RequestTooLarge(f"{message} ({setting})", limit=limit, setting=setting)


# --- JSON nesting --------------------------------------------------------------------------

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPENERS_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def json_nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether `body`, read as JSON, nests arrays and objects deeper than `limit`, found
    without recursing (json.loads recurses once per level: 1,000 levels raise RecursionError).
    Brackets inside strings do not count; a bracket left open counts as a level. Exact for
    well-formed JSON; for malformed JSON it may count deeper than a parser would get."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(_OPENERS_AS_BRACKETS, _NOT_BRACKETS)
    # each pass removes the innermost pairs: as many passes as the deepest nesting
    for depth in range(limit + 1):
        if not brackets:
            return False
        inner_removed = brackets.replace(b"[]", b"")
        if len(inner_removed) == len(brackets):
            # what is left never closes (`]]][[`): the parser goes one level in per opener
            return depth + brackets.count(b"[") > limit
        brackets = inner_removed
    return True


# --- what a body may be ----------------------------------------------------------------------


@dataclass(frozen=True)
class BodyRules:
    """What one request's body may be: its size in all, and for forms, its parts."""

    max_bytes: int
    # what the limit is for and the setting that sets it, for the 413's message
    what: str
    setting: str
    # "multipart" or "urlencoded" (fields and files are counted), else None: read as JSON
    form: str | None
    # an upload's attachments and its text fields, each in all (None: only max_bytes holds)
    max_file_bytes: int | None = None
    max_text_bytes: int | None = None


_FORM_KINDS = {
    "multipart/form-data": "multipart",
    "application/x-www-form-urlencoded": "urlencoded",
}


def body_rules(settings: Settings, *, api: bool, upload: bool, content_type: str) -> BodyRules:
    """The rules for a body of `content_type` sent to an API route (`api`) or a page, and
    to a route that takes attachments (`upload`) or not."""
    kind = _FORM_KINDS.get(content_type.split(";", 1)[0].strip().lower())
    if upload and kind == "multipart":
        return BodyRules(
            max_bytes=settings.max_outbound_attachment_bytes
            + settings.max_json_body_bytes
            + UPLOAD_FRAMING_BYTES,
            what="a message with its attachments",
            setting="IMAPDESK_MAX_OUTBOUND_ATTACHMENT_BYTES + IMAPDESK_MAX_JSON_BODY_BYTES",
            form=kind,
            max_file_bytes=settings.max_outbound_attachment_bytes,
            max_text_bytes=settings.max_json_body_bytes,
        )
    if api and kind is None:
        return BodyRules(
            settings.max_json_body_bytes, "a JSON body", "IMAPDESK_MAX_JSON_BODY_BYTES", None
        )
    return BodyRules(settings.max_form_body_bytes, "a form", "IMAPDESK_MAX_FORM_BODY_BYTES", kind)


class _FormCount:
    """Counts a form's fields, files and bytes as its body streams past, keeping none of it:
    multipart through python-multipart (the parser Starlette's own uses), urlencoded by its
    separators. `refusal` says which limit the body went over, if one."""

    def __init__(self, rules: BodyRules, settings: Settings, content_type: str) -> None:
        self.rules = rules
        self.max_files = settings.max_upload_files
        self.max_fields = settings.max_form_fields
        self.refusal: ImapdeskError | None = None
        self.files = 0
        self.fields = 0
        self.file_bytes = 0
        self.text_bytes = 0
        self._in_file = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._parser: MultipartParser | None = None
        if rules.form == "multipart":
            boundary = parse_options_header(content_type)[1].get(b"boundary")
            if boundary:
                self._parser = MultipartParser(
                    boundary,
                    {
                        "on_part_begin": self._part_begins,
                        "on_header_field": self._header_field,
                        "on_header_value": self._header_field_value,
                        "on_header_end": self._header_ends,
                        "on_headers_finished": self._headers_finished,
                        "on_part_data": self._part_data,
                    },
                )
        elif rules.form == "urlencoded":
            self.fields = 1

    def feed(self, chunk: bytes) -> None:
        if self.rules.form == "urlencoded":
            self.fields += chunk.count(b"&")
            self._check_fields()
        elif self._parser is not None:
            try:
                self._parser.write(chunk)
            except FormParserError:
                # malformed: the app's parser refuses it (400); the body's size still holds
                self._parser = None

    def _refuse(self, error: ImapdeskError) -> None:
        if self.refusal is None:
            self.refusal = error

    def _check_fields(self) -> None:
        if self.fields > self.max_fields:
            self._refuse(
                _too_large(
                    f"the form has more than {self.max_fields} fields",
                    self.max_fields,
                    "IMAPDESK_MAX_FORM_FIELDS",
                )
            )

    def _part_begins(self) -> None:
        self._in_file = False
        self._disposition = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        if len(self._header_name) < _PART_HEADER_BYTES:
            self._header_name += data[start:end]

    def _header_field_value(self, data: bytes, start: int, end: int) -> None:
        if len(self._header_value) < _PART_HEADER_BYTES:
            self._header_value += data[start:end]

    def _header_ends(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        # as Starlette tells them apart: a part with a filename is a file
        self._in_file = b"filename" in parse_options_header(self._disposition)[1]
        if self._in_file:
            self.files += 1
            if self.files > self.max_files:
                self._refuse(
                    _too_large(
                        f"the request has more than {self.max_files} files",
                        self.max_files,
                        "IMAPDESK_MAX_UPLOAD_FILES",
                    )
                )
        else:
            self.fields += 1
            self._check_fields()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        rules = self.rules
        if self._in_file:
            self.file_bytes += end - start
            if rules.max_file_bytes is not None and self.file_bytes > rules.max_file_bytes:
                self._refuse(
                    _too_large(
                        f"the attachments have more than {rules.max_file_bytes} bytes",
                        rules.max_file_bytes,
                        "IMAPDESK_MAX_OUTBOUND_ATTACHMENT_BYTES",
                    )
                )
        else:
            self.text_bytes += end - start
            if rules.max_text_bytes is not None and self.text_bytes > rules.max_text_bytes:
                self._refuse(
                    _too_large(
                        f"the text fields have more than {rules.max_text_bytes} bytes",
                        rules.max_text_bytes,
                        "IMAPDESK_MAX_JSON_BODY_BYTES",
                    )
                )


class _Refused(Exception):
    """Raised into the app when its request broke a limit; the middleware answers it."""


# how a route knows its sender: the dependency whose refusal comes before the body is read
SenderCheck = Callable[..., Any]
_SENDER_CHECKS: tuple[SenderCheck, ...] = (current_agent, current_web_agent)
_bearer = HTTPBearer(auto_error=False)


def _has_body(headers: Headers) -> bool:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return True
    return headers.get("content-length", "0").strip() not in ("", "0")


def _content_length(headers: Headers) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None


def sender_check(route: BaseRoute | None) -> SenderCheck | None:
    """The route's dependency that says who sends the request (the signed-in agent, the
    API token's), found in its dependency tree, for a route whose body FastAPI reads before
    the dependencies run (its body parameters, a form's fields). None for a route anyone may
    call, and for one that reads its body itself, in a dependency after its sender's: that
    one knows its sender already and holds its database session (a second would wait on it)."""
    dependant = getattr(route, "dependant", None)
    if dependant is None or getattr(route, "body_field", None) is None:
        return None
    pending = list(dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if dependency.call in _SENDER_CHECKS:
            return dependency.call
        pending.extend(dependency.dependencies)
    return None


class _Body:
    """The request body as the app receives it. The app's first receive is the moment the
    route is known (the router has put it in the scope) and nothing of the body is read yet:
    the sender is checked then, and the body's rules chosen by the route; then the body is
    held to them as it arrives."""

    def __init__(self, scope: Scope, receive: Receive, settings: Settings) -> None:
        self.scope = scope
        self._receive = receive
        self.settings = settings
        self.headers = Headers(scope=scope)
        self.rules: BodyRules | None = None
        self.form: _FormCount | None = None
        self.received = 0
        self.complete = False
        self.refusal: ImapdeskError | None = None

    def refuse(self, error: ImapdeskError) -> NoReturn:
        if self.refusal is None:
            self.refusal = error
        raise _Refused(error.message)

    async def receive(self) -> Message:
        if self.refusal is not None:
            raise _Refused(self.refusal.message)
        if self.rules is None:
            return await self._first_receive()
        if self.complete:
            # only the disconnect is left to wait for (a streamed response listens for it)
            return await self._receive()
        return await self._next_chunk()

    async def _first_receive(self) -> Message:
        route: BaseRoute | None = self.scope.get("route")
        refusal = await _sender_refusal(Request(self.scope, self._receive), route)
        if refusal is not None:
            self.refuse(refusal)
        content_type = self.headers.get("content-type", "")
        self.rules = rules = body_rules(
            self.settings,
            api=self.scope.get("path", "").startswith("/api/"),
            upload=getattr(route, "name", None) in UPLOAD_ROUTES,
            content_type=content_type,
        )
        declared = _content_length(self.headers)
        if declared is not None and declared > rules.max_bytes:
            self.refuse(self.too_large())
        if rules.form is not None:
            self.form = _FormCount(rules, self.settings, content_type)
            return await self._next_chunk()
        # JSON: read whole (it is small) and its nesting checked before any parser sees it
        chunks: list[bytes] = []
        while not self.complete:
            message = await self._next_chunk()
            if message["type"] != "http.request":
                return message
            chunks.append(message.get("body", b""))
        body = b"".join(chunks)
        depth = self.settings.max_json_depth
        if json_nesting_exceeds(body, depth):
            self.refuse(
                InvalidInput(
                    f"the JSON nests deeper than {depth} levels (IMAPDESK_MAX_JSON_DEPTH)",
                    field="body",
                    limit=depth,
                    setting="IMAPDESK_MAX_JSON_DEPTH",
                )
            )
        return {"type": "http.request", "body": body, "more_body": False}

    async def _next_chunk(self) -> Message:
        timeout = self.settings.body_timeout_seconds
        try:
            with anyio.fail_after(timeout):
                message = await self._receive()
        except TimeoutError:
            self.refuse(
                RequestTimeout(
                    f"the request body stopped arriving: nothing came for {timeout:g} s "
                    "(IMAPDESK_BODY_TIMEOUT_SECONDS)",
                    limit=timeout,
                    setting="IMAPDESK_BODY_TIMEOUT_SECONDS",
                )
            )
        if message["type"] != "http.request":
            return message
        assert self.rules is not None
        chunk: bytes = message.get("body", b"")
        self.received += len(chunk)
        if self.received > self.rules.max_bytes:
            self.refuse(self.too_large())
        if self.form is not None:
            self.form.feed(chunk)
            if self.form.refusal is not None:
                self.refuse(self.form.refusal)
        if not message.get("more_body", False):
            self.complete = True
        return message

    def too_large(self) -> RequestTooLarge:
        assert self.rules is not None
        return _too_large(
            f"the request body is larger than the {self.rules.max_bytes} bytes "
            f"{self.rules.what} may have",
            self.rules.max_bytes,
            self.rules.setting,
        )


async def _sender_refusal(request: Request, route: BaseRoute | None) -> ImapdeskError | None:
    """The route's own refusal of a sender it does not know (the sign-in redirect, 401, 403),
    found before the body is read; None when the sender is known or the route asks no one."""
    check = sender_check(route)
    if check is None:
        return None
    credentials = await _bearer(request) if check is current_agent else None
    engine: Engine = request.app.state.engine

    def identify() -> None:
        with Session(engine, expire_on_commit=False) as db:
            if check is current_agent:
                current_agent(db, credentials)
            else:
                current_web_agent(request, db)
            db.commit()

    try:
        # the database in turn with every request's session (api/capacity.py)
        async with contextlib.asynccontextmanager(database_turn)(request):
            await run_in_threadpool(identify)
    except ImapdeskError as exc:
        return exc
    return None


# --- the middleware --------------------------------------------------------------------------


class RequestLimitsMiddleware:
    """Knows the sender before a body is read, and holds the body to its limits as it arrives
    (see the module's docstring). Sits inside the session middleware, whose cookie it reads."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        body = _Body(scope, receive, self.settings)
        started = False

        async def send_unless_refused(message: Message) -> None:
            nonlocal started
            if body.refusal is not None and not started:
                return  # the app's answer to a refused request: the middleware's replaces it
            if message["type"] == "http.response.start":
                started = True
                if not body.complete:
                    # answered before the body was read: close, so the rest is never read
                    MutableHeaders(scope=message).append("Connection", "close")
            await send(message)

        try:
            await self.app(scope, body.receive, send_unless_refused)
        except Exception:
            # whatever the app made of the refusal (an error of its own, a 400), ours answers
            if body.refusal is None or started:
                raise
        if body.refusal is not None and not started:
            await self._answer(Request(scope, receive), body.refusal, send, body.complete)

    @staticmethod
    async def _answer(request: Request, error: ImapdeskError, send: Send, body_read: bool) -> None:
        if isinstance(error, RequestTooLarge | RequestTimeout):
            log.info("refused %s %s: %s", request.method, request.url.path, error.message)
        response = await refusal_response(request, error)
        if not body_read:
            # the rest of the body is never read: the connection closes after the answer
            response.headers["Connection"] = "close"
        await response(request.scope, request.receive, send)


# --- the server's protocol -------------------------------------------------------------------


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the two limits it lacks: a request's line and
    headers (its head) at most `max_head_bytes` (431), and sent within `head_timeout` seconds
    of the connection opening or the request's first byte (the connection closes, with 408
    when part of a head came). Set by `server_options` on a subclass of its own."""

    max_head_bytes: ClassVar[int] = 32 * 1024
    head_timeout: ClassVar[float] = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True
        self._head_bytes = 0
        # the last bytes of the head so far: its end (a blank line) may straddle two reads
        self._head_tail = b""
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._start_head_timer()
            # counted before the parser sees it: httptools holds a header whole until it ends
            seen = self._head_tail + data
            end = seen.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end + 4 - len(self._head_tail)
            self._head_tail = seen[-3:]
            if self._head_bytes > self.max_head_bytes:
                self._refuse(
                    431,
                    f"the request line and headers are larger than the {self.max_head_bytes} "
                    "bytes allowed (IMAPDESK_MAX_HEADER_BYTES)",
                )
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self._head_tail = b""
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # what follows is the next request's head (a pipelined one in this same read is
        # not counted: at most one read more than the limit)
        self._reading_head = True

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._reading_head or self.transport.is_closing():
            return
        if self._head_bytes:
            self._refuse(
                408,
                f"the request's headers did not arrive within {self.head_timeout:g} s "
                "(IMAPDESK_HEADER_TIMEOUT_SECONDS)",
            )
        else:
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answers `status` with `message` and closes the connection (as uvicorn answers a
        request it cannot parse)."""
        self.logger.info("refused a request from %s: %s", self.client, message)
        body = message.encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
            ]
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config's options that hold a connection to the limits above."""
    protocol = type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {
            "max_head_bytes": settings.max_header_bytes,
            "head_timeout": settings.header_timeout_seconds,
        },
    )
    return {"http": protocol, "timeout_keep_alive": settings.keep_alive_seconds}
