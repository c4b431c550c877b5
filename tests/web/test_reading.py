"""Reading as in any mail client, over HTTP on SQLite and PostgreSQL: opening a conversation
marks it read through the domain operation and the write-back outbox (`\\Seen` for colleagues'
clients), unless its mailbox says not to (the admin form's field); replying and noting leave it
read; a read mark from a mail client moves the conversation's `updated_at`, which the live
stream and the lists' caches watch; what a mail client claimed is not Unassigned; a long thread
opens at its newest message with the older ones folded. (The real Dovecot, worker and browser:
test_reading_live_browser.py.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.api.app import SESSION_COOKIE
from imapdesk.domain.accounts.agents import create_api_token
from imapdesk.domain.conversations import operations, read_marks
from imapdesk.domain.live.changes import ChangeFeed
from imapdesk.domain.sync.readback import apply_mail_changes
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    Conversation,
    Direction,
    Mailbox,
    Message,
    MessageLocation,
    PendingImapAction,
    as_utc,
)
from tests.support import factories as f
from tests.support.web import Page, session_cookie

FETCH = {"X-Requested-With": "fetch"}
SEEN = "\\Seen"


def signed_in(app: FastAPI, agent_id: int) -> tuple[TestClient, str]:
    settings, engine = app.state.settings, app.state.engine
    browser = TestClient(app, follow_redirects=False)
    browser.cookies.set(SESSION_COOKIE, session_cookie(settings, engine, agent_id))
    page = browser.get("/saved-replies").text
    return browser, page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def unread_conversation(engine: Engine, *, messages: int = 2, **box: object) -> tuple[int, int]:
    """An open, unread conversation of `messages` inbound messages, each in INBOX unseen;
    (conversation id, mailbox id)."""
    with unit_of_work(engine) as s:
        mailbox = f.mailbox(s, smtp_host="smtp.example.com", smtp_port=587, **box)
        inbox = f.folder(s, mailbox, watched=True)
        c = f.conversation(s, mailbox, "Printer", minutes=messages, unread=True)
        for i in range(messages):
            m = f.message(
                s, c, minutes=i, from_email="carol@customer.example", text=f"Message {i}",
                snippet=f"Message {i}", message_id=f"m{i}-{c.id}@customer.example",
            )  # fmt: skip
            f.location(s, m, inbox, uid=i + 1)
        assert c.id is not None and mailbox.id is not None
        return c.id, mailbox.id


def state(engine: Engine, cid: int) -> tuple[bool, list[bool], list[str], list[dict[str, object]]]:
    """Unread; each message's seen; the activity's actions; the outbox's payloads."""
    with Session(engine) as s:
        c = s.get(Conversation, cid)
        assert c is not None
        seen = [
            m.seen
            for m in s.exec(
                select(Message).where(col(Message.conversation_id) == cid).order_by(col(Message.id))
            )
        ]
        actions = [
            a.action for a in s.exec(select(Activity).where(col(Activity.conversation_id) == cid))
        ]
        pending = select(PendingImapAction).where(col(PendingImapAction.conversation_id) == cid)
        outbox = [p.payload for p in s.exec(pending)]
        return c.unread, seen, actions, outbox


def test_opening_a_conversation_marks_it_read(
    app: FastAPI, engine: Engine, agents: dict[str, int]
) -> None:
    cid, _ = unread_conversation(engine)
    bob, _ = signed_in(app, agents["bob"])
    listing = bob.get("/?queue=open").text
    assert re.search(rf'<tr class="unread" data-id="{cid}"', listing)  # the list reads nothing

    html = bob.get(f"/conversations/{cid}").text
    assert 'class="unread-badge"' not in html and "Mark unread" in html
    unread, seen, actions, outbox = state(engine, cid)
    assert (unread, seen, actions) == (False, [True, True], ["read"])
    # written back: \Seen on its messages, for colleagues' mail clients
    assert outbox == [{"add": [SEEN], "remove": []}]
    with Session(engine) as s:
        read = s.exec(select(Activity).where(col(Activity.conversation_id) == cid)).one()
        assert (read.agent_id, read.source) == (agents["bob"], ActivitySource.web)

    # opened again (another tab, a reload): nothing more to write
    bob.get(f"/conversations/{cid}")
    bob.get(f"/conversations/{cid}/parts")
    assert state(engine, cid)[2:] == (["read"], [{"add": [SEEN], "remove": []}])
    assert not re.search(rf'<tr class="unread" data-id="{cid}"', bob.get("/?queue=open").text)


