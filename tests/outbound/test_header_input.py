"""What cannot become a header is refused, never rewritten: a subject or display name with a line
break or control character, a recipient entry that is not exactly one address, an address past
the RFC's limits, all answered 422 with the field named and nothing queued (REST JSON and
multipart; the web composer in tests/web/test_composer_input.py). Text from stored mail that
no header can hold (a customer's subject, their name) is made writable instead, so answering
such mail still works. No mail server needed: what is queued is only sent by the worker."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import Conversation, Direction, Mailbox, Message, OutboundMail
from imapdesk.mail.compose import parse_recipient, recipient_entries
from tests.support import factories

HOSTILE_RECIPIENTS = {
    "crlf in the name": '"Bob\r\nBcc: x@evil.test" <bob@example.test>',
    "lf in the name": "Bob\nBcc: x@evil.test <bob@example.test>",
    "an address before another": "<evil@attacker.test> a@example.test",
    "a bare address after another": "a@example.test b@example.test",
    "two addresses": "a@example.test, b@example.test",
    "a group": "friends: a@example.test;",
    "an encoded crlf in the name": "=?utf-8?q?Bob=0D=0ABcc:_x@evil.test?= <bob@example.test>",
    "u+2028 in the name": "Bob\u2028Bcc: x@evil.test <bob@example.test>",
    "u+0085 in the name": "Bob\x85 <bob@example.test>",
    "nul in the name": "Bob\x00 <bob@example.test>",
    "a comment that would vanish": "bob@example.test (Bob, x@evil.test)",
    "text after the address": "Bob <bob@example.test> and more",
    "a name with a comma, unquoted": "Bob, <bob@example.test>",
    "no domain": "bob",
    "no local part": "@example.test",
    "a doubled @": "bob@@example.test",
    "a bad domain": "bob@-example.test",
    "a bad address literal": "bob@[300.1.1.1]",
    "a 100,000-character local part": "a" * 100_000 + "@example.test",
    "a 65-character local part": "a" * 65 + "@example.test",
    "a 259-character domain": "bob@" + ".".join(["a" * 51] * 5),
    "a 255-character address": "a" * 64 + "@" + ".".join(["b" * 63, "c" * 63, "d" * 62]),
    "a domain that is no IDN": "bob@☃.example",
    "an empty entry": "   ",
}

GOOD_RECIPIENTS = {
    "bob@example.test": "bob@example.test",
    "Bob <bob@example.test>": "Bob <bob@example.test>",
    "<bob@example.test>": "bob@example.test",
    '"Smith, Bob" <bob@example.test>': '"Smith, Bob" <bob@example.test>',
    "J. Smith <j@example.test>": '"J. Smith" <j@example.test>',
    "Émile <emile@customer.example>": "Émile <emile@customer.example>",
    "=?utf-8?q?=C3=89mile?= <emile@customer.example>": "Émile <emile@customer.example>",
    '"a b"@example.test': '"a b"@example.test',
    # an international domain in its IDNA form; a non-ASCII local part as it is (whether it can
    # be sent depends on the server: tests/outbound/test_delivery_state.py)
    "José <jose@exämple.test>": "José <jose@xn--exmple-cua.test>",
    "jösé@example.test": "jösé@example.test",
    "bob+tag@sub.example.test": "bob+tag@sub.example.test",
    "ops@[192.0.2.1]": "ops@[192.0.2.1]",
    "a" * 64 + "@example.test": "a" * 64 + "@example.test",
}


@pytest.mark.parametrize("entry", HOSTILE_RECIPIENTS.values(), ids=HOSTILE_RECIPIENTS.keys())
def test_a_recipient_that_is_not_exactly_one_address_is_refused(entry: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_recipient(entry, field="cc")
    assert refused.value.details["field"] == "cc"
    assert "cc" in refused.value.message


@pytest.mark.parametrize("entry", GOOD_RECIPIENTS, ids=GOOD_RECIPIENTS.keys())
def test_a_recipient_is_taken_as_written(entry: str) -> None:
    assert str(parse_recipient(entry, field="to")) == GOOD_RECIPIENTS[entry]


def test_a_typed_list_splits_between_entries_only() -> None:
    assert recipient_entries('"Smith, Bob" <bob@x.test>; a@b.test ,, "x\\"; y" <c@d.test>,') == [
        '"Smith, Bob" <bob@x.test>',
        "a@b.test",
        '"x\\"; y" <c@d.test>',
    ]


def _counts(engine: Engine) -> tuple[int, int, int]:
    with Session(engine) as db:
        return (
            db.exec(select(func.count()).select_from(OutboundMail)).one(),
            db.exec(select(func.count()).select_from(Message)).one(),
            db.exec(select(func.count()).select_from(Conversation)).one(),
        )


def _refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and error["field"] == field, error
    assert field in error["message"]


def _json(body: str) -> dict[str, Any]:
    """Raw JSON content (a lone surrogate cannot be encoded by the client's own JSON)."""
    return {"content": body.encode(), "headers": {"Content-Type": "application/json"}}


def _multipart(fields: dict[str, str], *files: tuple[str, bytes]) -> dict[str, Any]:
    """multipart/form-data: the fields, and files as attachments."""
    parts: list[tuple[str, Any]] = [(name, (None, value)) for name, value in fields.items()]
    parts += [("attachments", (name, data, "application/octet-stream")) for name, data in files]
    return {"files": parts}


def _raw_multipart(fields: dict[str, str], file: tuple[str, bytes]) -> dict[str, Any]:
    """multipart/form-data written by hand: a file name exactly as given (the test client
    would percent-encode control characters, a hostile client need not)."""
    boundary = "imapdesk-test-boundary"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    body += (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="attachments"; '
            f'filename="{file[0]}"\r\nContent-Type: application/pdf\r\n\r\n'
        ).encode()
        + file[1]
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    return {"content": body, "headers": {"Content-Type": content_type}}


def test_rest_refuses_what_cannot_become_a_header_and_queues_nothing(
    clients: tuple[TestClient, TestClient], conversation_id: int, engine: Engine
) -> None:
    alice, _ = clients
    reply = f"/api/v1/conversations/{conversation_id}/replies"
    note = f"/api/v1/conversations/{conversation_id}/notes"
    new = "/api/v1/conversations"
    start = {"mailbox": "support", "to": ["erin@customer.example"], "subject": "Hi", "body": "x"}
    form = {**start, "to": "erin@customer.example"}
    huge = HOSTILE_RECIPIENTS["a 100,000-character local part"]
    pdf = b"%PDF-1.4"
    cases: list[tuple[str, dict[str, Any], str]] = [
        (reply, {"json": {"body": "x", "to": [entry]}}, "to")
        for entry in HOSTILE_RECIPIENTS.values()
    ]
    cases += [
        (reply, {"json": {"body": "x", "cc": ["a@example.test, b@example.test"]}}, "cc"),
        (reply, {"json": {"body": "x", "kind": "forward", "to": [huge]}}, "to"),
        (new, {"json": {**start, "to": [huge]}}, "to"),
        (new, {"json": {**start, "cc": ["<evil@attacker.test> a@example.test"]}}, "cc"),
        (new, {"json": {**start, "to": ['"Bob\r\nBcc: x@evil.test" <bob@example.test>']}}, "to"),
    ]
    for subject in (
        "Hi\r\nBcc: x@evil.test",
        "Hi\nthere",
        "Hi\rthere",
        "Hi\x00there",
        "Hi\u2028there",
        "Hi\u2029there",
        "Hi\x85there",
        "Hi\x1b[31mthere",
        "Hi\x9bthere",
        "Hi\tthere",
        "x" * 999,
    ):
        cases.append((new, {"json": {**start, "subject": subject}}, "subject"))
    cases += [
        (reply, _json('{"body": "broken \\ud800 text"}'), "body"),
        (note, _json('{"body": "x", "html": "<p>\\udfff</p>"}'), "html"),
        (new, _multipart({**form, "subject": "Hi\r\nBcc: x@evil.test"}), "subject"),
        (new, _multipart({**form, "cc": "ann@example.test, <evil@a.test> b@c.test"}), "cc"),
        (
            reply,
            _multipart({"body": "x", "to": '"Smith, Bob" <bob@example.test>, a b@c.test'}),
            "to",
        ),
        (note, _raw_multipart({"body": "x"}, ("a\x00\x1b.pdf", pdf)), "attachments"),
        (note, _raw_multipart({"body": "x"}, ("a\u2028.pdf", pdf)), "attachments"),
        (reply, _multipart({"body": "x"}, ("a" * 300, pdf)), "attachments"),
    ]
    before = _counts(engine)
    for path, request, field in cases:
        _refused(alice.post(path, **request), field)
    assert _counts(engine) == before


def test_a_quoted_name_with_a_comma_is_one_recipient_in_a_form(
    clients: tuple[TestClient, TestClient], conversation_id: int, engine: Engine
) -> None:
    alice, _ = clients
    r = alice.post(
        f"/api/v1/conversations/{conversation_id}/replies",
        data={
            "body": "See attached",
            "kind": "forward",
            "to": '"Smith, Bob" <bob@example.test>; dave@example.test',
            "cc": "J. Smith <j@example.test>",
        },
        files=[("attachments", ("plan.pdf", b"%PDF-1.4", 'application/pdf"; name="x.exe'))],
    )
    assert r.status_code == 202, r.text
    assert r.json()["recipients"] == ["bob@example.test", "dave@example.test", "j@example.test"]
    with Session(engine) as db:
        raw = db.exec(select(OutboundMail)).one().raw
    sent = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(sent, EmailMessage)
    assert [(a.display_name, a.addr_spec) for a in sent["To"].addresses] == [
        ("Smith, Bob", "bob@example.test"),
        ("", "dave@example.test"),
    ]
    assert [(a.display_name, a.addr_spec) for a in sent["Cc"].addresses] == [
        ("J. Smith", "j@example.test")
    ]
    # a client's content type that is not one is only a hint: the name's type stands instead
    attachment = next(a for a in sent.iter_attachments() if a.get_filename() == "plan.pdf")
    assert attachment["Content-Type"].content_type == "application/pdf"
    assert attachment["Content-Type"].params == {}


def test_text_from_stored_mail_that_no_header_can_hold_is_made_writable(
    clients: tuple[TestClient, TestClient], conversation_id: int, engine: Engine
) -> None:
    """A customer's subject and name, as their mail had them (decoded encoded-words can hold
    any character), do not stop an answer, nor become a header of their own."""
    alice, _ = clients
    with unit_of_work(engine) as db:
        first = db.get(Conversation, conversation_id)
        box = db.get(Mailbox, first.mailbox_id if first else 0)
        assert box is not None
        conv = factories.conversation(db, box, "Broken\u2028printer\x85again\x1b")
        factories.message(
            db,
            conv,
            subject="Broken\u2028printer\x85again\x1b",
            from_email="carol@customer.example",
            from_name="Carol\r\nBcc: x@evil.test",
            cc=[{"email": "dave@customer.example", "name": "Dave\u2029Bcc: y@evil.test"}],
            direction=Direction.inbound,
        )
        other = conv.id
    url = f"/api/v1/conversations/{other}"
    reply = alice.post(f"{url}/replies", json={"body": "On it", "kind": "reply_all"})
    assert reply.status_code == 202, reply.text
    note = alice.post(f"{url}/notes", json={"body": "Called her"})
    assert note.status_code == 201, note.text
    with Session(engine) as db:
        rows = {
            o.kind: o
            for o in db.exec(select(OutboundMail).where(col(OutboundMail.conversation_id) == other))
        }
    sent = email.message_from_bytes(rows["reply_all"].raw, policy=email.policy.default)
    assert sent["Subject"] == f"Re: Broken printer again [#{other}]"
    assert [(a.display_name, a.addr_spec) for a in sent["To"].addresses] == [
        ("Carol Bcc: x@evil.test", "carol@customer.example")
    ]
    assert [(a.display_name, a.addr_spec) for a in sent["Cc"].addresses] == [
        ("Dave Bcc: y@evil.test", "dave@customer.example")
    ]
    assert sent["Bcc"] is None
    assert rows["reply_all"].recipients == ["carol@customer.example", "dave@customer.example"]
    filed = email.message_from_bytes(rows["note"].raw, policy=email.policy.default)
    assert filed["Subject"] == f"Note: Broken printer again [#{other}]"
