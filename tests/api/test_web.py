"""The web UI: sign-in with CSRF, the conversation list and a conversation page."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import select

from imapdesk.api.web.conversation import MESSAGE_BODY_CSP
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent, ConversationStatus
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.web import PASSWORD, Page, csrf, sign_in


@pytest.fixture
def browser(app: FastAPI) -> TestClient:
    return TestClient(app, follow_redirects=False)


@pytest.fixture
def listed(engine: Engine, agent_token: str) -> list[int]:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "support")
        a = f.conversation(
            s, box, "Printer <script>alert(1)</script>", minutes=5, message_count=3,
            customer_email="carol@customer.example", customer_name="Carol", tags=("vip",),
        )  # fmt: skip
        b = f.conversation(s, box, "Invoice", minutes=9, status=ConversationStatus.pending)
        f.conversation(s, box, "Binned", minutes=7, status=ConversationStatus.deleted)
    return [int(b.id or 0), int(a.id or 0)]


def test_pages_redirect_to_login_before_sign_in(browser: TestClient, listed: list[int]) -> None:
    r = browser.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2F"
    r = browser.get(f"/conversations/{listed[0]}?x=1")
    assert r.headers["location"] == f"/login?next=%2Fconversations%2F{listed[0]}%3Fx%3D1"


def test_login_page_has_a_form_with_a_csrf_token(browser: TestClient) -> None:
    r = browser.get("/login?next=/conversations/3")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = Page(r.text)
    assert set(page.inputs) == {"csrf_token", "next", "email", "password"}
    assert page.inputs["next"] == "/conversations/3"
    cookie = r.headers["set-cookie"].lower()
    assert "imapdesk_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie


def test_login_without_or_with_a_wrong_csrf_token_is_refused(
    browser: TestClient, agent_token: str
) -> None:
    good = {"email": "alice@example.com", "password": PASSWORD}
    assert browser.post("/login", data=good).status_code == 403
    csrf(browser)
    assert browser.post("/login", data=good | {"csrf_token": "forged"}).status_code == 403
    assert browser.get("/").status_code == 303


def test_a_csrf_token_from_another_session_is_refused(app: FastAPI, agent_token: str) -> None:
    other = TestClient(app)
    stolen = csrf(other)
    victim = TestClient(app, follow_redirects=False)
    victim.get("/login")
    r = victim.post(
        "/login",
        data={"email": "alice@example.com", "password": PASSWORD, "csrf_token": stolen},
    )
    assert r.status_code == 403


def test_wrong_password_is_rejected(browser: TestClient, agent_token: str) -> None:
    for email, password in (("alice@example.com", "nope"), ("who@example.com", PASSWORD)):
        r = browser.post(
            "/login",
            data={"email": email, "password": password, "csrf_token": csrf(browser)},
        )
        assert r.status_code == 400
        assert "Wrong email or password." in Page(r.text).all_text
    assert browser.get("/").status_code == 303


def test_inactive_agent_cannot_sign_in_and_is_signed_out(
    browser: TestClient, engine: Engine, agent_token: str
) -> None:
    sign_in(browser)
    assert browser.get("/").status_code == 200
    with unit_of_work(engine) as s:
        agent = s.exec(select(Agent)).one()
        agent.is_active = False
        s.add(agent)
    assert browser.get("/").status_code == 303
    r = browser.post(
        "/login",
        data={"email": "alice@example.com", "password": PASSWORD, "csrf_token": csrf(browser)},
    )
    assert r.status_code == 400


def test_conversation_list_after_sign_in(browser: TestClient, listed: list[int]) -> None:
    sign_in(browser)
    r = browser.get("/")
    assert r.status_code == 200
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = Page(r.text)
    assert page.row_ids == listed
    text = page.all_text
    for expected in ("Invoice", "Carol", "support", "pending", "2024-05-01 09:05", "vip"):
        assert expected in text
    # the subject is shown, not run
    assert "<script>alert(1)</script>" in text and "<script>" not in r.text
    assert f"http://testserver/conversations/{listed[1]}" in page.links
    assert Page(browser.get("/?status=pending").text).row_ids == [listed[0]]
    assert Page(browser.get("/?q=printer&status=&mailbox=").text).row_ids == [listed[1]]


def test_conversation_list_pages(browser: TestClient, engine: Engine, agent_token: str) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        for i in range(55):
            f.conversation(s, box, f"c{i}", minutes=i)
    sign_in(browser)
    first = Page(browser.get("/").text)
    assert len(first.row_ids) == 50
    older = [link for link in first.links if "cursor=" in link]
    assert len(older) == 1
    second = Page(browser.get(older[0]).text)
    assert len(second.row_ids) == 5 and not set(second.row_ids) & set(first.row_ids)


def test_login_redirects_to_next_only_on_this_site(browser: TestClient, agent_token: str) -> None:
    r = browser.post(
        "/login",
        data={
            "email": "alice@example.com",
            "password": PASSWORD,
            "csrf_token": csrf(browser),
            "next": "//evil.example/",
        },
    )
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_logout_needs_the_csrf_token(browser: TestClient, agent_token: str) -> None:
    sign_in(browser)
    assert browser.post("/logout").status_code == 403
    assert browser.get("/").status_code == 200
    token = csrf(browser, "/")
    r = browser.post("/logout", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert browser.get("/").status_code == 303


def test_conversation_page_and_sandboxed_html_body(
    browser: TestClient, engine: Engine, settings: Settings, agent_token: str
) -> None:
    with unit_of_work(engine) as s:
        conv = f.conversation(s, f.mailbox(s), "Printer", minutes=3)
        plain = f.message(s, conv, from_email="carol@customer.example", text="It burns.")
        rich = f.message(
            s, conv, minutes=1, text="", html="<p style='color:red'>Formatted</p>",
            from_name="Support",
        )  # fmt: skip
        att = f.attachment(s, plain, settings.data_dir, b"file body", filename="notes.txt")
        merged = f.conversation(s, f.mailbox(s, "b"), "dup", merged_into_id=conv.id)
    sign_in(browser)
    r = browser.get(f"/conversations/{conv.id}")
    assert r.status_code == 200
    page = Page(r.text)
    assert "It burns." in page.all_text and "Formatted</p>" not in r.text
    assert len(page.iframes) == 1
    frame = page.iframes[0]
    # a bare `sandbox`: every restriction, no exceptions
    assert "sandbox" in frame and not frame["sandbox"] and "srcdoc" not in frame
    body_url = f"http://testserver/conversations/{conv.id}/messages/{rich.id}/body"
    assert frame["src"] == body_url
    body = browser.get(body_url)
    assert body.status_code == 200
    # the sanitised mail, after the stylesheet that fits it to the frame's width (phones)
    assert body.text.endswith("<p style='color:red'>Formatted</p>")
    assert body.text.startswith('<meta name="viewport"') and "<script" not in body.text
    assert body.headers["content-security-policy"] == MESSAGE_BODY_CSP
    assert body.headers["x-frame-options"] == "SAMEORIGIN"
    assert browser.get(f"/conversations/{conv.id}/messages/{plain.id}/body").status_code == 404

    download = browser.get(f"/attachments/{att.id}")
    assert download.status_code == 200 and download.content == b"file body"
    assert download.headers["content-disposition"].startswith("attachment;")

    r = browser.get(f"/conversations/{merged.id}")
    assert r.status_code == 303 and r.headers["location"] == f"/conversations/{conv.id}"
    missing = browser.get("/conversations/999999")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
