"""The mailbox form: what it posts (new and existing mailboxes alike), read into the domain's
settings, and what it shows again (never a password: only whether one is stored)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Form
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField

from imapdesk.api.deps import IdValue
from imapdesk.domain.mailboxes.server_settings import (
    ImapSettings,
    SmtpSettings,
    folder_list,
    smtp_port,
)
from imapdesk.kernel.models import ImapSecurity, Mailbox, SmtpSecurity


@dataclass
class MailboxForm:
    """The form's fields as shown."""

    name: str = ""
    address: str = ""
    imap_host: str = ""
    imap_port: int = 993
    imap_security: str = ImapSecurity.ssl.value
    username: str = ""
    password: str = ""
    ca_file: str = ""
    folders: str = ""
    enabled: bool = True
    # SMTP: blank fields fall back (imapdesk.domain.mailboxes.servers); passwords are never shown
    smtp_host: str = ""
    smtp_port: str = ""
    smtp_security: str = SmtpSecurity.starttls.value
    smtp_username: str = ""
    smtp_no_login: bool = False
    smtp_password_stored: bool = False

    @classmethod
    def of(cls, box: Mailbox) -> MailboxForm:
        """A saved mailbox's settings."""
        return cls(
            name=box.name,
            address=box.address,
            imap_host=box.imap_host,
            imap_port=box.imap_port,
            imap_security=ImapSecurity(box.imap_security).value,
            username=box.username,
            ca_file=box.ca_file or "",
            folders=", ".join(box.watched_folders or []),
            enabled=box.enabled,
            smtp_host=box.smtp_host or "",
            smtp_port=str(box.smtp_port or ""),
            smtp_security=SmtpSecurity(box.smtp_security or SmtpSecurity.starttls).value,
            smtp_username=box.smtp_username or "",
            smtp_no_login=box.smtp_username == "" and not box.smtp_password_encrypted,
            smtp_password_stored=bool(box.smtp_password_encrypted),
        )

    def show_smtp(self, smtp: SmtpSettings, *, password_stored: bool) -> None:
        """The SMTP fields as submitted (read back from the settings they gave)."""
        self.smtp_host = smtp.host or ""
        self.smtp_port = str(smtp.port or "")
        self.smtp_security = smtp.security.value
        self.smtp_username = smtp.username or ""
        self.smtp_no_login = smtp.username == ""
        self.smtp_password_stored = password_stored

    def imap_settings(self) -> ImapSettings:
        return ImapSettings(
            address=self.address,
            host=self.imap_host,
            port=self.imap_port,
            security=ImapSecurity(self.imap_security),
            username=self.username,
            ca_file=self.ca_file or None,
            folders=folder_list(self.folders),
        )


class MailboxSubmission(BaseModel):
    """What the mailbox form posts (a new mailbox's `name` and `agents`, an existing one's
    `enabled`); `op` is the button: save, test (IMAP) or smtp (the SMTP test)."""

    model_config = ConfigDict(extra="ignore")

    csrf_token: str = PydanticField("", max_length=200)
    op: str = PydanticField("save", max_length=10)
    name: str = PydanticField("", max_length=100)
    address: str = PydanticField("", max_length=320)
    imap_host: str = PydanticField("", max_length=255)
    imap_port: int = PydanticField(993, ge=1, le=65535)
    imap_security: str = PydanticField("ssl", max_length=10)
    username: str = PydanticField("", max_length=320)
    password: str = PydanticField("", max_length=1000)
    ca_file: str = PydanticField("", max_length=1000)
    folders: str = PydanticField("", max_length=2000)
    enabled: bool = False
    agents: list[IdValue] = []
    smtp_host: str = PydanticField("", max_length=255)
    smtp_port: str = PydanticField("", max_length=10)
    smtp_security: str = PydanticField("starttls", max_length=10)
    smtp_username: str = PydanticField("", max_length=320)
    smtp_no_login: bool = False
    smtp_password: str = PydanticField("", max_length=1000)
    smtp_clear_password: bool = False

    def form(self, *, name: str, enabled: bool) -> MailboxForm:
        """The IMAP part, to show again."""
        security = self.imap_security
        return MailboxForm(
            name=name.strip(),
            address=self.address.strip(),
            imap_host=self.imap_host.strip(),
            imap_port=self.imap_port,
            imap_security=security if security in ImapSecurity.__members__ else "ssl",
            username=self.username.strip(),
            password=self.password,
            ca_file=self.ca_file.strip(),
            folders=self.folders,
            enabled=enabled,
        )

    def smtp(self) -> SmtpSettings:
        """The SMTP part; InvalidInput for a port that is not one."""
        security = self.smtp_security
        no_login = self.smtp_no_login
        return SmtpSettings(
            host=self.smtp_host.strip(),
            port=smtp_port(self.smtp_port),
            security=SmtpSecurity(security if security in SmtpSecurity.__members__ else "starttls"),
            username="" if no_login else (self.smtp_username.strip() or None),
            password="" if no_login else self.smtp_password,
            clear_password=self.smtp_clear_password or no_login,
        )


MailboxPost = Annotated[MailboxSubmission, Form()]
