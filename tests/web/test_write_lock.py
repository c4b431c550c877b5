"""Every route that writes takes the write the one way (api/deps.py `take_write`: on SQLite
BEGIN IMMEDIATE up front, waiting its turn): admin writes (tokens created and revoked, agents
added, deactivated and given passwords, mailboxes added), saved replies, sign-ins and sign-outs
and REST conversation changes, all at once against a served app, answer no 5xx (SQLite's
"database is locked" was a 500), and what answered success happened: every token whose revoke
answered 303 is revoked. Both databases."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.api.app import SESSION_COOKIE
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import ApiToken, Mailbox, SavedReply
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.browser import LiveServer
from tests.support.web import PASSWORD, Page, session_cookie

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")

THREADS_PER_KIND = 3
REQUESTS_PER_THREAD = 4


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    # what is shown here is the write discipline, not capacity: on a loaded machine a request
    # may wait for its database turn longer than the default before the documented 503
    return Settings(data_dir=tmp_path / "data", database_url=db_url, db_wait_seconds=60.0)


@pytest.fixture
def served(app: FastAPI) -> Iterator[LiveServer]:
    server = LiveServer(app)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def scene(engine: Engine) -> dict[str, object]:
    with unit_of_work(engine) as s:
        admin = create_agent(s, "admin@example.com", "Ada Admin", PASSWORD, is_admin=True)
        carol = create_agent(s, "carol@example.com", "Carol", PASSWORD)
        dave = create_agent(s, "dave@example.com", "Dave", PASSWORD)
        create_agent(s, "bob@example.com", "Bob", PASSWORD)
        api_token = create_api_token(s, admin, name="integration")
        for i in range(THREADS_PER_KIND * REQUESTS_PER_THREAD):
            create_api_token(s, carol, name=f"to-revoke-{i}")
        box = f.mailbox(s)
        conversations = [f.conversation(s, box, f"Help {i}").id for i in range(THREADS_PER_KIND)]
        s.flush()
        revocable = [
            t.id for t in s.exec(select(ApiToken).where(col(ApiToken.name).startswith("to-")))
        ]
        return {
            "admin": admin.id,
            "carol": carol.id,
            "dave": dave.id,
            "api_token": api_token,
            "revocable": revocable,
            "conversations": conversations,
        }


def browser(server: LiveServer, settings: Settings, engine: Engine, agent_id: int) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=120, follow_redirects=False)
    client.cookies.set(SESSION_COOKIE, session_cookie(settings, engine, agent_id))
    return client


def form_token(client: httpx.Client, path: str = "/") -> str:
    return Page(client.get(path).text).inputs["csrf_token"]


def test_concurrent_writes_answer_no_server_error_and_a_revoke_that_answered_happened(
    served: LiveServer, settings: Settings, engine: Engine, scene: dict[str, object]
) -> None:
    admin_id, carol, dave = scene["admin"], scene["carol"], scene["dave"]
    assert isinstance(admin_id, int)
    revocable = list(scene["revocable"])  # type: ignore[call-overload]
    conversations = list(scene["conversations"])  # type: ignore[call-overload]
    statuses: Counter[tuple[str, int]] = Counter()
    revoked: list[int] = []
    lock = threading.Lock()

    @contextmanager
    def admin_form() -> Iterator[tuple[httpx.Client, str]]:
        """The admin's browser, and the token its forms carry."""
        with browser(served, settings, engine, admin_id) as client:
            yield client, form_token(client, "/admin/agents")

    def token_create(thread: int, i: int) -> int:
        with admin_form() as (client, token):
            data = {"csrf_token": token, "agent_id": str(carol), "name": f"new-{thread}-{i}"}
            return client.post("/admin/tokens", data=data).status_code

    def token_revoke(thread: int, i: int) -> int:
        token_id = revocable[thread * REQUESTS_PER_THREAD + i]
        with admin_form() as (client, token):
            status = client.post(
                f"/admin/tokens/{token_id}/revoke", data={"csrf_token": token}
            ).status_code
        if status == 303:
            with lock:
                revoked.append(token_id)
        return status

    def agent_toggle(thread: int, i: int) -> int:
        with admin_form() as (client, token):
            data = {"csrf_token": token, "name": "Dave"} | ({"is_active": "true"} if i % 2 else {})
            return client.post(f"/admin/agents/{dave}", data=data).status_code

    def agent_password(thread: int, i: int) -> int:
        with admin_form() as (client, token):
            data = {"csrf_token": token, "password": f"a new password {thread} {i}"}
            return client.post(f"/admin/agents/{carol}/password", data=data).status_code

    def agent_add(thread: int, i: int) -> int:
        with admin_form() as (client, token):
            data = {
                "csrf_token": token,
                "email": f"new-{thread}-{i}@example.com",
                "name": "New",
                "password": "a long enough password",
            }
            return client.post("/admin/agents", data=data).status_code

    def mailbox_add(thread: int, i: int) -> int:
        with admin_form() as (client, token):
            data = {
                "csrf_token": token,
                "op": "save",
                "name": f"box-{thread}-{i}",
                "address": f"box-{thread}-{i}@example.test",
                "imap_host": "imap.example.test",
                "imap_port": "993",
                "imap_security": "ssl",
                "username": "support",
                "password": "imap secret",
            }
            return client.post("/admin/mailboxes/new", data=data).status_code

    def saved_reply(thread: int, i: int) -> int:
        with admin_form() as (client, token):
            data = {"csrf_token": token, "name": f"reply {thread} {i}", "body": "Thanks!"}
            return client.post("/saved-replies", data=data).status_code

    def sign_in_and_out(thread: int, i: int) -> int:
        with httpx.Client(base_url=served.url, timeout=120, follow_redirects=False) as client:
            data = {
                "email": "bob@example.com",
                "password": PASSWORD,
                "csrf_token": form_token(client, "/login"),
            }
            status = client.post("/login", data=data).status_code
            if status != 303:
                return status
            return client.post("/logout", data={"csrf_token": form_token(client)}).status_code

    def conversation_change(thread: int, i: int) -> int:
        headers = {"Authorization": f"Bearer {scene['api_token']}"}
        with httpx.Client(base_url=served.url, timeout=120, headers=headers) as client:
            body = {"tags": [f"t{i}"], "status": "pending" if i % 2 else "open"}
            return client.patch(
                f"/api/v1/conversations/{conversations[thread]}", json=body
            ).status_code

    kinds: dict[str, tuple[Callable[[int, int], int], int]] = {
        "token create": (token_create, 200),
        "token revoke": (token_revoke, 303),
        "agent deactivate/activate": (agent_toggle, 303),
        "agent password": (agent_password, 303),
        "agent add": (agent_add, 303),
        "mailbox add": (mailbox_add, 303),
        "saved reply": (saved_reply, 303),
        "sign-in and sign-out": (sign_in_and_out, 303),
        "conversation change": (conversation_change, 200),
    }
    start = threading.Barrier(len(kinds) * THREADS_PER_KIND)

    def run(kind: str, thread: int) -> None:
        work, _ = kinds[kind]
        start.wait()
        for i in range(REQUESTS_PER_THREAD):
            status = work(thread, i)
            with lock:
                statuses[(kind, status)] += 1

    with ThreadPoolExecutor(len(kinds) * THREADS_PER_KIND) as pool:
        for future in [
            pool.submit(run, kind, thread) for kind in kinds for thread in range(THREADS_PER_KIND)
        ]:
            future.result()

    expected = Counter(
        {
            (kind, status): THREADS_PER_KIND * REQUESTS_PER_THREAD
            for kind, (_, status) in kinds.items()
        }
    )
    assert statuses == expected
    with Session(engine) as s:
        still_active = s.exec(
            select(ApiToken.id).where(
                col(ApiToken.id).in_(revoked), col(ApiToken.revoked_at).is_(None)
            )
        ).all()
        assert revoked and sorted(revoked) == sorted(revocable) and still_active == []
        made = s.exec(select(ApiToken.id).where(col(ApiToken.name).startswith("new-"))).all()
        assert len(made) == THREADS_PER_KIND * REQUESTS_PER_THREAD
        assert len(s.exec(select(Mailbox.id)).all()) == 1 + THREADS_PER_KIND * REQUESTS_PER_THREAD
        assert len(s.exec(select(SavedReply.id)).all()) == THREADS_PER_KIND * REQUESTS_PER_THREAD
