"""Admin pages: only admins get in; agents (add, access, deactivate, reset password), mailboxes
(add, edit, a real connection test against Dovecot, sync health, a stored password never sent
to another server) and API tokens (shown once, revoked)."""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.domain.accounts import access
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.mailboxes.config import add_mailbox
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    Agent,
    ApiToken,
    FolderState,
    ImapSecurity,
    Mailbox,
    SmtpSecurity,
)
from imapdesk.kernel.settings import Settings
from tests.support import factories as f
from tests.support.web import PASSWORD, Page, csrf

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


ADMIN_PAGES = ("/admin/agents", "/admin/mailboxes", "/admin/mailboxes/new", "/admin/tokens")


@pytest.fixture
def people(engine: Engine) -> dict[str, int]:
    with unit_of_work(engine) as s:
        admin = create_agent(s, "admin@example.com", "Ada Admin", PASSWORD, is_admin=True)
        bob = create_agent(s, "bob@example.com", "Bob", PASSWORD)
        return {"admin": admin.id or 0, "bob": bob.id or 0}


def signed_in(app: FastAPI, email: str, password: str = PASSWORD) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    r = client.post(
        "/login", data={"email": email, "password": password, "csrf_token": csrf(client)}
    )
    assert r.status_code == 303, r.text
    return client


def test_agents_get_403_and_anonymous_users_the_login(app: FastAPI, people: dict[str, int]) -> None:
    anonymous = TestClient(app, follow_redirects=False)
    for path in ADMIN_PAGES:
        assert anonymous.get(path).headers["location"].startswith("/login")
    bob = signed_in(app, "bob@example.com")
    token = csrf(bob, "/")
    for path in ADMIN_PAGES:
        assert bob.get(path).status_code == 403, path
    for path in ("/admin/agents", f"/admin/agents/{people['bob']}", "/admin/tokens"):
        assert bob.post(path, data={"csrf_token": token}).status_code == 403, path
    # no admin link in the navigation either
    assert "/admin/agents" not in " ".join(Page(bob.get("/").text).links)
    admin = signed_in(app, "admin@example.com")
    assert "http://testserver/admin/agents" in Page(admin.get("/").text).links
    for path in ADMIN_PAGES:
        assert admin.get(path).status_code == 200, path


def test_admin_manages_agents(app: FastAPI, engine: Engine, people: dict[str, int]) -> None:
    with unit_of_work(engine) as s:
        support, billing = f.mailbox(s, "support"), f.mailbox(s, "billing")
        support_id, billing_id = support.id or 0, billing.id or 0
    admin = signed_in(app, "admin@example.com")
    token = csrf(admin, "/admin/agents")
    r = admin.post(
        "/admin/agents",
        data={
            "csrf_token": token,
            "email": "Carol@Example.com",
            "name": "Carol",
            "password": "carols password",
            "access_scope": "selected",
            "mailboxes": [str(billing_id)],
        },
    )
    assert r.status_code == 303
    page = admin.get("/admin/agents").text
    assert "Added carol@example.com." in Page(page).all_text
    with Session(engine) as s:
        carol = s.exec(select(Agent).where(Agent.email == "carol@example.com")).one()
        assert not carol.all_mailboxes and access.granted_mailbox_ids(s, carol) == {billing_id}
    carol_browser = signed_in(app, "carol@example.com", "carols password")
    assert Page(carol_browser.get("/").text).all_text.count("support") == 0

    # a duplicate is refused with a message
    r = admin.post(
        "/admin/agents",
        data={"csrf_token": token, "email": "carol@example.com", "name": "C", "password": "x" * 9},
    )
    assert r.status_code == 409 and "exists already" in Page(r.text).all_text

    # access to both, admin flag, then deactivated
    r = admin.post(
        f"/admin/agents/{carol.id}",
        data={
            "csrf_token": token,
            "name": "Carol C",
            "is_active": "true",
            "access_scope": "selected",
            "mailboxes": [str(support_id), str(billing_id)],
        },
    )
    assert r.status_code == 303
    with Session(engine) as s:
        assert access.granted_mailbox_ids(s, carol) == {support_id, billing_id}
    r = admin.post(
        f"/admin/agents/{carol.id}/password",
        data={"csrf_token": token, "password": "another password"},
    )
    assert r.status_code == 303
    # the reset signed carol's browser out
    assert carol_browser.get("/").status_code == 303
    admin.post(
        f"/admin/agents/{carol.id}",
        data={"csrf_token": token, "name": "Carol C", "is_admin": "true", "access_scope": "all"},
    )
    with Session(engine) as s:
        changed = s.get(Agent, carol.id)
        assert changed is not None and changed.is_admin and not changed.is_active
        assert changed.all_mailboxes and changed.name == "Carol C"
    # an admin cannot lock themselves out
    admin.post(f"/admin/agents/{people['admin']}", data={"csrf_token": token, "name": "Ada"})
    with Session(engine) as s:
        me = s.get(Agent, people["admin"])
        assert me is not None and me.is_admin and me.is_active


