"""Customers in the web UI and the REST API, on both databases: the conversation page's
sidebar, the customer's page and the list show only what the agent's mailboxes hold (no
conversation, count or date of a hidden mailbox), a customer only in hidden mailboxes does not
exist for the agent, and a note is saved only with the CSRF token, by an agent who may see the
customer, over the note it was shown."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.accounts import access
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.domain.customers.directory import keep_in_step
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Customer, CustomerNoteEdit
from tests.support import factories as f
from tests.support.web import PASSWORD, Page, csrf

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


@dataclass
class Scene:
    ola: int  # in support (two) and billing (one, the newest)
    kim: int  # in billing only
    printer: int
    invoice: int
    salary: int
    refund: int
    bob_token: str
    admin_token: str


@pytest.fixture
def scene(engine: Engine) -> Scene:
    """Bob works in support only; the admin everywhere."""
    with unit_of_work(engine) as s:
        support, billing = f.mailbox(s, "support"), f.mailbox(s, "billing")
        admin = create_agent(s, "admin@example.com", "Admin", PASSWORD, is_admin=True)
        bob = create_agent(s, "bob@example.com", "Bob", PASSWORD)
        access.set_mailbox_access(s, bob, all_mailboxes=False, mailbox_ids=[support.id or 0])
        ola = {"customer_email": "ola@nordvik.example", "customer_name": "Ola Nordmann"}
        printer = f.conversation(s, support, "Printer on fire", minutes=10, **ola)
        invoice = f.conversation(s, support, "Invoice copy", minutes=5, **ola)
        salary = f.conversation(s, billing, "Salary question", minutes=60, **ola)
        refund = f.conversation(
            s, billing, "Refund please", minutes=30, customer_email="kim@gmail.com"
        )
        ids = [c.id or 0 for c in (printer, invoice, salary, refund)]
        keep_in_step(s.connection(), ids)
        customers = {c.email: c.id or 0 for c in s.exec(select(Customer))}
        return Scene(
            ola=customers["ola@nordvik.example"],
            kim=customers["kim@gmail.com"],
            printer=ids[0],
            invoice=ids[1],
            salary=ids[2],
            refund=ids[3],
            bob_token=create_api_token(s, bob),
            admin_token=create_api_token(s, admin),
        )


def browser_for(app: FastAPI, email: str) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    r = client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf(client)}
    )
    assert r.status_code == 303, r.text
    return client


def sidebar(page_html: str) -> Page:
    start = page_html.index('id="conv-customer"')
    return Page(page_html[start : page_html.index("</aside>", start)])


def test_the_sidebar_shows_the_customer_and_only_their_conversations_the_agent_may_see(
    app: FastAPI, scene: Scene
) -> None:
    bob = browser_for(app, "bob@example.com")
    side = sidebar(bob.get(f"/conversations/{scene.printer}").text)
    text = side.all_text
    assert "Ola Nordmann" in text and "ola@nordvik.example" in text
    assert "Organisation: nordvik.example" in text
    assert "Other conversations (1)" in text
    assert f"/conversations/{scene.invoice}" in " ".join(side.links)
    assert f"/customers/{scene.ola}" in " ".join(side.links)
    assert "/?q=from%3Aola%40nordvik.example" in " ".join(side.links)
    # nothing of billing: not its subject, its link, its count or its mailbox
    assert "Salary question" not in text and "billing" not in text
    assert f"/conversations/{scene.salary}" not in " ".join(side.links)
    assert "(2)" not in text

    admin = browser_for(app, "admin@example.com")
    side = sidebar(admin.get(f"/conversations/{scene.printer}").text)
    assert "Other conversations (2)" in side.all_text
    links = " ".join(side.links)
    assert f"/conversations/{scene.salary}" in links and f"/conversations/{scene.invoice}" in links
    # a free-mail address names no organisation
    side = sidebar(admin.get(f"/conversations/{scene.refund}").text)
    assert "kim@gmail.com" in side.all_text and "Organisation" not in side.all_text
    assert "None that you can see." in side.all_text


def test_the_customer_page_and_list_follow_the_agents_mailboxes(app: FastAPI, scene: Scene) -> None:
    bob = browser_for(app, "bob@example.com")
    page = Page(bob.get(f"/customers/{scene.ola}").text)
    assert page.row_ids == [scene.printer, scene.invoice]
    assert "Conversations (2)" in page.all_text and "Salary" not in page.all_text
    hidden = bob.get(f"/customers/{scene.kim}")
    assert hidden.status_code == 404 and "kim@gmail.com" not in hidden.text
    assert bob.get("/customers/999999").status_code == 404
    listed = Page(bob.get("/customers").text)
    assert listed.row_ids == [scene.ola]
    # the count and the latest date are support's (billing's conversation is the newest)
    assert "2024-05-01 09:10" in listed.all_text and "10:00" not in listed.all_text
    assert Page(bob.get("/customers", params={"q": "kim"}).text).row_ids == []
    assert Page(bob.get("/customers", params={"q": "NORDMANN ola"}).text).row_ids == [scene.ola]
    assert Page(bob.get("/customers", params={"q": "Nordvik.EXAMPLE"}).text).row_ids == [scene.ola]
    assert Page(bob.get("/customers", params={"q": "%"}).text).row_ids == []

    admin = browser_for(app, "admin@example.com")
    assert Page(admin.get(f"/customers/{scene.ola}").text).row_ids == [
        scene.salary,
        scene.printer,
        scene.invoice,
    ]
    assert admin.get(f"/customers/{scene.kim}").status_code == 200
    assert Page(admin.get("/customers").text).row_ids == [scene.kim, scene.ola]
    assert Page(admin.get("/customers", params={"q": "gmail"}).text).row_ids == [scene.kim]


def note_of(engine: Engine, customer_id: int) -> tuple[str, int]:
    with Session(engine) as s:
        customer = s.get(Customer, customer_id)
        assert customer is not None
        return customer.note, customer.note_version


def test_a_note_needs_the_csrf_token_and_a_customer_the_agent_may_see(
    app: FastAPI, engine: Engine, scene: Scene
) -> None:
    bob = browser_for(app, "bob@example.com")
    path = f"/customers/{scene.ola}/note"
    for token in ("", "forged-token-forged-token-forged-token"):
        r = bob.post(path, data={"note": "VIP", "csrf_token": token, "note_version": "0"})
        assert r.status_code == 403, r.text
    assert note_of(engine, scene.ola) == ("", 0)
    token = csrf(bob, "/customers")
    r = bob.post(path, data={"note": "VIP, prefers phone", "csrf_token": token, "note_version": 0})
    assert r.status_code == 303 and r.headers["location"] == f"/customers/{scene.ola}"
    assert note_of(engine, scene.ola) == ("VIP, prefers phone", 1)
    assert "VIP, prefers phone" in bob.get(f"/customers/{scene.ola}").text
    # from the sidebar of one of the customer's conversations: the same note
    r = bob.post(
        f"/conversations/{scene.printer}/customer-note",
        data={"note": "VIP", "csrf_token": token, "note_version": 1},
    )
    assert r.status_code == 303 and r.headers["location"] == f"/conversations/{scene.printer}"
    assert note_of(engine, scene.ola) == ("VIP", 2)
    # a customer, or a conversation, bob may not see: as if it did not exist
    r = bob.post(f"/customers/{scene.kim}/note", data={"note": "x", "csrf_token": token})
    assert r.status_code == 404
    r = bob.post(
        f"/conversations/{scene.salary}/customer-note", data={"note": "x", "csrf_token": token}
    )
    assert r.status_code == 404
    assert note_of(engine, scene.kim) == ("", 0)
    assert note_of(engine, scene.ola) == ("VIP", 2)
    # signed out: nothing saved
    anonymous = TestClient(app, follow_redirects=False)
    r = anonymous.post(path, data={"note": "gone", "csrf_token": token})
    assert r.status_code in (303, 401, 403) and note_of(engine, scene.ola) == ("VIP", 2)
    with Session(engine) as s:
        edits = list(
            s.exec(
                select(CustomerNoteEdit)
                .where(CustomerNoteEdit.customer_id == scene.ola)
                .order_by(col(CustomerNoteEdit.id))
            )
        )
    assert [(e.note, e.source.value) for e in edits] == [
        ("VIP, prefers phone", "web"),
        ("VIP", "web"),
    ]


def test_a_note_saved_over_an_older_one_is_refused_with_the_note_as_it_is(
    app: FastAPI, engine: Engine, scene: Scene
) -> None:
    bob = browser_for(app, "bob@example.com")
    admin = browser_for(app, "admin@example.com")
    path = f"/customers/{scene.ola}/note"
    fetch = {"X-Requested-With": "fetch"}
    r = admin.post(
        path,
        data={"note": "Admin's words", "csrf_token": csrf(admin, "/customers"), "note_version": 0},
        headers=fetch,
    )
    assert r.status_code == 200 and r.json()["note_version"] == 1
    assert r.json()["updated_by"] == "Admin"
    r = bob.post(
        path,
        data={"note": "Bob's words", "csrf_token": csrf(bob, "/customers"), "note_version": 0},
        headers=fetch,
    )
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["note"] == "Admin's words" and error["note_version"] == 1
    assert "Admin changed the note meanwhile" in error["message"]
    assert note_of(engine, scene.ola) == ("Admin's words", 1)


def test_the_sidebar_note_of_a_conversation_started_here_makes_its_customer(
    app: FastAPI, engine: Engine, scene: Scene
) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, "sales")
        started = f.conversation(
            s, box, "Our offer", minutes=1, customer_email="lee@acme.example"
        ).id
    admin = browser_for(app, "admin@example.com")
    side = sidebar(admin.get(f"/conversations/{started}").text)
    assert "lee@acme.example" in side.all_text and "acme.example" in side.all_text
    r = admin.post(
        f"/conversations/{started}/customer-note",
        data={"note": "Met at the fair", "csrf_token": csrf(admin, "/customers")},
    )
    assert r.status_code == 303
    with Session(engine) as s:
        lee = s.exec(select(Customer).where(Customer.email == "lee@acme.example")).one()
    assert (lee.note, lee.organisation) == ("Met at the fair", "acme.example")


def test_rest_customers_follow_the_callers_mailboxes(app: FastAPI, scene: Scene) -> None:
    assert TestClient(app).get("/api/v1/customers").status_code == 401
    assert TestClient(app).get(f"/api/v1/customers/{scene.ola}").status_code == 401
    bob = TestClient(app, headers={"Authorization": f"Bearer {scene.bob_token}"})
    listed = bob.get("/api/v1/customers").json()
    assert [c["email"] for c in listed["items"]] == ["ola@nordvik.example"]
    item = listed["items"][0]
    assert item["conversation_count"] == 2
    assert item["last_message_at"].startswith("2024-05-01T09:10:00")
    assert (item["name"], item["organisation"]) == ("Ola Nordmann", "nordvik.example")
    detail = bob.get(f"/api/v1/customers/{scene.ola}").json()
    assert [c["id"] for c in detail["conversations"]] == [scene.printer, scene.invoice]
    assert detail["conversation_count"] == 2
    assert {c["mailbox"] for c in detail["conversations"]} == {"support"}
    for path in (f"/api/v1/customers/{scene.kim}", "/api/v1/customers/999999"):
        r = bob.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert bob.get("/api/v1/customers/0").status_code == 422
    assert bob.get("/api/v1/customers", params={"q": "gmail"}).json()["items"] == []
    assert bob.get("/api/v1/customers", params={"cursor": "!!"}).status_code == 422

    admin = TestClient(app, headers={"Authorization": f"Bearer {scene.admin_token}"})
    first = admin.get("/api/v1/customers", params={"limit": 1}).json()
    assert [c["email"] for c in first["items"]] == ["kim@gmail.com"]
    assert first["items"][0]["organisation"] is None
    second = admin.get(
        "/api/v1/customers", params={"limit": 1, "cursor": first["next_cursor"]}
    ).json()
    assert [c["email"] for c in second["items"]] == ["ola@nordvik.example"]
    assert second["next_cursor"] is None
    detail = admin.get(f"/api/v1/customers/{scene.ola}").json()
    assert [c["id"] for c in detail["conversations"]] == [
        scene.salary,
        scene.printer,
        scene.invoice,
    ]
    found = admin.get("/api/v1/customers", params={"q": "ola nordvik"}).json()["items"]
    assert [c["id"] for c in found] == [scene.ola]
