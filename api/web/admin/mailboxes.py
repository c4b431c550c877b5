"""Mailboxes: the list with each one's sync health, adding one, changing one, and the
connection tests (IMAP, SMTP) of the settings in the form, saved or not."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlmodel import Session, col, select

from imapdesk.api.deps import RowId, SessionDep, SettingsDep
from imapdesk.api.web.admin.mailbox_form import MailboxForm, MailboxPost, MailboxSubmission
from imapdesk.api.web.admin.page import all_mailboxes, found, redirect, render
from imapdesk.api.web.auth import WebAdmin, check_csrf
from imapdesk.api.web.flash import flash
from imapdesk.domain.mailboxes import server_settings
from imapdesk.domain.mailboxes.capabilities import plain_client_notes
from imapdesk.domain.mailboxes.connection_check import ConnectionCheck, check_imap, check_smtp
from imapdesk.domain.mailboxes.server_settings import SmtpSettings
from imapdesk.kernel.errors import ImapdeskError, InvalidInput
from imapdesk.kernel.models import Agent, Folder, ImapSecurity, Mailbox, SmtpSecurity
from imapdesk.kernel.settings import Settings
from imapdesk.mail.smtp import DEFAULT_PORTS

router = APIRouter()

# the form's buttons besides "save": which connection test to run
TESTS = ("test", "smtp")


def _mailbox_page(
    request: Request,
    session: Session,
    admin: Agent,
    form: MailboxForm,
    *,
    mailbox: Mailbox | None,
    test: ConnectionCheck | None = None,
    tested: str = "",
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
    return render(
        request,
        "admin/mailbox.html",
        admin,
        section="mailboxes",
        mailbox=mailbox,
        form=form,
        folders=folders,
        notes=plain_client_notes(mailbox.capabilities) if mailbox is not None else [],
        securities=[s.value for s in ImapSecurity],
        smtp_securities=[s.value for s in SmtpSecurity],
        smtp_ports=DEFAULT_PORTS,
        restricted=restricted,
        test=test,
        tested=tested,
        error=error,
        status_code=status_code,
    )


def _read_form(
    request: Request,
    session: Session,
    admin: Agent,
    data: MailboxSubmission,
    box: Mailbox | None,
) -> tuple[MailboxForm, SmtpSettings] | Response:
    """The submitted form after the CSRF check, or the page again with what to fix."""
    check_csrf(request, data.csrf_token)
    if box is None:
        form = data.form(name=data.name, enabled=True)
    else:
        form = data.form(name=box.name, enabled=data.enabled)
    try:
        smtp = data.smtp()
    except InvalidInput as exc:
        return _mailbox_page(
            request, session, admin, form, mailbox=box, error=exc.message, status_code=400
        )
    form.show_smtp(smtp, password_stored=bool(box is not None and box.smtp_password_encrypted))
    return form, smtp


def _connection_test(
    op: str,
    form: MailboxForm,
    smtp: SmtpSettings,
    password: str,
    box: Mailbox | None,
    settings: Settings,
) -> ConnectionCheck:
    """The connection test the button asked for, with the settings as typed."""
    imap = form.imap_settings()
    if op == "test":
        return check_imap(server_settings.imap_account(imap, password, label=form.name))
    account = server_settings.draft_smtp_account(
        settings, name=form.name, imap=imap, imap_password=password, smtp=smtp, stored=box
    )
    return check_smtp(account)


@router.get("/mailboxes", name="admin_mailboxes")
def mailboxes_page(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    folders: dict[int, list[Folder]] = {}
    for folder in session.exec(select(Folder).order_by(col(Folder.name))):
        folders.setdefault(folder.mailbox_id, []).append(folder)
    return render(
        request,
        "admin/mailboxes.html",
        admin,
        section="mailboxes",
        rows=[
            (box, folders.get(box.id or 0, []), plain_client_notes(box.capabilities))
            for box in all_mailboxes(session)
        ],
    )


@router.get("/mailboxes/new", name="admin_mailbox_new")
def mailbox_new(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    return _mailbox_page(request, session, admin, MailboxForm(), mailbox=None)


@router.post("/mailboxes/new", name="admin_mailbox_create")
def mailbox_create(
    request: Request, session: SessionDep, settings: SettingsDep, admin: WebAdmin, data: MailboxPost
) -> Response:
    read = _read_form(request, session, admin, data, None)
    if isinstance(read, Response):
        return read
    form, smtp = read
    if data.op in TESTS:
        test = _connection_test(data.op, form, smtp, data.password, None, settings)
        return _mailbox_page(request, session, admin, form, mailbox=None, test=test, tested=data.op)
    try:
        with session.begin_nested():
            box = server_settings.create_mailbox(
                session,
                settings,
                name=form.name,
                imap=form.imap_settings(),
                password=data.password,
                smtp=smtp,
                agent_ids=data.agents,
            )
    except ImapdeskError as exc:
        return _mailbox_page(
            request, session, admin, form, mailbox=None, error=exc.message, status_code=400
        )
    flash(request, f"Added mailbox {box.name}; the worker picks it up within seconds.")
    return redirect(request, "admin_mailbox", mailbox_id=box.id)


def _mailbox(session: Session, mailbox_id: int) -> Mailbox:
    return found(session, Mailbox, mailbox_id, "mailbox")


@router.get("/mailboxes/{mailbox_id}", name="admin_mailbox")
def mailbox_page(
    request: Request, session: SessionDep, admin: WebAdmin, mailbox_id: RowId
) -> Response:
    box = _mailbox(session, mailbox_id)
    return _mailbox_page(request, session, admin, MailboxForm.of(box), mailbox=box)


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
    read = _read_form(request, session, admin, data, box)
    if isinstance(read, Response):
        return read
    form, smtp = read
    if data.op in TESTS:
        # an empty password field tests with the stored one
        password = server_settings.login_password(box, data.password, settings)
        test = _connection_test(data.op, form, smtp, password, box, settings)
        return _mailbox_page(request, session, admin, form, mailbox=box, test=test, tested=data.op)
    try:
        server_settings.update_mailbox(
            box,
            settings,
            imap=form.imap_settings(),
            password=data.password,
            smtp=smtp,
            enabled=form.enabled,
        )
    except ImapdeskError as exc:
        return _mailbox_page(
            request, session, admin, form, mailbox=box, error=exc.message, status_code=400
        )
    flash(request, f"Saved mailbox {box.name}.")
    return redirect(request, "admin_mailbox", mailbox_id=mailbox_id)
