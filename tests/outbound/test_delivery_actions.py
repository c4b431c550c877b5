"""Undo, discard and retry through the REST API without a mail server (what the worker then
does: test_delivery_state.py), on SQLite and PostgreSQL: each only in the states that allow
it, authorised like the conversation; taking back leaves the conversation as it was (a new
one goes with it); the default reply to a customer at an international domain; a non-ASCII
local part refused only where the mailbox's server is known not to offer SMTPUTF8; a merge
takes the outgoing mail along."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from imapdesk.domain.conversations.aggregates import merge_conversations
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Activity,
    Agent,
    Conversation,
    Direction,
    Mailbox,
    Message,
    OutboundMail,
    OutboundState,
    ThreadNode,
)
from tests.support import factories


def _set_state(engine: Engine, outbound_id: int, state: OutboundState, **values: object) -> None:
    with unit_of_work(engine) as db:
        db.execute(
            update(OutboundMail)
            .where(col(OutboundMail.id) == outbound_id)
            .values(state=state, **values)
        )


def _conversation(engine: Engine, cid: int) -> Conversation:
    with Session(engine) as db:
        found = db.get(Conversation, cid)
        assert found is not None
        return found


def test_take_back_and_retry_only_where_the_state_allows(
    clients: tuple[TestClient, TestClient], conversation_id: int, engine: Engine
) -> None:
    alice, bob = clients
    replies = f"/api/v1/conversations/{conversation_id}/replies"
    before = _conversation(engine, conversation_id)
    with unit_of_work(engine) as db:
        db.execute(update(Agent).where(col(Agent.email) == "alice@example.com").values(
            signature="Alice\nExample Support"
        ))  # fmt: skip
        db.execute(update(Agent).where(col(Agent.email) == "bob@example.com").values(
            all_mailboxes=False
        ))  # fmt: skip
    answer = alice.post(
        replies,
        json={"body": "Line one\n\nLine two", "cc": ['"Dave, D." <dave@customer.example>'],
              "undo_window": True},
    )  # fmt: skip
    assert answer.status_code == 202, answer.text
    scheduled = answer.json()
    assert scheduled["delivery"]["state"] == "scheduled"
    # Bob may not see the mailbox: as if it did not exist
    assert bob.post(f"/api/v1/outbound/{scheduled['id']}/cancel").status_code == 404
    assert alice.post("/api/v1/outbound/999999/cancel").status_code == 404
    # only what failed is sent again
    refused = alice.post(f"/api/v1/outbound/{scheduled['id']}/retry")
    assert refused.status_code == 409 and refused.json()["error"]["state"] == "scheduled"
    taken = alice.post(f"/api/v1/outbound/{scheduled['id']}/cancel")
    assert taken.status_code == 200, taken.text
    assert taken.json() == {
        "id": scheduled["id"],
        "conversation_id": conversation_id,
        "kind": "reply",
        "to": ['"Carol" <carol@customer.example>'],
        "cc": ['"Dave, D." <dave@customer.example>'],
        "body": "Line one\n\nLine two",
        "html": None,
    }
    after = _conversation(engine, conversation_id)
    # counted again from what is left: Carol's message alone
    assert (after.message_count, after.last_message_at) == (1, factories.BASE_TIME)
    assert after.version > before.version, "open pages see it go"
    with Session(engine) as db:
        assert db.get(OutboundMail, scheduled["id"]) is None
        assert db.get(Message, scheduled["message"]) is None
        assert (
            db.exec(
                select(ThreadNode).where(col(ThreadNode.msgid) == scheduled["message_id"])
            ).first()
            is None
        )
        taken_back = db.exec(select(Activity).where(col(Activity.action) == "taken_back")).one()
        assert taken_back.details["state"] == "scheduled"
    assert alice.post(f"/api/v1/outbound/{scheduled['id']}/cancel").status_code == 404

    # a reply being sent can no longer be taken back; one that failed can, or be retried
    second = alice.post(replies, json={"body": "Second"}).json()
    assert second["delivery"]["state"] == "queued"
    _set_state(engine, second["id"], OutboundState.sending)
    busy = alice.post(f"/api/v1/outbound/{second['id']}/cancel")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "delivery_state_conflict"
    _set_state(
        engine, second["id"], OutboundState.failed, attempts=1,
        last_error="550 5.1.1 no such user", smtp_response="550 5.1.1 no such user",
    )  # fmt: skip
    detail = alice.get(f"/api/v1/conversations/{conversation_id}").json()
    delivery = next(m["delivery"] for m in detail["messages"] if m["id"] == second["message"])
    assert delivery["state"] == "failed" and delivery["delivery"] == {
        "state": "failed",
        "last_error": "550 5.1.1 no such user",
        "smtp_response": "550 5.1.1 no such user",
        "attempts": 1,
        "not_before": None,
        "sent_at": None,
    }
    retried = alice.post(f"/api/v1/outbound/{second['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["delivery"] == {
        "state": "queued", "last_error": None, "smtp_response": None, "attempts": 0,
        "not_before": None, "sent_at": None,
    }  # fmt: skip
    _set_state(engine, second["id"], OutboundState.failed, last_error="554 refused")
    discarded = alice.post(f"/api/v1/outbound/{second['id']}/cancel")
    assert discarded.status_code == 200 and discarded.json()["body"] == "Second"

    # a bounce went out: it stays (retry, or a new reply)
    third = alice.post(replies, json={"body": "Third"}).json()
    with unit_of_work(engine) as db:
        db.execute(
            update(OutboundMail)
            .where(col(OutboundMail.id) == third["id"])
            .values(state=OutboundState.failed, sent_at=factories.BASE_TIME)
        )
    bounced = alice.post(f"/api/v1/outbound/{third['id']}/cancel")
    assert bounced.status_code == 409 and "undeliverable" in bounced.json()["error"]["message"]


def test_a_new_conversation_taken_back_is_gone(
    clients: tuple[TestClient, TestClient], conversation_id: int, engine: Engine
) -> None:
    alice, _ = clients
    answer = alice.post(
        "/api/v1/conversations",
        json={"mailbox": "support", "to": ["erin@customer.example"], "subject": "Hello",
              "body": "First words", "undo_window": True},
    )  # fmt: skip
    assert answer.status_code == 202, answer.text
    started = answer.json()
    assert started["delivery"]["state"] == "scheduled"
    taken = alice.post(f"/api/v1/outbound/{started['id']}/cancel")
    assert taken.status_code == 200, taken.text
    assert taken.json()["conversation_id"] is None and taken.json()["kind"] == "new"
    assert taken.json()["to"] == ["erin@customer.example"]
    assert alice.get(f"/api/v1/conversations/{started['conversation_id']}").status_code == 404
    with Session(engine) as db:
        assert db.get(Conversation, started["conversation_id"]) is None
        assert db.get(Conversation, conversation_id) is not None


def test_international_recipients(clients: tuple[TestClient, TestClient], engine: Engine) -> None:
    alice, _ = clients
    with unit_of_work(engine) as db:
        box = factories.mailbox(db, smtp_host="smtp.example.com", smtp_port=587)
        conv = factories.conversation(db, box, "Commande", customer_email="claire@exämple.fr")
        factories.message(
            db, conv, from_email="claire.dubois@exämple.fr", from_name="Claire",
            direction=Direction.inbound,
        )  # fmt: skip
        cid, box_id = conv.id, box.id
    replies = f"/api/v1/conversations/{cid}/replies"
    # the customer's own address, as their mail gave it: its domain in its IDNA form
    default = alice.post(replies, json={"body": "Bonjour"})
    assert default.status_code == 202, default.text
    assert default.json()["recipients"] == ["claire.dubois@xn--exmple-cua.fr"]
    # a non-ASCII local part: queued while nobody knows whether the server can take it...
    unknown = alice.post(replies, json={"body": "Hola", "to": ["José <jösé@example.test>"]})
    assert unknown.status_code == 202 and unknown.json()["recipients"] == ["jösé@example.test"]
    with unit_of_work(engine) as db:
        db.execute(update(Mailbox).where(col(Mailbox.id) == box_id).values(smtputf8=False))
    # ...refused once the server is known not to, before anything is queued
    with Session(engine) as db:
        count = len(db.exec(select(OutboundMail)).all())
    refused = alice.post(replies, json={"body": "Hola", "cc": ["jösé@example.test"]})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["field"] == "cc"
    assert error["message"] == (
        "jösé@example.test in cc cannot be sent: it has non-ASCII characters before the @, "
        "and the SMTP server of support does not offer SMTPUTF8, which such an address needs; "
        "write to another address"
    )
    with Session(engine) as db:
        assert len(db.exec(select(OutboundMail)).all()) == count
    # an international domain is fine whatever the server
    idn = alice.post(replies, json={"body": "Hi", "to": ["bob@bücher.example"]})
    assert idn.status_code == 202 and idn.json()["recipients"] == ["bob@xn--bcher-kva.example"]


def test_a_merge_takes_the_outgoing_mail_along(
    clients: tuple[TestClient, TestClient], conversation_id: int, engine: Engine
) -> None:
    alice, _ = clients
    reply = alice.post(
        f"/api/v1/conversations/{conversation_id}/replies", json={"body": "x"}
    ).json()
    with unit_of_work(engine) as db:
        loser = db.get(Conversation, conversation_id)
        assert loser is not None
        keep = factories.conversation(db, db.get(Mailbox, loser.mailbox_id), "Older")  # type: ignore[arg-type]
        merge_conversations(db, keep, [loser])
        keep_id = keep.id
    with Session(engine) as db:
        row = db.get(OutboundMail, reply["id"])
        assert row is not None and row.conversation_id == keep_id
