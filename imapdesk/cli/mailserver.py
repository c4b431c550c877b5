"""`imapdesk mailserver ...`: run a private Dovecot on loopback for the demo and for trying out
(imapdesk/devtools/mailserver.py; the `[demo]` extra)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from imapdesk.cli.demo import require_demo_extra
from imapdesk.devtools.mailserver import (
    STORAGES,
    LocalMailServer,
    LocalMailServerError,
    Storage,
    collect_message_files,
)
from imapdesk.kernel.settings import get_settings

mailserver_app = typer.Typer(
    help="A private Dovecot on 127.0.0.1 (IMAP with STARTTLS, IMAPS, LMTP) for demos and tests.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)

DEFAULT_IMAP_PORT = 10143
DEFAULT_IMAPS_PORT = 10993

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Instance directory [default: $IMAPDESK_DATA_DIR/mailserver, i.e. ./data/mailserver]",
        file_okay=False,
    ),
]


@mailserver_app.callback()
def _needs_the_demo_extra() -> None:
    require_demo_extra("mailserver")


def _base_dir(directory: Path | None) -> Path:
    return (directory or get_settings().data_dir / "mailserver").absolute()


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(1)


def _load(directory: Path | None) -> LocalMailServer:
    base = _base_dir(directory)
    try:
        return LocalMailServer.load(base)
    except LocalMailServerError as exc:
        raise _fail(f"{exc.message} (`imapdesk mailserver start --dir {base}`)") from None


def _running(directory: Path | None) -> LocalMailServer:
    server = _load(directory)
    if not server.is_running():
        raise _fail(
            f"the mail server in {server.base_dir} is not running: "
            f"`imapdesk mailserver start --dir {server.base_dir}`"
        )
    return server


def _describe(server: LocalMailServer) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    pid = server.master_pid()
    table.add_row("state", f"[green]running[/] (pid {pid})" if pid else "[yellow]stopped[/]")
    table.add_row("directory", str(server.base_dir))
    table.add_row("IMAP", f"{server.host}:{server.imap_port} (STARTTLS available)")
    table.add_row("IMAPS", f"{server.host}:{server.imaps_port}")
    lmtp = f"unix:{server.lmtp_socket}" if server.lmtp else "off"
    if server.lmtp and server.lmtp_port:
        lmtp += f", {server.host}:{server.lmtp_port}"
    table.add_row("LMTP", lmtp)
    table.add_row("storage", server.storage)
    if server.trim_capabilities:
        table.add_row("hidden capabilities", " ".join(server.trim_capabilities))
    table.add_row("CA file", str(server.ca_file))
    table.add_row("log", str(server.log_path))
    users = sorted(server.users())
    table.add_row("users", ", ".join(users) if users else "(none: `imapdesk mailserver add-user`)")
    return table


@mailserver_app.command()
def start(
    directory: DirOption = None,
    imap_port: Annotated[
        int | None, typer.Option(help=f"IMAP port [default: {DEFAULT_IMAP_PORT}]")
    ] = None,
    imaps_port: Annotated[
        int | None, typer.Option(help=f"IMAPS port [default: {DEFAULT_IMAPS_PORT}]")
    ] = None,
    lmtp_port: Annotated[
        int | None, typer.Option(help="Also accept LMTP on this TCP port (a socket is always on)")
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help=f"Mail storage: {' or '.join(STORAGES)} [default: maildir]")
    ] = None,
    trim_capability: Annotated[
        list[str] | None,
        typer.Option(
            help="Hide a capability, e.g. --trim-capability CONDSTORE --trim-capability QRESYNC"
        ),
    ] = None,
) -> None:
    """Start the mail server (settings given once are remembered in its directory)."""
    base = _base_dir(directory)
    previous: LocalMailServer | None = None
    if (base / "mailserver.json").exists():
        previous = _load(base)
    if storage is not None and storage not in STORAGES:
        raise _fail(f"unknown storage {storage!r}: use one of {', '.join(STORAGES)}")
    try:
        server = LocalMailServer(
            base,
            imap_port=imap_port or (previous.imap_port if previous else DEFAULT_IMAP_PORT),
            imaps_port=imaps_port or (previous.imaps_port if previous else DEFAULT_IMAPS_PORT),
            storage=cast(Storage, storage or (previous.storage if previous else "maildir")),
            trim_capabilities=(
                trim_capability
                if trim_capability is not None
                else (previous.trim_capabilities if previous else ())
            ),
            lmtp_port=lmtp_port or (previous.lmtp_port if previous else None),
        )
        if server.is_running():
            if previous is not None and previous.settings() != server.settings():
                raise _fail(
                    f"the mail server in {base} is running with other settings: "
                    "`imapdesk mailserver stop` first"
                )
            console.print("[yellow]already running[/]")
        else:
            began = time.monotonic()
            server.start()
            console.print(f"[green]started[/] in {time.monotonic() - began:.2f} s")
    except LocalMailServerError as exc:
        raise _fail(exc.message) from None
    console.print(_describe(server))


@mailserver_app.command()
def stop(directory: DirOption = None) -> None:
    """Stop the mail server (Dovecot takes about 3 s to exit)."""
    server = _load(directory)
    if not server.is_running():
        console.print("not running")
        return
    try:
        server.stop()
    except LocalMailServerError as exc:
        raise _fail(exc.message) from None
    console.print("[green]stopped[/]")


@mailserver_app.command()
def status(directory: DirOption = None) -> None:
    """Show ports, users and paths; exits with 1 when the server is not running."""
    server = _load(directory)
    console.print(_describe(server))
    if not server.is_running():
        raise typer.Exit(1)


@mailserver_app.command("add-user")
def add_user(
    user: Annotated[str, typer.Argument(help="Login name, e.g. support@example.test")],
    directory: DirOption = None,
    password: Annotated[str | None, typer.Option(help="The password (visible in ps)")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
) -> None:
    """Add a user, or change the password of an existing one."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise _fail("give the password with --password-stdin or --password")
    server = _load(directory)
    try:
        name = server.add_user(user, password)
    except LocalMailServerError as exc:
        raise _fail(exc.message) from None
    console.print(f"user [bold]{name}[/] ready on {server.host}:{server.imap_port}")


