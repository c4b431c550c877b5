"""The conversation page over HTTP, on SQLite and PostgreSQL: what it shows (why each message
joined, quoted text, activity from where), the message body frame (CSP, inline images, remote
images only on request), downloads, the actions (JSON for fetch, 303 for forms, CSRF), snooze,
presence, saved replies and the composer with its collision check."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.api.app import SESSION_COOKIE
from imapdesk.api.web.conversation import MESSAGE_BODY_CSP, MESSAGE_BODY_CSP_IMAGES
from imapdesk.domain.conversations import operations, snooze
from imapdesk.domain.live import presence
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    Conversation,
    ConversationStatus,
    Direction,
    Message,
    SavedReply,
    utcnow,
)
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.web import session_cookie

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
FETCH = {"X-Requested-With": "fetch"}


def signed_in(app: FastAPI, agent_id: int) -> tuple[TestClient, str]:
    """A browser with the agent's session cookie (signing in itself is tested in tests/api),
    and the session's CSRF token."""
    settings, engine = app.state.settings, app.state.engine
    browser = TestClient(app, follow_redirects=False)
    browser.cookies.set(SESSION_COOKIE, session_cookie(settings, engine, agent_id))
    page = browser.get("/saved-replies").text
    return browser, page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


@pytest.fixture
def conv(engine: Engine, settings: Settings, agents: dict[str, int]) -> dict[str, int]:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, smtp_host="smtp.example.com", smtp_port=587)
        c = f.conversation(s, box, "Printer", minutes=3, customer_email="carol@customer.example")
        first = f.message(
            s, c, from_email="carol@customer.example", message_id="one@customer.example",
            text="It burns.\n\nOn Mon, 1 Jan 2024, Support wrote:\n> What happened?\n",
        )  # fmt: skip
        rich = f.message(
            s, c, minutes=1, text="See picture", thread_rule="references",
            from_email="carol@customer.example",
            in_reply_to="one@customer.example", from_name="Carol",
            html='<p>Look <img src="cid:pic1@x"> and <img src="https://tracker.example/p.gif"></p>',
        )  # fmt: skip
        f.attachment(
            s, rich, settings.data_dir, PNG, filename="pic.png", content_type="image/png",
            content_id="pic1@x", inline=True,
        )  # fmt: skip
        att = f.attachment(s, first, settings.data_dir, b"%PDF-1.4", filename="bill.pdf")
        operations.set_status(
            s, c, ConversationStatus.pending, source=ActivitySource.imap, actor="a mail client"
        )
        assert c.id and rich.id and att.id
        return {"id": c.id, "rich": rich.id, "att": att.id, **agents}


def test_page_shows_messages_why_quoted_activity_attachments_and_the_body_frame(
    app: FastAPI, conv: dict[str, int]
) -> None:
    browser, _ = signed_in(app, conv["alice"])
    r = browser.get(f"/conversations/{conv['id']}")
    assert r.status_code == 200
    html = r.text
    assert "started this conversation" in html
    assert "joined by its In-Reply-To/References headers; replies to carol@customer.example" in html
    assert '<details class="quoted"><summary>Show quoted text</summary>' in html
    assert "a mail client</span> set the status to pending" in html.replace("\n", " ")
    assert "from a mail client" in html
    assert "Load remote images" in html
    assert "tracker.example" not in html  # the mail's HTML is only in the frame
    assert "<script>" not in html.split("<body>", 1)[1].split("<script src=")[0]

    download = browser.get(f"/attachments/{conv['att']}")
    assert download.status_code == 200 and download.content == b"%PDF-1.4"
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["content-disposition"].startswith("attachment;")

    # the body frame: no remote images until asked; cid: images inline
    url = f"/conversations/{conv['id']}/messages/{conv['rich']}/body"
    body = browser.get(url)
    assert body.headers["content-security-policy"] == MESSAGE_BODY_CSP
    assert "img-src data:;" in MESSAGE_BODY_CSP and "http" not in MESSAGE_BODY_CSP
    assert 'src="data:image/png;base64,' in body.text and "cid:" not in body.text
    assert body.headers["referrer-policy"] == "no-referrer"
    allowed = browser.get(url + "?images=1")
    assert allowed.headers["content-security-policy"] == MESSAGE_BODY_CSP_IMAGES
    assert "img-src data: https: http:;" in MESSAGE_BODY_CSP_IMAGES
    assert "sandbox" in MESSAGE_BODY_CSP_IMAGES and "script-src" not in MESSAGE_BODY_CSP_IMAGES


