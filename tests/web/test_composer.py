"""The composer's server side over HTTP, on SQLite and PostgreSQL (issue 13, item 5): pasted
images (uploaded with the session and its CSRF token, too large or not an image refused with
the reason, readable by their agent only, never by a colleague who guesses the id); the
rich-text HTML sanitised before it goes out, with a text alternative and inline `cid:` parts;
a draft keeps the HTML; saved replies' variables filled in for the conversation, an unknown
one refused when saving and when inserting, naming it; the new conversation page only offers
the agent's own mailboxes."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.outbound import saved_replies
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import (
    Agent,
    AgentMailboxAccess,
    ComposeImage,
    Draft,
    Mailbox,
    OutboundMail,
    SavedReply,
)
from imapdesk.mail.compose_html import sanitize_composed
from tests.support import factories as f
from tests.web.test_drafts import FETCH, signed_in

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def conv(engine: Engine, agents: dict[str, int]) -> int:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, smtp_host="smtp.example.com", smtp_port=587)
        c = f.conversation(
            s,
            box,
            "Printer",
            minutes=3,
            customer_email="carol@customer.example",
            customer_name="Carol Jones",
        )
        f.message(s, c, from_email="carol@customer.example", message_id="one@customer.example")
        assert c.id is not None
        return c.id


def _upload(browser, csrf: str, data: bytes = PNG, name: str = "shot.png"):  # type: ignore[no-untyped-def]
    return browser.post(
        "/compose/images",
        data={"csrf_token": csrf},
        files={"image": (name, data, "image/png")},
        headers=FETCH,
    )


def test_an_image_is_uploaded_and_only_its_agent_reads_it(
    app: FastAPI, engine: Engine, agents: dict[str, int]
) -> None:
    alice, csrf = signed_in(app, agents["alice"])
    assert _upload(alice, "").status_code == 403  # no CSRF token
    r = _upload(alice, csrf)
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    shown = alice.get(url)
    assert shown.status_code == 200 and shown.content == PNG
    assert shown.headers["content-type"] == "image/png"
    bob, _ = signed_in(app, agents["bob"])
    assert bob.get(url).status_code == 404
    with Session(engine) as s:
        (row,) = s.exec(select(ComposeImage)).all()
        assert row.agent_id == agents["alice"] and row.size == len(PNG)


def test_too_large_or_not_an_image_is_refused_with_the_reason(
    app: FastAPI, agents: dict[str, int]
) -> None:
    app.state.settings.max_compose_image_bytes = 100
    alice, csrf = signed_in(app, agents["alice"])
    r = _upload(alice, csrf, data=PNG + b"\x00" * 200)
    assert r.status_code == 422
    assert "more than the" in r.json()["error"]["message"]
    r = _upload(alice, csrf, data=b"<svg onload=alert(1)>", name="x.png")
    assert r.status_code == 422
    assert "not a PNG, JPEG, GIF or WebP" in r.json()["error"]["message"]


def _sent(engine: Engine) -> EmailMessage:
    with Session(engine) as s:
        (row,) = s.exec(select(OutboundMail)).all()
        msg = email.message_from_bytes(row.raw or b"", policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


def test_rich_html_is_sanitised_with_a_text_alternative_and_cid_images(
    app: FastAPI, engine: Engine, agents: dict[str, int], conv: int
) -> None:
    alice, csrf = signed_in(app, agents["alice"])
    image_url = _upload(alice, csrf).json()["url"]
    html = (
        f'<div>Hello <b>Carol</b><img src="{image_url}" onerror="alert(1)"></div>'
        '<script>steal()</script><div><a href="javascript:alert(1)">x</a>'
        '<img src="https://tracker.example/p.gif"></div>'
    )
    r = alice.post(
        f"/conversations/{conv}/compose",
        data={"csrf_token": csrf, "kind": "reply", "body": "Hello Carol", "html": html},
        headers=FETCH,
    )
    assert r.status_code == 200, r.text
    msg = _sent(engine)
    plain = msg.get_body(preferencelist=("plain",))
    rich = msg.get_body(preferencelist=("html",))
    assert plain is not None and rich is not None
    assert "Hello Carol" in plain.get_content()
    out = rich.get_content()
    for bad in ("<script", "steal", "onerror", "javascript:", "tracker.example", "/compose/"):
        assert bad not in out
    (image,) = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert f'src="cid:{image["Content-ID"].strip("<>")}"' in out
    assert image.get_payload(decode=True) == PNG


def test_another_agents_image_is_not_sent(
    app: FastAPI, engine: Engine, agents: dict[str, int], conv: int
) -> None:
    bob, bob_csrf = signed_in(app, agents["bob"])
    theirs = _upload(bob, bob_csrf).json()["url"]
    alice, csrf = signed_in(app, agents["alice"])
    r = alice.post(
        f"/conversations/{conv}/compose",
        data={"csrf_token": csrf, "kind": "reply", "body": "x", "html": f'<img src="{theirs}">'},
        headers=FETCH,
    )
    assert r.status_code == 422
    assert "not one you pasted" in r.json()["error"]["message"]
    with Session(engine) as s:
        assert s.exec(select(OutboundMail)).all() == []


def test_a_draft_keeps_the_html(
    app: FastAPI, engine: Engine, agents: dict[str, int], conv: int
) -> None:
    alice, csrf = signed_in(app, agents["alice"])
    html = "<div>Dear <b>Carol</b></div>"
    r = alice.post(
        f"/conversations/{conv}/draft",
        data={"csrf_token": csrf, "kind": "reply", "body": "Dear Carol", "html": html},
        headers=FETCH,
    )
    assert r.status_code == 200, r.text
    with Session(engine) as s:
        (draft,) = s.exec(select(Draft)).all()
        assert draft.html == html and draft.body == "Dear Carol"
    page = alice.get(f"/conversations/{conv}").text
    assert 'name="html" value="&lt;div&gt;Dear &lt;b&gt;Carol&lt;/b&gt;&lt;/div&gt;"' in page


def test_saved_reply_variables_are_filled_in_and_unknown_ones_refused(
    app: FastAPI, engine: Engine, agents: dict[str, int], conv: int
) -> None:
    alice, csrf = signed_in(app, agents["alice"])
    with unit_of_work(engine) as s:
        box = s.exec(select(Mailbox)).one()
        good = SavedReply(
            name="Hi",
            body="Hi {{ customer.first_name }} ({{ customer.name }}), {{ agent.name }} "
            "for {{ mailbox.name }}, #{{ conversation.number }}",
        )
        bad = SavedReply(name="Bad", body="Hi {{ customer.nickname }}")
        s.add_all([good, bad])
        s.flush()
        ids = good.id, bad.id
        team = box.display_name or box.name
    r = alice.post(
        f"/conversations/{conv}/saved-replies/{ids[0]}/render",
        data={"csrf_token": csrf},
        headers=FETCH,
    )
    assert r.status_code == 200, r.text
    assert r.json()["text"] == f"Hi Carol (Carol Jones), Alice Agent for {team}, #{conv}"
    r = alice.post(
        f"/conversations/{conv}/saved-replies/{ids[1]}/render",
        data={"csrf_token": csrf},
        headers=FETCH,
    )
    assert r.status_code == 422
    assert r.json()["error"]["variable"] == "customer.nickname"
    assert "unknown variable {{ customer.nickname }}" in r.json()["error"]["message"]
    # saving: refused, naming it
    r = alice.post(
        "/saved-replies", data={"csrf_token": csrf, "name": "New", "body": "{{ agent.email }}"}
    )
    assert r.status_code == 422
    assert "unknown variable {{ agent.email }}" in r.text
    with pytest.raises(InvalidInput, match="not a valid saved reply"):
        saved_replies.check_variables("Hi {{ customer.name")


def test_sandbox_refuses_what_is_not_a_variable() -> None:
    for text in ("{{ customer.__class__ }}", "{{ ''.__class__ }}", "{{ cycler }}"):
        with pytest.raises(InvalidInput):
            saved_replies.check_variables(text)


def test_the_new_conversation_page_offers_only_the_agents_mailboxes(
    app: FastAPI, engine: Engine, agents: dict[str, int]
) -> None:
    with unit_of_work(engine) as s:
        mine = f.mailbox(s, name="mine", smtp_host="smtp.example.com", smtp_port=587)
        f.mailbox(s, name="theirs", smtp_host="smtp.example.com", smtp_port=587)
        s.add(AgentMailboxAccess(agent_id=agents["bob"], mailbox_id=mine.id))
        bob_row = s.get(Agent, agents["bob"])
        assert bob_row is not None
        bob_row.all_mailboxes = False
    bob, csrf = signed_in(app, agents["bob"])
    page = bob.get("/new-conversation").text
    assert 'value="mine"' in page and 'value="theirs"' not in page
    r = bob.post(
        "/new-conversation",
        data={
            "csrf_token": csrf,
            "mailbox": "theirs",
            "to": "a@example.com",
            "subject": "Hi",
            "body": "x",
        },
    )
    assert r.status_code == 422 and "choose one of your mailboxes" in r.text
    with Session(engine) as s:
        assert s.exec(select(OutboundMail).where(col(OutboundMail.kind) == "new")).all() == []


def test_sanitiser_keeps_formatting_and_drops_the_rest() -> None:
    out = sanitize_composed(
        '<div style="x"><b>b</b><i>i</i><ul><li>l</li></ul><blockquote>q</blockquote>'
        '<a href="https://example.com" onclick="x">link</a><iframe src="x"></iframe>'
        '<img src="data:image/png;base64,AAAA"></div>'
    )
    assert "<b>b</b>" in out and "<li>l</li>" in out and "<blockquote>q</blockquote>" in out
    assert 'href="https://example.com"' in out
    for bad in ("style=", "onclick", "iframe", "data:"):
        assert bad not in out
