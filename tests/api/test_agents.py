"""imapdesk.domain.accounts.agents: accounts, sign-in and API tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from imapdesk.domain.accounts.agents import (
    agent_for_token,
    authenticate,
    create_agent,
    create_api_token,
    handle_from_email,
)
from imapdesk.kernel.crypto import hash_api_token
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import Conflict, InvalidInput
from imapdesk.kernel.models import ApiToken


@pytest.mark.parametrize(
    ("email", "handle"),
    [
        ("Alice@Example.com", "alice"),
        ("john.doe+help@example.com", "john-doe-help"),
        ("jörg_ü@example.com", "jorg_u"),
        ("...@example.com", "agent"),
        ("a" * 40 + "@example.com", "a" * 32),
    ],
)
def test_handle_from_email(email: str, handle: str) -> None:
    assert handle_from_email(email) == handle


def test_create_agent_hashes_and_derives_a_unique_handle(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        a = create_agent(s, " Bob@Example.com ", "Bob", "pw-one")
        b = create_agent(s, "bob@other.example", "Bob Two", "pw-two", is_admin=True)
        c = create_agent(s, "bob@third.example", "", "pw-three")
        assert (a.email, a.handle) == ("bob@example.com", "bob")
        assert b.handle == "bob-2" and b.is_admin
        assert c.handle == "bob-3" and c.name == "bob"
        assert a.password_hash.startswith("$argon2") and "pw-one" not in a.password_hash
        with pytest.raises(Conflict):
            create_agent(s, "BOB@example.com", "Again", "x")
        with pytest.raises(Conflict):
            create_agent(s, "carol@example.com", "Carol", "x", handle="bob")
        with pytest.raises(InvalidInput):
            create_agent(s, "carol@example.com", "Carol", "x", handle="Not Valid")
        with pytest.raises(InvalidInput):
            create_agent(s, "not-an-email", "Carol", "x")
        with pytest.raises(InvalidInput):
            create_agent(s, "carol@example.com", "Carol", "")


def test_authenticate(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        agent = create_agent(s, "dana@example.com", "Dana", "s3cret-pass")
    with unit_of_work(engine) as s:
        found = authenticate(s, "DANA@example.com", "s3cret-pass")
        assert found is not None and found.id == agent.id
        assert authenticate(s, "dana@example.com", "wrong") is None
        assert authenticate(s, "nobody@example.com", "s3cret-pass") is None
        assert found is not None
        found.is_active = False
        s.add(found)
    with unit_of_work(engine) as s:
        assert authenticate(s, "dana@example.com", "s3cret-pass") is None


def test_api_tokens_store_only_a_hash_and_prefix(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        agent = create_agent(s, "erin@example.com", "Erin", "pw")
        token = create_api_token(s, agent, name="ci")
    with unit_of_work(engine) as s:
        row = s.exec(select(ApiToken)).one()
        assert row.token_hash == hash_api_token(token) and token not in row.token_hash
        assert token.startswith(row.prefix) and len(row.prefix) <= 16
        assert row.name == "ci" and row.last_used_at is None
        found = agent_for_token(s, token)
        assert found is not None and found.id == agent.id
        assert agent_for_token(s, token + "x") is None
        assert agent_for_token(s, "") is None
    with unit_of_work(engine) as s:
        row = s.exec(select(ApiToken)).one()
        first_use = row.last_used_at
        assert first_use is not None
        agent_for_token(s, token)
    with unit_of_work(engine) as s:
        row = s.exec(select(ApiToken)).one()
        # within the minute: not written again
        assert row.last_used_at == first_use
        row.last_used_at = datetime.now(UTC) - timedelta(minutes=5)
        s.add(row)
    with unit_of_work(engine) as s:
        agent_for_token(s, token)
    with unit_of_work(engine) as s:
        row = s.exec(select(ApiToken)).one()
        assert row.last_used_at is not None and row.last_used_at > first_use
        row.revoked_at = datetime.now(UTC)
        s.add(row)
    with unit_of_work(engine) as s:
        assert agent_for_token(s, token) is None
