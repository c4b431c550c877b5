"""The application factory: REST API, web UI, static files, error handling, security headers."""

from __future__ import annotations

import gc
import hashlib
import hmac
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.datastructures import MutableHeaders
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imapdesk.api import health, rest, web
from imapdesk.api.errors import install_error_handlers
from imapdesk.api.web.templating import STATIC_DIR
from imapdesk.domain.conversations.queues import ChangeCache
from imapdesk.kernel.db import get_engine, make_engine
from imapdesk.kernel.settings import Settings, get_settings

SESSION_COOKIE = "imapdesk_session"
SESSION_MAX_AGE = 14 * 24 * 3600

# our own pages: no inline script or style, nothing from elsewhere
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'self'; "
    "base-uri 'none'"
)
# FastAPI's Swagger UI is an inline script that loads its bundle from a CDN
DOCS_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
    "frame-ancestors 'self'; base-uri 'none'"
)
DOCS_PATH = "/docs"
OPENAPI_PATH = "/api/v1/openapi.json"

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
    """Adds the security headers to every response that does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
                if not path.startswith("/static/"):
                    headers.setdefault("Cache-Control", "no-store")
                if headers.get("content-type", "").startswith("text/html"):
                    csp = DOCS_CSP if path.startswith(DOCS_PATH) else PAGE_CSP
                    headers.setdefault("Content-Security-Policy", csp)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _session_signing_key(secret_key: str) -> str:
    # a key of its own for cookies, so the signer never sees the key that encrypts secrets
    return hmac.new(secret_key.encode(), b"imapdesk-session-cookie", hashlib.sha256).hexdigest()


def settle_after_start() -> None:
    """Move what start-up made (modules, the app, its routes, templates and mappers: about a
    million objects) out of the cyclic garbage collector's way, so that its full collections
    walk only what requests make. Without it a full collection, every few hundred requests,
    stalls a request by 30-120 ms. Call once, after the app is made, before serving."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """The ASGI app. Without an engine: the process-wide one, or one for `settings`' database."""
    if settings is None:
        settings = get_settings()
        engine = engine or get_engine()
    elif engine is None:
        engine = make_engine(settings.database_url)

    app = FastAPI(
        title="imapdesk",
        version=_version(),
        description=DESCRIPTION,
        openapi_url=OPENAPI_PATH,
        docs_url=DOCS_PATH,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    # the list pages' sidebar counts, reused while nothing changed
    # (imapdesk/domain/conversations/queues.py)
    app.state.queue_counts = ChangeCache()
    # the list pages' live parts, per agent and view (api/web/queues.py)
    app.state.queue_parts = ChangeCache(max_entries=1024)

    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(rest.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    app.add_middleware(
        SessionMiddleware,
        secret_key=_session_signing_key(settings.secret_key),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE,
        same_site="lax",
        https_only=settings.environment != "development",
    )
    # added last, so outermost: its headers reach error responses too
    app.add_middleware(SecurityHeadersMiddleware)
    return app
