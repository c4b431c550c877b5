"""The SLA clock in the real worker (a subprocess, real Dovecot, both databases): mail taken in
live starts a conversation's first-response clock; its warning and its breach each fire exactly
once although the worker is killed with SIGKILL and started again in between."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.sla import policies
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Conversation, ConversationSla, Event, EventConsumer
from imapdesk.kernel.settings import Settings
from tests.support.mail import make_mail
from tests.support.worker import add_test_mailbox, caught_up, make_settings, wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path / "data")


def sla_events(engine: Engine, subject: str) -> list[str]:
    with Session(engine) as db:
        rows = db.exec(
            select(Event.kind)
            .join(Conversation, col(Conversation.id) == col(Event.conversation_id))
            .where(col(Event.kind).startswith("sla."), col(Conversation.subject) == subject)
            .order_by(col(Event.id))
        )
        return list(rows)


def clock_registered(engine: Engine) -> bool:
    with Session(engine) as db:
        return db.get(EventConsumer, "sla") is not None


@contextmanager
def worker(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "imapdesk", "worker"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def kill_minus_9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def test_warning_and_breach_fire_once_across_kill_minus_9(
    db_url: str,
    engine: Engine,
    settings: Settings,
    mail_account,  # type: ignore[no-untyped-def]
) -> None:
    mailbox_id = add_test_mailbox(engine, settings, mail_account)
    with unit_of_work(engine) as db:
        # a minute to answer, warned a minute before: the warning is due at once, the
        # breach a minute after the mail came in (round the clock: no calendar)
        policies.create(
            db,
            policies.PolicyInput(
                name="Fast",
                scope="mailbox",
                mailbox_id=mailbox_id,
                first_response_minutes=1,
                warning_minutes=1,
            ),
        )
    env = dict(
        os.environ,
        IMAPDESK_DATABASE_URL=db_url,
        IMAPDESK_DATA_DIR=str(settings.data_dir),
        IMAPDESK_SLA_POLL_SECONDS="0.2",
        IMAPDESK_MAILBOX_REFRESH_SECONDS="0.2",
    )
    server, user, password = mail_account.server, mail_account.user, mail_account.password

    with worker(env) as first:
        wait_for(lambda: caught_up(engine, mailbox_id), timeout=60, what="the first sync")
        wait_for(lambda: clock_registered(engine), what="the SLA clock")
        server.seed(user, password, "INBOX", [make_mail(1, subject="Printer on fire")])
        wait_for(
            lambda: sla_events(engine, "Printer on fire") == ["sla.warning"],
            timeout=30,
            what="the warning",
        )
        kill_minus_9(first)

    with Session(engine) as db:
        row = db.exec(select(ConversationSla)).one()
        assert row.first_response_warned and not row.first_response_breached
        assert row.first_response_due is not None and row.first_response_started_at is not None
        assert (row.first_response_due - row.first_response_started_at).total_seconds() == 60

    with worker(env) as second:
        wait_for(
            lambda: "sla.breached" in sla_events(engine, "Printer on fire"),
            timeout=90,
            interval=0.05,
            what="the breach",
        )
        kill_minus_9(second)

    with worker(env) as third:
        # another mail: once its warning fired, the restarted clock has looked at everything
        server.seed(user, password, "INBOX", [make_mail(2, subject="Paper jam")])
        wait_for(
            lambda: sla_events(engine, "Paper jam") == ["sla.warning"],
            timeout=60,
            what="the restarted clock",
        )
        third.send_signal(signal.SIGTERM)
        third.wait(timeout=20)

    assert sla_events(engine, "Printer on fire") == ["sla.warning", "sla.breached"]
    with Session(engine) as db:
        fire = db.exec(
            select(ConversationSla)
            .join(Conversation, col(Conversation.id) == col(ConversationSla.conversation_id))
            .where(col(Conversation.subject) == "Printer on fire")
        ).one()
        assert fire.first_response_breached and fire.breached
        assert fire.first_response_at is None
