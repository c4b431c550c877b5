"""`imapdesk demo`: the demo's mail server, mail and admin (imapdesk/devtools, the `[demo]`
extra), then the API, web UI and worker as `imapdesk run` serves them."""

from __future__ import annotations

from typing import Annotated

import typer

from imapdesk.cli.serve import Verbose, serve_until_stopped
from imapdesk.cli.terminal import console, setup_logging
from imapdesk.devtools.extra import INSTALL_DEMO_EXTRA, missing_demo_packages
from imapdesk.kernel.settings import get_settings


def require_demo_extra(command: str) -> None:
    """Exit with 2 and what to install when the `[demo]` extra's packages are missing."""
    missing = missing_demo_packages()
    if missing:
        console.print(
            f"error: `imapdesk {command}` needs the demo extra, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_DEMO_EXTRA}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=2)


def demo(
    port: Annotated[int, typer.Option(help="Web port")] = 8000,
    verbose: Verbose = False,
) -> None:
    """Local mail server with demo mail, an admin agent, worker and web UI, all running."""
    require_demo_extra("demo")
    from imapdesk.devtools.demo import DEMO_CATCH_ALL, DEMO_SMTP_PORT, prepare_demo

    setup_logging(verbose)
    settings = get_settings()
    environment = prepare_demo(console)
    try:
        server = environment.mail_server
        url = f"http://{settings.host}:{port}/"
        console.rule("imapdesk demo")
        console.print(f"web UI:  [bold]{url}[/bold]")
        console.print(
            f"login:   [bold]{environment.admin}[/bold]  "
            f"password: [bold]{environment.admin_password}[/bold]"
        )
        console.print(f"API:     {url}docs   (a token: imapdesk token create {environment.admin})")
        console.print(f"IMAP:    localhost:{server.imaps_port} (TLS), CA file {server.ca_file}")
        console.print(
            f"SMTP:    localhost:{DEMO_SMTP_PORT} (STARTTLS); replies to customers arrive in "
            f"{DEMO_CATCH_ALL} (password {environment.customers_password})"
        )
        console.print("Ctrl-C stops everything.")
        serve_until_stopped(host=settings.host, port=port, with_worker=True)
    finally:
        environment.stop()
