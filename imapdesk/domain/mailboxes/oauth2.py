"""OAuth2 mailboxes: their provider and client, their tokens, and what happens when a provider
says no.

A mailbox logs in with OAuth2 when it has a `MailboxOAuth2` row; its password is then an
encrypted empty string. The admin connects it (authorization code with PKCE in the admin page;
the device code, a refresh token given, or app-only client credentials from the command line),
which stores the tokens, encrypted (kernel/crypto.py); they never appear in logs or pages.

Tokens are kept by `MailboxTokens`, the one object every IMAP and SMTP login of a mailbox asks
(through the accounts of imapdesk.domain.mailboxes.servers):
- an access token is refreshed before it expires: at login when it is due, and by the worker
  (`refresh_due`) before then;
- one process refreshes at a time: it takes a lease on the row (`refreshing_until`), the others
  wait for the token it saves;
- the answer is saved at once, only over the `token_version` the refresh started from (an
  admin's new grant in the meantime wins), and a rotated refresh token that could not be saved
  is kept in memory, used and saved again at the next turn: the only valid one is never lost;
- a refusal (the grant revoked or expired, the client changed) marks the grant `failed`: the
  worker stops that mailbox alone (`blocked_mailbox_ids`), its sync health and the admin pages
  say what to do, and an error is logged.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Engine, update
from sqlalchemy.orm import object_session
from sqlmodel import Session, col, select

from imapdesk.kernel.crypto import decrypt_secret, encrypt_secret
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import InvalidInput, NotFound
from imapdesk.kernel.models import (
    Mailbox,
    MailboxOAuth2,
    OAuth2Grant,
    OAuth2Provider,
    OAuth2State,
    as_utc,
    utcnow,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail import oauth2
from imapdesk.mail.oauth2 import (
    ClientSettings,
    Endpoints,
    OAuth2Error,
    OAuth2Refused,
    OAuth2Unavailable,
    TokenSet,
)

log = logging.getLogger(__name__)

# refreshed when less than this remains of the access token, or less than half its life
REFRESH_MARGIN = timedelta(minutes=5)
# a refresh under way in one process; the others wait this long at most before taking over
LEASE = timedelta(seconds=60)
# an admin's authorization (consent in the browser) must come back within this
AUTHORIZATION_TIMEOUT = timedelta(minutes=15)
RECONNECT_HINT = "connect the mailbox again on its admin page (or with `imapdesk mailbox add`)"


@dataclass(frozen=True)
class OAuth2Settings:
    """An OAuth2 login as an admin gives it. `client_secret` None: keep the stored one (none for
    a new mailbox: a public client). Empty scopes: the provider's usual ones."""

    provider: OAuth2Provider
    client_id: str
    client_secret: str | None = None
    issuer: str | None = None
    token_url: str | None = None
    authorization_url: str | None = None
    scopes: tuple[str, ...] = ()
    grant: OAuth2Grant = OAuth2Grant.refresh_token


def default_scopes(provider: OAuth2Provider, grant: OAuth2Grant) -> tuple[str, ...]:
    """What to ask for when the admin names no scope: mail by IMAP and SMTP, and a refresh
    token. A generic provider's scopes are its own: they must be given."""
    if provider == OAuth2Provider.microsoft:
        if grant == OAuth2Grant.client_credentials:
            return oauth2.MICROSOFT_APP_SCOPES
        return oauth2.MICROSOFT_SCOPES
    if provider == OAuth2Provider.google:
        return oauth2.GOOGLE_SCOPES
    return ()


def known_endpoints(given: OAuth2Settings) -> Endpoints:
    """The endpoints known without asking anyone: the URLs given, else Microsoft's and Google's
    own. Where an issuer is given, what is still blank is discovered from it (`resolve`)."""
    issuer = (given.issuer or "").strip() or None
    if issuer:
        found = Endpoints(token="", issuer=issuer)
    elif given.provider == OAuth2Provider.microsoft:
        found = oauth2.microsoft_endpoints()
    elif given.provider == OAuth2Provider.google:
        found = oauth2.GOOGLE_ENDPOINTS
    else:
        found = Endpoints(token="")
    token_url = (given.token_url or "").strip()
    authorization_url = (given.authorization_url or "").strip()
    return Endpoints(
        token=oauth2.require_https(token_url, "token URL") if token_url else found.token,
        authorization=(
            oauth2.require_https(authorization_url, "authorization URL")
            if authorization_url
            else found.authorization
        ),
        device_authorization=found.device_authorization,
        issuer=issuer,
    )