def test_tokens_are_shown_once_and_revoked(
    app: FastAPI, engine: Engine, people: dict[str, int]
) -> None:
    admin = signed_in(app, "admin@example.com")
    token = csrf(admin, "/admin/tokens")
    r = admin.post(
        "/admin/tokens",
        data={"csrf_token": token, "agent_id": str(people["bob"]), "name": "zapier"},
    )
    assert r.status_code == 200
    found = re.search(r'id="new-token">(imd_[^<]+)<', r.text)
    assert found is not None
    secret = found.group(1)
    api = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
    assert api.get("/api/v1/conversations").status_code == 200
    listing = admin.get("/admin/tokens").text
    assert secret not in listing and secret[:12] in listing
    with Session(engine) as s:
        row = s.exec(select(ApiToken).where(ApiToken.name == "zapier")).one()
    r = admin.post(f"/admin/tokens/{row.id}/revoke", data={"csrf_token": token})
    assert r.status_code == 303
    assert api.get("/api/v1/conversations").status_code == 401


def test_mailbox_connection_test_against_dovecot(
    app: FastAPI, engine: Engine, people: dict[str, int], mail_account: MailAccount
) -> None:
    admin = signed_in(app, "admin@example.com")
    form = {
        "csrf_token": csrf(admin, "/admin/mailboxes/new"),
        "name": "support",
        "address": "support@example.test",
        "imap_host": mail_account.host,
        "imap_port": str(mail_account.imap_port),
        "imap_security": "starttls",
        "username": mail_account.user,
        "password": "not the password",
        "ca_file": str(mail_account.ca_file),
    }
    r = admin.post("/admin/mailboxes/new", data=form | {"op": "test"})
    assert r.status_code == 200
    text = Page(r.text).all_text
    assert "Connection failed" in text and "wrong user name or password" in text

    r = admin.post("/admin/mailboxes/new", data=form | {"op": "test", "imap_port": "1"})
    assert "cannot reach the IMAP server" in Page(r.text).all_text

    good = form | {"password": mail_account.password}
    r = admin.post("/admin/mailboxes/new", data=good | {"op": "test"})
    text = Page(r.text).all_text
    assert "Connection works" in text and "IDLE" in text
    assert "assignee and tags are written as keywords" in text

    r = admin.post("/admin/mailboxes/new", data=good | {"op": "save"})
    assert r.status_code == 303
    with Session(engine) as s:
        box = s.exec(select(Mailbox).where(Mailbox.name == "support")).one()
        assert box.password_encrypted != mail_account.password
        f.folder(s, box, "INBOX", state=FolderState.error, last_error="mailbox went away")
        box_id = box.id
        s.commit()
    # editing with an empty password tests with the stored one
    edit = {k: v for k, v in good.items() if k not in ("name", "password")}
    r = admin.post(f"/admin/mailboxes/{box_id}", data=edit | {"op": "test"})
    assert "Connection works" in Page(r.text).all_text
    r = admin.post(f"/admin/mailboxes/{box_id}", data=edit | {"op": "save", "enabled": "true"})
    assert r.status_code == 303

    # the list shows sync health per folder and what plain clients will see
    listing = Page(admin.get("/admin/mailboxes").text).all_text
    for expected in ("support@example.test", "INBOX", "error", "mailbox went away", "never"):
        assert expected in listing
    assert "not probed yet" in listing


def test_a_new_mailbox_is_granted_to_the_chosen_agents_and_forms_need_csrf(
    app: FastAPI, engine: Engine, people: dict[str, int], mail_account: MailAccount
) -> None:
    with unit_of_work(engine) as s:
        bob = s.get(Agent, people["bob"])
        assert bob is not None
        access.set_mailbox_access(s, bob, all_mailboxes=False)
        carol = create_agent(s, "carol@example.com", "Carol", PASSWORD)
        access.set_mailbox_access(s, carol, all_mailboxes=False)
        carol_id = carol.id
    admin = signed_in(app, "admin@example.com")
    form = {
        "name": "billing",
        "address": "billing@example.test",
        "imap_host": mail_account.host,
        "imap_port": str(mail_account.imap_port),
        "imap_security": "starttls",
        "username": mail_account.user,
        "password": mail_account.password,
        "ca_file": str(mail_account.ca_file),
        "agents": [str(people["bob"])],
    }
    assert admin.post("/admin/mailboxes/new", data=form).status_code == 403
    with Session(engine) as s:
        assert s.exec(select(Mailbox)).first() is None
    token = csrf(admin, "/admin/mailboxes/new")
    r = admin.post("/admin/mailboxes/new", data=form | {"csrf_token": token})
    assert r.status_code == 303
    with Session(engine) as s:
        box = s.exec(select(Mailbox).where(Mailbox.name == "billing")).one()
        granted = {
            agent_id
            for agent_id in (people["bob"], carol_id)
            if access.can_see_mailbox(s, s.get(Agent, agent_id), box.id)  # type: ignore[arg-type]
        }
        assert granted == {people["bob"]}
        box_id = box.id
    # saving an existing mailbox needs the token too, and changes nothing without it
    r = admin.post(f"/admin/mailboxes/{box_id}", data=form | {"address": "other@example.test"})
    assert r.status_code == 403
    with Session(engine) as s:
        assert s.get(Mailbox, box_id).address == "billing@example.test"  # type: ignore[union-attr]


