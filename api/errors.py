"""One place that turns errors into responses: JSON under /api, an error page elsewhere."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import DataError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from imapdesk.api.capacity import ServerBusy
from imapdesk.api.web.conversation import wants_json
from imapdesk.api.web.templating import templates
from imapdesk.kernel.errors import ImapdeskError, NotAuthenticated

log = logging.getLogger(__name__)

API_PREFIX = "/api/"


def is_api_request(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX)


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {**details, "code": code, "message": message}}


def error_json(
    exc: ImapdeskError, status_code: int | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        error_body(exc.code, exc.message, **_jsonable(exc.details)),
        status_code=status_code or exc.status_code,
        headers=dict(headers or {}),
    )


def _jsonable(details: Mapping[str, object]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | list | dict | type(None)) else str(v)
        for k, v in details.items()
    }


def _error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    return templates.TemplateResponse(
        request,
        "errors/error.html",
        {"status_code": status_code, "title": title, "message": message},
        status_code=status_code,
    )


async def handle_imapdesk_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ImapdeskError)
    # a server at capacity says so in its own, rate-limited, log line (api/capacity.py)
    if exc.status_code >= 500 and not isinstance(exc, ServerBusy):
        log.error("%s on %s %s: %s", exc.code, request.method, request.url.path, exc.message)
    # an error may carry response headers (a WWW-Authenticate challenge, a Retry-After)
    headers: dict[str, str] = dict(getattr(exc, "headers", None) or {})
    if is_api_request(request):
        if isinstance(exc, NotAuthenticated):
            headers.setdefault("WWW-Authenticate", "Bearer")
        return error_json(exc, headers=headers)
    if isinstance(exc, ServerBusy) and "text/html" not in request.headers.get("accept", ""):
        # at capacity a page is rendered only for a browser loading one: for every refused
        # script or stream it would cost the server what it is short of
        return error_json(exc, headers=headers)
    if isinstance(exc, NotAuthenticated):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = request.url_for("login").path
        return RedirectResponse(f"{login}?{urlencode({'next': target})}", status_code=303)
    page = _error_page(request, exc.status_code, exc.code.replace("_", " "), exc.message)
    page.headers.update(headers)
    return page


async def refusal_response(request: Request, exc: ImapdeskError) -> Response:
    """The answer to a request refused before its route ran (api/limits.py): the one its route
    would give, but JSON to a page's script (it shows the error's message; a sign-in redirect
    stays a redirect, on which the script reloads the page)."""
    if wants_json(request) and not isinstance(exc, NotAuthenticated):
        return error_json(exc, headers=getattr(exc, "headers", None))
    return await handle_imapdesk_error(request, exc)


async def handle_pool_timeout(request: Request, exc: Exception) -> Response:
    """No database connection came in time (requests take turns for them, api/capacity.py, but
    a worker in the same process shares the pool): 503 with Retry-After, as a busy server."""
    return await handle_imapdesk_error(request, ServerBusy.refusing("a database connection"))


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"query", "path", "body", "header", "cookie", "form"}:
        parts = parts[1:]
    return ".".join(parts) or "request"


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields = [
        {
            "field": _field_name(err.get("loc", ())),
            "location": str(err["loc"][0]) if err.get("loc") else "request",
            "message": str(err.get("msg", "invalid")),
        }
        for err in exc.errors()
    ]
    first = fields[0] if fields else {"field": "request", "message": "invalid"}
    message = f"invalid {first['field']}: {first['message']}"
    if is_api_request(request):
        return JSONResponse(
            error_body("invalid_input", message, field=first["field"], fields=fields),
            status_code=422,
        )
    return _error_page(request, 422, "invalid input", message)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    if is_api_request(request):
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers
        )
    return _error_page(request, exc.status_code, code.replace("_", " "), str(exc.detail))


async def handle_unstorable_value(request: Request, exc: Exception) -> Response:
    """A value the database cannot take: a number beyond its integers, a NUL character in text
    (PostgreSQL), text longer than its column. Input checks catch the usual ones by field;
    this answers any other the same way, as the request's fault, naming the reason and never
    the statement or its values."""
    if isinstance(exc, DataError):
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "invalid value"
    else:
        reason = "a number is out of range"
    message = f"a value in the request cannot be stored ({reason}); check its numbers and text"
    log.info("invalid input on %s %s: %s", request.method, request.url.path, reason)
    if is_api_request(request):
        return JSONResponse(error_body("invalid_input", message, field="request"), status_code=422)
    return _error_page(request, 422, "invalid input", message)


async def handle_unexpected_error(request: Request, exc: Exception) -> Response:
    # Starlette re-raises the exception after this, so the server logs it with its traceback
    if is_api_request(request):
        return JSONResponse(
            error_body("internal_error", "an unexpected error occurred; see the server log"),
            status_code=500,
        )
    return _error_page(request, 500, "internal error", "An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ImapdeskError, handle_imapdesk_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(DataError, handle_unstorable_value)
    app.add_exception_handler(PoolTimeout, handle_pool_timeout)
    app.add_exception_handler(OverflowError, handle_unstorable_value)
    app.add_exception_handler(Exception, handle_unexpected_error)
