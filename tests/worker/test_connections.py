"""Few IMAP connections per mailbox, on a server that limits them (Dovecot's own default: 10 per
user and client address) while a colleague's mail client holds its share: mail arrives, claims
and closes reach the mailbox, the colleague's next connection gets in, and when the server
refuses one more, the worker's parts share what is open and lose no write.

imapdesk's connections are counted with `doveadm who` (every session of the user), less the
colleague's own, all along each test.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from imapclient import IMAPClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.api.app import SESSION_COOKIE, create_app
from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.conversations import operations
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    ActivitySource,
    Agent,
    ImapActionState,
    Mailbox,
    Message,
    PendingImapAction,
)
from imapdesk.kernel.settings import Settings
from tests.support.imap import where_on_server
from tests.support.mail import message_with_id
from tests.support.mapping import flags_of, places
from tests.support.web import session_cookie
from tests.support.worker import (
    add_test_mailbox,
    caught_up,
    make_settings,
    running_worker,
    seed_conversation,
    wait_for,
)

LIMIT = 10  # the fixture's mail_max_userip_connections
FOLLOWED = ("INBOX", "Sent", "Archive", "Junk", "Trash", "Pending", "Notes")
INBOUND = "m1@example.com"


class SessionCount:
    """The user's IMAP sessions on the server, sampled until stopped; `ours` is the most
    imapdesk had at once (the sessions beyond those the test holds itself)."""

    def __init__(self, account: MailAccount, held: list[IMAPClient]) -> None:
        self.server: LocalMailServer = account.server
        self.user = account.user
        self.held = held
        self.ours = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> int:
        out = self.server.doveadm("who", "-1").stdout
        return sum(1 for line in out.splitlines() if line.split()[:1] == [self.user])

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.ours = max(self.ours, self.now() - len(self.held))
            self.samples += 1
            self._stop.wait(0.1)

    @contextmanager
    def sampling(self) -> Iterator[SessionCount]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=10)


@pytest.fixture
def account(mailserver_limited: LocalMailServer) -> MailAccount:
    found = mailserver_limited.create_account()
    seed_conversation(found)
    return found


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path / "data", connection_retry_seconds=1.0)


@pytest.fixture
def colleague_clients(account: MailAccount) -> Iterator[list[IMAPClient]]:
    """The colleague's mail client's connections (Thunderbird keeps 5), added by the test."""
    clients: list[IMAPClient] = []
    yield clients
    for client in clients:
        with contextlib.suppress(Exception):  # already gone
            client.logout()


def hold(account: MailAccount, clients: list[IMAPClient], count: int) -> None:
    for _ in range(count):
        client = account.connect()
        client.select_folder("INBOX", readonly=True)
        clients.append(client)


def release(clients: list[IMAPClient], count: int) -> None:
    for _ in range(count):
        clients.pop().logout()


def capabilities(engine: Engine, mailbox_id: int) -> dict[str, Any]:
    with Session(engine) as db:
        mailbox = db.get(Mailbox, mailbox_id)
        assert mailbox is not None
        return dict(mailbox.capabilities or {})


def conversation_of(engine: Engine, msgid: str) -> int | None:
    with Session(engine) as db:
        return db.exec(select(Message.conversation_id).where(Message.message_id == msgid)).first()


def claim_and_close(engine: Engine, cid: int) -> None:
    """What an agent does in the web UI: claim, then close (each an outbox row)."""
    with unit_of_work(engine) as db:
        alice = db.exec(select(Agent).where(Agent.handle == "alice")).first()
        if alice is None:
            alice = create_agent(db, "alice@example.test", "Alice", "pw", handle="alice")
        operations.claim(db, cid, alice, source=ActivitySource.web)
    with unit_of_work(engine) as db:
        alice = db.exec(select(Agent).where(Agent.handle == "alice")).one()
        operations.set_status(db, cid, "closed", source=ActivitySource.web, agent=alice)


def closed_and_claimed_on_server(colleague: IMAPClient) -> bool:
    found = where_on_server(colleague)
    return places(found, INBOUND) == ["Archive"] and "\\Flagged" in flags_of(found, INBOUND)


def told_in_the_sync_health(settings: Settings, engine: Engine) -> None:
    """The refusal shows in /readyz (no server words), and in words on the admin's pages."""
    client = TestClient(create_app(settings=settings, engine=engine))
    (ready,) = client.get("/readyz").json()["mailboxes"]
    assert ready["connections"]["refused"] is True and ready["connections"]["allowed"] == 1
    with unit_of_work(engine) as db:
        admin = create_agent(db, "root@example.test", "Root", "pw", is_admin=True)
        assert admin.id is not None
        admin_id = admin.id
    client.cookies.set(SESSION_COOKIE, session_cookie(settings, engine, admin_id))
    page = client.get("/admin/mailboxes").text
    assert "refused more IMAP connections" in page and "mail_max_userip_connections" in page


def arrives(engine: Engine, colleague: IMAPClient, msgid: str) -> None:
    colleague.append("INBOX", message_with_id(msgid, subject=f"New: {msgid}"))
    wait_for(lambda: conversation_of(engine, msgid), what=f"{msgid} taken in")