def resolve(known: Endpoints, *, ca_file: str | None = None) -> Endpoints:
    """`known` with its blanks filled from its issuer's discovery (HTTP: hold no database
    connection meanwhile). InvalidInput when no token endpoint can be found."""
    endpoints = known
    if known.issuer and not (known.token and known.authorization and known.device_authorization):
        found = oauth2.discover(known.issuer, ca_file=ca_file)
        endpoints = Endpoints(
            token=known.token or found.token,
            authorization=known.authorization or found.authorization,
            device_authorization=known.device_authorization or found.device_authorization,
            issuer=known.issuer,
        )
    if not endpoints.token:
        raise InvalidInput(
            "a generic OAuth2 provider needs its issuer (for discovery) or its token URL",
            field="oauth2_issuer",
        )
    return endpoints


def resolve_endpoints(given: OAuth2Settings, *, ca_file: str | None = None) -> Endpoints:
    """Every endpoint of these settings, discovered where needed (the command line)."""
    endpoints = resolve(known_endpoints(given), ca_file=ca_file)
    if (
        given.provider == OAuth2Provider.microsoft
        and given.grant == OAuth2Grant.client_credentials
        and "/organizations/" in endpoints.token
    ):
        raise InvalidInput(
            "app-only access (client credentials) needs the tenant: give "
            "--oauth2-issuer https://login.microsoftonline.com/<tenant id>/v2.0",
            field="oauth2_issuer",
        )
    return endpoints


def stored_endpoints(row: MailboxOAuth2) -> Endpoints:
    return Endpoints(
        token=row.token_endpoint,
        authorization=row.authorization_endpoint,
        device_authorization=row.device_authorization_endpoint,
        issuer=row.issuer,
    )


def apply_endpoints(row: MailboxOAuth2, endpoints: Endpoints) -> None:
    row.token_endpoint = endpoints.token
    row.authorization_endpoint = endpoints.authorization
    row.device_authorization_endpoint = endpoints.device_authorization
    row.issuer = endpoints.issuer


def client_for(
    given: OAuth2Settings, endpoints: Endpoints, *, ca_file: str | None = None
) -> ClientSettings:
    """The client these settings make, before anything is saved (the first tokens of the
    command line)."""
    return ClientSettings(
        endpoints=endpoints,
        client_id=given.client_id.strip(),
        client_secret=given.client_secret,
        scopes=tuple(given.scopes or default_scopes(given.provider, given.grant)),
        ca_file=ca_file,
    )


# -- the stored row ----------------------------------------------------------------------------


def grant_of(session: Session, mailbox_id: int | None) -> MailboxOAuth2 | None:
    if mailbox_id is None:
        return None
    return session.get(MailboxOAuth2, mailbox_id)


def configure(
    session: Session,
    mailbox: Mailbox,
    settings: Settings,
    given: OAuth2Settings,
    endpoints: Endpoints | None = None,
) -> MailboxOAuth2:
    """Save the mailbox's OAuth2 client (flushes), with its endpoints resolved (the command
    line) or as far as they are known without asking (the admin page: an issuer is asked when
    the mailbox is connected). Another provider, client, issuer, token endpoint or grant forgets
    the tokens: the mailbox waits until an admin connects it."""
    if not given.client_id.strip():
        raise InvalidInput("the OAuth2 client id is needed", field="oauth2_client_id")
    assert mailbox.id is not None
    scopes = list(given.scopes or default_scopes(given.provider, given.grant))
    if not scopes and given.provider == OAuth2Provider.generic:
        raise InvalidInput(
            "a generic OAuth2 provider needs the scopes to ask for (--oauth2-scope)",
            field="oauth2_scopes",
        )
    known = endpoints or known_endpoints(given)
    identity = (given.provider, given.client_id.strip(), known.issuer, given.grant)
    row = session.get(MailboxOAuth2, mailbox.id)
    if row is None:
        row = MailboxOAuth2(
            mailbox_id=mailbox.id,
            provider=given.provider,
            token_endpoint=known.token,
            client_id=given.client_id.strip(),
        )
        session.add(row)
        changed = False
    else:
        same = identity == (row.provider, row.client_id, row.issuer, row.grant)
        if same and endpoints is None:  # what was discovered stays; URLs typed replace it
            known = Endpoints(
                token=known.token or row.token_endpoint,
                authorization=known.authorization or row.authorization_endpoint,
                device_authorization=known.device_authorization
                or row.device_authorization_endpoint,
                issuer=known.issuer,
            )
        changed = not same or known.token != row.token_endpoint
    row.provider = given.provider
    row.client_id = given.client_id.strip()
    row.scopes = scopes
    row.grant = given.grant
    apply_endpoints(row, known)
    if given.client_secret:
        row.client_secret_encrypted = encrypt_secret(given.client_secret, settings.secret_key)
    if changed:
        _forget_tokens(row)
    # no password for an OAuth2 mailbox: nothing of an earlier one is sent anywhere
    mailbox.password_encrypted = encrypt_secret("", settings.secret_key)
    mailbox.smtp_password_encrypted = None
    session.flush()
    return row


