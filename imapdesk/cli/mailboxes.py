"""`imapdesk mailbox ...` and `imapdesk rebuild`: the shared mailboxes, and reading them back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imapdesk.cli.terminal import console, fail, read_secret, setup_logging
from imapdesk.kernel.errors import ImapdeskError
from imapdesk.kernel.models import ConversationStatus, ImapSecurity, SmtpSecurity
from imapdesk.kernel.settings import get_settings

mailbox_app = typer.Typer(help="Shared mailboxes.", no_args_is_help=True)


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
    check: Annotated[bool, typer.Option(help="Log in once before saving")] = True,
) -> None:
    """Add a shared mailbox for the worker to watch."""
    from imapdesk.domain.mailboxes.config import add_mailbox
    from imapdesk.kernel.db import unit_of_work, upgrade_database

    password = read_secret(password_stdin, "IMAP password")
    smtp_password = None
    if smtp_password_file:
        smtp_password = Path(smtp_password_file).read_text().strip("\r\n")
    settings = get_settings()
    if check:
        from imapdesk.mail.imap import ImapAccount, ImapSession

        try:
            ImapSession(
                ImapAccount(imap_host, imap_port, imap_security.value, username, password, ca_file)
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
            box.display_name = display_name
            box.from_agent_name = from_agent_name
            box.signature = signature
            box.status_after_reply = status_after_reply
    except ImapdeskError as exc:
        fail(exc.message)
    console.print(f"added mailbox {name}; the worker picks it up within seconds")


@mailbox_app.command("list")
def mailbox_list() -> None:
    """The mailboxes, their server's capabilities and each folder's sync state."""
    from sqlmodel import select

    from imapdesk.domain.mailboxes.capabilities import plain_client_notes
    from imapdesk.kernel.db import unit_of_work, upgrade_database
    from imapdesk.kernel.models import Folder, Mailbox

    upgrade_database()
    table = Table("mailbox", "address", "server", "capabilities", "folders", "last error")
    with unit_of_work() as session:
        for mb in session.exec(select(Mailbox).order_by(Mailbox.name)):
            folders = session.exec(
                select(Folder).where(Folder.mailbox_id == mb.id, Folder.watched)
            ).all()
            caps = mb.capabilities or {}
            cap_text = "\n".join(
                [
                    ", ".join(
                        k
                        for k in ("idle", "condstore", "qresync", "move", "objectid", "notify")
                        if caps.get(k)
                    )
                    or "-",
                    *(f"- {note}" for note in plain_client_notes(caps)),
                ]
            )
            folder_text = "\n".join(
                f"{f.name}: {f.state.value}, {f.message_count} msgs"
                + (f" [red]({f.last_error})[/red]" if f.last_error else "")
                for f in folders
            )
            table.add_row(
                mb.name,
                mb.address,
                f"{mb.imap_host}:{mb.imap_port} {mb.imap_security.value}",
                cap_text,
                folder_text,
                mb.last_error or "",
            )
    # a console of the moment: its width comes from the terminal (or COLUMNS) of this run
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