@mailserver_app.command()
def seed(
    user: Annotated[str, typer.Argument(help="The user whose mailbox receives the messages")],
    paths: Annotated[
        list[Path],
        typer.Argument(help=".eml files, mbox files, Maildir or other directories of mail"),
    ],
    directory: DirOption = None,
    password: Annotated[
        str | None,
        typer.Option(help="The user's password [default: looked up; creates the user if new]"),
    ] = None,
    folder: Annotated[str, typer.Option(help="Target folder (created if missing)")] = "INBOX",
    flag: Annotated[
        list[str] | None, typer.Option(help="Flag for every message, e.g. --flag '\\Seen'")
    ] = None,
    batch: Annotated[int, typer.Option(help="Messages per MULTIAPPEND")] = 200,
) -> None:
    """Append mail from files into a folder with MULTIAPPEND."""
    server = _running(directory)
    name = user.strip().lower()
    known = server.users()
    try:
        if password is None:
            if name not in known:
                raise _fail(f"no user {name}: add it, or pass --password to create it")
            password = known[name]
        elif known.get(name) != password:
            server.add_user(name, password)
        files = collect_message_files(paths)
    except LocalMailServerError as exc:
        raise _fail(exc.message) from None
    total = sum(f.count() for f in files)
    if total == 0:
        raise _fail("no messages found in " + " ".join(str(p) for p in paths))
    began = time.monotonic()
    with Progress(
        TextColumn(f"seeding {name}/{folder}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("seed", total=total)
        count = server.seed(
            name,
            password,
            folder,
            (message for f in files for message in f.messages()),
            flags=flag or (),
            batch=batch,
            on_progress=lambda n: progress.advance(task, n),
        )
    elapsed = time.monotonic() - began
    console.print(
        f"[green]{count}[/] messages from {len(files)} files into {name}/{folder} "
        f"in {elapsed:.1f} s ({count / max(elapsed, 1e-6):.0f}/s)"
    )


@mailserver_app.command()
def smtp(
    directory: DirOption = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 10587,
    catch_all: Annotated[
        str | None,
        typer.Option(help="A user of this server that gets mail to unknown recipients"),
    ] = None,
) -> None:
    """An SMTP server (STARTTLS, AUTH with this server's users) that delivers into the boxes
    of the running mail server; runs until Ctrl-C. Point a mailbox at it with
    `--smtp-host localhost --smtp-port PORT --smtp-security starttls`."""
    import signal
    import threading

    from imapdesk.devtools.smtp_relay import LocalSmtpRelay

    server = _running(directory)
    relay = LocalSmtpRelay(server, port=port, catch_all=catch_all)
    relay.start()
    console.print(
        f"SMTP on 127.0.0.1:{port} (STARTTLS + AUTH, CA {server.ca_file}); Ctrl-C stops it"
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        relay.stop()
