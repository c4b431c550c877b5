"""Admin pages: agents (roles, mailbox access, passwords), mailboxes (settings, a live connection
test, what plain clients will see, sync health per folder) and API tokens. Admins only: any
other agent gets 403."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlmodel import Session, col, select

from imapdesk.api.deps import IdValue, RowId, SessionDep, SettingsDep
from imapdesk.api.web.auth import CSRF_FIELD, WebAdmin, check_csrf
from imapdesk.api.web.queues import flash, pop_flash
from imapdesk.api.web.templating import templates
from imapdesk.domain.accounts import access
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.domain.mailboxes.capabilities import plain_client_notes
from imapdesk.domain.mailboxes.config import add_mailbox, mailbox_password
from imapdesk.kernel.crypto import encrypt_secret, hash_password
from imapdesk.kernel.errors import ImapdeskError, InvalidInput, NotFound
from imapdesk.kernel.models import (
    Agent,
    AgentMailboxAccess,
    ApiToken,
    Folder,
    ImapSecurity,
    Mailbox,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail import smtp

router = APIRouter(prefix="/admin")

Csrf = Annotated[str, Form(alias=CSRF_FIELD, max_length=200)]
T = TypeVar("T")


def _page(request: Request, template: str, admin: Agent, **context: Any) -> Response:
    status_code = context.pop("status_code", 200)
    return templates.TemplateResponse(
        request,
        template,
        {"agent": admin, "flash": pop_flash(request), **context},
        status_code=status_code,
    )


def _redirect(request: Request, route: str, **params: Any) -> Response:
    return RedirectResponse(request.url_for(route, **params).path, status_code=303)


def _found(session: Session, model: type[T], key: int, what: str) -> T:
    """The row of `model` with this id, else 404 "no <what> <id>"."""
    row = session.get(model, key)
    if row is None:
        raise NotFound(f"no {what} {key}")
    return row


def _mailboxes(session: Session) -> list[Mailbox]:
    return list(session.exec(select(Mailbox).order_by(col(Mailbox.name))))


@router.get("", name="admin")
def admin_home(request: Request, admin: WebAdmin) -> Response:
    return _redirect(request, "admin_agents")


# --- agents -----------------------------------------------------------------------------------


def _access_map(session: Session) -> dict[int, set[int]]:
    grants: dict[int, set[int]] = {}
    for agent_id, mailbox_id in session.exec(
        select(AgentMailboxAccess.agent_id, AgentMailboxAccess.mailbox_id)
    ):
        grants.setdefault(agent_id, set()).add(mailbox_id)
    return grants


def _agents_page(
    request: Request,
    session: Session,
    admin: Agent,
    *,
    error: str | None = None,
    form: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    return _page(
        request,
        "admin_agents.html",
        admin,
        section="agents",
        agents=list(session.exec(select(Agent).order_by(col(Agent.name)))),
        mailboxes=_mailboxes(session),
        grants=_access_map(session),
        error=error,
        form=form or {},
        status_code=status_code,
    )


@router.get("/agents", name="admin_agents")
def agents_page(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    return _agents_page(request, session, admin)


@router.post("/agents", name="admin_agent_add")
def agent_add(
    request: Request,
    session: SessionDep,
    admin: WebAdmin,
    csrf_token: Csrf = "",
    email: Annotated[str, Form(max_length=320)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    is_admin: Annotated[bool, Form()] = False,
    access_scope: Annotated[str, Form(max_length=20)] = "all",
    mailboxes: Annotated[list[IdValue] | None, Form()] = None,
) -> Response:
    check_csrf(request, csrf_token)
    try:
        if len(password) < 8:
            raise InvalidInput("the password needs at least 8 characters", field="password")
        with session.begin_nested():
            new = create_agent(session, email, name, password, is_admin=is_admin)
            access.set_mailbox_access(
                session, new, all_mailboxes=access_scope != "selected", mailbox_ids=mailboxes or []
            )
    except ImapdeskError as exc:
        form = {"email": email, "name": name, "is_admin": is_admin, "scope": access_scope}
        return _agents_page(
            request, session, admin, error=exc.message, form=form, status_code=exc.status_code
        )
    flash(request, f"Added {new.email}.")
    return _redirect(request, "admin_agents")


def _agent(session: Session, agent_id: int) -> Agent:
    return _found(session, Agent, agent_id, "agent")


@router.get("/agents/{agent_id}", name="admin_agent")
def agent_page(request: Request, session: SessionDep, admin: WebAdmin, agent_id: RowId) -> Response:
    target = _agent(session, agent_id)
    return _page(
        request,
        "admin_agent.html",
        admin,
        section="agents",
        target=target,
        mailboxes=_mailboxes(session),
        granted=access.granted_mailbox_ids(session, target),
        error=None,
    )


@router.post("/agents/{agent_id}", name="admin_agent_save")
def agent_save(
    request: Request,
    session: SessionDep,
    admin: WebAdmin,
    agent_id: RowId,
    csrf_token: Csrf = "",
    name: Annotated[str, Form(max_length=200)] = "",
    is_admin: Annotated[bool, Form()] = False,
    is_active: Annotated[bool, Form()] = False,
    access_scope: Annotated[str, Form(max_length=20)] = "all",
    mailboxes: Annotated[list[IdValue] | None, Form()] = None,
) -> Response:
    check_csrf(request, csrf_token)
    target = _agent(session, agent_id)
    if target.id == admin.id and not (is_admin and is_active):
        flash(
            request, "You cannot remove your own admin rights or deactivate yourself.", error=True
        )
        return _redirect(request, "admin_agent", agent_id=agent_id)
    target.name = name.strip() or target.name
    target.is_admin = is_admin
    target.is_active = is_active
    access.set_mailbox_access(
        session, target, all_mailboxes=access_scope != "selected", mailbox_ids=mailboxes or []
    )
    flash(request, f"Saved {target.email}.")
    return _redirect(request, "admin_agent", agent_id=agent_id)


@router.post("/agents/{agent_id}/password", name="admin_agent_password")
def agent_password(
    request: Request,
    session: SessionDep,
    admin: WebAdmin,
    agent_id: RowId,
    csrf_token: Csrf = "",
    password: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    target = _agent(session, agent_id)
    if len(password) < 8:
        flash(request, "The new password needs at least 8 characters.", error=True)
        return _redirect(request, "admin_agent", agent_id=agent_id)
    # a new hash: every browser signed in as this agent is signed out (imapdesk.api.web.auth)
    target.password_hash = hash_password(password)
    session.add(target)
    flash(request, f"Set a new password for {target.email}; their browsers are signed out.")
    return _redirect(request, "admin_agent", agent_id=agent_id)


# --- mailboxes --------------------------------------------------------------------------------


@dataclass
class MailboxForm:
    name: str = ""
    address: str = ""
    imap_host: str = ""
    imap_port: int = 993
    imap_security: str = "ssl"
    username: str = ""
    password: str = ""
    ca_file: str = ""
    folders: str = ""
    enabled: bool = True
    # SMTP: blank fields fall back (see imapdesk.mail.smtp.smtp_account); passwords are never shown
    smtp_host: str = ""
    smtp_port: str = ""
    smtp_security: str = ImapSecurity.starttls.value
    smtp_username: str = ""
    smtp_no_login: bool = False
    smtp_password_stored: bool = False


@dataclass(frozen=True)
class SmtpForm:
    """The SMTP fields as submitted: the password is kept apart from what is shown again."""

    host: str
    port: int | None
    security: ImapSecurity
    username: str | None  # None: the IMAP user name; "": no login
    password: str  # "": keep the stored one (or the IMAP password when none is stored)
    clear_password: bool


@dataclass(frozen=True)
class ConnectionTest:
    ok: bool
    message: str
    notes: list[str]
    title: str = ""  # the result's heading; "" for the IMAP test's own


def _test_connection(form: MailboxForm, password: str) -> ConnectionTest:
    """Log in to the server as the worker would, and probe what it can keep."""
    # the worker's own connection code, so the test fails exactly when the worker would
    from imapdesk.mail.imap import ImapAccount, ImapSession
    from imapdesk.worker.supervisor import probe

    account = ImapAccount(
        form.imap_host,
        form.imap_port,
        form.imap_security,
        form.username,
        password,
        form.ca_file or None,
        label=form.name,
    )
    try:
        imap = ImapSession(account)
    except ImapdeskError as exc:
        return ConnectionTest(False, exc.message, [])
    try:
        caps = probe(imap)
    except ImapdeskError as exc:
        return ConnectionTest(False, f"logged in, but {exc.message}", [])
    except Exception as exc:  # a protocol surprise is a report here, not a crash
        return ConnectionTest(False, f"logged in, but probing the server failed: {exc}", [])
    finally:
        imap.close()
    raw = caps.get("capabilities")
    listed = ", ".join(str(c) for c in raw) if isinstance(raw, list) else "none reported"
    return ConnectionTest(
        True,
        f"Connected and logged in as {form.username}. Server capabilities: {listed}",
        plain_client_notes(caps),
    )


class MailboxSubmission(BaseModel):
    """What the mailbox form posts (new and existing mailboxes alike; a new one's `name` and
    `agents`, an existing one's `enabled`)."""

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

    def smtp(self) -> SmtpForm:
        port = self.smtp_port.strip()
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise InvalidInput("the SMTP port is a number from 1 to 65535", field="smtp_port")
        security = self.smtp_security
        no_login = self.smtp_no_login
        return SmtpForm(
            host=self.smtp_host.strip(),
            port=int(port) if port else None,
            security=ImapSecurity(security if security in ImapSecurity.__members__ else "starttls"),
            username="" if no_login else (self.smtp_username.strip() or None),
            password="" if no_login else self.smtp_password,
            clear_password=self.smtp_clear_password or no_login,
        )


MailboxPost = Annotated[MailboxSubmission, Form()]


def _read_mailbox_form(
    request: Request,
    session: Session,
    admin: Agent,
    data: MailboxSubmission,
    box: Mailbox | None,
) -> tuple[MailboxForm, SmtpForm] | Response:
    """The submitted form after the CSRF check, or the page again with what to fix."""
    check_csrf(request, data.csrf_token)
    if box is None:
        form = data.form(name=data.name, enabled=True)
    else:
        form = data.form(name=box.name, enabled=data.enabled)
    try:
        submitted = data.smtp()
    except InvalidInput as exc:
        return _mailbox_page(
            request, session, admin, form, mailbox=box, error=exc.message, status_code=400
        )
    stored = bool(box is not None and box.smtp_password_encrypted)
    _show_smtp(form, submitted, password_stored=stored)
    return form, submitted


def _show_smtp(form: MailboxForm, submitted: SmtpForm, password_stored: bool) -> None:
    form.smtp_host = submitted.host
    form.smtp_port = str(submitted.port or "")
    form.smtp_security = submitted.security.value
    form.smtp_username = submitted.username or ""
    form.smtp_no_login = submitted.username == ""
    form.smtp_password_stored = password_stored


def _apply_smtp(box: Mailbox, submitted: SmtpForm, settings: Settings) -> None:
    box.smtp_host = submitted.host or None
    box.smtp_port = submitted.port
    box.smtp_security = submitted.security
    box.smtp_username = submitted.username
    if submitted.password:
        box.smtp_password_encrypted = encrypt_secret(submitted.password, settings.secret_key)
    elif submitted.clear_password:
        box.smtp_password_encrypted = None


def _test_smtp(
    form: MailboxForm,
    submitted: SmtpForm,
    imap_password: str,
    stored: Mailbox | None,
    settings: Settings,
) -> ConnectionTest:
    """Connect to the SMTP server as the sender would with these settings (unsaved ones too):
    the same fall-backs to the IMAP login, the same TLS rules."""
    if not submitted.host:
        return ConnectionTest(
            False, "no SMTP host is set: replies cannot be sent until one is", [], "SMTP failed"
        )
    # an unsaved copy, so that imapdesk.mail.smtp applies its own fall-backs to what was typed
    draft = Mailbox(
        name=form.name or "draft",
        address=form.address,
        imap_host=form.imap_host,
        username=form.username,
        ca_file=form.ca_file or None,
        password_encrypted=encrypt_secret(imap_password, settings.secret_key),
        smtp_password_encrypted=stored.smtp_password_encrypted if stored is not None else None,
    )
    _apply_smtp(draft, submitted, settings)
    account = smtp.smtp_account(draft, settings)
    assert account is not None
    try:
        return ConnectionTest(True, smtp.check_connection(account), [], "SMTP works")
    except smtp.SmtpError as exc:
        return ConnectionTest(False, exc.message, [], "SMTP failed")


def _mailbox_page(
    request: Request,
    session: Session,
    admin: Agent,
    form: MailboxForm,
    *,
    mailbox: Mailbox | None,
    test: ConnectionTest | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    folders: list[Folder] = []
    if mailbox is not None:
        folders = list(
            session.exec(
                select(Folder)
                .where(col(Folder.mailbox_id) == mailbox.id)
                .order_by(col(Folder.name))
            )
        )
    restricted = list(
        session.exec(
            select(Agent)
            .where(col(Agent.all_mailboxes).is_(False), col(Agent.is_admin).is_(False))
            .order_by(col(Agent.name))
        )
    )
    return _page(
        request,
        "admin_mailbox.html",
        admin,
        section="mailboxes",
        mailbox=mailbox,
        form=form,
        folders=folders,
        notes=plain_client_notes(mailbox.capabilities) if mailbox is not None else [],
        securities=[s.value for s in ImapSecurity],
        smtp_ports={"ssl": 465, "starttls": 587, "none": 25},
        restricted=restricted,
        test=test,
        error=error,
        status_code=status_code,
    )


@router.get("/mailboxes", name="admin_mailboxes")
def mailboxes_page(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    boxes = _mailboxes(session)
    folders: dict[int, list[Folder]] = {}
    for folder in session.exec(select(Folder).order_by(col(Folder.name))):
        folders.setdefault(folder.mailbox_id, []).append(folder)
    return _page(
        request,
        "admin_mailboxes.html",
        admin,
        section="mailboxes",
        rows=[
            (box, folders.get(box.id or 0, []), plain_client_notes(box.capabilities))
            for box in boxes
        ],
    )


def _folder_list(text: str) -> list[str]:
    return [f.strip() for f in text.replace("\n", ",").split(",") if f.strip()]


@router.get("/mailboxes/new", name="admin_mailbox_new")
def mailbox_new(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    return _mailbox_page(request, session, admin, MailboxForm(), mailbox=None)


@router.post("/mailboxes/new", name="admin_mailbox_create")
def mailbox_create(
    request: Request, session: SessionDep, settings: SettingsDep, admin: WebAdmin, data: MailboxPost
) -> Response:
    read = _read_mailbox_form(request, session, admin, data, None)
    if isinstance(read, Response):
        return read
    form, submitted = read
    password, op, agents = data.password, data.op, data.agents
    if op == "test":
        test = _test_connection(form, password)
        return _mailbox_page(request, session, admin, form, mailbox=None, test=test)
    if op == "smtp":
        test = _test_smtp(form, submitted, password, None, settings)
        return _mailbox_page(request, session, admin, form, mailbox=None, test=test)
    try:
        if not (form.imap_host and form.username and password):
            raise InvalidInput("the IMAP host, user name and password are needed")
        with session.begin_nested():
            box = add_mailbox(
                session,
                settings,
                name=form.name,
                address=form.address,
                imap_host=form.imap_host,
                imap_port=form.imap_port,
                imap_security=ImapSecurity(form.imap_security),
                username=form.username,
                password=password,
                ca_file=form.ca_file or None,
                folders=_folder_list(form.folders),
            )
            _apply_smtp(box, submitted, settings)
            chosen = [a for a in (session.get(Agent, i) for i in agents or []) if a is not None]
            access.grant_mailbox(session, box, chosen)
    except ImapdeskError as exc:
        return _mailbox_page(
            request, session, admin, form, mailbox=None, error=exc.message, status_code=400
        )
    flash(request, f"Added mailbox {box.name}; the worker picks it up within seconds.")
    return _redirect(request, "admin_mailbox", mailbox_id=box.id)


def _mailbox(session: Session, mailbox_id: int) -> Mailbox:
    return _found(session, Mailbox, mailbox_id, "mailbox")


def _form_of(box: Mailbox) -> MailboxForm:
    return MailboxForm(
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
        smtp_security=ImapSecurity(box.smtp_security or ImapSecurity.starttls).value,
        smtp_username=box.smtp_username or "",
        smtp_no_login=box.smtp_username == "" and not box.smtp_password_encrypted,
        smtp_password_stored=bool(box.smtp_password_encrypted),
    )


@router.get("/mailboxes/{mailbox_id}", name="admin_mailbox")
def mailbox_page(
    request: Request, session: SessionDep, admin: WebAdmin, mailbox_id: RowId
) -> Response:
    box = _mailbox(session, mailbox_id)
    return _mailbox_page(request, session, admin, _form_of(box), mailbox=box)


@router.post("/mailboxes/{mailbox_id}", name="admin_mailbox_save")
def mailbox_save(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: WebAdmin,
    mailbox_id: RowId,
    data: MailboxPost,
) -> Response:
    box = _mailbox(session, mailbox_id)
    read = _read_mailbox_form(request, session, admin, data, box)
    if isinstance(read, Response):
        return read
    form, submitted = read
    password, op = data.password, data.op
    # an empty password field keeps the stored one
    secret = password or _stored_password(box, settings)
    if op == "test":
        test = _test_connection(form, secret)
        return _mailbox_page(request, session, admin, form, mailbox=box, test=test)
    if op == "smtp":
        test = _test_smtp(form, submitted, secret, box, settings)
        return _mailbox_page(request, session, admin, form, mailbox=box, test=test)
    if "@" not in form.address or not form.imap_host or not form.username:
        return _mailbox_page(
            request,
            session,
            admin,
            form,
            mailbox=box,
            error="the address, the IMAP host and the user name are needed",
            status_code=400,
        )
    box.address = form.address.lower()
    box.imap_host = form.imap_host
    box.imap_port = form.imap_port
    box.imap_security = ImapSecurity(form.imap_security)
    box.username = form.username
    box.ca_file = form.ca_file or None
    box.watched_folders = _folder_list(form.folders)
    box.enabled = form.enabled
    if password:
        box.password_encrypted = encrypt_secret(password, settings.secret_key)
    _apply_smtp(box, submitted, settings)
    session.add(box)
    flash(request, f"Saved mailbox {box.name}.")
    return _redirect(request, "admin_mailbox", mailbox_id=mailbox_id)


def _stored_password(box: Mailbox, settings: Settings) -> str:
    try:
        return mailbox_password(box, settings)
    except ImapdeskError:
        return ""


# --- API tokens -------------------------------------------------------------------------------


def _tokens_page(
    request: Request,
    session: Session,
    admin: Agent,
    *,
    created: str | None = None,
    status_code: int = 200,
) -> Response:
    rows = list(
        session.exec(
            select(ApiToken, Agent)
            .join(Agent, col(Agent.id) == col(ApiToken.agent_id))
            .order_by(col(ApiToken.revoked_at).is_not(None), col(ApiToken.created_at).desc())
        )
    )
    return _page(
        request,
        "admin_tokens.html",
        admin,
        section="tokens",
        rows=rows,
        agents=list(
            session.exec(select(Agent).where(col(Agent.is_active)).order_by(col(Agent.name)))
        ),
        created=created,
        status_code=status_code,
    )


@router.get("/tokens", name="admin_tokens")
def tokens_page(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    return _tokens_page(request, session, admin)


@router.post("/tokens", name="admin_token_create")
def token_create(
    request: Request,
    session: SessionDep,
    admin: WebAdmin,
    csrf_token: Csrf = "",
    agent_id: Annotated[IdValue, Form()] = 0,
    name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    owner = _agent(session, agent_id)
    token = create_api_token(session, owner, name=name.strip())
    # shown in this response only: never stored in plain, never put in a redirect or the session
    return _tokens_page(request, session, admin, created=token)


@router.post("/tokens/{token_id}/revoke", name="admin_token_revoke")
def token_revoke(
    request: Request, session: SessionDep, admin: WebAdmin, token_id: RowId, csrf_token: Csrf = ""
) -> Response:
    check_csrf(request, csrf_token)
    token = _found(session, ApiToken, token_id, "API token")
    if token.revoked_at is None:
        token.revoked_at = datetime.now(UTC)
        session.add(token)
    flash(request, f"Revoked the token {token.prefix}….")
    return _redirect(request, "admin_tokens")
