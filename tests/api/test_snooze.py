"""A change of status ends a snooze, whichever way it comes: a REST `PATCH`, a bulk close in
the web UI, a mail client moving the messages to Archive. When the snooze's time passes, the
conversation stays closed: the worker's wake-up finds nothing to reopen. SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.api.app import SESSION_COOKIE
from imapdesk.domain.conversations import snooze
from imapdesk.domain.sync.readback import apply_mail_changes
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    Conversation,
    ConversationStatus,
    FolderRole,
    ImapActionState,
    MessageLocation,
    PendingImapAction,
    utcnow,
)
from tests.support import factories as f
from tests.support.web import csrf, session_cookie

SNOOZE = timedelta(hours=4)
AFTER_THE_SNOOZE = SNOOZE + timedelta(hours=1)


@dataclass
class Snoozed:
    conversation: int
    message: int
    mailbox: int
    archive: int
    alice: int


@pytest.fixture
def snoozed(engine: Engine, agent_token: str) -> Snoozed:
    """Alice's (the API token's agent) snooze of an open conversation (one inbound message in
    INBOX), carried to the mailbox as the worker's write-back does: the message is in Pending
    now, and the outbox is drained."""
    with unit_of_work(engine) as s:
        alice = s.exec(select(Agent).where(col(Agent.email) == "alice@example.com")).one()
        box = f.mailbox(s)
        inbox = f.folder(s, box, "INBOX", watched=True)
        pending = f.folder(s, box, "Pending", role=FolderRole.pending, watched=True)
        archive = f.folder(s, box, "Archive", role=FolderRole.archive, watched=True)
        conversation = f.conversation(s, box, "Printer on fire")
        message = f.message(s, conversation)
        location = f.location(s, message, inbox, 1)
        assert conversation.id is not None and pending.id is not None
        snooze.snooze(s, conversation.id, utcnow() + SNOOZE, source=ActivitySource.web, agent=alice)
        location.folder_id = pending.id
        for action in s.exec(select(PendingImapAction)):
            action.state = ImapActionState.done
        ids = (conversation.id, message.id, box.id, archive.id, alice.id)
    with Session(engine) as s:
        c = s.get(Conversation, ids[0])
        assert c is not None and c.status == ConversationStatus.pending and c.snoozed_until
    return Snoozed(*[int(i or 0) for i in ids])


def stays_closed_after_the_snooze(engine: Engine, scene: Snoozed) -> None:
    """Closed with no snooze left, then still closed once the snooze's time has passed."""
    with Session(engine) as s:
        c = s.get(Conversation, scene.conversation)
        assert c is not None
        assert (c.status, c.snoozed_until) == (ConversationStatus.closed, None)
    with unit_of_work(engine) as s:
        assert snooze.wake_due(s, now=utcnow() + AFTER_THE_SNOOZE) == []
    assert snooze.wake_snoozed(engine, now=utcnow() + AFTER_THE_SNOOZE) == []
    with Session(engine) as s:
        c = s.get(Conversation, scene.conversation)
        assert c is not None and c.status == ConversationStatus.closed
        actions = s.exec(
            select(Activity.action)
            .where(col(Activity.conversation_id) == scene.conversation)
            .order_by(col(Activity.id))
        ).all()
        assert actions[-2:] == ["status", "unsnoozed"]


def test_a_rest_patch_ends_the_snooze(api: TestClient, engine: Engine, snoozed: Snoozed) -> None:
    r = api.patch(f"/api/v1/conversations/{snoozed.conversation}", json={"status": "closed"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "closed"
    stays_closed_after_the_snooze(engine, snoozed)


def test_a_bulk_close_ends_the_snooze(app: FastAPI, engine: Engine, snoozed: Snoozed) -> None:
    browser = TestClient(app, follow_redirects=False)
    browser.cookies.set(SESSION_COOKIE, session_cookie(app.state.settings, engine, snoozed.alice))
    r = browser.post(
        "/bulk",
        data={
            "action": "close",
            "ids": [snoozed.conversation],
            "back": "/",
            "csrf_token": csrf(browser, "/"),
        },
    )
    assert r.status_code == 303
    assert "Closed 1 conversation." in browser.get("/").text
    stays_closed_after_the_snooze(engine, snoozed)


def test_a_mail_client_ends_the_snooze(engine: Engine, snoozed: Snoozed) -> None:
    # a colleague's mail client moves the message from Pending to Archive; the worker's
    # read-sync records the new place and reads the change back
    with unit_of_work(engine) as s:
        location = s.exec(
            select(MessageLocation).where(col(MessageLocation.message_id) == snoozed.message)
        ).one()
        location.folder_id = snoozed.archive
        s.flush()
        changed = apply_mail_changes(s, snoozed.mailbox, [snoozed.message])
        assert changed == {snoozed.conversation}
    with Session(engine) as s:
        last = s.exec(select(Activity).order_by(col(Activity.id).desc())).first()
        assert last is not None and last.source == ActivitySource.imap
    stays_closed_after_the_snooze(engine, snoozed)