def remove(session: Session, mailbox: Mailbox, settings: Settings, password: str) -> None:
    """The mailbox logs in with this password again; its OAuth2 client and tokens go."""
    row = grant_of(session, mailbox.id)
    if row is not None:
        session.delete(row)
    mailbox.password_encrypted = encrypt_secret(password, settings.secret_key)
    session.flush()


def apply_auth(
    session: Session,
    mailbox: Mailbox,
    settings: Settings,
    given: OAuth2Settings | None,
    password: str,
) -> None:
    """How a saved mailbox logs in from now on (the admin page): OAuth2 with these settings
    (an app-only grant, made on the command line, stays one), or a password (an OAuth2 mailbox
    going back to one needs it typed)."""
    if given is not None:
        stored = grant_of(session, mailbox.id)
        if stored is not None:
            given = replace(given, grant=stored.grant)
        configure(session, mailbox, settings, given)
        return
    if grant_of(session, mailbox.id) is None:
        return
    if not password:
        raise InvalidInput(
            "type the password the mailbox logs in with instead of OAuth2", field="password"
        )
    remove(session, mailbox, settings, password)


def _forget_tokens(row: MailboxOAuth2) -> None:
    row.access_token_encrypted = None
    row.access_token_expires_at = None
    row.refresh_token_encrypted = None
    row.state = OAuth2State.pending
    row.token_version += 1


def client_settings(row: MailboxOAuth2, settings: Settings, ca_file: str | None) -> ClientSettings:
    secret = (
        decrypt_secret(row.client_secret_encrypted, settings.secret_key)
        if row.client_secret_encrypted
        else None
    )
    return ClientSettings(
        endpoints=Endpoints(
            token=row.token_endpoint,
            authorization=row.authorization_endpoint,
            device_authorization=row.device_authorization_endpoint,
            issuer=row.issuer,
        ),
        client_id=row.client_id,
        client_secret=secret,
        scopes=tuple(row.scopes or ()),
        ca_file=ca_file,
    )


def store_tokens(
    session: Session, mailbox: Mailbox, row: MailboxOAuth2, tokens: TokenSet, settings: Settings
) -> None:
    """A new grant (flushes): the mailbox is connected; a refusal recorded earlier is gone."""
    if row.grant == OAuth2Grant.refresh_token and not tokens.refresh_token:
        raise OAuth2Refused(
            "the provider gave no refresh token, so the mailbox could not stay connected: ask "
            "for offline access (Microsoft: the offline_access scope; Google: consent again)"
        )
    _put_tokens(row, tokens, settings, utcnow())
    row.token_version += 1
    row.state = OAuth2State.connected
    row.last_error = None
    row.failed_at = None
    row.refreshing_until = None
    mailbox.last_error = None
    session.flush()
    log.info("[%s] OAuth2 connected (access token until %s)", mailbox.name, tokens.expires_at)


def _put_tokens(row: MailboxOAuth2, tokens: TokenSet, settings: Settings, now: datetime) -> None:
    row.access_token_encrypted = encrypt_secret(tokens.access_token, settings.secret_key)
    row.access_token_expires_at = tokens.expires_at
    if tokens.refresh_token:
        row.refresh_token_encrypted = encrypt_secret(tokens.refresh_token, settings.secret_key)
    row.refreshed_at = now


