"""A mailbox's server settings as an admin gives them (the admin's mailbox page): checked, saved
on a new or an existing mailbox, and turned into the accounts a connection test logs in with
before anything is saved.

SMTP fields left blank fall back as a saved mailbox's do (imapdesk.domain.mailboxes.servers):
no user name means the IMAP login, no password the IMAP password; a user name of "" means no
login at all. Passwords are stored encrypted and never shown again: an empty one keeps the
stored one. A connection test with the password field empty logs in with the stored password
only where the saved settings send it (the same host, port and user, and not in the clear
where they use TLS): the form may name any server, and a stored secret never goes to a
server it was not saved for."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from sqlmodel import Session

from imapdesk.domain.accounts import access
from imapdesk.domain.mailboxes import servers
from imapdesk.domain.mailboxes.config import add_mailbox, mailbox_password
from imapdesk.domain.mailboxes.folders import set_folder_names
from imapdesk.domain.mailboxes.oauth2 import OAuth2Settings, configure
from imapdesk.domain.mailboxes.servers import smtp_account
from imapdesk.kernel.crypto import encrypt_secret
from imapdesk.kernel.errors import ImapdeskError, InvalidInput
from imapdesk.kernel.models import Agent, ImapSecurity, Mailbox, SmtpSecurity
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import ImapAccount
from imapdesk.mail.smtp import SmtpAccount

T = TypeVar("T")
STORED_PASSWORD_ELSEWHERE = (
    "type the password to test another server: with the password field empty, the stored "
    "password is only sent to the server and user it was saved for"
)
TOKEN_ELSEWHERE = (
    "this mailbox logs in with OAuth2, and its token is only sent to the server and user it was "
    "saved for: save the settings first, then test"
)


@dataclass(frozen=True)
class ImapSettings:
    """Where the mailbox lives and how to log in (the password apart: it is never shown)."""

    address: str
    host: str
    port: int
    security: ImapSecurity
    username: str
    ca_file: str | None
    folders: list[str]  # the watched folders; empty: INBOX and the Sent folder
    # the folder of each role the admin set (role -> name; "": found on the server)
    folder_names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SmtpSettings:
    """How replies are sent; blank fields fall back to the IMAP login (see the module)."""

    host: str | None
    port: int | None  # None: the security's usual port
    security: SmtpSecurity
    username: str | None  # None: the IMAP user name; "": no login
    password: str  # "": keep the stored one (the IMAP password when none is stored)
    clear_password: bool  # forget the stored SMTP password: the IMAP one is used again


def smtp_port(text: str) -> int | None:
    """An SMTP port as typed: blank for the security's usual one, else 1 to 65535."""
    text = text.strip()
    if text and not (text.isdigit() and 1 <= int(text) <= 65535):
        raise InvalidInput("the SMTP port is a number from 1 to 65535", field="smtp_port")
    return int(text) if text else None


def folder_list(text: str) -> list[str]:
    """Folder names as typed: separated by commas or lines."""
    return [f.strip() for f in text.replace("\n", ",").split(",") if f.strip()]


def create_mailbox(
    session: Session,
    settings: Settings,
    *,
    name: str,
    imap: ImapSettings,
    password: str,
    smtp: SmtpSettings,
    agent_ids: Iterable[int] = (),
    oauth2: OAuth2Settings | None = None,
) -> Mailbox:
    """A new mailbox for the worker to pick up, also granted to these agents (those restricted
    to some mailboxes; the others work in every mailbox anyway). With `oauth2` it logs in with
    OAuth2, once an admin has connected it."""
    if not (imap.host and imap.username and (password or oauth2 is not None)):
        raise InvalidInput("the IMAP host, user name and password are needed")
    box = add_mailbox(
        session,
        settings,
        name=name,
        address=imap.address,
        imap_host=imap.host,
        imap_port=imap.port,
        imap_security=imap.security,
        username=imap.username,
        password=password,
        ca_file=imap.ca_file,
        folders=imap.folders,
    )
    set_folder_names(box, imap.folder_names)
    apply_smtp(box, smtp, settings)
    if oauth2 is not None:
        configure(session, box, settings, oauth2)
    agents = [a for a in (session.get(Agent, i) for i in agent_ids) if a is not None]
    access.grant_mailbox(session, box, agents)
    return box


def update_mailbox(
    box: Mailbox,
    settings: Settings,
    *,
    imap: ImapSettings,
    password: str,
    smtp: SmtpSettings,
    enabled: bool,
) -> None:
    """New settings for an existing mailbox (its name stays); an empty password keeps the
    stored one."""
    if "@" not in imap.address or not imap.host or not imap.username:
        raise InvalidInput("the address, the IMAP host and the user name are needed")
    box.address = imap.address.lower()
    box.imap_host = imap.host
    box.imap_port = imap.port
    box.imap_security = imap.security
    box.username = imap.username
    box.ca_file = imap.ca_file
    box.watched_folders = list(imap.folders)
    set_folder_names(box, imap.folder_names)
    box.enabled = enabled
    if password:
        box.password_encrypted = encrypt_secret(password, settings.secret_key)
    apply_smtp(box, smtp, settings)


