"""`imapdesk mailbox ...` and `imapdesk rebuild`: the shared mailboxes, and reading them back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from imapdesk.cli.oauth2 import AuthMethod, oauth2_login
from imapdesk.cli.terminal import console, fail, read_secret, setup_logging
from imapdesk.kernel.errors import ImapdeskError
from imapdesk.kernel.models import ConversationStatus, ImapSecurity, OAuth2Provider, SmtpSecurity
from imapdesk.kernel.settings import get_settings

mailbox_app = typer.Typer(help="Shared mailboxes.", no_args_is_help=True)

# the folder of each role of the mapping, where the server's own is not the one to use: a name
# as the server lists it (`INBOX.Done`), or relative to its namespace's prefix (`Done`); "" to
# have the worker find it on the server again
_FOLDER_HELP = "Folder for {what} (default: found on the server, else created as {default})"
PendingFolder = Annotated[
    str | None,
    typer.Option(help=_FOLDER_HELP.format(what="pending conversations", default="Pending")),
]
ArchiveFolder = Annotated[
    str | None,
    typer.Option(help=_FOLDER_HELP.format(what="closed conversations", default="Archive")),
]
SpamFolder = Annotated[
    str | None, typer.Option(help=_FOLDER_HELP.format(what="spam", default="Junk"))
]
TrashFolder = Annotated[
    str | None,
    typer.Option(help=_FOLDER_HELP.format(what="deleted conversations", default="Trash")),
]
NotesFolder = Annotated[
    str | None, typer.Option(help=_FOLDER_HELP.format(what="internal notes", default="Notes"))
]
SentFolder = Annotated[
    str | None,
    typer.Option(help=_FOLDER_HELP.format(what="copies of the replies", default="Sent")),
]


def _folder_options(
    pending: str | None,
    archive: str | None,
    spam: str | None,
    trash: str | None,
    notes: str | None,
    sent: str | None,
) -> dict[str, str | None]:
    """The folder options given, by role (None: not given)."""
    given = {
        "pending": pending,
        "archive": archive,
        "junk": spam,
        "trash": trash,
        "notes": notes,
        "sent": sent,
    }
    return {role: name for role, name in given.items() if name is not None}


@mailbox_app.command("add")
def mailbox_add(
    name: str,
    address: Annotated[str, typer.Option(help="The shared address, e.g. support@example.com")],
    imap_host: Annotated[str, typer.Option()],
    username: Annotated[str, typer.Option()],
    imap_port: Annotated[int, typer.Option()] = 993,
    imap_security: Annotated[ImapSecurity, typer.Option()] = ImapSecurity.ssl,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    ca_file: Annotated[str | None, typer.Option(help="CA certificate for a private CA")] = None,
    smtp_host: Annotated[str | None, typer.Option()] = None,
    smtp_port: Annotated[int | None, typer.Option()] = None,
    smtp_security: Annotated[SmtpSecurity | None, typer.Option()] = None,
    smtp_username: Annotated[
        str | None, typer.Option(help="SMTP login; default: the IMAP user name")
    ] = None,
    smtp_password_file: Annotated[
        str | None,
        typer.Option(help="A file holding the SMTP password; default: the IMAP password"),
    ] = None,
    display_name: Annotated[
        str | None, typer.Option(help='Name in From, e.g. "Example Support"')
    ] = None,
    from_agent_name: Annotated[
        bool, typer.Option(help='From: "Alice at <display name>" on replies')
    ] = False,
    signature: Annotated[str | None, typer.Option(help="Added below every reply")] = None,
    status_after_reply: Annotated[
        ConversationStatus, typer.Option(help="Status once a reply went out")
    ] = ConversationStatus.pending,
    folder: Annotated[
        list[str] | None, typer.Option(help="Watched folder (repeat); default INBOX and Sent")
    ] = None,
    pending_folder: PendingFolder = None,
    archive_folder: ArchiveFolder = None,
    spam_folder: SpamFolder = None,
    trash_folder: TrashFolder = None,
    notes_folder: NotesFolder = None,
    sent_folder: SentFolder = None,
    check: Annotated[bool, typer.Option(help="Log in once before saving")] = True,
    auth: Annotated[
        AuthMethod, typer.Option(help="Log in with a password or with OAuth2 (XOAUTH2)")
    ] = AuthMethod.password,
    oauth2_provider: Annotated[OAuth2Provider | None, typer.Option()] = None,
    oauth2_issuer: Annotated[
        str | None,
        typer.Option(help="The provider's issuer URL, for discovery (a Microsoft tenant's too)"),
    ] = None,
    oauth2_token_url: Annotated[
        str | None, typer.Option(help="The token endpoint, where no discovery is offered")
    ] = None,
    oauth2_client_id: Annotated[str | None, typer.Option()] = None,
    oauth2_client_secret_file: Annotated[
        str | None, typer.Option(help="A file holding the client secret (none: a public client)")
    ] = None,
    oauth2_refresh_token_stdin: Annotated[
        bool, typer.Option("--oauth2-refresh-token-stdin", help="Read a refresh token")
    ] = False,
    oauth2_device_code: Annotated[
        bool,
        typer.Option("--oauth2-device-code", help="Print a URL and a code to approve it with"),
    ] = False,
    oauth2_client_credentials: Annotated[
        bool,
        typer.Option(
            "--oauth2-client-credentials", help="App-only access (Microsoft), with the secret"
        ),
    ] = False,
    oauth2_scope: Annotated[
        list[str] | None,
        typer.Option(help="A scope to ask for (repeat); default: the provider's mail scopes"),
    ] = None,
) -> None:
    """Add a shared mailbox for the worker to watch."""
    from imapdesk.domain.mailboxes.config import add_mailbox
    from imapdesk.domain.mailboxes.folders import set_folder_names
    from imapdesk.kernel.db import unit_of_work, upgrade_database

    if auth == AuthMethod.oauth2:
        if password_stdin or smtp_password_file:
            fail("an OAuth2 mailbox logs in with its token: leave out the passwords")
        login = oauth2_login(
            name=name,
            provider=oauth2_provider,
            issuer=oauth2_issuer,
            token_url=oauth2_token_url,
            client_id=oauth2_client_id,
            client_secret_file=oauth2_client_secret_file,
            refresh_token_stdin=oauth2_refresh_token_stdin,
            device_code=oauth2_device_code,
            client_credentials=oauth2_client_credentials,
            scopes=oauth2_scope,
            ca_file=ca_file,
        )
        password = ""
    else:
        password = read_secret(password_stdin, "IMAP password")
    smtp_password = None
    if smtp_password_file:
        smtp_password = Path(smtp_password_file).read_text().strip("\r\n")
    settings = get_settings()
    if check:
        from imapdesk.mail.imap import ImapAccount, ImapSession
        from imapdesk.mail.oauth2 import FixedToken

        token = FixedToken(login.tokens.access_token) if auth == AuthMethod.oauth2 else None
        try:
            ImapSession(
                ImapAccount(
                    imap_host,
                    imap_port,
                    imap_security.value,
                    username,
                    password,
                    ca_file,
                    oauth2=token,
                )
            ).close()
        except ImapdeskError as exc:
            fail(exc.message)
    upgrade_database()
    try:
        with unit_of_work() as session:
            box = add_mailbox(
                session,
                settings,
                name=name,
                address=address,
                imap_host=imap_host,
                imap_port=imap_port,
                imap_security=imap_security,
                username=username,
                password=password,
                ca_file=ca_file,
                smtp_host=smtp_host,
                smtp_port=smtp_port,
                smtp_security=smtp_security,
                smtp_username=smtp_username,
                smtp_password=smtp_password,
                folders=folder,
            )
            if auth == AuthMethod.oauth2:
                from imapdesk.domain.mailboxes.oauth2 import configure, store_tokens

                grant = configure(session, box, settings, login.given, login.endpoints)
                store_tokens(session, box, grant, login.tokens, settings)
            box.display_name = display_name
            box.from_agent_name = from_agent_name
            box.signature = signature
            box.status_after_reply = status_after_reply
            set_folder_names(
                box,
                _folder_options(
                    pending_folder,
                    archive_folder,
                    spam_folder,
                    trash_folder,
                    notes_folder,
                    sent_folder,
                ),
            )
    except ImapdeskError as exc:
        fail(exc.message)
    console.print(f"added mailbox {name}; the worker picks it up within seconds")


@mailbox_app.command("list")
def mailbox_list() -> None:
    """The mailboxes, their server's capabilities and each folder's sync state."""
    from sqlmodel import select

    from imapdesk.domain.mailboxes.capabilities import plain_client_notes, sync_notes
    from imapdesk.domain.mailboxes.folders import problem_notes
    from imapdesk.domain.mailboxes.keywords import unkept_keywords
    from imapdesk.domain.mailboxes.oauth2 import describe as describe_grant
    from imapdesk.domain.mailboxes.oauth2 import states as oauth2_states
    from imapdesk.kernel.db import unit_of_work, upgrade_database
    from imapdesk.kernel.models import Folder, Mailbox

    upgrade_database()
    table = Table("mailbox", "address", "server", "capabilities", "folders", "last error")
    with unit_of_work() as session:
        grants = oauth2_states(session)
        for mb in session.exec(select(Mailbox).order_by(Mailbox.name)):
            folders = session.exec(
                select(Folder).where(Folder.mailbox_id == mb.id, Folder.watched)
            ).all()
            caps = mb.capabilities or {}
            unkept = unkept_keywords(session, [mb.id]).get(mb.id, []) if mb.id else []
            cap_text = "\n".join(
                [
                    ", ".join(
                        k
                        for k in ("idle", "condstore", "qresync", "move", "objectid", "notify")
                        if caps.get(k)
                    )
                    or "-",
                    *(f"- {note}" for note in plain_client_notes(caps, unkept)),
                ]
            )
            folder_text = "\n".join(
                f"{f.name}: {f.state.value}, {f.message_count} msgs"
                + (f" [red]({f.last_error})[/red]" if f.last_error else "")
                for f in folders
            )
            # folders of the mapping the worker could not set up: the rest syncs all the same
            for problem in problem_notes(mb):
                folder_text += f"\n[red]{escape(problem)}[/red]"
            # the connections the worker runs on and how it hears of new mail
            for note in sync_notes(caps):
                folder_text += f"\n- {escape(note)}"
            table.add_row(
                mb.name,
                mb.address,
                f"{mb.imap_host}:{mb.imap_port} {mb.imap_security.value}"
                + (f"\n{describe_grant(grants[mb.id])}" if mb.id in grants else "")
                + (
                    f"\nlogged in {mb.last_connected_at:%Y-%m-%d %H:%M} UTC"
                    if mb.last_connected_at
                    else "\nnot connected yet"
                ),
                cap_text,
                folder_text,
                mb.last_error or "",
            )
    # a console of the moment: its width comes from the terminal (or COLUMNS) of this run
    Console().print(table)


@mailbox_app.command("folders")
def mailbox_folders(
    name: str,
    pending_folder: PendingFolder = None,
    archive_folder: ArchiveFolder = None,
    spam_folder: SpamFolder = None,
    trash_folder: TrashFolder = None,
    notes_folder: NotesFolder = None,
    sent_folder: SentFolder = None,
) -> None:
    """The folder of each part of the mapping (pending, closed, spam, deleted, notes, sent):
    set one with its option ("" to have the worker find it on the server again), and see
    which folder the worker uses and why. The worker takes new settings within seconds."""
    from sqlmodel import select

    from imapdesk.domain.mailboxes.folders import (
        LABELS,
        PURPOSES,
        chosen_folders,
        folder_problems,
        folder_settings,
        set_folder_names,
    )
    from imapdesk.kernel.db import unit_of_work, upgrade_database
    from imapdesk.kernel.models import Mailbox
    from imapdesk.mail.imap.folders import ROLES

    upgrade_database()
    given = _folder_options(
        pending_folder, archive_folder, spam_folder, trash_folder, notes_folder, sent_folder
    )
    table = Table("role", "option", "setting", "folder in use", "found by")
    try:
        with unit_of_work() as session:
            box = session.exec(select(Mailbox).where(Mailbox.name == name)).first()
            if box is None:
                fail(f"no mailbox named {name!r}; see imapdesk mailbox list")
            if given:
                set_folder_names(box, given)
            settings = folder_settings(box)
            chosen = chosen_folders(box.capabilities)
            refused = {p.role: p for p in folder_problems(box.capabilities)}
            for role in ROLES:
                folder, found_by, exists = chosen.get(role, ("", "", False))
                if role in refused:
                    found_by = f"[red]refused: {escape(refused[role].said)}[/red]"
                elif folder and not exists:
                    found_by = "not there yet: created when needed"
                table.add_row(
                    f"{LABELS[role]} ({PURPOSES[role]})",
                    f"--{LABELS[role]}-folder",
                    escape(settings.get(role, "")),
                    escape(folder) or "(not connected yet)",
                    found_by if role in refused else escape(found_by),
                )
    except ImapdeskError as exc:
        fail(exc.message)
    if given:
        console.print(f"saved the folders of {name}; the worker takes them within seconds")
    Console().print(table)


def rebuild(
    mailbox: Annotated[
        list[str] | None, typer.Option("--mailbox", help="Only this mailbox (repeat)")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Read conversations and their state back from the mailbox (after losing the database, or
    to start over): agents, tokens and mailboxes stay; everything read from mail is read again.
    Stop the worker first."""
    from imapdesk.domain.sync.rebuild import forget_mail
    from imapdesk.kernel.db import get_engine, unit_of_work, upgrade_database
    from imapdesk.worker.progress import ProgressDisplay
    from imapdesk.worker.supervisor import sync_until_caught_up

    setup_logging(verbose)
    upgrade_database()
    if not yes and not typer.confirm(
        "Forget every conversation read from "
        + (", ".join(mailbox) if mailbox else "all mailboxes")
        + " and read them back from the mail server?"
    ):
        raise typer.Exit(code=1)
    engine = get_engine()
    try:
        with unit_of_work(engine) as session:
            names = forget_mail(session, mailbox)
    except ImapdeskError as exc:
        fail(exc.message)
    if not names:
        fail("no mailboxes; add one with: imapdesk mailbox add")
    display = ProgressDisplay(console) if console.is_terminal else None
    console.print(f"reading {', '.join(names)} back from the mail server...")
    done = sync_until_caught_up(
        get_settings(), engine, only=frozenset(names), progress=display.update if display else None
    )
    if not done:
        fail("the rebuild did not finish; see the errors above and `imapdesk mailbox list`")
    console.print("rebuilt")
