"""The rules behind the admin pages, without a browser: agents (a long enough password, no admin
locks themselves out, a token revoked once) and a mailbox's server settings (what is required,
what an empty password keeps, the SMTP fall-backs a connection test uses). Both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.domain.accounts import access, administration
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.domain.mailboxes import server_settings
from imapdesk.domain.mailboxes.config import mailbox_password
from imapdesk.domain.mailboxes.connection_check import check_smtp
from imapdesk.domain.mailboxes.server_settings import ImapSettings, SmtpSettings
from imapdesk.kernel import crypto
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import Forbidden, InvalidInput, NotFound
from imapdesk.kernel.models import ApiToken, ImapSecurity, Mailbox, SmtpSecurity
from imapdesk.kernel.settings import Settings

IMAP = ImapSettings(
    address="Support@Example.test",
    host="imap.example.test",
    port=993,
    security=ImapSecurity.ssl,
    username="support",
    ca_file=None,
    folders=["INBOX", "Sent"],
)
NO_SMTP = SmtpSettings(
    host=None,
    port=None,
    security=SmtpSecurity.starttls,
    username=None,
    password="",
    clear_password=False,
)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url)


def test_a_password_an_admin_sets_has_eight_characters(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        with pytest.raises(InvalidInput, match="the password needs at least 8"):
            administration.add_agent(
                s, "carol@example.com", "Carol", "short", is_admin=False, all_mailboxes=True
            )
        carol = administration.add_agent(
            s, "carol@example.com", "Carol", "long enough", is_admin=False, all_mailboxes=True
        )
        old_hash = carol.password_hash
        with pytest.raises(InvalidInput, match="the new password needs at least 8"):
            administration.set_password(s, carol, "1234567")
        assert carol.password_hash == old_hash
        administration.set_password(s, carol, "another long one")
        assert carol.password_hash != old_hash
        assert crypto.verify_password("another long one", carol.password_hash)


def test_no_admin_removes_their_own_rights_or_deactivates_themselves(
    engine: Engine, settings: Settings
) -> None:
    with unit_of_work(engine) as s:
        admin = create_agent(s, "admin@example.com", "Ada", "a password", is_admin=True)
        bob = create_agent(s, "bob@example.com", "Bob", "a password")
        box = server_settings.create_mailbox(
            s, settings, name="support", imap=IMAP, password="imap secret", smtp=NO_SMTP
        )
        for is_admin, is_active in ((False, True), (True, False)):
            with pytest.raises(Forbidden, match="your own admin rights"):
                administration.change_agent(
                    s,
                    admin,
                    admin,
                    name="Someone Else",
                    is_admin=is_admin,
                    is_active=is_active,
                    all_mailboxes=True,
                )
            assert admin.name == "Ada" and admin.is_admin and admin.is_active
        # another agent: name (blank keeps it), roles and access
        administration.change_agent(
            s,
            admin,
            bob,
            name=" ",
            is_admin=False,
            is_active=False,
            all_mailboxes=False,
            mailbox_ids=[box.id or 0],
        )
        assert bob.name == "Bob" and not bob.is_active and not bob.all_mailboxes
        assert access.granted_mailbox_ids(s, bob) == {box.id}


def test_a_token_is_revoked_once(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        bob = create_agent(s, "bob@example.com", "Bob", "a password")
        create_api_token(s, bob, name="zapier")
        token_id = s.exec(select(ApiToken.id)).one()
        assert token_id is not None
        first = administration.revoke_api_token(s, token_id).revoked_at
        assert first is not None
        assert administration.revoke_api_token(s, token_id).revoked_at == first
        with pytest.raises(NotFound, match="no API token 999"):
            administration.revoke_api_token(s, 999)


def test_a_mailbox_needs_its_login_and_keeps_a_password_left_empty(
    engine: Engine, settings: Settings
) -> None:
    with unit_of_work(engine) as s:
        with pytest.raises(InvalidInput, match="host, user name and password are needed"):
            server_settings.create_mailbox(
                s, settings, name="support", imap=IMAP, password="", smtp=NO_SMTP
            )
        restricted = create_agent(s, "carol@example.com", "Carol", "a password")
        access.set_mailbox_access(s, restricted, all_mailboxes=False)
        box = server_settings.create_mailbox(
            s,
            settings,
            name="support",
            imap=IMAP,
            password="imap secret",
            smtp=NO_SMTP,
            agent_ids=[restricted.id or 0],
        )
        assert box.address == "support@example.test" and box.watched_folders == ["INBOX", "Sent"]
        assert access.can_see_mailbox(s, restricted, box.id or 0)
        box_id = box.id

    with unit_of_work(engine) as s:
        box = s.get(Mailbox, box_id)
        assert box is not None
        with pytest.raises(InvalidInput, match="the address, the IMAP host and the user name"):
            server_settings.update_mailbox(
                box,
                settings,
                imap=ImapSettings(**{**IMAP.__dict__, "address": "nobody"}),
                password="",
                smtp=NO_SMTP,
                enabled=False,
            )
        assert box.address == "support@example.test" and box.enabled
        server_settings.update_mailbox(
            box,
            settings,
            imap=ImapSettings(**{**IMAP.__dict__, "host": "imap2.example.test", "folders": []}),
            password="",
            smtp=NO_SMTP,
            enabled=False,
        )
    with Session(engine) as s:
        box = s.get(Mailbox, box_id)
        assert box is not None and box.imap_host == "imap2.example.test" and not box.enabled
        assert box.watched_folders == []
        assert mailbox_password(box, settings) == "imap secret"
        # a test with an empty password field logs in with the stored one
        assert server_settings.login_password(box, "", settings) == "imap secret"
        assert server_settings.login_password(box, "typed", settings) == "typed"
        assert server_settings.login_password(None, "", settings) == ""


def test_the_smtp_settings_a_test_uses_fall_back_as_a_saved_mailboxs(settings: Settings) -> None:
    typed = SmtpSettings(
        host="smtp.example.test",
        port=None,
        security=SmtpSecurity.ssl,
        username=None,
        password="",
        clear_password=False,
    )
    account = server_settings.draft_smtp_account(
        settings, name="", imap=IMAP, imap_password="imap secret", smtp=typed, stored=None
    )
    assert account is not None
    assert (account.port, account.username, account.password) == (465, "support", "imap secret")

    stored = Mailbox(
        name="support",
        address="support@example.test",
        imap_host="imap.example.test",
        username="support",
        password_encrypted="",
        smtp_password_encrypted=crypto.encrypt_secret("smtp secret", settings.secret_key),
    )
    account = server_settings.draft_smtp_account(
        settings, name="support", imap=IMAP, imap_password="imap secret", smtp=typed, stored=stored
    )
    assert account is not None and account.password == "smtp secret"

    no_login = SmtpSettings(
        host="smtp.example.test",
        port=2525,
        security=SmtpSecurity.none,
        username="",
        password="",
        clear_password=True,
    )
    account = server_settings.draft_smtp_account(
        settings, name="", imap=IMAP, imap_password="x", smtp=no_login, stored=stored
    )
    assert account is not None and (account.port, account.username, account.password) == (
        2525,
        None,
        None,
    )

    none = server_settings.draft_smtp_account(
        settings, name="", imap=IMAP, imap_password="x", smtp=NO_SMTP, stored=None
    )
    assert none is None
    result = check_smtp(none)
    assert not result.ok and "no SMTP host is set" in result.message


def test_typed_ports_and_folders() -> None:
    assert server_settings.smtp_port(" ") is None
    assert server_settings.smtp_port("587") == 587
    for bad in ("0", "65536", "smtp", "-1"):
        with pytest.raises(InvalidInput, match="from 1 to 65535"):
            server_settings.smtp_port(bad)
    assert server_settings.folder_list("INBOX, Sent\nSupport/Done,,") == [
        "INBOX",
        "Sent",
        "Support/Done",
    ]


def test_an_unknown_mailbox_leaves_the_agent_unchanged(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        admin = create_agent(s, "admin@example.com", "Ada", "a password", is_admin=True)
        bob = create_agent(s, "bob@example.com", "Bob", "a password")
        with pytest.raises(InvalidInput, match="no mailbox with id"):
            administration.change_agent(
                s,
                admin,
                bob,
                name="Robert",
                is_admin=True,
                is_active=True,
                all_mailboxes=False,
                mailbox_ids=[12345],
            )
        assert bob.name == "Bob" and not bob.is_admin and bob.all_mailboxes