def connect_with_refresh_token(
    session: Session, mailbox: Mailbox, row: MailboxOAuth2, settings: Settings, refresh_token: str
) -> None:
    """Connect with a refresh token an admin got elsewhere: it is used at once (which proves it
    and gives the first access token; a rotated one replaces it)."""
    client = client_settings(row, settings, mailbox.ca_file)
    answer = oauth2.refresh(client, refresh_token.strip())
    if not answer.refresh_token:
        answer = TokenSet(
            answer.access_token, answer.expires_at, refresh_token.strip(), answer.scope
        )
    store_tokens(session, mailbox, row, answer, settings)


def connect_with_client_credentials(
    session: Session, mailbox: Mailbox, row: MailboxOAuth2, settings: Settings
) -> None:
    """App-only access: the first token now, the next ones asked for the same way."""
    answer = oauth2.client_credentials(client_settings(row, settings, mailbox.ca_file))
    store_tokens(session, mailbox, row, answer, settings)


# -- the admin's authorization in the browser (code with PKCE) -------------------------------


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def begin_authorization(
    session: Session, mailbox: Mailbox, row: MailboxOAuth2, settings: Settings, redirect_uri: str
) -> str:
    """The provider's consent page to send the admin's browser to (flushes): a fresh state and
    PKCE code verifier are stored (the verifier encrypted, the state only as its hash)."""
    state = oauth2.new_state()
    verifier = oauth2.new_code_verifier()
    url = oauth2.authorization_url(
        client_settings(row, settings, mailbox.ca_file),
        redirect_uri=redirect_uri,
        state=state,
        code_verifier=verifier,
        login_hint=mailbox.username,
    )
    row.authorization_state_hash = _state_hash(state)
    row.code_verifier_encrypted = encrypt_secret(verifier, settings.secret_key)
    row.authorization_redirect_uri = redirect_uri
    row.authorization_started_at = utcnow()
    session.flush()
    return url


@dataclass(frozen=True)
class PendingAuthorization:
    mailbox_id: int
    client: ClientSettings
    code_verifier: str
    redirect_uri: str


def pending_authorization(session: Session, settings: Settings, state: str) -> PendingAuthorization:
    """The authorization this `state` came back for (NotFound when there is none, it was used,
    or it is too old)."""
    row = session.exec(
        select(MailboxOAuth2).where(
            col(MailboxOAuth2.authorization_state_hash) == _state_hash(state)
        )
    ).first()
    started = as_utc(row.authorization_started_at) if row is not None else None
    if (
        row is None
        or started is None
        or started < utcnow() - AUTHORIZATION_TIMEOUT
        or not row.code_verifier_encrypted
        or not row.authorization_redirect_uri
    ):
        raise NotFound("this authorization is unknown, used or too old: start it again")
    mailbox = session.get(Mailbox, row.mailbox_id)
    assert mailbox is not None
    return PendingAuthorization(
        mailbox_id=row.mailbox_id,
        client=client_settings(row, settings, mailbox.ca_file),
        code_verifier=decrypt_secret(row.code_verifier_encrypted, settings.secret_key),
        redirect_uri=row.authorization_redirect_uri,
    )


def finish_authorization(
    session: Session, settings: Settings, pending: PendingAuthorization, tokens: TokenSet
) -> Mailbox:
    """Store the tokens the code was exchanged for (flushes); the state cannot be used again."""
    row = session.get(MailboxOAuth2, pending.mailbox_id)
    mailbox = session.get(Mailbox, pending.mailbox_id)
    if row is None or mailbox is None:
        raise NotFound("the mailbox was removed meanwhile")
    row.authorization_state_hash = None
    row.code_verifier_encrypted = None
    row.authorization_redirect_uri = None
    row.authorization_started_at = None
    store_tokens(session, mailbox, row, tokens, settings)
    return mailbox


# -- what the worker and the health pages ask -------------------------------------------------


def blocked_mailbox_ids(session: Session) -> set[int]:
    """OAuth2 mailboxes the worker must leave alone: not connected yet, or refused."""
    return set(
        session.exec(
            select(MailboxOAuth2.mailbox_id).where(
                col(MailboxOAuth2.state) != OAuth2State.connected
            )
        ).all()
    )


