"""Fixtures for outbound mail: a real aiosmtpd relay (STARTTLS + AUTH, verified) that delivers
into the test Dovecot over LMTP, a customer's box and fast-retrying settings (the shared box is
set up to send by tests/support/outbound.py); for the REST tests without a mail server, two
agents' API clients and a conversation to answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from imapdesk.api.app import create_app
from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Direction, SmtpSecurity
from imapdesk.kernel.settings import Settings
from tests.support import factories
from tests.support.worker import make_settings


@pytest.fixture(scope="session")
def relay(mailserver: LocalMailServer) -> Iterator[LocalSmtpRelay]:
    server = LocalSmtpRelay(mailserver, security="starttls")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def running_relay(relay: LocalSmtpRelay) -> Iterator[LocalSmtpRelay]:
    """The session's relay, running, with no failure left over from another test."""
    relay.start()
    relay.handler.fail_next.clear()
    yield relay
    relay.start()


@pytest.fixture
def customer(mailserver: LocalMailServer) -> MailAccount:
    return mailserver.create_account(prefix="customer")


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        db_url,
        tmp_path / "data",
        sender_poll_seconds=0.1,
        smtp_retry_initial_seconds=0.3,
        smtp_retry_max_seconds=1.0,
        smtp_timeout_seconds=10.0,
    )


@pytest.fixture
def tokens(engine: Engine) -> tuple[str, str]:
    """Alice's and Bob's API tokens."""
    with unit_of_work(engine) as db:
        alice = create_agent(db, "alice@example.com", "Alice", "correct horse battery")
        bob = create_agent(db, "bob@example.com", "Bob", "correct horse battery")
        return create_api_token(db, alice), create_api_token(db, bob)


@pytest.fixture
def conversation_id(engine: Engine) -> int:
    """Carol's conversation in a mailbox with an SMTP server (never reached: no worker runs)."""
    with unit_of_work(engine) as db:
        box = factories.mailbox(
            db,
            smtp_host="smtp.example.com",
            smtp_port=587,
            smtp_security=SmtpSecurity.starttls,
            display_name="Example Support",
        )
        conv = factories.conversation(
            db, box, "Broken printer", customer_email="carol@customer.example"
        )
        factories.message(
            db,
            conv,
            message_id="q1@customer.example",
            from_email="carol@customer.example",
            from_name="Carol",
            to=[{"email": "support@example.com", "name": ""}],
            cc=[{"email": "dave@customer.example", "name": "Dave"}],
            direction=Direction.inbound,
            references=["root@customer.example"],
        )
        assert conv.id is not None
        return conv.id


@pytest.fixture
def clients(
    settings: Settings, engine: Engine, tokens: tuple[str, str]
) -> Iterator[tuple[TestClient, TestClient]]:
    """The REST API as Alice and as Bob."""
    app = create_app(settings=settings, engine=engine)
    alice, bob = tokens
    with (
        TestClient(app, headers={"Authorization": f"Bearer {alice}"}) as a,
        TestClient(app, headers={"Authorization": f"Bearer {bob}"}) as b,
    ):
        yield a, b
