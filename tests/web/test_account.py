"""The agent's own account and what follows from it, over HTTP on SQLite and PostgreSQL:
`/account` (name, signature, timezone, undo window; a password change that needs the current
password and signs the other browsers out), times shown in the agent's timezone, a snooze
picked in it, per-agent read marks ("read by me", while the mailbox's `\\Seen` is shared),
agents named by name, and the mailbox settings that were command-line only. (In Chromium:
test_account_browser.py.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.accounts.agents import password_matches
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Agent,
    Conversation,
    ConversationReadMark,
    ConversationStatus,
    Mailbox,
    as_utc,
)
from tests.support import factories as f
from tests.support.web import PASSWORD, Page
from tests.web.test_reading import signed_in, unread_conversation

FETCH = {"X-Requested-With": "fetch"}
NEW_PASSWORD = "a much better passphrase"


def account_form(browser: TestClient, **changes: str) -> dict[str, str]:
    inputs = Page(browser.get("/account").text).inputs
    data = {
        k: inputs.get(k, "")
        for k in ("csrf_token", "name", "signature", "timezone", "undo_send_seconds")
    }
    return data | changes


def flash_of(browser: TestClient) -> str:
    html = browser.get("/account").text
    found = re.search(r'<p class="flash[^"]*" role="status">([^<]*)</p>', html)
    return found.group(1) if found else ""


def test_account_saves_name_signature_timezone_and_undo_window(
    app: FastAPI, engine: Engine, agents: dict[str, int]
) -> None:
    bob, _ = signed_in(app, agents["bob"])
    page = bob.get("/account")
    assert page.status_code == 200 and 'list="timezones"' in page.text
    assert '<option value="Asia/Tokyo">' in page.text
    # the header links to it
    assert '/account" class="agent-name"' in bob.get("/").text

    data = account_form(
        bob,
        name="Bob the Builder",
        signature="Bob\r\nSupport team",
        timezone="Asia/Tokyo",
        undo_send_seconds="25",
    )
    assert bob.post("/account", data=data).status_code == 303
    assert flash_of(bob) == "Your account is saved."
    with Session(engine) as s:
        agent = s.get(Agent, agents["bob"])
        assert agent is not None
        assert (agent.name, agent.signature, agent.timezone, agent.undo_send_seconds) == (
            "Bob the Builder",
            "Bob\nSupport team",
            "Asia/Tokyo",
            25,
        )

    # refused, and nothing changed: an unknown zone, a window over a minute, no CSRF token
    for field, value, words in (
        ("timezone", "Mars/Olympus_Mons", "is not a timezone"),
        ("undo_send_seconds", "61", "0 to 60 seconds"),
    ):
        assert bob.post("/account", data=account_form(bob, **{field: value})).status_code == 303
        assert words in flash_of(bob)
    assert bob.post("/account", data=account_form(bob, csrf_token="forged")).status_code == 403
    with Session(engine) as s:
        agent = s.get(Agent, agents["bob"])
        assert agent is not None and (agent.timezone, agent.undo_send_seconds) == (
            "Asia/Tokyo",
            25,
        )
    # signed out: the sign-in page
    anonymous = TestClient(app, follow_redirects=False)
    assert anonymous.get("/account").status_code in (302, 303, 401)


def test_password_change_needs_the_current_one_and_signs_the_others_out(
    app: FastAPI, engine: Engine, agents: dict[str, int], cheap_password_hashing: None
) -> None:
    here, token = signed_in(app, agents["bob"])
    elsewhere, _ = signed_in(app, agents["bob"])
    assert elsewhere.get("/").status_code == 200

    wrong = {"csrf_token": token, "current_password": "not it"}
    wrong |= {"new_password": NEW_PASSWORD, "repeat_password": NEW_PASSWORD}
    assert here.post("/account/password", data=wrong).status_code == 303
    assert flash_of(here) == "The current password is not right."
    short = {"csrf_token": token, "current_password": PASSWORD}
    short |= {"new_password": "short", "repeat_password": "short"}
    here.post("/account/password", data=short)
    assert "at least 8 characters" in flash_of(here)
    with Session(engine) as s:
        assert password_matches(s.get(Agent, agents["bob"]), PASSWORD) is not None
    assert elsewhere.get("/").status_code == 200  # nothing changed yet

    right = {"csrf_token": token, "current_password": PASSWORD}
    right |= {"new_password": NEW_PASSWORD, "repeat_password": NEW_PASSWORD}
    assert here.post("/account/password", data=right).status_code == 303
    # this browser goes on (a new session), the other one is signed out
    assert flash_of(here) == "Your password is changed; your other browsers are signed out."
    assert here.get("/").status_code == 200
    assert elsewhere.get("/").status_code != 200
    # the new password signs in, the old one no more
    with Session(engine) as s:
        agent = s.get(Agent, agents["bob"])
        assert password_matches(agent, NEW_PASSWORD) is not None
        assert password_matches(agent, PASSWORD) is None
    fresh = TestClient(app, follow_redirects=False)
    login = Page(fresh.get("/login").text).inputs["csrf_token"]
    for password, status in ((PASSWORD, 400), (NEW_PASSWORD, 303)):
        r = fresh.post(
            "/login",
            data={"email": "bob@example.com", "password": password, "csrf_token": login},
        )
        assert r.status_code == status


def test_times_in_the_agents_zone_and_a_snooze_picked_in_it(
    app: FastAPI, engine: Engine, agents: dict[str, int]
) -> None:
    cid, _ = unread_conversation(engine)
    with unit_of_work(engine) as s:
        bob = s.get(Agent, agents["bob"])
        assert bob is not None
        bob.timezone = "Asia/Tokyo"
    bob_client, token = signed_in(app, agents["bob"])
    alice_client, _ = signed_in(app, agents["alice"])
    # the last message: 2024-05-01 09:02 UTC, 18:02 in Tokyo (UTC+9)
    assert "2024-05-01 18:02</time>" in bob_client.get("/?queue=open").text
    assert "2024-05-01 09:02</time>" in alice_client.get("/?queue=open").text  # no zone: UTC

    # snoozed until 2031-01-15 08:30 in Tokyo: 2031-01-14 23:30 UTC
    r = bob_client.post(
        f"/conversations/{cid}/actions/snooze",
        data={"csrf_token": token, "hours": "4", "until": "2031-01-15T08:30"},
        headers=FETCH,
    )
    assert r.status_code == 200, r.text
    assert "2031-01-15 08:30 Asia/Tokyo" in r.json()["state"]
    with Session(engine) as s:
        c = s.get(Conversation, cid)
        assert c is not None and c.status == ConversationStatus.pending
        assert as_utc(c.snoozed_until) == datetime(2031, 1, 14, 23, 30, tzinfo=UTC)
    assert "2031-01-14 23:30 UTC" in alice_client.get(f"/conversations/{cid}").text
    # the activity log says it in each one's zone too
    assert "snoozed it until 2031-01-15 08:30 Asia/Tokyo" in r.json()["activity"]
    # a time in the past or no time at all: refused
    bob_client.post(f"/conversations/{cid}/actions/unsnooze", data={"csrf_token": token})
    for until, words in (("2001-01-01T00:00", "in the future"), ("soon", "pick a date")):
        r = bob_client.post(
            f"/conversations/{cid}/actions/snooze",
            data={"csrf_token": token, "until": until},
            headers=FETCH,
        )
        assert r.status_code == 422 and words in r.json()["error"]["message"]


def _unseen(html: str, cid: int) -> bool:
    found = re.search(rf'<tr [^>]*data-id="{cid}"[^>]*>', html)
    assert found, f"no row {cid}"
    return "data-unseen-by-me" in found.group(0)


def test_read_marks_are_per_agent(app: FastAPI, engine: Engine, agents: dict[str, int]) -> None:
    cid, _ = unread_conversation(engine)
    with unit_of_work(engine) as s:
        for agent_id in agents.values():
            agent = s.get(Agent, agent_id)
            assert agent is not None
            agent.read_marks_since = datetime(2000, 1, 1, tzinfo=UTC)
    alice, token = signed_in(app, agents["alice"])
    bob, _ = signed_in(app, agents["bob"])
    assert _unseen(alice.get("/?queue=open").text, cid)
    assert _unseen(bob.get("/?queue=open").text, cid)

    alice.get(f"/conversations/{cid}")  # Alice opens it
    assert not _unseen(alice.get("/?queue=open").text, cid)
    # still unread for Bob, though the mailbox's \Seen (shared) is set now
    bob_list = bob.get("/?queue=open").text
    assert _unseen(bob_list, cid) and not re.search(
        rf'<tr class="unread" data-id="{cid}"', bob_list
    )
    # the list's live parts say the same (their cache follows Alice's read)
    assert not _unseen(alice.get("/queue-parts?queue=open").json()["rows"], cid)
    assert _unseen(bob.get("/queue-parts?queue=open").json()["rows"], cid)
    with Session(engine) as s:
        marks = s.exec(
            select(ConversationReadMark.agent_id).where(
                col(ConversationReadMark.conversation_id) == cid
            )
        ).all()
        assert marks == [agents["alice"]]

    # a message newer than her read makes it unread for her again; "Mark unread" does too
    with unit_of_work(engine) as s:
        mark = s.get(ConversationReadMark, (agents["alice"], cid))
        assert mark is not None
        mark.read_at = datetime.now(UTC) - timedelta(hours=1)
        c = s.get(Conversation, cid)
        assert c is not None
        c.last_message_at = datetime.now(UTC) - timedelta(minutes=1)
        c.version += 1
    assert _unseen(alice.get("/?queue=open").text, cid)
    alice.get(f"/conversations/{cid}")
    assert not _unseen(alice.get("/?queue=open").text, cid)
    alice.post(f"/conversations/{cid}/actions/unread", data={"csrf_token": token})
    assert _unseen(alice.get("/?queue=open").text, cid)

    # what last changed before an agent's marks began keeps the shared state
    with unit_of_work(engine) as s:
        bob_agent = s.get(Agent, agents["bob"])
        assert bob_agent is not None
        bob_agent.read_marks_since = datetime.now(UTC)
        c = s.get(Conversation, cid)
        assert c is not None
        c.unread, c.version = False, c.version + 1
    assert not _unseen(bob.get("/?queue=open").text, cid)


def test_agents_are_named_by_name(app: FastAPI, engine: Engine, agents: dict[str, int]) -> None:
    cid, _ = unread_conversation(engine)
    alice, token = signed_in(app, agents["alice"])
    r = alice.post(f"/conversations/{cid}/actions/claim", data={"csrf_token": token}, headers=FETCH)
    parts = r.json()
    assert 'assigned to <span title="alice@example.com">Alice Agent</span>' in parts["state"]
    assert '<span class="who" title="alice@example.com">Alice Agent</span>' in parts["activity"]
    listing = alice.get("/?queue=open").text
    assert '<span class="muted assignee" title="alice@example.com">· Alice Agent</span>' in listing


def test_every_mailbox_setting_has_a_field(
    app: FastAPI, engine: Engine, agents: dict[str, int]
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "sales", smtp_host="smtp.example.com", smtp_port=587)
        box_id = box.id
    alice, _ = signed_in(app, agents["alice"])
    page = Page(alice.get(f"/admin/mailboxes/{box_id}").text)
    data = {k: v for k, v in page.inputs.items() if isinstance(v, str)}
    for name in ("display_name", "signature", "from_agent_name", "status_after_reply"):
        assert f'name="{name}"' in alice.get(f"/admin/mailboxes/{box_id}").text
    data |= {
        "op": "save",
        "auth": "password",
        "enabled": "true",
        "display_name": "Example Sales",
        "signature": "The sales team\r\nexample.com",
        "from_agent_name": "on",
        "status_after_reply": "closed",
        "mark_read_on_open": "off",
    }
    r = alice.post(f"/admin/mailboxes/{box_id}", data=data)
    assert r.status_code == 303, r.text
    with Session(engine) as s:
        saved = s.get(Mailbox, box_id)
        assert saved is not None
        assert (
            saved.display_name,
            saved.signature,
            saved.from_agent_name,
            saved.status_after_reply,
            saved.mark_read_on_open,
        ) == ("Example Sales", "The sales team\nexample.com", True, "closed", False)
    html = alice.get(f"/admin/mailboxes/{box_id}").text
    assert 'value="Example Sales"' in html and '<option value="closed" selected>' in html
    # a status a reply cannot leave: refused, nothing saved
    r = alice.post(f"/admin/mailboxes/{box_id}", data=data | {"status_after_reply": "spam"})
    assert r.status_code == 400 and "open, pending or closed" in r.text
    # Bob is no admin
    bob, _ = signed_in(app, agents["bob"])
    assert bob.post(f"/admin/mailboxes/{box_id}", data=data).status_code == 403