def test_beside_a_colleague_holding_five_connections_everything_gets_through(
    engine: Engine,
    settings: Settings,
    account: MailAccount,
    colleague_clients: list[IMAPClient],
) -> None:
    """The issue as seen: 10 per user and address, Thunderbird holding 5. imapdesk follows 7
    folders, writes back, and files copies on 2 connections (the server has NOTIFY)."""
    hold(account, colleague_clients, 5)
    colleague = colleague_clients[0]
    mailbox_id = add_test_mailbox(engine, settings, account)
    sessions = SessionCount(account, colleague_clients)
    with running_worker(settings, engine), sessions.sampling():
        wait_for(
            lambda: all(caught_up(engine, mailbox_id, f) for f in FOLLOWED),
            what="every followed folder caught up",
        )
        arrives(engine, colleague, "arrival@example.com")
        cid = conversation_of(engine, INBOUND)
        assert cid is not None
        claim_and_close(engine, cid)
        wait_for(lambda: closed_and_claimed_on_server(colleague), what="the claim and the close")
        health = capabilities(engine, mailbox_id)["connections"]
        assert health["mode"] == "notify" and health["refused"] is None, health
        assert sessions.samples > 0 and 0 < sessions.ours <= 2, sessions.ours
        # the colleague's phone: a sixth connection of theirs gets in
        phone = account.connect()
        assert phone.noop()
        phone.logout()
    print(f"imapdesk's IMAP connections: at most {sessions.ours} in {sessions.samples} samples")


def test_when_the_server_refuses_one_more_the_parts_share_what_is_open(
    engine: Engine,
    settings: Settings,
    account: MailAccount,
    colleague_clients: list[IMAPClient],
) -> None:
    """The colleague holds 9 of the 10: imapdesk gets one connection, on which it polls INBOX,
    checks the other folders, writes back and files copies; it says so in the sync health,
    and takes a second connection once the colleague lets some go."""
    hold(account, colleague_clients, LIMIT - 1)
    colleague = colleague_clients[0]
    mailbox_id = add_test_mailbox(engine, settings, account)
    sessions = SessionCount(account, colleague_clients)
    with running_worker(settings, engine), sessions.sampling():
        wait_for(
            lambda: all(caught_up(engine, mailbox_id, f) for f in FOLLOWED),
            what="every followed folder caught up on one connection",
        )
        health = wait_for(
            lambda: (
                (capabilities(engine, mailbox_id).get("connections") or {}).get("refused")
                and capabilities(engine, mailbox_id)["connections"]
            ),
            what="the refusal in the health",
        )
        assert health["allowed"] == 1 and health["push"] == "poll", health
        assert "mail_max_userip_connections" in health["refused"], health
        told_in_the_sync_health(settings, engine)
        arrives(engine, colleague, "shared@example.com")
        cid = conversation_of(engine, INBOUND)
        assert cid is not None
        claim_and_close(engine, cid)
        wait_for(lambda: closed_and_claimed_on_server(colleague), what="the claim and the close")
        assert sessions.ours == 1, sessions.ours
        # room again: a second connection is taken, NOTIFY hears the folders again
        release(colleague_clients, 4)
        wait_for(
            lambda: capabilities(engine, mailbox_id)["connections"]["open"] == 2,
            timeout=90,  # the next try comes after a back-off that grew with each refusal
            what="a second connection once there is room",
        )
        arrives(engine, colleague_clients[0], "room@example.com")
    assert capabilities(engine, mailbox_id)["connections"]["refused"] is None


def test_while_every_connection_is_refused_writes_wait_and_none_is_lost(
    engine: Engine,
    settings: Settings,
    account: MailAccount,
    colleague_clients: list[IMAPClient],
) -> None:
    """The mailbox was taken in; then the colleague holds all 10. A claim and a close made in
    imapdesk wait in the outbox (not failed, no attempt counted), the mailbox says why, and
    both reach the mailbox once a connection can be had."""
    mailbox_id = add_test_mailbox(engine, settings, account)
    with running_worker(settings, engine):
        wait_for(lambda: conversation_of(engine, INBOUND), what="the seeded mail taken in")
    sessions = SessionCount(account, [])
    wait_for(lambda: sessions.now() == 0, what="imapdesk's connections closed")
    hold(account, colleague_clients, LIMIT)
    cid = conversation_of(engine, INBOUND)
    assert cid is not None
    claim_and_close(engine, cid)
    with running_worker(settings, engine):

        def refused() -> bool:
            with Session(engine) as db:
                mailbox = db.get(Mailbox, mailbox_id)
                return bool(mailbox and "too many connections" in (mailbox.last_error or ""))

        wait_for(refused, what="the refusal in the mailbox's health")
        with Session(engine) as db:
            actions = db.exec(
                select(PendingImapAction).where(col(PendingImapAction.mailbox_id) == mailbox_id)
            ).all()
        assert len(actions) == 2
        assert all(a.state == ImapActionState.pending and a.attempts == 0 for a in actions)
        release(colleague_clients, 3)
        colleague = colleague_clients[0]
        wait_for(lambda: closed_and_claimed_on_server(colleague), what="the claim and the close")
