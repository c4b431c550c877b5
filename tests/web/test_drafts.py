"""Drafts over HTTP, on SQLite and PostgreSQL: the composer's saves (web) and the REST API's
`/api/v1/conversations/{id}/draft` keep one draft per agent and conversation; the page comes
with it; colleagues see who has one (the page and the live presence), never its text; the
Drafts queue lists them; sending ends the draft, Undo makes the reply a draft again; nobody
saves on a conversation they may not see."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.api.app import SESSION_COOKIE
from imapdesk.domain.accounts.agents import create_api_token
from imapdesk.domain.conversations.aggregates import merge_conversations
from imapdesk.domain.live import presence
from imapdesk.domain.live.changes import ChangeFeed
from imapdesk.domain.outbound import drafts
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent, AgentMailboxAccess, Conversation, Draft, Mailbox
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.web import Page, session_cookie

FETCH = {"X-Requested-With": "fetch"}


def signed_in(app: FastAPI, agent_id: int) -> tuple[TestClient, str]:
    """A browser with the agent's session cookie, and the session's CSRF token."""
    settings, engine = app.state.settings, app.state.engine
    browser = TestClient(app, follow_redirects=False)
    browser.cookies.set(SESSION_COOKIE, session_cookie(settings, engine, agent_id))
    page = browser.get("/saved-replies").text
    return browser, page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def token(engine: Engine, agent_id: int) -> dict[str, str]:
    with unit_of_work(engine) as s:
        agent = s.get(Agent, agent_id)
        assert agent is not None
        return {"Authorization": f"Bearer {create_api_token(s, agent, name='tests')}"}


@pytest.fixture
def conv(engine: Engine, agents: dict[str, int]) -> int:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, smtp_host="smtp.example.com", smtp_port=587)
        c = f.conversation(s, box, "Printer", minutes=3, customer_email="carol@customer.example")
        f.message(s, c, from_email="carol@customer.example", message_id="one@customer.example")
        assert c.id is not None
        return c.id


def save(browser: TestClient, csrf: str, cid: int, **fields: str) -> Any:
    data = {"csrf_token": csrf, "kind": "reply", "body": "", "to": "", "cc": ""} | fields
    return browser.post(f"/conversations/{cid}/draft", data=data, headers=FETCH)


def rows(engine: Engine) -> list[Draft]:
    with Session(engine) as s:
        return list(s.exec(select(Draft).order_by(col(Draft.agent_id))))


def test_a_saved_draft_comes_with_the_page_on_any_device(
    app: FastAPI, engine: Engine, agents: dict[str, int], conv: int
) -> None:
    laptop, csrf = signed_in(app, agents["bob"])
    r = save(
        laptop,
        csrf,
        conv,
        kind="reply_all",
        body="Dear Carol,\n\nfirst words",
        cc='dan@x.example, "Eve, E." <eve@x.example>',
    )
    assert r.status_code == 200, r.text
    assert r.json()["draft"]["kind"] == "reply_all"
    # typing on: the same row, rewritten
    r = save(
        laptop,
        csrf,
        conv,
        kind="reply_all",
        body="Dear Carol,\n\nmore words",
        cc='dan@x.example, "Eve, E." <eve@x.example>',
    )
    assert r.status_code == 200
    [row] = rows(engine)
    assert (row.agent_id, row.body) == (agents["bob"], "Dear Carol,\n\nmore words")
    assert row.cc == ["dan@x.example", '"Eve, E." <eve@x.example>']

    # another device (a new browser session) opens the page with it
    phone, _ = signed_in(app, agents["bob"])
    html = phone.get(f"/conversations/{conv}").text
    assert 'data-draft-kind="reply_all"' in html
    assert ">\nDear Carol,\n\nmore words</textarea>" in html
    assert Page(html).inputs["cc"] == 'dan@x.example, "Eve, E." <eve@x.example>'
    assert '<option value="reply_all" selected>' in html

    # the REST API gives the same draft to its caller
    r = TestClient(app).get(
        f"/api/v1/conversations/{conv}/draft", headers=token(engine, agents["bob"])
    )
    assert r.status_code == 200, r.text
    assert r.json() | {"updated_at": None} == {
        "conversation_id": conv, "kind": "reply_all", "body": "Dear Carol,\n\nmore words",
        "to": [], "cc": ["dan@x.example", '"Eve, E." <eve@x.example>'], "html": None,
        "updated_at": None,
    }  # fmt: skip

    # emptied: no draft
    assert save(laptop, csrf, conv).json() == {"draft": None}
    assert rows(engine) == []
    assert "data-draft-kind" not in phone.get(f"/conversations/{conv}").text


def test_colleagues_see_who_has_a_draft_never_what_it_says(
    app: FastAPI, engine: Engine, agents: dict[str, int], conv: int
) -> None:
    bob, bob_csrf = signed_in(app, agents["bob"])
    alice, _ = signed_in(app, agents["alice"])
    feed = ChangeFeed()
    with Session(engine) as s:
        feed.poll(s)  # takes stock
    # Alice looks at the conversation, Bob starts writing
    with unit_of_work(engine) as s:
        me = s.get(Agent, agents["alice"])
        assert me is not None
        presence.touch(s, conv, me)
    assert save(bob, bob_csrf, conv, body="Secret plan: refund twice").status_code == 200
    with Session(engine) as s:
        changes = [c for c in feed.poll(s) if c.kind == "presence"]
    assert [c.payload()["drafts"] for c in changes] == [
        [{"id": agents["bob"], "name": "Bob Builder", "email": "bob@example.com"}]
    ]
    html = alice.get(f"/conversations/{conv}").text
    assert "Bob Builder has a draft" in html and "Secret plan" not in html
    # his own page opens his draft in the composer and names nobody
    own = bob.get(f"/conversations/{conv}").text
    assert "Secret plan" in own and "has a draft" not in own

    # the draft ends: the presence says so
    r = bob.post(
        f"/conversations/{conv}/draft/discard", data={"csrf_token": bob_csrf}, headers=FETCH
    )
    assert r.json() == {"discarded": True}
    with Session(engine) as s:
        changes = [c for c in feed.poll(s) if c.kind == "presence"]
    assert [c.payload()["drafts"] for c in changes] == [[]]
    assert "has a draft" not in alice.get(f"/conversations/{conv}").text


def test_the_drafts_queue(app: FastAPI, engine: Engine, agents: dict[str, int], conv: int) -> None:
    with unit_of_work(engine) as s:
        box = s.exec(select(Mailbox)).one()
        other = f.conversation(s, box, "Other", minutes=9)
        gone = f.conversation(s, box, "Binned", minutes=8, status="deleted")
        other_id, gone_id = other.id or 0, gone.id or 0
    bob, csrf = signed_in(app, agents["bob"])
    alice, alice_csrf = signed_in(app, agents["alice"])
    assert save(bob, csrf, conv, body="for Carol").status_code == 200
    assert save(bob, csrf, gone_id, body="too late").status_code == 200
    assert save(alice, alice_csrf, other_id, body="Alice's own").status_code == 200

    page = Page(bob.get("/?queue=drafts").text)
    assert page.row_ids == [conv]  # his own, not the deleted one's, not Alice's
    html = bob.get("/?queue=drafts").text
    assert 'data-queue="drafts">\n      <span>Drafts</span> <span class="count">1</span>' in html
    assert Page(alice.get("/?queue=drafts").text).row_ids == [other_id]

    # the live parts follow a draft that comes or goes, though no conversation changed
    parts = bob.get("/queue-parts?queue=drafts").json()
    assert parts["ids"] == [conv]
    assert save(bob, csrf, other_id, body="and this one").status_code == 200
    parts = bob.get("/queue-parts?queue=drafts").json()
    assert parts["ids"] == [other_id, conv]
    assert '<span class="count">2</span>' in parts["sidebar"]


def test_sending_ends_the_draft_and_undo_makes_it_one_again(
    app: FastAPI, engine: Engine, agents: dict[str, int], conv: int
) -> None:
    bob, csrf = signed_in(app, agents["bob"])
    with unit_of_work(engine) as s:
        agent = s.get(Agent, agents["bob"])
        assert agent is not None
        agent.undo_send_seconds = 30
    assert save(bob, csrf, conv, body="Try turning it off and on.").status_code == 200
    r = bob.post(
        f"/conversations/{conv}/compose",
        data={"csrf_token": csrf, "kind": "reply", "body": "Try turning it off and on."},
        headers=FETCH,
    )
    assert r.status_code == 200, r.text
    outbound = r.json()["outbound"]
    assert outbound["state"] == "scheduled"
    assert rows(engine) == []

    # Undo: taken back, and the text is Bob's draft again (a reload keeps it)
    r = bob.post(outbound["cancel_url"], data={"csrf_token": csrf}, headers=FETCH)
    assert r.status_code == 200, r.text
    assert r.json()["taken_back"]["body"] == "Try turning it off and on."
    [row] = rows(engine)
    assert (row.agent_id, row.kind, row.body) == (
        agents["bob"],
        "reply",
        "Try turning it off and on.",
    )
    assert ">\nTry turning it off and on.</textarea>" in bob.get(f"/conversations/{conv}").text

    # a note through the REST API ends it as well
    api = TestClient(app, headers=token(engine, agents["bob"]))
    r = api.post(f"/api/v1/conversations/{conv}/notes", json={"body": "Called her instead."})
    assert r.status_code == 201, r.text
    assert rows(engine) == []


def test_the_rest_api_draft(
    app: FastAPI, engine: Engine, agents: dict[str, int], conv: int
) -> None:
    api = TestClient(app, headers=token(engine, agents["bob"]))
    url = f"/api/v1/conversations/{conv}/draft"
    r = api.get(url)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = api.put(
        url, json={"kind": "forward", "body": "FYI\x00 see below", "to": ["boss@x.example"]}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["body"], r.json()["to"]) == ("FYI see below", ["boss@x.example"])
    r = api.put(url, json={"kind": "note", "body": "internal", "to": ["ignored@x.example"]})
    assert (r.json()["kind"], r.json()["to"]) == ("note", [])
    r = api.put(url, json={"kind": "telegram", "body": "x"})
    assert r.status_code == 422
    r = api.put(url, json={"body": "x", "to": ["a" * 2000]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "to"
    assert api.get(url).json()["body"] == "internal"
    assert api.delete(url).status_code == 204
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404
    assert api.put(url, json={"body": "  "}).status_code == 204
    assert rows(engine) == []


def test_a_merged_conversations_draft_follows_it(
    app: FastAPI, engine: Engine, agents: dict[str, int], conv: int
) -> None:
    with unit_of_work(engine) as s:
        box = s.exec(select(Mailbox)).one()
        later = f.conversation(s, box, "Printer (again)", minutes=5)
        later_id = later.id or 0
    api = TestClient(app, headers=token(engine, agents["bob"]), follow_redirects=False)
    assert (
        api.put(f"/api/v1/conversations/{later_id}/draft", json={"body": "half"}).status_code == 200
    )
    with unit_of_work(engine) as s:
        keep, other = s.get(Conversation, conv), s.get(Conversation, later_id)
        assert keep is not None and other is not None
        merge_conversations(s, keep, [other])
    r = api.get(f"/api/v1/conversations/{later_id}/draft")
    assert r.status_code == 308 and r.headers["location"].endswith(f"/{conv}/draft")
    r = api.get(f"/api/v1/conversations/{conv}/draft")
    assert r.status_code == 200 and r.json()["body"] == "half"
    assert api.delete(f"/api/v1/conversations/{conv}/draft").status_code == 204
    assert rows(engine) == []


def test_nobody_saves_a_draft_where_they_may_not_look(
    app: FastAPI, engine: Engine, settings: Settings, agents: dict[str, int], conv: int
) -> None:
    with unit_of_work(engine) as s:
        bob = s.get(Agent, agents["bob"])
        assert bob is not None
        bob.all_mailboxes = False
        other = f.mailbox(s, "billing")
        s.add(AgentMailboxAccess(agent_id=agents["bob"], mailbox_id=other.id or 0))
    browser, csrf = signed_in(app, agents["bob"])
    r = save(browser, csrf, conv, body="sneaky")
    assert r.status_code == 404
    r = TestClient(app, headers=token(engine, agents["bob"])).put(
        f"/api/v1/conversations/{conv}/draft", json={"body": "sneaky"}
    )
    assert r.status_code == 404
    # without the session's CSRF token nothing is saved either
    alice, _ = signed_in(app, agents["alice"])
    r = save(alice, "forged", conv, body="x")
    assert r.status_code == 403
    assert rows(engine) == []


def test_a_draft_in_the_domain_alone(engine: Engine, agents: dict[str, int], conv: int) -> None:
    """What the composer sends is kept as typed; what cannot be stored or shown is not."""
    with unit_of_work(engine) as s:
        bob = s.get(Agent, agents["bob"])
        assert bob is not None
        view = drafts.save(s, bob, conv, kind="reply", body="a\x00b", to=[" x@y.example ", ""])
        assert view is not None and (view.body, view.to) == ("ab", ["x@y.example"])
        with pytest.raises(Exception, match="kind must be one of"):
            drafts.save(s, bob, conv, kind="fax", body="x")
    with Session(engine) as s:
        holders = drafts.holders(s, [conv])
        assert [h.name for h in holders[conv]] == ["Bob Builder"]
        assert drafts.count(s, agents["bob"], [s.exec(select(Mailbox.id)).one() or 0]) == 1
