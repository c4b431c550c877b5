"""`imapdesk db ...`: the database schema."""

from __future__ import annotations

import typer

from imapdesk.cli.terminal import console

db_app = typer.Typer(help="The database.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to the newest version."""
    from imapdesk.kernel.db import upgrade_database

    upgrade_database()
    console.print("database is up to date")
