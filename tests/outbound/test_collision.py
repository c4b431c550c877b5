"""Traffic Cop: a reply or note sent against an older version of the conversation is stopped
(409 with what is newer) unless the agent confirms; plus the REST contract of replies and notes
(validation, multipart attachments, a new outbound conversation). No mail server needed: what
is queued is only sent by the worker."""

from __future__ import annotations

import email
import email.policy

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.kernel.models import (
    ConversationStatus,
    Direction,
    Message,
    OutboundMail,
)


def test_second_reply_to_the_same_version_gets_409(
    clients: tuple[TestClient, TestClient], conversation_id: int, engine: Engine
) -> None:
    alice, bob = clients
    url = f"/api/v1/conversations/{conversation_id}"
    version = alice.get(url).json()["version"]
    assert bob.get(url).json()["version"] == version
    first = alice.post(f"{url}/replies", json={"body": "On it!", "version": version})
    assert first.status_code == 202, first.text
    second = bob.post(f"{url}/replies", json={"body": "Me too", "version": version})
    assert second.status_code == 409, second.text
    error = second.json()["error"]
    assert error["code"] == "version_conflict"
    assert error["current_version"] > version
    assert [m["message_id"] for m in error["newer"]] == [first.json()["message_id"]]
    assert error["newer"][0]["direction"] == "outbound"
    # a note is newer too, and stops a reply the same way
    note = alice.post(f"{url}/notes", json={"body": "Customer is VIP"})
    assert note.status_code == 201, note.text
    third = bob.post(f"{url}/replies", json={"body": "Me too", "version": error["current_version"]})
    assert third.status_code == 409
    assert [m["direction"] for m in third.json()["error"]["newer"]] == ["note"]
    # a change that adds no message (a tag) does not stop anyone
    latest = bob.get(url).json()["version"]
    assert bob.patch(url, json={"tags": ["printer"]}).status_code == 200
    assert bob.post(f"{url}/notes", json={"body": "checked", "version": latest}).status_code == 201
    # confirmed: sent anyway
    forced = bob.post(f"{url}/replies", json={"body": "Me too", "version": version, "force": True})
    assert forced.status_code == 202
    with Session(engine) as db:
        assert len(db.exec(select(OutboundMail).where(col(OutboundMail.kind) != "note")).all()) == 2


def test_reply_all_forward_multipart_and_new_conversation(
    clients: tuple[TestClient, TestClient], conversation_id: int, engine: Engine
) -> None:
    alice, _ = clients
    url = f"/api/v1/conversations/{conversation_id}"
    bad = alice.post(f"{url}/replies", json={"body": "x", "kind": "shout"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "kind"
    answer = alice.post(
        f"{url}/replies",
        data={
            "body": "Manual attached",
            "kind": "reply_all",
            "html": "<p>Manual <b>attached</b></p>",
        },
        files=[("attachments", ("manual €.pdf", b"%PDF-1.4 fake", "application/pdf"))],
    )
    assert answer.status_code == 202, answer.text
    forward = alice.post(
        f"{url}/replies", json={"body": "FYI", "kind": "forward", "to": ["vendor@parts.example"]}
    )
    assert forward.status_code == 202, forward.text
    new = alice.post(
        "/api/v1/conversations",
        json={
            "mailbox": "support",
            "to": ["Émile <emile@customer.example>"],
            "subject": "Ihre Rückfrage",
            "body": "Hallo",
        },
    )
    assert new.status_code == 202, new.text
    with Session(engine) as db:
        rows = {o.kind: o for o in db.exec(select(OutboundMail))}
    reply_all = email.message_from_bytes(rows["reply_all"].raw, policy=email.policy.default)
    assert reply_all["To"].addresses[0].addr_spec == "carol@customer.example"
    assert [a.addr_spec for a in reply_all["Cc"].addresses] == ["dave@customer.example"]
    assert reply_all["References"].split() == ["<root@customer.example>", "<q1@customer.example>"]
    assert reply_all["Subject"] == f"Re: Broken printer [#{conversation_id}]"
    assert reply_all.get_content_type() == "multipart/mixed"
    parts = [p.get_content_type() for p in reply_all.walk()]
    assert "multipart/alternative" in parts and "text/html" in parts
    attachment = next(reply_all.iter_attachments())
    assert attachment.get_filename() == "manual €.pdf"
    assert attachment.get_content() == b"%PDF-1.4 fake"
    assert sorted(rows["reply_all"].recipients) == [
        "carol@customer.example",
        "dave@customer.example",
    ]
    fwd = email.message_from_bytes(rows["forward"].raw, policy=email.policy.default)
    assert fwd["Subject"] == f"Fwd: Broken printer [#{conversation_id}]"
    assert fwd["In-Reply-To"] is None and "<q1@customer.example>" in fwd["References"]
    assert any(p.get_content_type() == "message/rfc822" for p in fwd.walk())
    assert rows["forward"].recipients == ["vendor@parts.example"]
    started = email.message_from_bytes(rows["new"].raw, policy=email.policy.default)
    cid = rows["new"].conversation_id
    assert started["Subject"] == f"Ihre Rückfrage [#{cid}]"
    assert all(b < 0x80 for b in rows["new"].raw.split(b"\r\n\r\n", 1)[0])
    with Session(engine) as db:
        msg = db.exec(select(Message).where(col(Message.conversation_id) == cid)).one()
        assert msg.direction == Direction.outbound
    detail = alice.get(f"/api/v1/conversations/{cid}").json()
    assert detail["customer"]["email"] == "emile@customer.example"
    assert detail["status"] == ConversationStatus.open
    assert detail["messages"][0]["delivery"]["state"] == "queued"