def test_a_mailbox_can_leave_opened_conversations_unread(
    app: FastAPI, engine: Engine, agents: dict[str, int]
) -> None:
    cid, _ = unread_conversation(engine, mark_read_on_open=False)
    bob, csrf = signed_in(app, agents["bob"])
    html = bob.get(f"/conversations/{cid}").text
    assert 'class="unread-badge"' in html and "Mark read" in html
    assert state(engine, cid) == (True, [False, False], [], [])
    # the agent marks it read by hand: that goes through
    r = bob.post(f"/conversations/{cid}/actions/read", data={"csrf_token": csrf}, headers=FETCH)
    assert r.status_code == 200
    assert state(engine, cid)[:2] == (False, [True, True])


@pytest.mark.parametrize("kind", ["reply", "note"])
def test_replying_or_noting_leaves_it_read(
    app: FastAPI, engine: Engine, agents: dict[str, int], kind: str
) -> None:
    # opened with the mark off, so only the reply or the note can read it
    cid, _ = unread_conversation(engine, mark_read_on_open=False)
    with unit_of_work(engine) as s:
        agent = s.get(Agent, agents["bob"])
        assert agent is not None
        api_token = create_api_token(s, agent, name="tests")
        # both agents keep read marks since long before this conversation
        for row in s.exec(select(Agent)):
            row.read_marks_since = datetime(2000, 1, 1, tzinfo=UTC)
    api = TestClient(app, headers={"Authorization": f"Bearer {api_token}"})
    path = "replies" if kind == "reply" else "notes"
    r = api.post(f"/api/v1/conversations/{cid}/{path}", json={"body": "On it."})
    assert r.status_code in (201, 202), r.text
    unread, _, actions, outbox = state(engine, cid)
    assert unread is False and "read" in actions
    # the inbound messages are read (our own reply or note was never unread)
    with Session(engine) as s:
        inbound = s.exec(
            select(Message.seen).where(
                col(Message.conversation_id) == cid, col(Message.direction) == Direction.inbound
            )
        ).all()
    assert inbound == [True, True]
    assert {"add": [SEEN], "remove": []} in outbox
    # and it is read for the agent who wrote it (their own words are nothing new to them),
    # still unread for a colleague
    with Session(engine) as s:
        conversation = s.get(Conversation, cid)
        bob, alice = s.get(Agent, agents["bob"]), s.get(Agent, agents["alice"])
        assert conversation is not None and bob is not None and alice is not None
        assert read_marks.unread_for(s, bob, [conversation]) == set()
        assert read_marks.unread_for(s, alice, [conversation]) == {cid}


def test_a_read_mark_from_a_mail_client_moves_the_conversation(
    engine: Engine, agents: dict[str, int]
) -> None:
    cid, mailbox_id = unread_conversation(engine, messages=2)
    feed = ChangeFeed()
    with Session(engine) as s:
        feed.poll(s)
        before = s.get(Conversation, cid)
        assert before is not None
        version, updated = before.version, as_utc(before.updated_at)

    def colleague_sets(flags: list[str], uid: int) -> set[int]:
        """What the worker does with a flag change it read: the location's flags, then the
        read-back, in one unit of work."""
        with unit_of_work(engine) as s:
            location = s.exec(select(MessageLocation).where(col(MessageLocation.uid) == uid)).one()
            location.flags = flags
            s.add(location)
            return apply_mail_changes(s, mailbox_id, [location.message_id])

    # one of two messages read: the conversation is still unread, but it changed
    assert colleague_sets([SEEN], 1) == {cid}
    with Session(engine) as s:
        c = s.get(Conversation, cid)
        assert c is not None and c.unread is True
        assert c.version == version + 1 and as_utc(c.updated_at) > updated
        assert [ch.payload() for ch in feed.poll(s) if ch.kind == "conversation"] == [
            {"id": cid, "mailbox_id": mailbox_id, "version": version + 1}
        ]
    # both read: read
    assert colleague_sets([SEEN], 2) == {cid}
    with Session(engine) as s:
        c = s.get(Conversation, cid)
        assert c is not None and c.unread is False and c.version == version + 2
        assert [ch.version for ch in feed.poll(s) if ch.kind == "conversation"] == [version + 2]
        # no activity for a read mark from a mail client, and nothing to write back
        assert s.exec(select(Activity).where(col(Activity.conversation_id) == cid)).all() == []
    # the same flags again: no change, nothing moves
    assert colleague_sets([SEEN], 2) == set()


