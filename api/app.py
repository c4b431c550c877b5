"""The application factory: REST API, web UI, static files, error handling, security headers."""

from __future__ import annotations

import gc
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from anyio import to_thread
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.datastructures import MutableHeaders
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imapdesk.api import docs, health, rest, web
from imapdesk.api.capacity import Admission, Turns
from imapdesk.api.errors import install_error_handlers
from imapdesk.api.limits import RequestLimitsMiddleware
from imapdesk.api.web.live import LiveHub, close_streams
from imapdesk.api.web.templating import STATIC_DIR
from imapdesk.domain.conversations.queues import ChangeCache
from imapdesk.kernel.db import get_engine, make_engine
from imapdesk.kernel.settings import Settings, get_settings

SESSION_COOKIE = "imapdesk_session"

# our own pages (/docs too: api/docs.py): no inline script or style, nothing from elsewhere
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'self'; "
    "base-uri 'none'"
)
# production: browsers reach the helpdesk over HTTPS only, for a year after each visit
HSTS = "max-age=31536000; includeSubDomains"
OPENAPI_PATH = "/api/v1/openapi.json"
# the cyclic garbage collector's thresholds while serving (Python's default: 700, 10, 10): a
# young collection every 7,000 new objects, so that most of a request's die before it; a full
# one after 100 of the middle generation's, so a few a minute under load instead of 20
GC_THRESHOLDS = (7_000, 10, 100)

DESCRIPTION = """
A team helpdesk on shared IMAP mailboxes.

Authenticate every `/api/v1` call with `Authorization: Bearer <token>`
(`imapdesk token create EMAIL` prints one). Errors are JSON:
`{"error": {"code": "...", "message": "...", ...details}}`, with the HTTP status saying what kind;
invalid parameters answer 422 with `field` naming the parameter.
Times are UTC (ISO 8601).
"""


def _version() -> str:
    try:
        return version("imapdesk")
    except PackageNotFoundError:
        return "0.0.0"


class SecurityHeadersMiddleware:
    """Adds the security headers to every response that does not set its own (and HSTS in
    production, which is served over HTTPS)."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("X-Frame-Options", "SAMEORIGIN")
                if self.hsts:
                    headers.setdefault("Strict-Transport-Security", HSTS)
                if not path.startswith("/static/"):
                    headers.setdefault("Cache-Control", "no-store")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", PAGE_CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _session_signing_key(secret_key: str) -> str:
    # a key of its own for cookies, so the signer never sees the key that encrypts secrets
    return hmac.new(secret_key.encode(), b"imapdesk-session-cookie", hashlib.sha256).hexdigest()


def settle_after_start() -> None:
    """Move what start-up made (modules, the app, its routes, templates and mappers: about a
    million objects) out of the cyclic garbage collector's way, so that its full collections
    walk only what requests make. Without it a full collection, every few hundred requests,
    stalls a request by 30-120 ms. And collect less often (GC_THRESHOLDS): what requests make
    is many objects too, ~350 for each request or stream in flight (coroutines, closures,
    scopes), so with 500 live streams open a full collection walks ~230,000 of them and stops
    the process for 80-160 ms; at Python's default thresholds that came every 3 s under load.
    Call once, after the app is made, before serving."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def begin_shutdown(app: FastAPI) -> None:
    """The server is stopping: the open live streams end now, so that their connections close
    within the server's graceful wait instead of being cut at its end (`imapdesk serve` calls
    it as it begins to shut down; the lifespan's end, for any other server)."""
    close_streams(app)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # this event loop's threads for request handlers (anyio's default thread pool)
    to_thread.current_default_thread_limiter().total_tokens = app.state.settings.web_threads
    try:
        yield
    finally:
        begin_shutdown(app)


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """The ASGI app. Without an engine: the process-wide one, or one for `settings`' database."""
    if settings is None:
        settings = get_settings()
        engine = engine or get_engine()
    elif engine is None:
        engine = make_engine(settings.database_url, settings=settings)

    app = FastAPI(
        title="imapdesk",
        version=_version(),
        description=DESCRIPTION,
        openapi_url=OPENAPI_PATH,
        docs_url=None,  # served by api/docs.py, from our own files
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    # the requests' turns at the database connections (api/capacity.py)
    app.state.database_turns = Turns.for_app(engine, settings)
    # the open /live streams and their one poller (api/web/live.py)
    app.state.live_hub = LiveHub(engine, settings=settings, turns=app.state.database_turns)
    # the list pages' sidebar counts, reused while nothing changed
    # (imapdesk/domain/conversations/queues.py)
    app.state.queue_counts = ChangeCache()
    # the list pages' live parts, per agent and view (api/web/queues.py)
    app.state.queue_parts = ChangeCache(max_entries=1024)

    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(rest.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # inside the session middleware: it knows the sender from the cookie before reading a body
    app.add_middleware(RequestLimitsMiddleware, settings=settings)
    app.add_middleware(
        SessionMiddleware,
        secret_key=_session_signing_key(settings.secret_key),
        session_cookie=SESSION_COOKIE,
        # the cookie carries a stored session's key (api/web/auth.py): it lasts as long as one
        max_age=settings.session_lifetime_seconds,
        same_site="lax",
        https_only=settings.environment != "development",
    )
    # added after the others, so outside them: its headers reach error responses too
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.environment == "production")
    # outermost: a request waiting for its turn to begin has done nothing yet
    app.add_middleware(Admission)
    return app
