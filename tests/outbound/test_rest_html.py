"""REST replies and drafts with the rich-text composer's HTML (issue 13, item 5): sanitised as
the web UI's is (a <script> is gone), sent with a plain-text alternative rendered from it,
delivered through the real aiosmtpd relay; an image attached in the same request and shown by
`cid:<file name>` goes as an inline part; a `cid:` that names nothing is refused (422, field
`html`) and nothing is queued. Both databases."""

from __future__ import annotations

import email
import email.policy
import struct
import zlib
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.api.app import create_app
from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Draft, OutboundMail, OutboundState
from imapdesk.kernel.settings import Settings
from tests.support.outbound import add_sending_mailbox, conversation_of, mail_from_customer
from tests.support.worker import running_worker, wait_for


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 2, 1, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" + b"\x00\x80\xff" * 2)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


PNG = _png()


@pytest.fixture
def api(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with unit_of_work(engine) as db:
        agent = create_agent(db, "alice@example.com", "Alice", "correct horse battery")
        agent.signature = "Alice\nExample Support"
        token = create_api_token(db, agent, name="tests")
    app = create_app(settings=settings, engine=engine)
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def _delivered(relay: LocalSmtpRelay, msgid: str) -> EmailMessage:
    def find() -> bytes | None:
        found = [a.data for a in relay.accepted if f"<{msgid}>".encode() in a.data]
        return found[0] if found else None

    raw = wait_for(find, what=f"<{msgid}> at the relay")
    assert raw is not None
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _sent(engine: Engine, outbound_id: int) -> None:
    def done() -> bool:
        with Session(engine) as db:
            row = db.get(OutboundMail, outbound_id)
            return row is not None and row.state == OutboundState.sent

    wait_for(done, what=f"outbound {outbound_id} sent")


def test_an_html_reply_is_sanitised_and_delivered_with_a_plain_alternative(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    running_relay: LocalSmtpRelay,
    api: TestClient,
) -> None:
    add_sending_mailbox(engine, settings, mail_account, running_relay)
    original = mail_from_customer(mailserver, customer, mail_account, "Order 42")
    with running_worker(settings, engine):
        cid = wait_for(lambda: conversation_of(engine, original), what="the conversation")
        url = f"/api/v1/conversations/{cid}/replies"
        # a cid: that no attached image has: refused, naming the field, nothing queued
        refused = api.post(url, json={"html": '<p>See <img src="cid:chart.png"></p>'})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["field"] == "html"
        assert "cid:chart.png" in refused.json()["error"]["message"]
        with Session(engine) as db:
            assert db.exec(select(OutboundMail)).all() == []

        answer = api.post(
            url,
            json={
                "html": '<p>It is <b>on its way</b>.<script>alert("x")</script></p>'
                '<p><a href="javascript:alert(1)">track</a> <img src="https://t.example/p.gif">'
                "</p>",
            },
        )
        assert answer.status_code == 202, answer.text
        sent = answer.json()
        _sent(engine, sent["id"])
        message = _delivered(running_relay, sent["message_id"])

        # with an attached image shown by its file name: an inline part, not an attachment
        with_image = api.post(
            url,
            data={"html": '<p>The chart:</p><p><img src="cid:chart.png" alt="chart"></p>'},
            files=[
                ("attachments", ("chart.png", PNG, "image/png")),
                ("attachments", ("notes.txt", b"plain notes", "text/plain")),
            ],
        )
        assert with_image.status_code == 202, with_image.text
        _sent(engine, with_image.json()["id"])
        pictured = _delivered(running_relay, with_image.json()["message_id"])

    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    text = plain.get_content()
    assert "It is on its way." in text
    assert "Alice\nExample Support" in text.replace("\r\n", "\n")  # the agent's signature
    markup = html.get_content()
    assert "<b>on its way</b>" in markup
    assert "script" not in markup and "alert" not in markup and "javascript" not in markup
    assert "t.example" not in markup  # a remote image loses its source
    assert "Example Support" in markup

    images = [p for p in pictured.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 1 and images[0].get_payload(decode=True) == PNG
    assert images[0].get_content_disposition() == "inline"
    content_id = images[0]["Content-ID"].strip("<>")
    pictured_html = pictured.get_body(preferencelist=("html",))
    assert pictured_html is not None
    assert f'src="cid:{content_id}"' in pictured_html.get_content()
    assert "cid:chart.png" not in pictured_html.get_content()
    files = [p.get_filename() for p in pictured.iter_attachments()]
    assert files == ["notes.txt"]


def test_a_draft_takes_html_sanitised_and_refuses_a_cid(
    engine: Engine, api: TestClient, conversation_id: int
) -> None:
    url = f"/api/v1/conversations/{conversation_id}/draft"
    refused = api.put(url, json={"html": '<p><img src="cid:logo"></p>'})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "html"
    foreign = api.put(url, json={"html": '<p><img src="/compose/images/999"></p>'})
    assert foreign.status_code == 422 and foreign.json()["error"]["field"] == "html"

    saved = api.put(url, json={"html": "<p>Hello <i>there</i><script>x()</script></p>"})
    assert saved.status_code == 200, saved.text
    draft = saved.json()
    assert draft["html"] == "<p>Hello <i>there</i></p>"
    assert draft["body"] == "Hello there"  # the text, rendered from it
    assert api.get(url).json()["html"] == "<p>Hello <i>there</i></p>"
    with Session(engine) as db:
        (row,) = db.exec(select(Draft)).all()
        assert row.html == "<p>Hello <i>there</i></p>"


def test_the_openapi_schema_documents_html(api: TestClient) -> None:
    schema = api.get("/api/v1/openapi.json").json()
    components = schema["components"]["schemas"]
    for model in ("DraftIn", "DraftPublic"):
        assert "html" in components[model]["properties"], model
    paths = schema["paths"]
    for path in ("/api/v1/conversations/{conversation_id}/replies", "/api/v1/conversations"):
        content = paths[path]["post"]["requestBody"]["content"]
        for kind in ("application/json", "multipart/form-data"):
            html = content[kind]["schema"]["properties"]["html"]
            assert "sanitised" in html["description"] and "cid:" in html["description"]
