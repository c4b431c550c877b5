"""The `imapdesk` command."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from imapdesk.kernel.errors import ImapdeskError
from imapdesk.kernel.models import ConversationStatus, ImapSecurity
from imapdesk.kernel.settings import get_settings

app = typer.Typer(help="imapdesk: a team helpdesk on shared IMAP mailboxes.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
user_app = typer.Typer(help="Agents.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
mailbox_app = typer.Typer(help="Shared mailboxes.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(mailbox_app, name="mailbox")

console = Console(stderr=True)


def _mount_optional() -> None:
    try:
        from imapdesk.devtools.mailserver_cli import mailserver_app
    except ImportError:  # pragma: no cover - only while the module is being written
        return
    app.add_typer(mailserver_app, name="mailserver", help="The local Dovecot for demo and tests.")


_mount_optional()


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.INFO
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=True)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(name)s %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)
    for noisy in ("imapclient", "sqlalchemy.engine", "uvicorn.access", "multipart"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


def _read_secret(from_stdin: bool, prompt: str) -> str:
    if from_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        value = typer.prompt(prompt, hide_input=True)
    if not value:
        fail(f"{prompt} is empty")
    return value


# --- database -----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to the newest version."""
    from imapdesk.kernel.db import upgrade_database

    upgrade_database()
    console.print("database is up to date")


# --- agents and tokens ------------------------------------------------------------------------


@user_app.command("add")
def user_add(
    email: str,
    name: Annotated[str, typer.Option(help="Full name shown to colleagues")],
    admin: Annotated[bool, typer.Option("--admin", help="May manage agents and mailboxes")] = False,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    mailbox: Annotated[
        list[str] | None,
        typer.Option(help="Only this mailbox (repeat); default: every mailbox, now and later"),
    ] = None,
) -> None:
    """Add an agent."""
    from imapdesk.domain.accounts.access import mailbox_ids_by_name, set_mailbox_access
    from imapdesk.domain.accounts.agents import create_agent
    from imapdesk.kernel.db import unit_of_work, upgrade_database

    password = _read_secret(password_stdin, "Password")
    upgrade_database()
    try:
        with unit_of_work() as session:
            agent = create_agent(session, email=email, name=name, password=password, is_admin=admin)
            if mailbox:
                ids = mailbox_ids_by_name(session, mailbox)
                set_mailbox_access(session, agent, all_mailboxes=False, mailbox_ids=ids)
            scope = "every mailbox" if admin or not mailbox else ", ".join(mailbox)
            console.print(f"added agent {agent.email} (handle {agent.handle}), access: {scope}")
    except ImapdeskError as exc:
        fail(exc.message)


@token_app.command("create")
def token_create(
    email: str, name: Annotated[str, typer.Option(help="What the token is for")] = ""
) -> None:
    """Create an API token for an agent and print it (it is shown only once)."""
    from imapdesk.domain.accounts.agents import agent_by_email, create_api_token
    from imapdesk.kernel.db import unit_of_work, upgrade_database

    upgrade_database()
    with unit_of_work() as session:
        agent = agent_by_email(session, email)
        if agent is None:
            fail(f"no agent {email}; add one with: imapdesk user add {email} --name NAME")
            return
        token = create_api_token(session, agent, name=name)
    Console().print(token, soft_wrap=True)


# --- mailboxes ----------------------------------------------------------------------------------


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
    smtp_security: Annotated[ImapSecurity | None, typer.Option()] = None,
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

    password = _read_secret(password_stdin, "IMAP password")
    smtp_password = None
    if smtp_password_file:
        from pathlib import Path

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
            box.status_after_reply = status_after_reply.value
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


@app.command("rebuild")
def rebuild_cmd(
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
        return
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


# --- processes ----------------------------------------------------------------------------------


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def start_worker(stop: threading.Event, *, progress: bool) -> threading.Thread:
    from imapdesk.kernel.db import get_engine
    from imapdesk.worker.progress import ProgressDisplay
    from imapdesk.worker.supervisor import make_worker

    display = ProgressDisplay(console) if progress and console.is_terminal else None
    worker = make_worker(
        get_settings(), get_engine(), stop, progress=display.update if display else None
    )
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    return thread


@app.command("worker")
def worker_cmd(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Watch the mailboxes (IMAP IDLE) and take mail into the database."""
    from imapdesk.kernel.db import upgrade_database

    setup_logging(verbose)
    upgrade_database()
    stop = threading.Event()
    _stop_on_signals(stop)
    thread = start_worker(stop, progress=True)
    while thread.is_alive():
        thread.join(0.5)


def web_server(app: Any, host: str, port: int) -> Any:
    """A uvicorn server that, on SIGINT/SIGTERM, returns instead of re-raising the signal, so
    the caller's clean-up (stop the worker, stop the demo's Dovecot) runs."""
    import contextlib

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.handle_exit)
            yield

    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=2
    )
    return Server(config)


def _serve(with_worker: bool, verbose: bool) -> None:
    from imapdesk.api.app import create_app, settle_after_start
    from imapdesk.kernel.db import upgrade_database

    setup_logging(verbose)
    settings = get_settings()
    upgrade_database()
    stop = threading.Event()
    worker_thread = start_worker(stop, progress=True) if with_worker else None
    server = web_server(create_app(), settings.host, settings.port)
    settle_after_start()
    try:
        server.run()
    finally:
        stop.set()
        if worker_thread is not None:
            worker_thread.join(timeout=10)


@app.command("serve")
def serve_cmd(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run the REST API and the web UI."""
    _serve(with_worker=False, verbose=verbose)


@app.command("run")
def run_cmd(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """API, web UI and worker in one process: the small-install default."""
    _serve(with_worker=True, verbose=verbose)


@app.command("demo")
def demo_cmd(
    port: Annotated[int, typer.Option(help="Web port")] = 8000,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Local mail server with demo mail, an admin agent, worker and web UI, all running."""
    from imapdesk.devtools.demo import run_demo

    setup_logging(verbose)
    run_demo(port=port, console=console)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