class RecordingServer:
    """A listener on a free loopback port that plays just enough IMAP or SMTP (no TLS) for a
    client to try to log in, refuses the login, and keeps everything it heard (an AUTH PLAIN
    answer decoded): where a stored password must never go."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.heard = b""
        self.connections = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as lines, contextlib.suppress(OSError):
                self._converse(conn, lines)

    def _converse(self, conn: socket.socket, lines: Any) -> None:
        if self.protocol == "imap":
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
        else:
            conn.sendall(b"220 recorder ESMTP\r\n")
        for line in lines:
            self.heard += line
            if self.protocol == "imap":
                tag, _, rest = line.partition(b" ")
                command = rest.split(b" ", 1)[0].strip().upper()
                if command == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
                elif command == b"LOGOUT":
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    conn.sendall(tag + b" NO [AUTHENTICATIONFAILED] refused\r\n")
                continue
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                conn.sendall(b"250-recorder\r\n250 AUTH PLAIN\r\n")
            elif verb == b"AUTH":
                self.heard += base64.b64decode(line.split()[-1]) + b"\r\n"
                conn.sendall(b"535 5.7.8 refused\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")


@pytest.fixture
def recorders() -> Iterator[tuple[RecordingServer, RecordingServer]]:
    imap, smtp = RecordingServer("imap"), RecordingServer("smtp")
    yield imap, smtp
    imap.close()
    smtp.close()


def test_a_connection_test_never_sends_a_stored_password_to_another_server(
    app: FastAPI,
    engine: Engine,
    settings: Settings,
    people: dict[str, int],
    recorders: tuple[RecordingServer, RecordingServer],
) -> None:
    imap_recorder, smtp_recorder = recorders
    stored_imap, stored_smtp = b"stored-imap-secret-4711", b"stored-smtp-secret-4712"
    with unit_of_work(engine) as s:
        box = add_mailbox(
            s,
            settings,
            name="support",
            address="support@example.test",
            imap_host="imap.saved.test",
            imap_port=993,
            imap_security=ImapSecurity.ssl,
            username="support",
            password=stored_imap.decode(),
            smtp_host="smtp.saved.test",
            smtp_port=587,
            smtp_security=SmtpSecurity.starttls,
            smtp_password=stored_smtp.decode(),
        )
        url = f"/admin/mailboxes/{box.id}"
    admin = signed_in(app, "admin@example.com")
    saved = {
        "csrf_token": csrf(admin, url),
        "address": "support@example.test",
        "imap_host": "imap.saved.test",
        "imap_port": "993",
        "imap_security": "ssl",
        "username": "support",
        "smtp_host": "smtp.saved.test",
        "smtp_port": "587",
        "smtp_security": "starttls",
    }
    imap_elsewhere = saved | {
        "op": "test",
        "imap_host": "127.0.0.1",
        "imap_port": str(imap_recorder.port),
        "imap_security": "none",
    }
    smtp_elsewhere = saved | {
        "op": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": str(smtp_recorder.port),
        "smtp_security": "none",
    }
    # the password fields empty: another server, another user, another port or no TLS where
    # the saved settings use it are refused before anything connects
    refused = [
        imap_elsewhere,
        smtp_elsewhere,
        saved | {"op": "test", "username": "someone-else"},
        saved | {"op": "test", "imap_port": "143", "imap_security": "starttls"},
        saved | {"op": "test", "imap_security": "none"},
        saved | {"op": "smtp", "smtp_username": "someone-else"},
        saved | {"op": "smtp", "smtp_port": "2525"},
        saved | {"op": "smtp", "smtp_security": "none"},
        # the SMTP login falling back to the IMAP one: its stored password stays home too
        smtp_elsewhere | {"smtp_clear_password": "true"},
    ]
    for form in refused:
        r = admin.post(url, data=form)
        text = Page(r.text).all_text
        assert r.status_code == 400, form
        assert "type the password to test another server" in text, form
        assert "works" not in text and "failed" not in text
    assert imap_recorder.connections == 0 and smtp_recorder.connections == 0

    # typed, a password goes where the form says (the recorders hear it: they would have heard
    # the stored one)
    r = admin.post(url, data=imap_elsewhere | {"password": "typed-imap-secret"})
    assert r.status_code == 200 and "Connection failed" in Page(r.text).all_text
    r = admin.post(url, data=smtp_elsewhere | {"smtp_password": "typed-smtp-secret"})
    assert r.status_code == 200 and "SMTP failed" in Page(r.text).all_text
    assert b"typed-imap-secret" in imap_recorder.heard
    assert b"typed-smtp-secret" in smtp_recorder.heard
    for heard in (imap_recorder.heard, smtp_recorder.heard):
        assert stored_imap not in heard and stored_smtp not in heard
    # nothing was saved
    with Session(engine) as s:
        after = s.get(Mailbox, box.id)
        assert after is not None and after.imap_host == "imap.saved.test"
        assert after.smtp_host == "smtp.saved.test"
