"""`imapdesk user ...` and `imapdesk token ...`: agents and their API tokens."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from imapdesk.cli.terminal import console, fail, read_secret
from imapdesk.kernel.errors import ImapdeskError

user_app = typer.Typer(help="Agents.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)


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

    password = read_secret(password_stdin, "Password")
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
        token = create_api_token(session, agent, name=name)
    # standard output, for a script to read
    Console().print(token, soft_wrap=True)
