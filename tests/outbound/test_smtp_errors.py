"""Every SMTP failure against the real relay (aiosmtpd), named for what it is and classified by
the server's code: temporary (4xx, the network) is retried, permanent (5xx, settings that
cannot work) is not. And a relay that offers no AUTH: the default login (the IMAP one) is
skipped there, an SMTP user set on purpose is a settings error that says what to change."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from email.utils import make_msgid

import pytest

from imapdesk.devtools.mailserver import LocalMailServer, MailAccount, free_port
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.mail import smtp
from imapdesk.mail.smtp import SendResult, SmtpAccount
from tests.support.imap import folder_messages


@pytest.fixture
def open_relay(mailserver: LocalMailServer) -> Iterator[LocalSmtpRelay]:
    """A relay that offers no AUTH and takes mail from anyone (a local Postfix, a provider's
    relay by address); STARTTLS as usual."""
    relay = LocalSmtpRelay(mailserver, security="starttls", auth="none")
    relay.start()
    yield relay
    relay.stop()


def _account(port: int, box: MailAccount, **kw: object) -> SmtpAccount:
    """The mailbox `box` sending through localhost:`port` with STARTTLS and its own login."""
    values: dict[str, object] = {
        "host": "localhost",
        "port": port,
        "security": "starttls",
        "username": box.user,
        "password": box.password,
        "ca_file": str(box.ca_file),
        "timeout": 10.0,
    }
    values.update(kw)
    return SmtpAccount(**values)  # type: ignore[arg-type]


def _send(account: SmtpAccount, sender: str, recipients: list[str]) -> SendResult:
    """One small message through a fresh connection, as the worker's sender sends it."""
    msgid = make_msgid(domain="example.test")
    raw = (
        f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: Your order\r\n"
        f"Message-ID: {msgid}\r\n\r\nIt is on its way.\r\n"
    ).encode()
    client = smtp.connect(account)
    try:
        return smtp.send_message(
            client, sender, recipients, raw, before_final_dot=lambda: None, where="the relay"
        )
    finally:
        smtp.close(client)


@pytest.mark.parametrize("code", [421, 450, 451, 452, 454, -1])
def test_4xx_and_no_code_at_all_are_temporary(code: int) -> None:
    assert not smtp.is_permanent(code)


@pytest.mark.parametrize("code", [500, 530, 535, 550, 553, 554])
def test_5xx_is_permanent(code: int) -> None:
    assert smtp.is_permanent(code)


def test_nobody_listening_is_temporary(mail_account: MailAccount) -> None:
    port = free_port()
    with pytest.raises(smtp.SmtpUnreachable) as refused:
        smtp.connect(_account(port, mail_account))
    assert not refused.value.permanent
    assert refused.value.message == f"cannot reach localhost:{port} (starttls): connection refused"


def test_tls_failures_are_permanent_and_say_why(
    running_relay: LocalSmtpRelay, mail_account: MailAccount
) -> None:
    with pytest.raises(smtp.SmtpTlsFailed) as untrusted:
        smtp.connect(_account(running_relay.port, mail_account, ca_file=None))
    cause = untrusted.value.__cause__
    assert isinstance(cause, ssl.SSLCertVerificationError)
    assert untrusted.value.permanent
    assert f"certificate could not be verified ({cause.verify_message})" in untrusted.value.message
    # implicit TLS on a STARTTLS port: the server's plain greeting is no TLS handshake
    with pytest.raises(smtp.SmtpTlsFailed) as handshake:
        smtp.connect(_account(running_relay.port, mail_account, security="ssl"))
    assert handshake.value.permanent and "TLS handshake" in handshake.value.message


def test_a_refused_login_is_named_with_the_servers_words(
    running_relay: LocalSmtpRelay, mail_account: MailAccount
) -> None:
    with pytest.raises(smtp.SmtpLoginRefused) as wrong:
        smtp.connect(_account(running_relay.port, mail_account, password="not-it"))
    assert wrong.value.permanent and wrong.value.said.startswith("535")
    assert f"refused the login of {mail_account.user}" in wrong.value.message
    # the IMAP login as a default is still used, and checked, where AUTH is offered
    with pytest.raises(smtp.SmtpLoginRefused):
        smtp.connect(
            _account(running_relay.port, mail_account, password="not-it", login_if_offered=True)
        )


def test_no_login_where_the_server_wants_one_names_the_sender_refusal(
    running_relay: LocalSmtpRelay, mail_account: MailAccount
) -> None:
    with pytest.raises(smtp.SmtpSenderRefused) as refused:
        _send(
            _account(running_relay.port, mail_account, username=None, password=None),
            mail_account.user,
            [mail_account.user],
        )
    assert refused.value.permanent and refused.value.said.startswith("530")
    assert "it takes mail only after a login" in refused.value.message


