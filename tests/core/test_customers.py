"""Customers as rows kept in step with the conversations (imapdesk/domain/customers/), on both
databases: organisations by domain (free-mail providers are none), one row per address with the
latest name, the migration's backfill, and a note's changes kept with their author."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session, col, select

from alembic import command
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.customers import directory, notes
from imapdesk.domain.customers.organisations import organisation_of
from imapdesk.domain.sync.rebuild import forget_mail
from imapdesk.kernel.db import alembic_config, unit_of_work
from imapdesk.kernel.errors import Conflict, InvalidInput
from imapdesk.kernel.models import ActivitySource, Customer, CustomerNoteEdit
from tests.support import factories as f
from tests.support.databases import fresh_pg_database, pg_url
from tests.support.web import PASSWORD


@pytest.mark.parametrize(
    ("email", "organisation"),
    [
        ("ola@nordvik.example", "nordvik.example"),
        ("Ola@Sub.Nordvik.Example.", "sub.nordvik.example"),
        ("someone@gmail.com", None),
        ("someone@googlemail.com", None),
        ("someone@hotmail.fr", None),
        ("someone@yahoo.co.jp", None),
        ("someone@outlook.com.br", None),
        ("someone@gmx.de", None),
        ("someone@web.de", None),
        ("someone@proton.me", None),
        ("root@localhost", None),
        ("no-domain", None),
        ("@nordvik.example", None),
        ("claire@exämple.fr", "exämple.fr"),
    ],
)
def test_an_organisation_is_the_domain_unless_anyone_can_have_it(
    email: str, organisation: str | None
) -> None:
    assert organisation_of(email) == organisation


def test_one_customer_per_address_with_the_latest_name(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        old = f.conversation(
            s, box, "Old", minutes=1, customer_email="ola@nordvik.example", customer_name="Ola"
        )
        new = f.conversation(
            s,
            box,
            "New",
            minutes=5,
            customer_email="ola@nordvik.example",
            customer_name="Ola Nordmann",
        )
        nameless = f.conversation(s, box, "Nameless", minutes=9, customer_email="x@gmail.com")
        notes_only = f.conversation(s, box, "Notes only", minutes=3)
        ids = [c.id or 0 for c in (old, new, nameless, notes_only)]
        assert directory.keep_in_step(s.connection(), ids) == 2
        # again: nothing new
        assert directory.keep_in_step(s.connection(), ids) == 0
    with Session(engine) as s:
        rows = {c.email: c for c in s.exec(select(Customer))}
    assert set(rows) == {"ola@nordvik.example", "x@gmail.com"}
    ola = rows["ola@nordvik.example"]
    assert (ola.name, ola.organisation) == ("Ola Nordmann", "nordvik.example")
    assert ola.search_key == "ola nordmann ola@nordvik.example"
    assert (rows["x@gmail.com"].name, rows["x@gmail.com"].organisation) == (None, None)
    # a name given later replaces it; none given keeps it
    with unit_of_work(engine) as s:
        directory.save_people(s.connection(), {"ola@nordvik.example": "Ola N."})
        directory.save_people(s.connection(), {"ola@nordvik.example": None})
    with Session(engine) as s:
        ola = s.exec(select(Customer).where(Customer.email == "ola@nordvik.example")).one()
    assert ola.name == "Ola N."


def test_a_note_keeps_each_change_and_refuses_one_made_on_an_older_note(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        alice = create_agent(s, "alice@example.com", "Alice", PASSWORD)
        directory.save_people(s.connection(), {"ola@nordvik.example": "Ola"})
        ola = s.exec(select(Customer)).one()
        assert notes.save_note(
            s, alice, ola, "VIP\r\nprefers phone  ", base_version=0, source=ActivitySource.web
        )
        assert (ola.note, ola.note_version, ola.note_updated_by_id) == (
            "VIP\nprefers phone",
            1,
            alice.id,
        )
        # the same words again change nothing
        assert not notes.save_note(
            s, alice, ola, "VIP\nprefers phone", base_version=1, source=ActivitySource.api
        )
        with pytest.raises(Conflict) as stale:
            notes.save_note(s, alice, ola, "mine", base_version=0, source=ActivitySource.web)
        assert stale.value.details["note"] == "VIP\nprefers phone"
        assert stale.value.details["note_version"] == 1
        with pytest.raises(InvalidInput):
            notes.save_note(
                s, alice, ola, "x" * (notes.NOTE_MAX + 1), base_version=1, source=ActivitySource.web
            )
        edits = list(s.exec(select(CustomerNoteEdit).order_by(col(CustomerNoteEdit.id))))
    assert [(e.note, e.agent_id, e.source) for e in edits] == [
        ("VIP\nprefers phone", alice.id, ActivitySource.web)
    ]


def test_a_rebuild_keeps_the_customers_and_their_notes(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        alice = create_agent(s, "alice@example.com", "Alice", PASSWORD)
        box = f.mailbox(s)
        conv = f.conversation(s, box, "Printer", customer_email="ola@nordvik.example")
        directory.keep_in_step(s.connection(), [conv.id or 0])
        ola = s.exec(select(Customer)).one()
        notes.save_note(s, alice, ola, "VIP", base_version=0, source=ActivitySource.web)
        forget_mail(s, ["support"])
    with Session(engine) as s:
        ola = s.exec(select(Customer)).one()
        assert (ola.email, ola.note) == ("ola@nordvik.example", "VIP")
        assert len(list(s.exec(select(CustomerNoteEdit)))) == 1


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    with fresh_pg_database("imapdesk_mig_") as name:
        yield pg_url(name)


def test_the_migration_makes_the_customers_of_the_conversations_there_are(empty_db: str) -> None:
    config = alembic_config(empty_db)
    command.upgrade(config, "0014")
    engine = create_engine(empty_db)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO mailbox (name, address, imap_host, imap_port, imap_security, "
                "username, enabled, password_encrypted, from_agent_name, status_after_reply, "
                "watched_folders, folder_names, capabilities, created_at) VALUES ('support', "
                "'s@example.test', 'localhost', 993, 'ssl', 's', true, 'x', false, 'pending', "
                "'[]', '{}', '{}', CURRENT_TIMESTAMP)"
            )
        )
        for subject, email, name, day in (
            ("First", "ola@nordvik.example", "Ola", "2024-05-01"),
            ("Second", "ola@nordvik.example", "Ola Nordmann", "2024-05-03"),
            ("Third", "ola@nordvik.example", None, "2024-05-04"),
            ("Private", "kim@gmail.com", "Kim", "2024-05-02"),
            ("A note only", None, None, "2024-05-02"),
        ):
            conn.execute(
                text(
                    "INSERT INTO conversation (mailbox_id, subject, subject_key, status, claimed, "
                    "customer_email, customer_name, message_count, unread, last_message_at, "
                    "created_at, updated_at, version) VALUES (1, :s, :k, 'open', false, :e, :n, "
                    "1, true, :d, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"
                ),
                {"s": subject, "k": subject.lower(), "e": email, "n": name, "d": f"{day} 10:00:00"},
            )
    command.upgrade(config, "0015")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT email, name, organisation, note, note_version FROM customer ORDER BY email"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("kim@gmail.com", "Kim", None, "", 0),
        ("ola@nordvik.example", "Ola Nordmann", "nordvik.example", "", 0),
    ]
    command.downgrade(config, "0014")
    command.upgrade(config, "0015")
    engine.dispose()
