"""Connecting an OAuth2 mailbox from its admin page: the authorization code with PKCE
(RFC 7636). "Connect" sends the admin's browser on to the provider's consent page; the provider
sends it back to `/admin/oauth2/callback` with a code, which is exchanged for the tokens
(imapdesk.domain.mailboxes.oauth2). Admins only, the form CSRF-checked; the `state` ties the
answer to the authorization started here (unknown, used or old ones are refused). Neither the
discovery nor the exchange holds a database connection while the provider answers."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from imapdesk.api.deps import RowId, SessionDep, SettingsDep, release, take_write
from imapdesk.api.web.admin.page import Csrf, found, redirect, render
from imapdesk.api.web.auth import WebAdmin, check_csrf
from imapdesk.api.web.flash import flash
from imapdesk.domain.mailboxes import oauth2
from imapdesk.kernel.errors import ImapdeskError, NotFound
from imapdesk.kernel.models import Mailbox, OAuth2Grant
from imapdesk.kernel.settings import Settings
from imapdesk.mail import oauth2 as protocol

log = logging.getLogger(__name__)

router = APIRouter()
CALLBACK = "admin_oauth2_callback"


def redirect_uri(request: Request, settings: Settings) -> str:
    """The callback's address, as registered with the provider."""
    return settings.oauth2_redirect_uri or str(request.url_for(CALLBACK))


@router.post("/mailboxes/{mailbox_id}/oauth2/connect", name="admin_mailbox_oauth2_connect")
def oauth2_connect(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: WebAdmin,
    mailbox_id: RowId,
    csrf_token: Csrf,
) -> Response:
    check_csrf(request, csrf_token)
    box = found(session, Mailbox, mailbox_id, "mailbox")
    grant = oauth2.grant_of(session, box.id)
    if grant is None or grant.grant == OAuth2Grant.client_credentials:
        flash(
            request,
            "This mailbox does not connect in the browser: it logs in with a password, or "
            "with app-only access (client credentials).",
            error=True,
        )
        return redirect(request, "admin_mailbox", mailbox_id=mailbox_id)
    known, ca_file = oauth2.stored_endpoints(grant), box.ca_file
    release(session)
    try:
        endpoints = oauth2.resolve(known, ca_file=ca_file)
    except ImapdeskError as exc:
        flash(request, f"Cannot connect {box.name}: {exc.message}.", error=True)
        return redirect(request, "admin_mailbox", mailbox_id=mailbox_id)
    take_write(session)
    box = found(session, Mailbox, mailbox_id, "mailbox")
    grant = oauth2.grant_of(session, box.id)
    if grant is None:
        raise NotFound(f"mailbox {mailbox_id} no longer logs in with OAuth2")
    oauth2.apply_endpoints(grant, endpoints)
    try:
        url = oauth2.begin_authorization(
            session, box, grant, settings, redirect_uri(request, settings)
        )
    except ImapdeskError as exc:
        flash(request, f"Cannot connect {box.name}: {exc.message}.", error=True)
        return redirect(request, "admin_mailbox", mailbox_id=mailbox_id)
    log.info("[%s] OAuth2 authorization started by %s", box.name, admin.email)
    # a page that moves on by itself, not a redirect: the pages' CSP lets a form post only to
    # this site, redirects included
    return render(request, "admin/oauth2_redirect.html", admin, mailbox=box, url=url)


@router.get("/oauth2/callback", name=CALLBACK)
def oauth2_callback(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: WebAdmin,
    state: str = "",
    code: str = "",
    error: str = "",
    error_description: str = "",
) -> Response:
    pending = oauth2.pending_authorization(session, settings, state[:200])
    release(session)
    if error or not code:
        said = f"{error}: {error_description}" if error_description else error or "no code"
        flash(request, f"The provider did not grant access ({said[:300]}).", error=True)
        return redirect(request, "admin_mailbox", mailbox_id=pending.mailbox_id)
    try:
        tokens = protocol.exchange_code(
            pending.client,
            code=code[:4000],
            redirect_uri=pending.redirect_uri,
            code_verifier=pending.code_verifier,
        )
    except ImapdeskError as exc:
        flash(request, f"Connecting failed: {exc.message}.", error=True)
        return redirect(request, "admin_mailbox", mailbox_id=pending.mailbox_id)
    take_write(session)
    try:
        box = oauth2.finish_authorization(session, settings, pending, tokens)
    except ImapdeskError as exc:
        flash(request, f"Connecting failed: {exc.message}.", error=True)
        return redirect(request, "admin_mailbox", mailbox_id=pending.mailbox_id)
    log.info("[%s] OAuth2 connected by %s", box.name, admin.email)
    flash(request, f"Connected {box.name}; the worker picks it up within seconds.")
    return redirect(request, "admin_mailbox", mailbox_id=pending.mailbox_id)
