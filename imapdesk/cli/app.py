"""The `imapdesk` command. Each command lives in the module of what it works on: `database`
(db upgrade), `users` (user, token), `mailboxes` (mailbox, rebuild), `serve` (serve, run,
worker), `demo` and `mailserver` (the `[demo]` extra's tooling, imapdesk/devtools)."""

from __future__ import annotations

import typer

from imapdesk.cli import database, demo, mailboxes, serve, users
from imapdesk.cli.mailserver import mailserver_app

app = typer.Typer(help="imapdesk: a team helpdesk on shared IMAP mailboxes.", no_args_is_help=True)
app.command("rebuild")(mailboxes.rebuild)
app.command("worker")(serve.worker)
app.command("serve")(serve.serve)
app.command("run")(serve.run)
app.command("demo")(demo.demo)
app.add_typer(database.db_app, name="db")
app.add_typer(users.user_app, name="user")
app.add_typer(users.token_app, name="token")
app.add_typer(mailboxes.mailbox_app, name="mailbox")
app.add_typer(mailserver_app, name="mailserver", help="The local Dovecot for demo and tests.")


def main() -> None:
    app()