def test_what_a_mail_client_claimed_is_not_unassigned(
    app: FastAPI, engine: Engine, agents: dict[str, int]
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        free = f.conversation(s, box, "Nobody has it", minutes=2)
        flagged = f.conversation(s, box, "Flagged in Thunderbird", minutes=1)
        operations.claim(s, flagged, None, source=ActivitySource.imap)
        alice = s.get(Agent, agents["alice"])
        assert alice is not None
        api_token = create_api_token(s, alice, name="tests")
        ids = (free.id or 0, flagged.id or 0)
    bob, _ = signed_in(app, agents["bob"])
    html = bob.get("/?queue=unassigned").text
    assert Page(html).row_ids == [ids[0]]
    assert '<span>Unassigned</span> <span class="count">1</span>' in html
    open_list = bob.get("/?queue=open").text
    assert Page(open_list).row_ids == list(ids)
    assert "claimed by someone via mail client" in open_list
    r = TestClient(app).get(
        "/api/v1/conversations",
        params={"assignee": "none"},
        headers={"Authorization": f"Bearer {api_token}"},
    )
    assert [c["id"] for c in r.json()["items"]] == [ids[0]]
    # its page says who holds it, with no Claim button (the `c` key says so: the browser test)
    page = bob.get(f"/conversations/{ids[1]}").text
    assert "claimed by someone via mail client" in page
    assert 'data-action="claim"' not in page


def test_the_admin_sets_whether_opening_reads(
    app: FastAPI, engine: Engine, agents: dict[str, int]
) -> None:
    _, mailbox_id = unread_conversation(engine)
    admin, _ = signed_in(app, agents["alice"])
    url = f"/admin/mailboxes/{mailbox_id}"
    page = admin.get(url).text
    assert '<option value="on" selected>' in page
    form = {
        "csrf_token": Page(page).inputs["csrf_token"],
        "address": "support@example.com",
        "imap_host": "imap.example.com",
        "imap_port": "993",
        "imap_security": "ssl",
        "username": "support@example.com",
        "smtp_host": "smtp.example.com",
        "smtp_port": "587",
        "auth": "password",
        "enabled": "true",
        "op": "save",
    }

    def setting(**changes: str) -> bool:
        r = admin.post(url, data=form | changes)
        assert r.status_code == 303, Page(r.text).all_text
        with Session(engine) as s:
            box = s.get(Mailbox, mailbox_id)
            assert box is not None
            return box.mark_read_on_open

    assert setting(mark_read_on_open="off") is False
    assert '<option value="off" selected>' in admin.get(url).text
    assert setting() is False  # a client that does not send the field changes nothing
    assert setting(mark_read_on_open="on") is True


def test_a_long_thread_opens_at_the_newest_with_older_ones_folded(
    app: FastAPI, engine: Engine, agents: dict[str, int]
) -> None:
    short, _ = unread_conversation(engine, messages=3)
    with unit_of_work(engine) as s:
        box = s.exec(select(Mailbox)).one()
        long = f.conversation(s, box, "A long story", minutes=9, unread=True)
        made = [
            f.message(
                s, long, minutes=i, from_email="carol@customer.example", text=f"Part {i}",
                snippet=f"Part {i}", seen=i != 3, message_id=f"part{i}@customer.example",
            ).id
            for i in range(6)
        ]  # fmt: skip
        long_id = long.id or 0
    bob, _ = signed_in(app, agents["bob"])
    assert "data-fold" not in bob.get(f"/conversations/{short}").text  # three are not long

    with unit_of_work(engine) as s:  # opening would read it: this one stays as made
        mailbox = s.exec(select(Mailbox)).one()
        mailbox.mark_read_on_open = False
    html = bob.get(f"/conversations/{long_id}").text
    folded = [
        int(n)
        for n in re.findall(r'id="message-(\d+)"[^>]*>\s*<details class="fold" data-fold>', html)
    ]
    # all but the newest, and the one still unread
    assert folded == [made[0], made[1], made[2], made[4]]
    assert "4 older messages folded" in html
    # each folded one shows who wrote it and its first words
    summary = re.search(r'<summary class="fold-summary">(.*?)</summary>', html)
    assert summary is not None
    assert "carol@customer.example" in summary.group(1) and "Part 0" in summary.group(1)