def states(session: Session) -> dict[int, MailboxOAuth2]:
    """Every OAuth2 mailbox's grant, by mailbox id."""
    return {row.mailbox_id: row for row in session.exec(select(MailboxOAuth2))}


@dataclass(frozen=True)
class Alert:
    """An OAuth2 mailbox an admin must connect (again)."""

    mailbox_id: int
    mailbox_name: str
    state: OAuth2State
    message: str


def alerts(session: Session) -> list[Alert]:
    rows = session.exec(
        select(MailboxOAuth2, Mailbox)
        .join(Mailbox, col(Mailbox.id) == col(MailboxOAuth2.mailbox_id))
        .where(col(MailboxOAuth2.state) != OAuth2State.connected)
        .order_by(col(Mailbox.name))
    ).all()
    return [
        Alert(box.id or 0, box.name, row.state, describe(row)) for row, box in rows if box.enabled
    ]


def describe(row: MailboxOAuth2) -> str:
    """The grant's state in words, for the pages and `imapdesk mailbox list`."""
    provider = row.provider.value
    if row.state == OAuth2State.pending:
        return f"OAuth2 ({provider}): not connected yet: {RECONNECT_HINT}"
    if row.state == OAuth2State.failed:
        return f"OAuth2 ({provider}): the provider refused the grant ({row.last_error}): " + (
            RECONNECT_HINT
        )
    until = as_utc(row.access_token_expires_at)
    return f"OAuth2 ({provider}): connected" + (
        f", access token valid until {until:%Y-%m-%d %H:%M:%S} UTC" if until else ""
    )


def refresh_due(engine: Engine, settings: Settings) -> None:
    """Refresh every connected mailbox's access token that is due (the worker calls this
    often): a refusal marks that grant failed, an unreachable provider waits for the next
    turn; neither touches the other mailboxes."""
    with Session(engine) as session:
        rows = session.exec(
            select(MailboxOAuth2).where(col(MailboxOAuth2.state) == OAuth2State.connected)
        ).all()
        due = [r.mailbox_id for r in rows if _due(r.access_token_expires_at, r.refreshed_at)]
    for mailbox_id in due:
        try:
            MailboxTokens.of(engine, mailbox_id, settings).access_token()
        except OAuth2Error as exc:
            log.warning("mailbox %d: OAuth2 refresh failed: %s", mailbox_id, exc.message)
        except Exception:  # the next mailbox is refreshed all the same
            log.exception("mailbox %d: OAuth2 refresh failed", mailbox_id)


def _due(expires_at: datetime | None, refreshed_at: datetime | None) -> bool:
    """Whether an access token should be replaced now: expired, or less than the margin (or
    half its life, for short-lived tokens) left."""
    expires = as_utc(expires_at)
    if expires is None:
        return True
    now = utcnow()
    issued = as_utc(refreshed_at)
    margin = REFRESH_MARGIN
    if issued is not None and issued < expires:
        margin = min(margin, (expires - issued) / 2)
    return expires - now <= margin


# -- the tokens a mailbox logs in with ---------------------------------------------------------


