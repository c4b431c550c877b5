"""How the composer opens, each agent's choice on /account (issue 13, item 5), over HTTP on
SQLite and PostgreSQL: rich text by default (the form says so to rich_editor.js), plain text
once chosen; anything else refused; the text area is in the page either way (what a browser
without script posts). (In Chromium: test_composer_browser.py.)"""

from __future__ import annotations

import re

from fastapi import FastAPI
from sqlalchemy import Engine, update
from sqlmodel import Session, col

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent
from tests.web.test_account import account_form, flash_of
from tests.web.test_reading import signed_in, unread_conversation


def _start(html: str) -> str:
    found = re.search(r'<form[^>]*data-composer[^>]*data-start="(\w+)"', html, re.S)
    assert found is not None
    return found.group(1)


def _plain(engine: Engine, agent_id: int) -> bool:
    with Session(engine) as db:
        agent = db.get(Agent, agent_id)
        assert agent is not None
        return agent.composer_plain_text


def test_the_composer_opens_rich_unless_the_agent_chose_plain_text(
    app: FastAPI, engine: Engine, agents: dict[str, int]
) -> None:
    with unit_of_work(engine) as db:  # the default of a new agent
        db.execute(update(Agent).values(composer_plain_text=False))
    cid, _ = unread_conversation(engine)
    bob, _ = signed_in(app, agents["bob"])
    page = bob.get(f"/conversations/{cid}").text
    assert _start(page) == "rich"
    assert re.search(r'<textarea name="body"[^>]*required', page)  # without script: this
    account = bob.get("/account").text
    assert re.search(r'name="composer" value="rich" checked', account)

    saved = bob.post("/account", data=account_form(bob, composer="plain"))
    assert saved.status_code == 303
    assert flash_of(bob) == "Your account is saved."
    assert _plain(engine, agents["bob"]) is True
    assert _start(bob.get(f"/conversations/{cid}").text) == "plain"
    assert re.search(r'name="composer" value="plain" checked', bob.get("/account").text)
    # the other agent's stays as it was
    assert _plain(engine, agents["alice"]) is False

    refused = bob.post("/account", data=account_form(bob, composer="fancy"))
    assert refused.status_code == 303
    assert "rich text or plain text" in flash_of(bob)
    assert _plain(engine, agents["bob"]) is True

    bob.post("/account", data=account_form(bob, composer="rich"))
    assert _plain(engine, agents["bob"]) is False
    # without a CSRF token nothing changes
    form = account_form(bob, composer="plain") | {"csrf_token": "forged"}
    assert bob.post("/account", data=form).status_code in (400, 403)
    assert _plain(engine, agents["bob"]) is False


def test_the_new_conversation_page_opens_as_the_agent_chose(
    app: FastAPI, engine: Engine, agents: dict[str, int]
) -> None:
    unread_conversation(engine)  # a mailbox that can send
    with unit_of_work(engine) as db:
        db.execute(
            update(Agent).where(col(Agent.id) == agents["bob"]).values(composer_plain_text=True)
        )
    bob, _ = signed_in(app, agents["bob"])
    page = bob.get("/new-conversation").text
    found = re.search(r'<form[^>]*data-new-conversation[^>]*data-start="(\w+)"', page, re.S)
    assert found is not None and found.group(1) == "plain"
