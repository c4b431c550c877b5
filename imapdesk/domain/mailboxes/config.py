"""Mailbox configuration: adding boxes, their secrets, and the folders the worker watches."""

from __future__ import annotations

import re

from sqlmodel import Session, select

from imapdesk.kernel.crypto import decrypt_secret, encrypt_secret
from imapdesk.kernel.errors import Conflict, InvalidInput
from imapdesk.kernel.models import Folder, FolderRole, ImapSecurity, Mailbox, SmtpSecurity
from imapdesk.kernel.settings import Settings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def add_mailbox(
    session: Session,
    settings: Settings,
    *,
    name: str,
    address: str,
    imap_host: str,
    imap_port: int,
    imap_security: ImapSecurity,
    username: str,
    password: str,
    ca_file: str | None = None,
    smtp_host: str | None = None,
    smtp_port: int | None = None,
    smtp_security: SmtpSecurity | None = None,
    smtp_username: str | None = None,
    smtp_password: str | None = None,
    folders: list[str] | None = None,
) -> Mailbox:
    if not _NAME.match(name):
        raise InvalidInput(
            f"mailbox name {name!r} is not allowed: use letters, digits, '_', '-' or '.'",
            field="name",
        )
    if "@" not in address:
        raise InvalidInput(f"{address!r} is not an email address", field="address")
    if session.exec(select(Mailbox).where(Mailbox.name == name)).first():
        raise Conflict(f"a mailbox named {name!r} exists already", field="name")
    mailbox = Mailbox(
        name=name,
        address=address.strip().lower(),
        imap_host=imap_host,
        imap_port=imap_port,
        imap_security=imap_security,
        username=username,
        ca_file=ca_file,
        password_encrypted=encrypt_secret(password, settings.secret_key),
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        smtp_security=smtp_security,
        smtp_username=smtp_username,
        smtp_password_encrypted=(
            encrypt_secret(smtp_password, settings.secret_key) if smtp_password else None
        ),
        watched_folders=list(folders or []),
    )
    session.add(mailbox)
    session.flush()
    return mailbox


def mailbox_password(mailbox: Mailbox, settings: Settings) -> str:
    return decrypt_secret(mailbox.password_encrypted, settings.secret_key)


def our_addresses(session: Session) -> frozenset[str]:
    """The shared boxes' own addresses: mail from them is outbound."""
    return frozenset(a.lower() for a in session.exec(select(Mailbox.address)).all())


def ensure_folder(
    session: Session, mailbox_id: int, name: str, role: FolderRole, *, watched: bool
) -> Folder:
    folder = session.exec(
        select(Folder).where(Folder.mailbox_id == mailbox_id, Folder.name == name)
    ).first()
    if folder is None:
        folder = Folder(mailbox_id=mailbox_id, name=name, role=role, watched=watched)
        session.add(folder)
        session.flush()
    elif folder.role != role or folder.watched != watched:
        folder.role = role
        folder.watched = watched
    return folder