def test_actions_answer_fetch_with_parts_and_forms_with_a_redirect(
    app: FastAPI, engine: Engine, conv: dict[str, int]
) -> None:
    browser, token = signed_in(app, conv["alice"])
    base = f"/conversations/{conv['id']}/actions"
    # no token, a wrong one: refused
    assert browser.post(f"{base}/claim", headers=FETCH).status_code == 403
    assert browser.post(f"{base}/claim", data={"csrf_token": "x"}).status_code == 403

    r = browser.post(f"{base}/claim", headers=FETCH | {"X-CSRF-Token": token})
    assert r.status_code == 200, r.text
    parts = r.json()
    assert 'assigned to <span title="alice@example.com">Alice Agent</span>' in parts["state"]
    assert parts["status"] == "pending"
    assert "claimed it" in parts["activity"] and parts["message_ids"]
    r = browser.post(f"{base}/status", data={"csrf_token": token, "status": "closed"})
    assert r.status_code == 303 and r.headers["location"] == f"/conversations/{conv['id']}"
    r = browser.post(f"{base}/tags", data={"csrf_token": token, "tags": "vip, fire"}, headers=FETCH)
    assert '<span class="tag">fire</span><span class="tag">vip</span>' in r.json()["state"]
    r = browser.post(f"{base}/assign", data={"csrf_token": token, "assignee": "bob"}, headers=FETCH)
    assert 'assigned to <span title="bob@example.com">Bob Builder</span>' in r.json()["state"]
    r = browser.post(f"{base}/read", data={"csrf_token": token}, headers=FETCH)
    assert r.status_code == 200
    r = browser.post(f"{base}/status", data={"csrf_token": token, "status": "bogus"}, headers=FETCH)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    with Session(engine) as s:
        c = s.get(Conversation, conv["id"])
        assert c is not None and c.status == ConversationStatus.closed
        assert c.assignee_id == conv["bob"]
        actions = [a.action for a in s.exec(select(Activity)).all()]
        assert {"claimed", "status", "tagged", "assigned", "read"} <= set(actions)
    # Bob holds it now: Alice's claim is refused, naming him
    r = browser.post(
        f"/conversations/{conv['id']}/actions/claim", data={"csrf_token": token}, headers=FETCH
    )
    assert r.status_code == 409 and "bob@example.com" in r.json()["error"]["message"]


def test_snooze_then_the_worker_wakes_it(
    app: FastAPI, engine: Engine, conv: dict[str, int]
) -> None:
    browser, token = signed_in(app, conv["alice"])
    base = f"/conversations/{conv['id']}/actions"
    browser.post(f"{base}/status", data={"csrf_token": token, "status": "open"})
    r = browser.post(f"{base}/snooze", data={"csrf_token": token, "hours": "4"}, headers=FETCH)
    assert r.status_code == 200 and "snoozed until" in r.json()["state"]
    with unit_of_work(engine) as s:
        c = s.get(Conversation, conv["id"])
        assert c is not None and c.status == ConversationStatus.pending and c.snoozed_until
        assert snooze.wake_due(s) == []  # not yet
    # what the worker's supervisor calls every few seconds
    assert snooze.wake_snoozed(engine, now=utcnow() + timedelta(hours=5)) == [conv["id"]]
    with Session(engine) as s:
        c = s.get(Conversation, conv["id"])
        assert c is not None and c.status == ConversationStatus.open and c.snoozed_until is None
        last = s.exec(select(Activity).order_by(Activity.id.desc())).first()  # type: ignore[union-attr]
        assert last is not None and last.source == ActivitySource.system
        assert last.details == {"from": "pending", "to": "open"}
    # a snooze someone ended early by closing it just goes away
    r = browser.post(f"{base}/snooze", data={"csrf_token": token, "hours": "1"}, headers=FETCH)
    browser.post(f"{base}/status", data={"csrf_token": token, "status": "closed"})
    with unit_of_work(engine) as s:
        c = s.get(Conversation, conv["id"])
        assert c is not None and c.snoozed_until is None
        assert snooze.wake_due(s, now=utcnow() + timedelta(hours=2)) == []
    assert browser.post(f"{base}/snooze", data={"csrf_token": token}).status_code == 422