class MailboxTokens:
    """The access token of one OAuth2 mailbox, for every login of this process (see the
    module). `of` gives the one object per engine and mailbox."""

    _registry: weakref.WeakKeyDictionary[Engine, dict[int, MailboxTokens]] = (
        weakref.WeakKeyDictionary()
    )
    _registry_lock = threading.Lock()

    def __init__(self, engine: Engine, mailbox_id: int, settings: Settings) -> None:
        self.engine = engine
        self.mailbox_id = mailbox_id
        self.settings = settings
        self._lock = threading.Lock()
        self._refused: str | None = None
        # tokens received but not yet saved (the database failed): the only valid refresh token
        # may be among them
        self._unsaved: tuple[int, TokenSet] | None = None

    @classmethod
    def of(cls, engine: Engine, mailbox_id: int, settings: Settings) -> MailboxTokens:
        with cls._registry_lock:
            per_engine = cls._registry.setdefault(engine, {})
            found = per_engine.get(mailbox_id)
            if found is None or found.settings.secret_key != settings.secret_key:
                found = per_engine[mailbox_id] = cls(engine, mailbox_id, settings)
            return found

    def refused(self, token: str) -> None:
        with self._lock:
            self._refused = token

    def access_token(self) -> str:
        with self._lock:
            if not self._save_unsaved():
                return self._unsaved_token()
            # a lease left by a process that died ends by itself (`refreshing_until`)
            deadline = time.monotonic() + 2 * LEASE.total_seconds()
            while True:
                row, name, ca_file = self._read()
                current = self._current(row)
                if current is not None:
                    return current
                if self._take_lease(row):
                    return self._refresh(row, name, ca_file)
                if time.monotonic() > deadline:
                    raise OAuth2Unavailable("another process is refreshing the OAuth2 token")
                time.sleep(0.2)  # another process refreshes: its token comes soon

    def _unsaved_token(self) -> str:
        """While the database fails, the tokens received last are used (and kept)."""
        assert self._unsaved is not None
        answer = self._unsaved[1]
        if answer.expires_at > utcnow() and answer.access_token != self._refused:
            return answer.access_token
        raise OAuth2Unavailable("the refreshed OAuth2 tokens could not be saved yet")

    # -- the steps ----------------------------------------------------------------------------
    def _read(self) -> tuple[MailboxOAuth2, str, str | None]:
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(MailboxOAuth2, self.mailbox_id)
            mailbox = session.get(Mailbox, self.mailbox_id)
            if row is None or mailbox is None:
                raise OAuth2Refused("the mailbox no longer logs in with OAuth2")
            session.expunge(row)
            return row, mailbox.name, mailbox.ca_file

    def _current(self, row: MailboxOAuth2) -> str | None:
        """The stored access token while it is good, else None (a refresh is due). A grant
        not connected raises: an admin must act."""
        if row.state == OAuth2State.failed:
            raise OAuth2Refused(
                f"the provider refused this mailbox's OAuth2 grant ({row.last_error}): "
                + RECONNECT_HINT
            )
        if row.state == OAuth2State.pending or not row.access_token_encrypted:
            raise OAuth2Refused(
                f"the mailbox is not connected to its OAuth2 provider yet: {RECONNECT_HINT}"
            )
        token = decrypt_secret(row.access_token_encrypted, self.settings.secret_key)
        if token == self._refused or _due(row.access_token_expires_at, row.refreshed_at):
            return None
        return token

    def _take_lease(self, row: MailboxOAuth2) -> bool:
        now = utcnow()
        with unit_of_work(self.engine) as session:
            taken = session.connection().execute(
                update(MailboxOAuth2)
                .where(
                    col(MailboxOAuth2.mailbox_id) == self.mailbox_id,
                    col(MailboxOAuth2.token_version) == row.token_version,
                    col(MailboxOAuth2.state) == OAuth2State.connected,
                    (col(MailboxOAuth2.refreshing_until).is_(None))
                    | (col(MailboxOAuth2.refreshing_until) < now),
                )
                .values(refreshing_until=now + LEASE)
            )
            return taken.rowcount == 1

    def _clear_lease(self, version: int) -> None:
        with unit_of_work(self.engine) as session:
            session.connection().execute(
                update(MailboxOAuth2)
                .where(
                    col(MailboxOAuth2.mailbox_id) == self.mailbox_id,
                    col(MailboxOAuth2.token_version) == version,
                )
                .values(refreshing_until=None)
            )

    def _refresh(self, row: MailboxOAuth2, name: str, ca_file: str | None) -> str:
        """Ask the provider (the lease is ours); save the answer; a refusal marks the grant."""
        client = client_settings(row, self.settings, ca_file)
        try:
            if row.grant == OAuth2Grant.client_credentials:
                answer = oauth2.client_credentials(client)
            else:
                if not row.refresh_token_encrypted:
                    raise OAuth2Refused("no refresh token is stored", error="invalid_grant")
                refresh_token = decrypt_secret(
                    row.refresh_token_encrypted, self.settings.secret_key
                )
                answer = oauth2.refresh(client, refresh_token)
        except OAuth2Refused as exc:
            self._record_refusal(row.token_version, name, exc)
            raise
        except Exception:  # unreachable, or a surprise: the next turn tries again
            self._clear_lease(row.token_version)
            raise
        self._unsaved = (row.token_version, answer)
        self._save_unsaved()
        self._refused = None
        log.info("[%s] OAuth2 access token refreshed (valid until %s)", name, answer.expires_at)
        return answer.access_token

    def _save_unsaved(self) -> bool:
        """Write the tokens received over the version they were asked with; kept in memory
        (and used) while the database fails. False: they are still unsaved."""
        if self._unsaved is None:
            return True
        version, answer = self._unsaved
        now = utcnow()
        values: dict[str, object] = {
            "access_token_encrypted": encrypt_secret(answer.access_token, self.settings.secret_key),
            "access_token_expires_at": answer.expires_at,
            "refreshed_at": now,
            "refreshing_until": None,
            "token_version": version + 1,
            # a process that tried the rotated-away refresh token meanwhile may have marked
            # the grant refused: these tokens are the proof that it is not
            "state": OAuth2State.connected,
            "last_error": None,
            "failed_at": None,
        }
        if answer.refresh_token:
            values["refresh_token_encrypted"] = encrypt_secret(
                answer.refresh_token, self.settings.secret_key
            )
        try:
            with unit_of_work(self.engine) as session:
                saved = session.connection().execute(
                    update(MailboxOAuth2)
                    .where(
                        col(MailboxOAuth2.mailbox_id) == self.mailbox_id,
                        col(MailboxOAuth2.token_version) == version,
                    )
                    .values(**values)
                )
        except Exception:
            log.exception(
                "mailbox %d: the refreshed OAuth2 tokens could not be saved yet; kept in memory "
                "and saved at the next login",
                self.mailbox_id,
            )
            return False
        if saved.rowcount != 1:
            log.warning(
                "mailbox %d: a new OAuth2 grant was saved meanwhile; the refreshed tokens of the "
                "old one are dropped",
                self.mailbox_id,
            )
        self._unsaved = None
        return True

    def _record_refusal(self, version: int, name: str, exc: OAuth2Refused) -> None:
        """The grant is refused: mark it (unless an admin saved a new one meanwhile), tell the
        mailbox's health, and log it for the admins."""
        said = exc.message
        log.error(
            "[%s] OAuth2: %s; the mailbox is stopped until an admin connects it again", name, said
        )
        now = utcnow()
        try:
            with unit_of_work(self.engine) as session:
                marked = session.connection().execute(
                    update(MailboxOAuth2)
                    .where(
                        col(MailboxOAuth2.mailbox_id) == self.mailbox_id,
                        col(MailboxOAuth2.token_version) == version,
                    )
                    .values(
                        state=OAuth2State.failed,
                        last_error=said[:2000],
                        failed_at=now,
                        refreshing_until=None,
                    )
                )
                if marked.rowcount == 1:
                    mailbox = session.get(Mailbox, self.mailbox_id)
                    if mailbox is not None:
                        mailbox.last_error = (
                            f"{now:%Y-%m-%d %H:%M:%S} UTC: OAuth2 refused: {said}; "
                            + RECONNECT_HINT
                        )[:2000]
        except Exception:
            log.exception("[%s] could not record the OAuth2 refusal", name)


def tokens_for(
    mailbox: Mailbox, settings: Settings, engine: Engine | None = None
) -> MailboxTokens | None:
    """The token keeper of a stored OAuth2 mailbox (None: it logs in with a password). The
    engine defaults to the one the mailbox was read with."""
    session = object_session(mailbox)
    if mailbox.id is None or session is None:
        return None
    if session.get(MailboxOAuth2, mailbox.id) is None:
        return None
    bind = engine or session.get_bind()
    if not isinstance(bind, Engine):
        bind = bind.engine
    return MailboxTokens.of(bind, mailbox.id, settings)


__all__ = [
    "Alert",
    "MailboxTokens",
    "OAuth2Settings",
    "alerts",
    "apply_auth",
    "apply_endpoints",
    "begin_authorization",
    "blocked_mailbox_ids",
    "client_for",
    "configure",
    "default_scopes",
    "describe",
    "finish_authorization",
    "known_endpoints",
    "pending_authorization",
    "refresh_due",
    "resolve",
    "resolve_endpoints",
    "states",
    "store_tokens",
    "tokens_for",
]
