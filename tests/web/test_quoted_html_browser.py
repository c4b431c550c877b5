"""The quoted history of an HTML reply in the real message frame (Chromium): collapsed behind
"Show quoted text", opened with a click and no script; a hostile mail that imitates or targets
the wrapper runs nothing. (SQLite; the route itself is the same on both databases.)"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import expect
from sqlalchemy import Engine

from imapdesk.api.app import SESSION_COOKIE
from imapdesk.api.web.conversation import MESSAGE_BODY_CSP, MESSAGE_FIT_STYLE
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Conversation
from imapdesk.kernel.settings import Settings
from imapdesk.mail.parsing import parse_message
from tests.support import factories as f
from tests.support.browser import LiveServer, signed_in_context
from tests.support.quoted_html import GMAIL
from tests.support.web import session_cookie

pytestmark = pytest.mark.browser

PWN = "window.top.name='pwned-{0}';parent.document.title='pwned-{0}'"
# a mail that tries to pass its own element for the wrapper, and to hook the real one
HOSTILE = f"""<p>Please check <b>the invoice</b>.</p>
<details class="quoted" open ontoggle="{PWN.format("toggle")}"><summary class="quoted"
 onclick="{PWN.format("summary")}">Show quoted text</summary>not a quote</details>
<div class="gmail_quote" onclick="{PWN.format("div")}"><div class="gmail_attr">On Mon, 3 Mar
 2025, Bob &lt;bob@example.org&gt; wrote:</div><blockquote class="gmail_quote"
 onmouseover="{PWN.format("hover")}"><details ontoggle="{PWN.format("inner")}" open>
<summary onclick="{PWN.format("inner-summary")}">more</summary>old invoice</details>
</blockquote></div>"""


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


def html_mail(html: str, subject: str = "Invoice") -> str:
    msgid = hashlib.sha1(html.encode()).hexdigest()
    raw = (
        "From: Anna <anna@customer.example>\r\nTo: support@example.com\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{msgid}@customer.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html
    ).encode()
    parsed = parse_message(raw)  # stored as the ingest stores it: sanitised
    assert parsed.html is not None
    return parsed.html


@pytest.fixture
def conversation(engine: Engine) -> dict[str, int]:
    with unit_of_work(engine) as s:
        conv = f.conversation(s, f.mailbox(s), "Router", minutes=1)
        gmail = f.message(s, conv, from_name="Anna", text="", html=html_mail(GMAIL))
        hostile = f.message(
            s, conv, minutes=1, from_name="Mallory", text="", html=html_mail(HOSTILE)
        )
        return {"id": conv.id or 0, "gmail": gmail.id or 0, "hostile": hostile.id or 0}


def test_the_quote_is_collapsed_in_the_frame_and_opens_on_click(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    conversation: dict[str, int],
) -> None:
    page = signed_in_context(new_context, live_server, settings, engine, agents["alice"]).new_page()
    page.goto(f"{live_server.url}/conversations/{conversation['id']}")
    title = page.title()
    frame = page.frame_locator(f"#message-{conversation['gmail']} iframe.html-body")
    expect(frame.locator("body")).to_contain_text("Thanks, that fixed it.")
    summary = frame.locator("details.quoted > summary")
    expect(summary).to_have_text("Show quoted text")
    expect(summary).to_be_visible()
    quoted = frame.get_by_text("Please restart the router.")
    expect(quoted).to_be_hidden()
    # styled like the text part's summary: muted, smaller, a pointer
    style = summary.evaluate(
        "s => { const c = getComputedStyle(s); return [c.color, c.cursor, c.fontSize] }"
    )
    assert style == ["rgb(101, 109, 118)", "pointer", "12.75px"]
    summary.click()
    expect(quoted).to_be_visible()
    expect(frame.get_by_text("The router is down.")).to_be_visible()
    summary.click()
    expect(quoted).to_be_hidden()

    # the hostile mail: its look-alike is plain content, and nothing it hooks runs
    hostile = page.frame_locator(f"#message-{conversation['hostile']} iframe.html-body")
    expect(hostile.locator("b")).to_have_text("the invoice")
    expect(hostile.locator("details.quoted")).to_have_count(1)
    expect(hostile.get_by_text("not a quote")).to_be_visible()
    real = hostile.locator("details.quoted > summary")
    real.hover()
    real.click()
    expect(hostile.get_by_text("old invoice")).to_be_visible()
    hostile.locator("details:not(.quoted) > summary").first.click()
    hostile.get_by_text("more").click()
    hostile.get_by_text("old invoice").hover()
    assert page.evaluate("window.name") == ""
    assert page.title() == title and "pwned" not in page.title()


def test_the_served_wrapper_carries_nothing_from_the_mail(
    app: FastAPI,
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    conversation: dict[str, int],
) -> None:
    client = TestClient(app)
    client.cookies.set(SESSION_COOKIE, session_cookie(settings, engine, agents["alice"]))
    base = f"/conversations/{conversation['id']}/messages"
    for images in ("", "?images=1"):
        body = client.get(f"{base}/{conversation['hostile']}/body{images}")
        assert body.status_code == 200
        if not images:
            assert body.headers["content-security-policy"] == MESSAGE_BODY_CSP
        text = body.text
        for hook in ("ontoggle", "onclick", "onmouseover", "pwned"):
            assert hook not in text, hook
        # "quoted" only on the wrapper made here; else only the clients' quote marks survive
        classes = re.findall(r'class="([^"]*)"', text)
        assert classes.count("quoted") == 1
        assert set(classes) <= {"quoted", "gmail_quote", "gmail_attr"}
        # the frame's fitting style first (phones), then the quote's own
        assert text.startswith(MESSAGE_FIT_STYLE) and text.count("<style>") == 2
        text = text.removeprefix(MESSAGE_FIT_STYLE)
        assert text.startswith("<style>")
        assert '<details class="quoted"><summary>Show quoted text</summary>' in text
    # a body without a quote is served as stored, after the fitting style only
    with unit_of_work(engine) as s:
        conv = s.get(Conversation, conversation["id"])
        assert conv is not None
        plain = f.message(s, conv, minutes=2, text="", html="<p>No quote here</p>")
    body = client.get(f"{base}/{plain.id}/body")
    assert body.text == MESSAGE_FIT_STYLE + "<p>No quote here</p>"
