"""The folder of each role of a mailbox, as the worker's parts get it: the probe at connect, the
write-back's moves and the sender's copies all go through here, so each follows the one rule
(`imapdesk.mail.imap.folders`) and none falls back to a name of its own.

At connect the chosen folders are stored as Folder rows with their role, and the namespace,
the choice and what the server refused in the mailbox's capabilities. A role without a folder
yet (Sent, Junk or Trash on a server that has none) gets one when something first has to go
there, created under the personal namespace's prefix. A folder the server refused is not
asked for again until the worker connects anew (a restart, or new folder settings): the
caller gets `FolderUnavailable` at once, with what to set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.mailboxes.config import ensure_folder
from imapdesk.domain.mailboxes.folders import FolderProblem, folder_problems, folder_settings
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import MailServerError
from imapdesk.kernel.models import Folder, FolderRole, Mailbox
from imapdesk.mail.imap import ImapSession
from imapdesk.mail.imap.folders import FolderSetup, set_up_folders

log = logging.getLogger(__name__)


class FolderUnavailable(MailServerError):
    """The mailbox has no folder for a role and the server would not create one."""

    code = "folder_unavailable"

    def __init__(self, problem: FolderProblem, mailbox_name: str) -> None:
        super().__init__(
            problem.describe(mailbox_name),
            mailbox=mailbox_name,
            role=problem.role,
            folder=problem.folder,
        )
        self.problem = problem


def folder_roles(setup: FolderSetup) -> dict[str, FolderRole]:
    """name -> role of every folder the set-up chose (that exists), INBOX included."""
    roles = {c.name: FolderRole(c.role) for c in setup.choices.values() if c.exists}
    for folder in setup.listed:
        if folder.name.upper() == "INBOX":
            roles[folder.name] = FolderRole.inbox
    return roles


def folder_for_role(
    engine: Engine,
    mailbox_id: int,
    role: FolderRole,
    session: Callable[[], ImapSession],
) -> tuple[int, str]:
    """(Folder id, name) of the mailbox's folder of `role`: the one chosen at connect, else set
    up now (found, or created under the prefix). FolderUnavailable when the server refused it
    (now or since the last connect); `session` is called only when the server must be asked."""
    with Session(engine) as db:
        mailbox = db.get(Mailbox, mailbox_id)
        assert mailbox is not None
        name = mailbox.name
        settings = folder_settings(mailbox)
        refused = next((p for p in folder_problems(mailbox.capabilities) if p.role == role), None)
        chosen = db.exec(
            select(Folder)
            .where(col(Folder.mailbox_id) == mailbox_id, col(Folder.role) == role)
            .order_by(col(Folder.id))
        ).first()
    if refused is not None:
        raise FolderUnavailable(refused, name)
    if chosen is not None and chosen.id is not None:
        return chosen.id, chosen.name
    setup = set_up_folders(session(), settings, create=(role.value,))
    choice = setup.choices[role.value]
    if role.value in setup.refused:
        raise refusal(engine, mailbox_id, role, choice.name, setup.refused[role.value])
    with unit_of_work(engine) as db:
        folder = ensure_folder(db, mailbox_id, choice.name, role, watched=False)
        # a row found by name (say an `Archive` known as `other`) takes the role it plays now
        folder.role = role
        assert folder.id is not None
        return folder.id, choice.name


def refusal(
    engine: Engine, mailbox_id: int, role: FolderRole, folder: str, said: str
) -> FolderUnavailable:
    """Record that the server would not create the folder of `role` (in the mailbox's sync
    health, until the next connect) and return the error to raise."""
    problem = FolderProblem(role.value, folder, said)
    with unit_of_work(engine) as db:
        mailbox = db.get(Mailbox, mailbox_id)
        assert mailbox is not None
        caps = dict(mailbox.capabilities or {})
        problems = [p for p in caps.get("folder_problems") or [] if p.get("role") != role.value]
        problems.append({"role": role.value, "folder": folder, "said": said})
        caps["folder_problems"] = problems
        mailbox.capabilities = caps
        error = FolderUnavailable(problem, mailbox.name)
    log.warning("[%s] %s", error.details.get("mailbox"), error.message)
    return error