def test_the_default_login_is_skipped_where_no_auth_is_offered(
    open_relay: LocalSmtpRelay, mail_account: MailAccount, customer: MailAccount
) -> None:
    account = _account(open_relay.port, mail_account, login_if_offered=True)
    result = _send(account, mail_account.user, [customer.user])
    assert result.said.startswith("250") and result.refused == {}
    assert [m.message["Subject"] for m in folder_messages(customer)] == ["Your order"]
    assert open_relay.accepted[-1].rcpt_tos == [customer.user]
    assert smtp.check_connection(account) == (
        f"Connected to localhost:{open_relay.port} (starttls), TLS verified, no login: the "
        "server offers no AUTH and none was set for SMTP."
    )


def test_an_smtp_user_set_where_no_auth_is_offered_says_what_to_change(
    open_relay: LocalSmtpRelay, mail_account: MailAccount
) -> None:
    with pytest.raises(smtp.SmtpSettingsError) as explicit:
        smtp.connect(_account(open_relay.port, mail_account))
    message = explicit.value.message
    assert explicit.value.permanent
    assert f"offers no AUTH, so the SMTP user {mail_account.user} cannot log in" in message
    assert "clear the SMTP user name and password" in message
    assert "Send without logging in" in message and '--smtp-username ""' in message
    assert "cannot reach" not in message
    with pytest.raises(smtp.SmtpSettingsError) as checked:
        smtp.check_connection(_account(open_relay.port, mail_account))
    assert checked.value.message == message
    # the server was reached: AUTH is neither listed nor taken
    plain = smtplib.SMTP("localhost", open_relay.port, timeout=10)
    try:
        plain.ehlo()
        assert not plain.has_extn("auth")
        plain.starttls(context=ssl.create_default_context(cafile=str(mail_account.ca_file)))
        plain.ehlo()
        assert not plain.has_extn("auth")
        code, _ = plain.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")
        assert code >= 500
    finally:
        plain.close()


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [
        ("553 5.7.1 <x@example.test>: Sender address rejected: not owned by user", True),
        ("451 4.3.0 Temporary lookup failure, try again", False),
    ],
)
def test_a_refused_sender_is_classified_by_the_servers_code(
    open_relay: LocalSmtpRelay, mail_account: MailAccount, reply: str, permanent: bool
) -> None:
    open_relay.fail_next(reply, at="MAIL")
    with pytest.raises(smtp.SmtpSenderRefused) as refused:
        _send(
            _account(open_relay.port, mail_account, login_if_offered=True),
            mail_account.user,
            [mail_account.user],
        )
    assert refused.value.permanent is permanent
    assert refused.value.said == reply
    assert refused.value.message == f"the relay refused the sender {mail_account.user}"


def test_refused_recipients_are_named_with_their_addresses(
    open_relay: LocalSmtpRelay, mail_account: MailAccount, customer: MailAccount
) -> None:
    account = _account(open_relay.port, mail_account, login_if_offered=True)
    nobody = "nobody@example.test"
    with pytest.raises(smtp.SmtpRecipientsRefused) as unknown:
        _send(account, mail_account.user, [nobody])
    assert unknown.value.permanent
    assert unknown.value.message == f"the relay refused the recipient {nobody}"
    assert unknown.value.refused == {
        nobody: f"550 5.1.1 <{nobody}>: Recipient address rejected: User unknown"
    }
    assert unknown.value.said.startswith(f"{nobody}: 550 5.1.1")
    # one of two refused: the other gets the message, the refusal is reported with it
    result = _send(account, mail_account.user, [nobody, customer.user])
    assert list(result.refused) == [nobody]
    assert [m.message["Subject"] for m in folder_messages(customer)] == ["Your order"]
    # refused for now, and for good: none got it, so it is worth trying again
    open_relay.fail_next("450 4.2.0 <a@example.test>: Mailbox busy", at="RCPT")
    with pytest.raises(smtp.SmtpRecipientsRefused) as busy:
        _send(account, mail_account.user, [customer.user, nobody])
    assert not busy.value.permanent
    assert busy.value.message == f"the relay refused the recipients {customer.user}, {nobody}"


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [
        ("554 5.7.1 Message rejected: policy violation", True),
        ("451 4.7.1 Greylisted, please try again", False),
    ],
)
def test_a_refused_message_is_classified_by_the_servers_code(
    open_relay: LocalSmtpRelay,
    mail_account: MailAccount,
    customer: MailAccount,
    reply: str,
    permanent: bool,
) -> None:
    open_relay.fail_next(reply)
    with pytest.raises(smtp.SmtpMessageRefused) as refused:
        _send(
            _account(open_relay.port, mail_account, login_if_offered=True),
            mail_account.user,
            [customer.user],
        )
    assert refused.value.permanent is permanent
    assert refused.value.said == reply
    assert refused.value.message == "the relay refused the message"
    assert folder_messages(customer) == []
