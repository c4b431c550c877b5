"""The mailbox form: what it posts (new and existing mailboxes alike), read into the domain's
settings, and what it shows again (never a password: only whether one is stored)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Form
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField

from imapdesk.api.deps import IdValue
from imapdesk.domain.mailboxes.folders import LABELS, folder_settings
from imapdesk.domain.mailboxes.oauth2 import OAuth2Settings, known_endpoints
from imapdesk.domain.mailboxes.server_settings import (
    ImapSettings,
    SmtpSettings,
    folder_list,
    smtp_port,
)
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import (
    ConversationStatus,
    ImapSecurity,
    Mailbox,
    MailboxOAuth2,
    OAuth2Provider,
    SmtpSecurity,
)
from imapdesk.mail.imap.folders import ROLES

# what a conversation may become once a reply went out
REPLY_STATUSES = tuple(
    s.value
    for s in (ConversationStatus.open, ConversationStatus.pending, ConversationStatus.closed)
)


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
    # the folder of each role the admin set (role -> name; empty: found on the server)
    folder_names: dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    # SMTP: blank fields fall back (imapdesk.domain.mailboxes.servers); passwords are never shown
    smtp_host: str = ""
    smtp_port: str = ""
    smtp_security: str = SmtpSecurity.starttls.value
    smtp_username: str = ""
    smtp_no_login: bool = False
    smtp_password_stored: bool = False
    # how it logs in: "password", or "oauth2" with these (the client secret is never shown)
    auth: str = "password"
    oauth2_provider: str = OAuth2Provider.microsoft.value
    oauth2_client_id: str = ""
    oauth2_issuer: str = ""
    oauth2_token_url: str = ""
    oauth2_authorization_url: str = ""
    oauth2_scopes: str = ""
    oauth2_secret_stored: bool = False
    # opening a conversation marks it read (imapdesk/domain/conversations/reading.py)
    mark_read_on_open: bool = True
    # outbound mail (imapdesk/domain/outbound/replies.py, delivery.py)
    display_name: str = ""
    signature: str = ""
    from_agent_name: bool = False
    status_after_reply: str = ConversationStatus.pending.value

    def apply_outbound(self, box: Mailbox) -> None:
        """The outbound settings onto the mailbox (as checked by `MailboxSubmission.outbound`)."""
        box.display_name = self.display_name or None
        box.signature = self.signature or None
        box.from_agent_name = self.from_agent_name
        box.status_after_reply = ConversationStatus(self.status_after_reply)

    @classmethod
    def of(cls, box: Mailbox, grant: MailboxOAuth2 | None = None) -> MailboxForm:
        """A saved mailbox's settings."""
        form = cls._of(box)
        if grant is not None:
            # endpoints are shown only where typed: not the provider's own, not discovered
            own = known_endpoints(OAuth2Settings(grant.provider, grant.client_id))
            typed = not grant.issuer
            form.auth = "oauth2"
            form.oauth2_provider = grant.provider.value
            form.oauth2_client_id = grant.client_id
            form.oauth2_issuer = grant.issuer or ""
            if typed and grant.token_endpoint != own.token:
                form.oauth2_token_url = grant.token_endpoint
            if typed and grant.authorization_endpoint != own.authorization:
                form.oauth2_authorization_url = grant.authorization_endpoint or ""
            form.oauth2_scopes = " ".join(grant.scopes or [])
            form.oauth2_secret_stored = bool(grant.client_secret_encrypted)
        return form

    @classmethod
    def _of(cls, box: Mailbox) -> MailboxForm:
        return cls(
            name=box.name,
            address=box.address,
            imap_host=box.imap_host,
            imap_port=box.imap_port,
            imap_security=ImapSecurity(box.imap_security).value,
            username=box.username,
            ca_file=box.ca_file or "",
            folders=", ".join(box.watched_folders or []),
            folder_names=folder_settings(box),
            enabled=box.enabled,
            smtp_host=box.smtp_host or "",
            smtp_port=str(box.smtp_port or ""),
            smtp_security=SmtpSecurity(box.smtp_security or SmtpSecurity.starttls).value,
            smtp_username=box.smtp_username or "",
            smtp_no_login=box.smtp_username == "" and not box.smtp_password_encrypted,
            smtp_password_stored=bool(box.smtp_password_encrypted),
            mark_read_on_open=box.mark_read_on_open,
            display_name=box.display_name or "",
            signature=box.signature or "",
            from_agent_name=box.from_agent_name,
            status_after_reply=ConversationStatus(box.status_after_reply).value,
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
            folder_names={role: self.folder_names.get(role, "") for role in ROLES},
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
    # the folder of each role (the form's `<label>_folder` fields, labels as in the CLI)
    pending_folder: str = PydanticField("", max_length=500)
    archive_folder: str = PydanticField("", max_length=500)
    spam_folder: str = PydanticField("", max_length=500)
    trash_folder: str = PydanticField("", max_length=500)
    notes_folder: str = PydanticField("", max_length=500)
    sent_folder: str = PydanticField("", max_length=500)
    enabled: bool = False
    agents: list[IdValue] = []
    smtp_host: str = PydanticField("", max_length=255)
    smtp_port: str = PydanticField("", max_length=10)
    smtp_security: str = PydanticField("starttls", max_length=10)
    smtp_username: str = PydanticField("", max_length=320)
    smtp_no_login: bool = False
    smtp_password: str = PydanticField("", max_length=1000)
    smtp_clear_password: bool = False
    auth: str = PydanticField("password", max_length=10)
    oauth2_provider: str = PydanticField("microsoft", max_length=20)
    oauth2_client_id: str = PydanticField("", max_length=500)
    oauth2_client_secret: str = PydanticField("", max_length=2000)
    oauth2_issuer: str = PydanticField("", max_length=1000)
    oauth2_token_url: str = PydanticField("", max_length=1000)
    oauth2_authorization_url: str = PydanticField("", max_length=1000)
    oauth2_scopes: str = PydanticField("", max_length=2000)
    # "on" or "off"; absent (a client that does not know the field): as it was
    mark_read_on_open: str = PydanticField("", max_length=5)
    # outbound: absent (a client that does not know the fields) keeps what the mailbox has
    display_name: str | None = PydanticField(None, max_length=200)
    signature: str | None = PydanticField(None, max_length=5000)
    from_agent_name: str = PydanticField("", max_length=5)  # "on", "off" or absent
    status_after_reply: str = PydanticField("", max_length=20)

    def reads_on_open(self, current: bool) -> bool:
        """Whether opening a conversation marks it read, as chosen (else `current`)."""
        return {"on": True, "off": False}.get(self.mark_read_on_open, current)

    def outbound(self, form: MailboxForm, current: Mailbox | None) -> None:
        """The outbound settings as chosen (else the mailbox's, else the defaults) onto the
        form; InvalidInput for a status a reply cannot leave."""
        shown = MailboxForm._of(current) if current is not None else MailboxForm()
        name = self.display_name
        form.display_name = name.strip() if name is not None else shown.display_name
        signature = self.signature
        form.signature = (
            signature.replace("\r\n", "\n").strip("\n")
            if signature is not None
            else shown.signature
        )
        form.from_agent_name = {"on": True, "off": False}.get(
            self.from_agent_name, shown.from_agent_name
        )
        status = self.status_after_reply or shown.status_after_reply
        form.status_after_reply = status
        if status not in REPLY_STATUSES:
            raise InvalidInput(
                "after a reply the status is open, pending or closed", field="status_after_reply"
            )

    def oauth2(self) -> OAuth2Settings | None:
        """The OAuth2 login chosen (None: a password); an empty secret keeps the stored one."""
        if self.auth != "oauth2":
            return None
        provider = self.oauth2_provider
        return OAuth2Settings(
            provider=OAuth2Provider(
                provider if provider in OAuth2Provider.__members__ else "generic"
            ),
            client_id=self.oauth2_client_id.strip(),
            client_secret=self.oauth2_client_secret.strip() or None,
            issuer=self.oauth2_issuer.strip() or None,
            token_url=self.oauth2_token_url.strip() or None,
            authorization_url=self.oauth2_authorization_url.strip() or None,
            scopes=tuple(self.oauth2_scopes.replace(",", " ").split()),
        )

    def show_oauth2(self, form: MailboxForm, *, secret_stored: bool) -> None:
        """The OAuth2 fields as submitted, to show again (never the secret)."""
        form.auth = "oauth2" if self.auth == "oauth2" else "password"
        form.oauth2_provider = self.oauth2_provider
        form.oauth2_client_id = self.oauth2_client_id.strip()
        form.oauth2_issuer = self.oauth2_issuer.strip()
        form.oauth2_token_url = self.oauth2_token_url.strip()
        form.oauth2_authorization_url = self.oauth2_authorization_url.strip()
        form.oauth2_scopes = self.oauth2_scopes
        form.oauth2_secret_stored = secret_stored

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
            folder_names={
                role: str(getattr(self, f"{label}_folder")).strip()
                for role, label in LABELS.items()
            },
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
