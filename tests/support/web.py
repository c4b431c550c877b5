"""The web UI over HTTP: the agents' password, pages parsed for what the tests look at, the
CSRF token, signing in, and a session cookie made without the password check."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from types import SimpleNamespace

from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner
from sqlalchemy import Engine

from imapdesk.api.app import _session_signing_key
from imapdesk.api.web.auth import sign_in as web_sign_in
from imapdesk.domain.accounts.sessions import SessionPolicy
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent
from imapdesk.kernel.settings import Settings

PASSWORD = "correct horse battery"


class Page(HTMLParser):
    """The parts of a page the tests look at."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.inputs: dict[str, str] = {}
        self.row_ids: list[int] = []
        self.links: list[str] = []
        self.iframes: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and a.get("name"):
            self.inputs[str(a["name"])] = a.get("value") or ""
        if tag == "tr" and a.get("data-id"):
            self.row_ids.append(int(str(a["data-id"])))
        if tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))
        if tag == "iframe":
            self.iframes.append(a)

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(t.strip() for t in self.text if t.strip())


def csrf(browser: TestClient, path: str = "/login") -> str:
    token = Page(browser.get(path).text).inputs["csrf_token"]
    assert len(token) >= 32
    return token


def sign_in(browser: TestClient, next: str = "/") -> None:
    """Signs Alice in through the login form and checks where it leads."""
    r = browser.post(
        "/login",
        data={
            "email": "alice@example.com",
            "password": PASSWORD,
            "csrf_token": csrf(browser),
            "next": next,
        },
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == next


def session_cookie(config: Settings, engine: Engine, agent_id: int) -> str:
    """A signed session cookie for the agent, as signing in sets it (skips the slow password
    check where signing in is not what a test is about)."""
    with unit_of_work(engine) as db:
        agent = db.get(Agent, agent_id)
        assert agent is not None
        request = SimpleNamespace(session={}, headers={}, client=None)
        web_sign_in(request, db, agent, SessionPolicy.of(config))  # type: ignore[arg-type]
    payload = base64.b64encode(json.dumps(request.session).encode())
    return TimestampSigner(_session_signing_key(config.secret_key)).sign(payload).decode()
