"""The admin's connection tests: log in to a mailbox's IMAP server and probe it, or connect to
its SMTP server, with the settings saved or only typed. Both use the worker's own connection
code (imapdesk.mail), so a test fails exactly when the worker would. Nothing is stored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from imapdesk.domain.mailboxes.capabilities import plain_client_notes
from imapdesk.domain.mailboxes.folders import choices_note
from imapdesk.kernel.errors import ImapdeskError
from imapdesk.mail import smtp
from imapdesk.mail.imap import ImapAccount, ImapSession
from imapdesk.mail.imap.folders import choose_folders, list_folders, read_namespace
from imapdesk.mail.imap.probe import probe


@dataclass(frozen=True)
class ConnectionCheck:
    """What a test found: whether it worked, in words, and (IMAP) what plain clients will see."""

    ok: bool
    message: str
    notes: list[str] = field(default_factory=list)


def check_imap(
    account: ImapAccount, folder_names: Mapping[str, str] | None = None
) -> ConnectionCheck:
    """Log in to the server as the worker would, probe what it can keep, and say which folder
    each role would get (with the folder names typed; nothing is created)."""
    try:
        imap = ImapSession(account)
    except ImapdeskError as exc:
        return ConnectionCheck(False, exc.message)
    try:
        caps = probe(imap)
        on_server = list_folders(imap)
        namespace = read_namespace(imap, on_server)
        folders = choices_note(namespace, choose_folders(on_server, namespace, folder_names))
    except ImapdeskError as exc:
        return ConnectionCheck(False, f"logged in, but {exc.message}")
    except Exception as exc:  # a protocol surprise is a report here, not a crash
        return ConnectionCheck(False, f"logged in, but probing the server failed: {exc}")
    finally:
        imap.close()
    raw = caps.get("capabilities")
    listed = ", ".join(str(c) for c in raw) if isinstance(raw, list) else "none reported"
    return ConnectionCheck(
        True,
        f"Connected and logged in as {account.username}. Server capabilities: {listed}",
        [*plain_client_notes(caps), folders],
    )


def check_smtp(account: smtp.SmtpAccount | None) -> ConnectionCheck:
    """Connect, secure and log in as the sender would (None: the mailbox has no SMTP host)."""
    if account is None:
        return ConnectionCheck(False, "no SMTP host is set: replies cannot be sent until one is")
    try:
        return ConnectionCheck(True, smtp.check_connection(account))
    except smtp.SmtpError as exc:
        return ConnectionCheck(False, exc.message)
