"""The web composer refuses what cannot become a header as the REST API does (the rules are the
reply service's): 422 naming the field, as JSON for the page's script (which shows it in the
page) and as an error page without script, nothing queued; on SQLite and PostgreSQL. In
Chromium: tests/web/test_composer_input_browser.py."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Message, OutboundMail
from tests.support import factories as f
from tests.web.test_conversation import FETCH, signed_in


@pytest.fixture
def conversation_id(engine: Engine) -> int:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, smtp_host="smtp.example.com", smtp_port=587)
        conv = f.conversation(s, box, "Printer", customer_email="carol@customer.example")
        f.message(s, conv, from_email="carol@customer.example", from_name="Carol", text="Help")
        assert conv.id is not None
        return conv.id


def _queued(engine: Engine) -> tuple[int, int]:
    with Session(engine) as s:
        return (
            s.exec(select(func.count()).select_from(OutboundMail)).one(),
            s.exec(select(func.count()).select_from(Message)).one(),
        )


def test_composer_refuses_recipients_that_are_not_one_address(
    app: FastAPI, engine: Engine, agents: dict[str, int], conversation_id: int
) -> None:
    browser, token = signed_in(app, agents["alice"])
    url = f"/conversations/{conversation_id}/compose"
    before = _queued(engine)
    for field, value in (
        ("to", '"Bob\r\nBcc: x@evil.test" <bob@example.test>'),
        ("to", "<evil@attacker.test> a@example.test"),
        ("cc", "ann@example.test, a@example.test b@example.test"),
        ("to", "a" * 100 + "@example.test"),
        ("cc", "Bob\u2028 <bob@example.test>"),
    ):
        form = {"csrf_token": token, "kind": "forward", "body": "FYI", "to": "x@example.test"}
        form[field] = value
        r = browser.post(url, data=form, headers=FETCH)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_input" and field in error["message"], error
        page = browser.post(url, data=form)
        assert page.status_code == 422 and "text/html" in page.headers["content-type"]
        assert "is not one email address" in page.text or "control character" in page.text
    assert _queued(engine) == before
    # one entry per address; a quoted name may hold a comma
    r = browser.post(
        url,
        data={
            "csrf_token": token, "kind": "forward", "body": "FYI",
            "to": '"Smith, Bob" <bob@example.test>; dave@example.test',
        },
        headers=FETCH,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    with Session(engine) as s:
        assert s.exec(select(OutboundMail)).one().recipients == [
            "bob@example.test",
            "dave@example.test",
        ]
