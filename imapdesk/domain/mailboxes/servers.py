"""The servers a mailbox logs in to, as the plain account values the mail layer takes.

The mail layer (`imapdesk.mail`) knows nothing of the database or of stored secrets: the
mailbox's row and the settings are turned into an account here, with the secrets decrypted and
the fall-backs applied.
"""

from __future__ import annotations

from imapdesk.domain.mailboxes.config import mailbox_password
from imapdesk.domain.mailboxes.oauth2 import tokens_for
from imapdesk.kernel.crypto import decrypt_secret
from imapdesk.kernel.models import Mailbox, SmtpSecurity
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import ImapAccount
from imapdesk.mail.smtp import DEFAULT_PORTS, SmtpAccount


def imap_account(mailbox: Mailbox, settings: Settings) -> ImapAccount:
    """The mailbox's IMAP server, as the worker logs in to it. An OAuth2 mailbox's account
    carries its token keeper (imapdesk.domain.mailboxes.oauth2): every login of the mailbox,
    whichever connection makes it, asks it for a token that is valid now."""
    return ImapAccount(
        host=mailbox.imap_host,
        port=mailbox.imap_port,
        security=mailbox.imap_security.value,
        username=mailbox.username,
        password=mailbox_password(mailbox, settings),
        ca_file=mailbox.ca_file,
        label=mailbox.name,
        oauth2=tokens_for(mailbox, settings),
    )


def smtp_account(mailbox: Mailbox, settings: Settings) -> SmtpAccount | None:
    """The mailbox's SMTP server, or None when it has none. Without an SMTP user or password of
    its own, the IMAP login is used (the usual case on one server), and only where the server
    offers AUTH (a local Postfix or a provider's relay takes mail without it); an SMTP login set
    on purpose is required; an SMTP user name of "" means no login at all."""
    if not mailbox.smtp_host:
        return None
    security = SmtpSecurity(mailbox.smtp_security or SmtpSecurity.starttls).value
    tokens = tokens_for(mailbox, settings)
    if tokens is not None and mailbox.smtp_username != "":
        # the IMAP login's token, for the SMTP user (by default the same)
        return SmtpAccount(
            host=mailbox.smtp_host,
            port=mailbox.smtp_port or DEFAULT_PORTS[security],
            security=security,
            username=mailbox.smtp_username or mailbox.username,
            password=None,
            ca_file=mailbox.ca_file,
            timeout=settings.smtp_timeout_seconds,
            oauth2=tokens,
        )
    username: str | None
    password: str | None
    if mailbox.smtp_password_encrypted:
        password = decrypt_secret(mailbox.smtp_password_encrypted, settings.secret_key)
        username = mailbox.smtp_username or mailbox.username
    elif mailbox.smtp_username == "":
        username = password = None
    else:
        username = mailbox.smtp_username or mailbox.username
        password = decrypt_secret(mailbox.password_encrypted, settings.secret_key)
    return SmtpAccount(
        host=mailbox.smtp_host,
        port=mailbox.smtp_port or DEFAULT_PORTS[security],
        security=security,
        username=username,
        password=password,
        ca_file=mailbox.ca_file,
        timeout=settings.smtp_timeout_seconds,
        login_if_offered=not mailbox.smtp_username and not mailbox.smtp_password_encrypted,
    )
