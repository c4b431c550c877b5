"""The web UI in headless Chromium: the app served by uvicorn on loopback, signed-in browser
contexts, and signing in through the form."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine

from imapdesk.api.app import SESSION_COOKIE
from imapdesk.devtools.mailserver import free_port
from imapdesk.kernel.settings import Settings
from tests.support.web import PASSWORD, session_cookie

# Debian's Chromium, never a downloaded one
CHROMIUM = "/usr/bin/chromium"


class LiveServer:
    """The app in a uvicorn thread; `url` is its base URL."""

    def __init__(self, asgi_app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            asgi_app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-server", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def signed_in_context(
    new_context: Callable[..., Any],
    server: LiveServer,
    config: Settings,
    engine: Engine,
    agent_id: int,
    **kwargs: Any,
) -> Any:
    context = new_context(**kwargs)
    context.add_cookies(
        [{"name": SESSION_COOKIE, "value": session_cookie(config, engine, agent_id),
          "url": server.url, "httpOnly": True, "sameSite": "Lax"}]
    )  # fmt: skip
    return context


def sign_in_page(page: Any, base_url: str, email: str, next_path: str = "/") -> None:
    """Signs in through the login form and lands on `next_path`."""
    page.goto(f"{base_url}/login?next={next_path}")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}{next_path}")
