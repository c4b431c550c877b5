"""SMTP security against the real relay: the certificate is verified (a private CA only with the
CA file), AUTH is refused with a wrong password (permanent), and STARTTLS is required (a login
set for a plain connection is a settings error)."""

from __future__ import annotations

import smtplib

import pytest

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.mail.smtp import SmtpAccount, SmtpError, SmtpSettingsError, close, connect


def _account(relay: LocalSmtpRelay, box: MailAccount, **kw: object) -> SmtpAccount:
    values: dict[str, object] = {
        "host": "localhost",
        "port": relay.port,
        "security": "starttls",
        "username": box.user,
        "password": box.password,
        "ca_file": str(box.ca_file),
        "timeout": 10.0,
    }
    values.update(kw)
    return SmtpAccount(**values)  # type: ignore[arg-type]


def test_tls_verified_and_auth_checked(
    running_relay: LocalSmtpRelay, mail_account: MailAccount
) -> None:
    client = connect(_account(running_relay, mail_account))
    close(client)
    with pytest.raises(SmtpError) as untrusted:
        connect(_account(running_relay, mail_account, ca_file=None))
    assert "certificate could not be verified" in untrusted.value.message
    with pytest.raises(SmtpError) as wrong:
        connect(_account(running_relay, mail_account, password="not-it"))
    assert wrong.value.permanent and wrong.value.said.startswith("535")
    # the relay offers AUTH (and takes mail) only after STARTTLS: the login cannot happen
    with pytest.raises(SmtpSettingsError) as in_the_clear:
        connect(_account(running_relay, mail_account, security="none"))
    assert in_the_clear.value.permanent
    assert "offer AUTH only over TLS: check the security setting" in in_the_clear.value.message
    plain = smtplib.SMTP("localhost", running_relay.port, timeout=10)
    try:
        code, _ = plain.mail(mail_account.user)
        assert code >= 500
    finally:
        plain.close()
