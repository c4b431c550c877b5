"""Queuing through the REST API wakes the mailbox's sender once the request's transaction has
committed, with no call from the API to the worker (`imapdesk.kernel.wakeups`); a request that
queues nothing wakes nothing, and another mailbox's sender sleeps on. Both databases."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.kernel import wakeups
from imapdesk.kernel.models import Conversation

# bounds the wait for a wake-up that the commit has already given
_WAKE_WITHIN = 5.0


@pytest.fixture
def mailbox_id(engine: Engine, conversation_id: int) -> int:
    with Session(engine) as db:
        conversation = db.get(Conversation, conversation_id)
        assert conversation is not None
        return conversation.mailbox_id


@pytest.fixture
def sender_wake(mailbox_id: int) -> Iterator[threading.Event]:
    """The event a sender of this mailbox waits on."""
    wake = wakeups.register(wakeups.Loop.SENDER, mailbox_id)
    yield wake
    wakeups.unregister(wakeups.Loop.SENDER, mailbox_id, wake)


@pytest.fixture
def other_sender_wake(mailbox_id: int) -> Iterator[threading.Event]:
    """The event of a sender of another mailbox."""
    other = mailbox_id + 1
    wake = wakeups.register(wakeups.Loop.SENDER, other)
    yield wake
    wakeups.unregister(wakeups.Loop.SENDER, other, wake)


def test_queuing_through_rest_wakes_the_sender_after_the_commit(
    clients: tuple[TestClient, TestClient],
    conversation_id: int,
    sender_wake: threading.Event,
    other_sender_wake: threading.Event,
) -> None:
    alice, _ = clients
    url = f"/api/v1/conversations/{conversation_id}"
    version = alice.get(url).json()["version"]

    reply = alice.post(f"{url}/replies", json={"body": "On it!", "version": version})
    assert reply.status_code == 202, reply.text
    assert sender_wake.wait(_WAKE_WITHIN), "the reply's commit woke the sender"

    # refused (newer messages since `version`): nothing was queued, nothing wakes
    sender_wake.clear()
    stale = alice.post(f"{url}/replies", json={"body": "Again", "version": version})
    assert stale.status_code == 409, stale.text
    assert not sender_wake.is_set()

    # a note (the sender files it in Notes) and a new conversation wake it the same way
    note = alice.post(f"{url}/notes", json={"body": "Customer is VIP"})
    assert note.status_code == 201, note.text
    assert sender_wake.wait(_WAKE_WITHIN), "the note's commit woke the sender"
    sender_wake.clear()
    started = alice.post(
        "/api/v1/conversations",
        json={"mailbox": "support", "to": ["erin@customer.example"], "subject": "Hi", "body": "x"},
    )
    assert started.status_code == 202, started.text
    assert sender_wake.wait(_WAKE_WITHIN), "the new conversation's commit woke the sender"

    assert not other_sender_wake.is_set(), "another mailbox's sender was not woken"
