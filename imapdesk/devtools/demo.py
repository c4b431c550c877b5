"""What `imapdesk demo` runs beside the helpdesk: a local mail server with demo mail, an SMTP
relay that delivers replies into it, an admin agent and the mailboxes in the database. The
command line (imapdesk/cli/demo.py) prepares these here, then serves as `imapdesk run` does."""

from __future__ import annotations

import secrets
from collections import defaultdict
from dataclasses import dataclass

from rich.console import Console
from sqlmodel import select

from imapdesk.devtools.demo_data import DemoMessage, demo_mailboxes
from imapdesk.devtools.mailserver import LocalMailServer, SeedMessage
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.mailboxes.config import add_mailbox
from imapdesk.kernel.db import get_engine, unit_of_work, upgrade_database
from imapdesk.kernel.models import Agent, ImapSecurity, Mailbox, SmtpSecurity
from imapdesk.kernel.settings import get_settings

DEMO_IMAP_PORT = 10143
DEMO_IMAPS_PORT = 10993
# the demo's SMTP server (STARTTLS + AUTH): replies are delivered into the Dovecot boxes; mail
# to anyone else lands in the catch-all box, so that a reply's round trip can be watched
DEMO_SMTP_PORT = 10587
DEMO_CATCH_ALL = "customers@example.test"
DEMO_ADMIN = "admin@example.test"


def start_demo_mailserver(console: Console) -> LocalMailServer:
    """The demo's Dovecot (sdbox storage: no 26-keyword limit), started or found running."""
    settings = get_settings()
    base = (settings.data_dir / "mailserver").absolute()
    if (base / "mailserver.json").exists():
        server = LocalMailServer.load(base)
    else:
        server = LocalMailServer(base, DEMO_IMAP_PORT, DEMO_IMAPS_PORT, storage="sdbox")
    if not server.is_running():
        server.start()
    console.print(
        f"mail server: IMAP 127.0.0.1:{server.imap_port} (STARTTLS), "
        f"IMAPS 127.0.0.1:{server.imaps_port}, CA {server.ca_file}"
    )
    return server


def _admin_password() -> str:
    """A stable admin password for this data dir, so a second `demo` keeps the same login."""
    path = get_settings().data_dir / "demo-admin-password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


def set_up_demo(server: LocalMailServer, console: Console) -> tuple[str, str]:
    """Demo boxes with mail, the admin agent and the mailboxes in the database (idempotent)."""
    settings = get_settings()
    upgrade_database()
    engine = get_engine()
    admin_password = _admin_password()
    with unit_of_work(engine) as db:
        if db.exec(select(Agent).where(Agent.email == DEMO_ADMIN)).first() is None:
            create_agent(
                db, email=DEMO_ADMIN, name="Demo Admin", password=admin_password, is_admin=True
            )
    imap_password = "demo-" + secrets.token_hex(4)
    for box in demo_mailboxes():
        with unit_of_work(engine) as db:
            existing = db.exec(select(Mailbox).where(Mailbox.name == box.name)).first()
            if existing is not None:
                if existing.smtp_host is None:  # set up before the demo could send
                    existing.smtp_host, existing.smtp_port = "localhost", DEMO_SMTP_PORT
                    existing.smtp_security = SmtpSecurity.starttls
                continue
        server.add_user(box.address, imap_password)
        by_folder: dict[str, list[DemoMessage]] = defaultdict(list)
        for m in box.messages:
            by_folder[m.folder].append(m)
        for folder, messages in by_folder.items():
            server.seed(
                box.address,
                imap_password,
                folder,
                [
                    SeedMessage(raw=m.raw, flags=m.flags, internal_date=m.internal_date)
                    for m in messages
                ],
            )
        with unit_of_work(engine) as db:
            add_mailbox(
                db,
                settings,
                name=box.name,
                address=box.address,
                imap_host="localhost",
                imap_port=server.imaps_port,
                imap_security=ImapSecurity.ssl,
                username=box.address,
                password=imap_password,
                ca_file=str(server.ca_file),
                smtp_host="localhost",
                smtp_port=DEMO_SMTP_PORT,
                smtp_security=SmtpSecurity.starttls,
            )
        console.print(f"demo mailbox {box.name} <{box.address}>: {len(box.messages)} messages")
    if DEMO_CATCH_ALL not in server.users():
        server.add_user(DEMO_CATCH_ALL, "demo-" + secrets.token_hex(4))
    return DEMO_ADMIN, admin_password


@dataclass
class DemoEnvironment:
    """What `prepare_demo` started, and the admin's login."""

    mail_server: LocalMailServer
    relay: LocalSmtpRelay
    admin: str
    admin_password: str

    @property
    def customers_password(self) -> str:
        """The password of the catch-all box where replies to customers arrive."""
        return self.mail_server.users().get(DEMO_CATCH_ALL, "")

    def stop(self) -> None:
        self.relay.stop()
        self.mail_server.stop()


def prepare_demo(console: Console) -> DemoEnvironment:
    """The demo's Dovecot (started or found running) with the demo mail, the admin agent and
    the mailboxes in the database, and the SMTP relay replies go out through; stopped again
    when setting up fails."""
    server = start_demo_mailserver(console)
    try:
        admin, password = set_up_demo(server, console)
        relay = LocalSmtpRelay(server, port=DEMO_SMTP_PORT, catch_all=DEMO_CATCH_ALL)
        relay.start()
    except BaseException:
        server.stop()
        raise
    return DemoEnvironment(server, relay, admin, password)
