"""Mailboxes: the list with each one's sync health, adding one, changing one, and the
connection tests (IMAP, SMTP) of the settings in the form, saved or not. Saving takes the
write up front; a test takes none and holds no connection while the server answers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlmodel import Session, col, select

from imapdesk.api.deps import RowId, SessionDep, SettingsDep, release, take_write
from imapdesk.api.web.admin.mailbox_form import MailboxForm, MailboxPost, MailboxSubmission
from imapdesk.api.web.admin.page import all_mailboxes, found, redirect, render
from imapdesk.api.web.auth import WebAdmin, check_csrf
from imapdesk.api.web.flash import flash
from imapdesk.domain.mailboxes import oauth2, server_settings
from imapdesk.domain.mailboxes.capabilities import plain_client_notes
from imapdesk.domain.mailboxes.connection_check import ConnectionCheck, check_imap, check_smtp
from imapdesk.domain.mailboxes.folders import folder_fields, problem_notes
from imapdesk.domain.mailboxes.keywords import REASON_WORDS, unkept_keywords
from imapdesk.domain.mailboxes.server_settings import SmtpSettings
from imapdesk.kernel.errors import ImapdeskError, InvalidInput
from imapdesk.kernel.models import (
    Agent,
    Folder,
    ImapSecurity,
    Mailbox,
    OAuth2Provider,
    SmtpSecurity,
)
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
    unkept = []
    if mailbox is not None and mailbox.id is not None:
        unkept = unkept_keywords(session, [mailbox.id]).get(mailbox.id, [])
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
    grant = oauth2.grant_of(session, mailbox.id) if mailbox is not None else None
    return render(
        request,
        "admin/mailbox.html",
        admin,
        section="mailboxes",
        mailbox=mailbox,
        form=form,
        grant=grant,
        grant_state=oauth2.describe(grant) if grant is not None else "",
        oauth2_providers=[p.value for p in OAuth2Provider],
        oauth2_alerts=oauth2.alerts(session),
        folders=folders,
        folder_fields=folder_fields(mailbox),
        notes=plain_client_notes(mailbox.capabilities, unkept) if mailbox is not None else [],
        unkept=unkept,
        reason_words=REASON_WORDS,
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
    form.mark_read_on_open = data.reads_on_open(box.mark_read_on_open if box else True)
    try:
        data.outbound(form, box)  # display name, signature, From, status after a reply
        smtp = data.smtp()
    except InvalidInput as exc:
        return _mailbox_page(
            request, session, admin, form, mailbox=box, error=exc.message, status_code=400
        )
    form.show_smtp(smtp, password_stored=bool(box is not None and box.smtp_password_encrypted))
    grant = oauth2.grant_of(session, box.id) if box is not None else None
    data.show_oauth2(form, secret_stored=bool(grant and grant.client_secret_encrypted))
    return form, smtp


def _connection_test(
    session: Session,
    op: str,
    form: MailboxForm,
    smtp: SmtpSettings,
    password: str,
    box: Mailbox | None,
    settings: Settings,
) -> ConnectionCheck:
    """The connection test the button asked for, with the settings as typed (InvalidInput: a
    stored password the test may not send where the form says). The server may take up to
    its timeout to answer: the request holds no database connection meanwhile."""
    imap = form.imap_settings()
    if op == "test":
        imap_login = server_settings.imap_test_account(
            settings, box, imap, password, label=form.name
        )
        release(session)
        return check_imap(imap_login, imap.folder_names)
    smtp_login = server_settings.smtp_test_account(
        settings, box, name=form.name, imap=imap, typed=password, smtp=smtp
    )
    release(session)
    return check_smtp(smtp_login)


def _tested_page(
    request: Request,
    session: Session,
    settings: Settings,
    admin: Agent,
    data: MailboxSubmission,
    read: tuple[MailboxForm, SmtpSettings],
    box: Mailbox | None,
) -> Response:
    form, smtp = read
    try:
        test = _connection_test(session, data.op, form, smtp, data.password, box, settings)
    except InvalidInput as exc:
        return _mailbox_page(
            request, session, admin, form, mailbox=box, error=exc.message, status_code=400
        )
    return _mailbox_page(request, session, admin, form, mailbox=box, test=test, tested=data.op)


@router.get("/mailboxes", name="admin_mailboxes")
def mailboxes_page(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    folders: dict[int, list[Folder]] = {}
    for folder in session.exec(select(Folder).order_by(col(Folder.name))):
        folders.setdefault(folder.mailbox_id, []).append(folder)
    boxes = all_mailboxes(session)
    unkept = unkept_keywords(session, (box.id for box in boxes if box.id is not None))
    return render(
        request,
        "admin/mailboxes.html",
        admin,
        section="mailboxes",
        rows=[
            (
                box,
                folders.get(box.id or 0, []),
                plain_client_notes(box.capabilities, unkept.get(box.id or 0, [])),
            )
            for box in boxes
        ],
        oauth2_alerts=oauth2.alerts(session),
        grant_states={i: oauth2.describe(g) for i, g in oauth2.states(session).items()},
        folder_problems={box.id: problem_notes(box) for box in boxes},
    )


@router.get("/mailboxes/new", name="admin_mailbox_new")
def mailbox_new(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    return _mailbox_page(request, session, admin, MailboxForm(), mailbox=None)


@router.post("/mailboxes/new", name="admin_mailbox_create")
def mailbox_create(
    request: Request, session: SessionDep, settings: SettingsDep, admin: WebAdmin, data: MailboxPost
) -> Response:
    if data.op not in TESTS:
        take_write(session)
    read = _read_form(request, session, admin, data, None)
    if isinstance(read, Response):
        return read
    if data.op in TESTS:
        return _tested_page(request, session, settings, admin, data, read, None)
    form, smtp = read
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
                oauth2=data.oauth2(),
            )
            box.mark_read_on_open = form.mark_read_on_open
            form.apply_outbound(box)
    except ImapdeskError as exc:
        return _mailbox_page(
            request, session, admin, form, mailbox=None, error=exc.message, status_code=400
        )
    if form.auth == "oauth2":
        flash(request, f"Added mailbox {box.name}; connect it below to start syncing.")
        return redirect(request, "admin_mailbox", mailbox_id=box.id)
    flash(request, f"Added mailbox {box.name}; the worker picks it up within seconds.")
    return redirect(request, "admin_mailbox", mailbox_id=box.id)


def _mailbox(session: Session, mailbox_id: int) -> Mailbox:
    return found(session, Mailbox, mailbox_id, "mailbox")


@router.get("/mailboxes/{mailbox_id}", name="admin_mailbox")
def mailbox_page(
    request: Request, session: SessionDep, admin: WebAdmin, mailbox_id: RowId
) -> Response:
    box = _mailbox(session, mailbox_id)
    form = MailboxForm.of(box, oauth2.grant_of(session, box.id))
    return _mailbox_page(request, session, admin, form, mailbox=box)


@router.post("/mailboxes/{mailbox_id}", name="admin_mailbox_save")
def mailbox_save(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: WebAdmin,
    mailbox_id: RowId,
    data: MailboxPost,
) -> Response:
    if data.op not in TESTS:
        take_write(session)
    box = _mailbox(session, mailbox_id)
    read = _read_form(request, session, admin, data, box)
    if isinstance(read, Response):
        return read
    if data.op in TESTS:
        # an empty password field tests with the stored one, on the saved server only
        return _tested_page(request, session, settings, admin, data, read, box)
    form, smtp = read
    try:
        server_settings.update_mailbox(
            box,
            settings,
            imap=form.imap_settings(),
            password=data.password,
            smtp=smtp,
            enabled=form.enabled,
        )
        box.mark_read_on_open = form.mark_read_on_open
        form.apply_outbound(box)
        oauth2.apply_auth(session, box, settings, data.oauth2(), data.password)
    except ImapdeskError as exc:
        return _mailbox_page(
            request, session, admin, form, mailbox=box, error=exc.message, status_code=400
        )
    flash(request, f"Saved mailbox {box.name}.")
    return redirect(request, "admin_mailbox", mailbox_id=mailbox_id)
