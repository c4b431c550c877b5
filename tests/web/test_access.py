"""Per-mailbox access: an agent restricted to some mailboxes gets 404 for the others'
conversations, messages and attachments, in the web UI and the REST API, and cannot change
them; admins and unrestricted agents see every mailbox."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.domain.accounts import access
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.domain.conversations import operations, reads
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import InvalidInput, NotFound
from imapdesk.kernel.models import ActivitySource, Agent, Conversation, ConversationStatus
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.web import PASSWORD, Page, csrf

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


@dataclass
class Scene:
    support: int
    billing: int
    visible: int
    hidden: int
    hidden_message: int
    hidden_attachment: int
    bob_token: str
    admin_token: str


@pytest.fixture
def scene(engine: Engine, settings: Settings) -> Scene:
    """Bob may work in support only; billing holds a conversation with a message and a file."""
    with unit_of_work(engine) as s:
        support, billing = f.mailbox(s, "support"), f.mailbox(s, "billing")
        admin = create_agent(s, "admin@example.com", "Admin", PASSWORD, is_admin=True)
        bob = create_agent(s, "bob@example.com", "Bob", PASSWORD)
        access.set_mailbox_access(s, bob, all_mailboxes=False, mailbox_ids=[support.id or 0])
        visible = f.conversation(s, support, "Printer", minutes=1)
        hidden = f.conversation(s, billing, "Salary question", minutes=2)
        msg = f.message(s, hidden, text="confidential payroll", html="<p>payroll</p>")
        att = f.attachment(s, msg, settings.data_dir, b"payslip", filename="payslip.pdf")
        scene = Scene(
            support=support.id or 0,
            billing=billing.id or 0,
            visible=visible.id or 0,
            hidden=hidden.id or 0,
            hidden_message=msg.id or 0,
            hidden_attachment=att.id or 0,
            bob_token=create_api_token(s, bob),
            admin_token=create_api_token(s, admin),
        )
    return scene


def browser_for(app: FastAPI, email: str) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    r = client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf(client)}
    )
    assert r.status_code == 303, r.text
    return client


def test_rest_api_hides_other_mailboxes(app: FastAPI, scene: Scene) -> None:
    bob = TestClient(app, headers={"Authorization": f"Bearer {scene.bob_token}"})
    listed = [c["id"] for c in bob.get("/api/v1/conversations").json()["items"]]
    assert listed == [scene.visible]
    assert [m["name"] for m in bob.get("/api/v1/mailboxes").json()] == ["support"]
    assert bob.get("/api/v1/conversations", params={"mailbox": "billing"}).json()["items"] == []
    base = f"/api/v1/conversations/{scene.hidden}"
    for method, path, body in (
        ("GET", base, None),
        ("PATCH", base, {"status": "closed"}),
        ("POST", f"{base}/claim", None),
        ("POST", f"{base}/release", None),
        ("GET", f"{base}/activity", None),
        ("GET", f"/api/v1/messages/{scene.hidden_message}/raw", None),
        ("GET", f"/api/v1/attachments/{scene.hidden_attachment}", None),
    ):
        r = bob.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "not_found"
    assert bob.get(f"/api/v1/conversations/{scene.visible}").status_code == 200

    admin = TestClient(app, headers={"Authorization": f"Bearer {scene.admin_token}"})
    assert admin.get(base).status_code == 200
    assert admin.get(f"/api/v1/attachments/{scene.hidden_attachment}").status_code == 200
    # the admin cannot hand bob a conversation bob may not see
    r = admin.patch(base, json={"assignee": "bob@example.com"})
    assert r.status_code == 422 and "no access" in r.json()["error"]["message"]


def test_web_ui_hides_other_mailboxes(app: FastAPI, engine: Engine, scene: Scene) -> None:
    bob = browser_for(app, "bob@example.com")
    page = Page(bob.get("/").text)
    assert page.row_ids == [scene.visible]
    assert "billing" not in page.all_text
    for path in (
        f"/conversations/{scene.hidden}",
        f"/conversations/{scene.hidden}/messages/{scene.hidden_message}/body",
        f"/attachments/{scene.hidden_attachment}",
    ):
        r = bob.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("text/html")
    # a bulk action on a conversation bob may not see changes nothing
    r = bob.post(
        "/bulk",
        data={"action": "close", "ids": [scene.hidden], "csrf_token": csrf(bob, "/")},
    )
    assert r.status_code == 303
    assert "not changed" in Page(bob.get("/").text).all_text
    with Session(engine) as s:
        assert s.get(Conversation, scene.hidden).status == ConversationStatus.open  # type: ignore[union-attr]

    admin = browser_for(app, "admin@example.com")
    assert Page(admin.get("/").text).row_ids == [scene.hidden, scene.visible]
    assert admin.get(f"/conversations/{scene.hidden}").status_code == 200


def test_operations_refuse_what_the_agent_cannot_see(engine: Engine, scene: Scene) -> None:
    with unit_of_work(engine) as s:
        bob = s.exec(select(Agent).where(Agent.email == "bob@example.com")).one()
        for op in (
            lambda: operations.claim(s, scene.hidden, bob, source=ActivitySource.web),
            lambda: operations.set_status(
                s, scene.hidden, "closed", source=ActivitySource.api, agent=bob
            ),
            lambda: operations.add_tag(s, scene.hidden, "x", source=ActivitySource.web, agent=bob),
        ):
            with pytest.raises(NotFound):
                op()
        admin = s.exec(select(Agent).where(Agent.email == "admin@example.com")).one()
        with pytest.raises(InvalidInput):
            operations.assign(s, scene.hidden, bob, source=ActivitySource.web, agent=admin)
        # the mailbox itself (a plain client's change read back) is never refused
        operations.set_status(s, scene.hidden, "pending", source=ActivitySource.imap)


def test_restricted_agent_without_rows_sees_nothing(engine: Engine, scene: Scene) -> None:
    with unit_of_work(engine) as s:
        carol = create_agent(s, "carol@example.com", "Carol", PASSWORD)
        # unrestricted (the default, what an upgrade gives existing agents): every mailbox
        assert reads.visible_mailbox_ids(s, carol) == [scene.support, scene.billing]
        access.set_mailbox_access(s, carol, all_mailboxes=False)
        assert reads.visible_mailbox_ids(s, carol) == []
        assert reads.list_conversations(s, carol).items == []
        # an admin sees everything whatever the flag says
        carol.is_admin = True
        assert reads.visible_mailbox_ids(s, carol) == [scene.support, scene.billing]