def apply_smtp(box: Mailbox, smtp: SmtpSettings, settings: Settings) -> None:
    box.smtp_host = smtp.host or None
    box.smtp_port = smtp.port
    box.smtp_security = smtp.security
    box.smtp_username = smtp.username
    if smtp.password:
        box.smtp_password_encrypted = encrypt_secret(smtp.password, settings.secret_key)
    elif smtp.clear_password:
        box.smtp_password_encrypted = None


def login_password(box: Mailbox | None, typed: str, settings: Settings) -> str:
    """The IMAP password to test with: the one typed, else the stored one ("" when there is
    none or it cannot be read, say after the secret key changed: the test then says so)."""
    if typed or box is None:
        return typed
    try:
        return mailbox_password(box, settings)
    except ImapdeskError:
        return ""


def imap_account(imap: ImapSettings, password: str, *, label: str) -> ImapAccount:
    """The IMAP login these settings give, saved or not."""
    return ImapAccount(
        imap.host,
        imap.port,
        imap.security.value,
        imap.username,
        password,
        imap.ca_file,
        label=label,
    )


def _where_saved(draft: ImapAccount | SmtpAccount, saved: ImapAccount | SmtpAccount | None) -> bool:
    """Whether `draft` sends its password where `saved` sends the same one: the same host,
    port and user, and not in the clear where the saved login is not."""
    return (
        saved is not None
        and saved.password == draft.password
        and draft.host.strip().lower() == saved.host.strip().lower()
        and draft.port == saved.port
        and draft.username == saved.username
        and (draft.security != "none" or saved.security == "none")
    )


A = TypeVar("A", ImapAccount, SmtpAccount)


def _oauth2_test_account(draft: A, saved: A | None) -> A | None:
    """The saved OAuth2 login, when the settings tested are the saved ones (InvalidInput when
    they name another server or user: a token goes nowhere else); None: no OAuth2 login."""
    if saved is None or saved.oauth2 is None:
        return None
    if (
        draft.host.strip().lower() != saved.host.strip().lower()
        or draft.port != saved.port
        or draft.username != saved.username
        or draft.security != saved.security
    ):
        raise InvalidInput(TOKEN_ELSEWHERE)
    return saved


def _saved(make: Callable[[], T]) -> T | None:
    # a stored secret that cannot be read (the secret key changed) goes nowhere
    try:
        return make()
    except ImapdeskError:
        return None


def imap_test_account(
    settings: Settings, box: Mailbox | None, imap: ImapSettings, typed: str, *, label: str
) -> ImapAccount:
    """The IMAP login a connection test makes: with the password typed; with none typed, a
    saved mailbox's stored one, but only to its saved server and user (InvalidInput
    otherwise)."""
    account = imap_account(imap, login_password(box, typed, settings), label=label)
    if not typed and box is not None:
        oauth2_login = _oauth2_test_account(
            account, _saved(lambda: servers.imap_account(box, settings))
        )
        if oauth2_login is not None:
            return oauth2_login
    if typed or box is None or not account.password:
        return account
    if not _where_saved(account, _saved(lambda: servers.imap_account(box, settings))):
        raise InvalidInput(STORED_PASSWORD_ELSEWHERE, field="password")
    return account


def smtp_test_account(
    settings: Settings,
    box: Mailbox | None,
    *,
    name: str,
    imap: ImapSettings,
    typed: str,
    smtp: SmtpSettings,
) -> SmtpAccount | None:
    """The SMTP login a connection test makes (None: no SMTP host), with a saved mailbox's
    fall-backs. A password neither typed (the IMAP or the SMTP one) nor sent by the saved
    settings to this very server and user is refused (InvalidInput)."""
    account = draft_smtp_account(
        settings,
        name=name,
        imap=imap,
        imap_password=login_password(box, typed, settings),
        smtp=smtp,
        stored=box,
    )
    if account is not None and box is not None and not typed and not smtp.password:
        oauth2_login = _oauth2_test_account(account, _saved(lambda: smtp_account(box, settings)))
        if oauth2_login is not None:
            return oauth2_login
    if account is None or box is None or not account.password:
        return account
    if account.password in {typed, smtp.password} - {""}:
        return account
    if not _where_saved(account, _saved(lambda: smtp_account(box, settings))):
        raise InvalidInput(STORED_PASSWORD_ELSEWHERE, field="smtp_password")
    return account


def draft_smtp_account(
    settings: Settings,
    *,
    name: str,
    imap: ImapSettings,
    imap_password: str,
    smtp: SmtpSettings,
    stored: Mailbox | None,
) -> SmtpAccount | None:
    """The SMTP login these settings give, saved or not, with a saved mailbox's fall-backs:
    an unsaved copy of the row, carrying the stored SMTP password of `stored`, goes through
    the same `smtp_account` as the sender's. None: no SMTP host."""
    draft = Mailbox(
        name=name or "draft",
        address=imap.address,
        imap_host=imap.host,
        username=imap.username,
        ca_file=imap.ca_file,
        password_encrypted=encrypt_secret(imap_password, settings.secret_key),
        smtp_password_encrypted=stored.smtp_password_encrypted if stored is not None else None,
    )
    apply_smtp(draft, smtp, settings)
    return smtp_account(draft, settings)