def test_presence_heartbeats(app: FastAPI, engine: Engine, conv: dict[str, int]) -> None:
    browser, token = signed_in(app, conv["alice"])
    url = f"/conversations/{conv['id']}/presence"
    assert browser.post(url, data={"csrf_token": token, "state": "replying"}).status_code == 204
    with Session(engine) as s:
        here = presence.present(s, [conv["id"]])[conv["id"]]
        assert [(p.email, p.state.value) for p in here] == [("alice@example.com", "replying")]
        # a tab that stopped beating is gone
        later = utcnow() + presence.PRESENCE_TTL + timedelta(seconds=1)
        assert presence.present(s, [conv["id"]], now=later) == {}
    with unit_of_work(engine) as s:
        bob = s.get(Agent, conv["bob"])
        assert bob is not None
        presence.touch(s, conv["id"], bob)
    page = browser.get(f"/conversations/{conv['id']}").text
    assert "Bob Builder is viewing" in page and "Alice Agent is" not in page
    assert browser.post(url, data={"csrf_token": token, "state": "left"}).status_code == 204
    assert browser.post(url, data={"csrf_token": token, "state": "dancing"}).status_code == 422
    with Session(engine) as s:
        assert [p.email for p in presence.present(s)[conv["id"]]] == ["bob@example.com"]


def test_saved_replies_appear_in_the_composer(
    app: FastAPI, engine: Engine, conv: dict[str, int]
) -> None:
    browser, token = signed_in(app, conv["alice"])
    r = browser.post(
        "/saved-replies", data={"csrf_token": token, "name": "Thanks", "body": "Thank you!"}
    )
    assert r.status_code == 303
    clash = browser.post(
        "/saved-replies", data={"csrf_token": token, "name": "Thanks", "body": "again"}
    )
    assert clash.status_code == 409
    page = browser.get(f"/conversations/{conv['id']}").text
    # filled in for the conversation when chosen (its variables): tests/web/test_composer.py
    assert f"/conversations/{conv['id']}/saved-replies/" in page and ">Thanks</option>" in page
    with Session(engine) as s:
        saved = s.exec(select(SavedReply)).one()
    assert browser.get("/saved-replies.json").json() == [
        {"id": saved.id, "name": "Thanks", "body": "Thank you!"}
    ]
    r = browser.post(f"/saved-replies/{saved.id}/delete", data={"csrf_token": token})
    assert r.status_code == 303 and browser.get("/saved-replies.json").json() == []


def test_composer_reply_note_and_collision(
    app: FastAPI, engine: Engine, conv: dict[str, int]
) -> None:
    browser, token = signed_in(app, conv["alice"])
    url = f"/conversations/{conv['id']}/compose"
    version = browser.get(f"/conversations/{conv['id']}/parts").json()["version"]
    r = browser.post(
        url,
        data={"csrf_token": token, "kind": "note", "body": "Call her", "expected_version": version},
        files={"attachments": ("a.txt", b"hello", "text/plain")},
        headers=FETCH,
    )
    assert r.status_code == 200, r.text
    assert r.json()["sent"] == "note" and "Call her" in r.json()["messages"]
    # a reply written against the version before the note: the note is shown, nothing sent
    r = browser.post(
        url,
        data={"csrf_token": token, "kind": "reply", "body": "Hi", "expected_version": version},
        headers=FETCH,
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "version_conflict" and "Call her" in r.json()["newer_html"]
    r = browser.post(
        url,
        data={
            "csrf_token": token, "kind": "reply", "body": "Hi", "expected_version": version,
            "force": "true", "idempotency_key": "k1",
        },
        headers=FETCH,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    r = browser.post(
        url,
        data={"csrf_token": token, "kind": "forward", "body": "FYI", "to": "boss@example.com"},
    )
    assert r.status_code == 303
    with Session(engine) as s:
        rows = s.exec(select(Message).where(Message.conversation_id == conv["id"]))
        directions = [m.direction for m in rows]
        assert directions.count(Direction.note) == 1 and directions.count(Direction.outbound) == 2
