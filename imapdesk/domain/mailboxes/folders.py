"""A mailbox's folder names: what the admin set per role, what the worker chose on the server,
and what it could not set up, in words that say what to fix.

Which folder plays which role is decided in one place, `imapdesk.mail.imap.folders` (the
namespace, special-use, usual names, the admin's settings); the worker applies it
(`imapdesk.worker.mailbox_folders`) and stores the outcome in the mailbox's `capabilities`
(`namespace`, `folders`, `folder_problems`), read back here for `imapdesk mailbox list`, the
admin page, `/api/v1/mailboxes` and `/readyz`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import Mailbox
from imapdesk.mail.imap.folders import ROLES, FolderChoice, FolderSetup, Namespace

# role -> what the admin calls it: the CLI's `--<label>-folder` option and the form's field
LABELS = {
    "pending": "pending",
    "archive": "archive",
    "junk": "spam",
    "trash": "trash",
    "notes": "notes",
    "sent": "sent",
}
# role -> what it holds, for the admin page and the help texts
PURPOSES = {
    "pending": "conversations waiting on the customer",
    "archive": "closed conversations",
    "junk": "spam",
    "trash": "deleted conversations",
    "notes": "internal notes",
    "sent": "copies of the replies sent",
}
_MAX_NAME = 500


@dataclass(frozen=True)
class FolderProblem:
    """A folder of the mapping the worker could not set up."""

    role: str
    folder: str
    said: str

    def describe(self, mailbox_name: str) -> str:
        """The problem, and what to set to fix it."""
        label = LABELS.get(self.role, self.role)
        return (
            f"the {label} folder {self.folder} ({PURPOSES.get(self.role, self.role)}) could "
            f"not be set up ({self.said}); create it in a mail client, or set the {label} "
            f"folder to one the server has or allows: `imapdesk mailbox folders "
            f"{mailbox_name} --{label}-folder NAME` or the mailbox's admin page"
        )


def folder_settings(mailbox: Mailbox) -> dict[str, str]:
    """The folder names the admin set, by role."""
    return {r: n for r, n in (mailbox.folder_names or {}).items() if r in ROLES and n}


def set_folder_names(mailbox: Mailbox, names: Mapping[str, str | None]) -> None:
    """Set (a name) or clear (None or "": found on the server again) the folder of each role
    given; the roles not given keep theirs. InvalidInput names the field to fix."""
    current = folder_settings(mailbox)
    for role, value in names.items():
        if role not in ROLES:
            raise InvalidInput(f"unknown folder role {role!r}", field="folder_names")
        name = (value or "").strip()
        field = f"{LABELS[role]}_folder"
        if not name:
            current.pop(role, None)
            continue
        if len(name) > _MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise InvalidInput(
                f"the {LABELS[role]} folder {name[:60]!r} is not a folder name", field=field
            )
        if name.upper() == "INBOX":
            raise InvalidInput(
                f"INBOX cannot be the {LABELS[role]} folder: it is where open conversations are",
                field=field,
            )
        current[role] = name
    seen: dict[str, str] = {}
    for role, name in current.items():
        other = seen.get(name.casefold())
        if other is not None:
            raise InvalidInput(
                f"{name} cannot be both the {LABELS[other]} and the {LABELS[role]} folder",
                field=f"{LABELS[role]}_folder",
            )
        seen[name.casefold()] = role
    mailbox.folder_names = {r: current[r] for r in ROLES if r in current}


def setup_record(setup: FolderSetup) -> dict[str, Any]:
    """What a folder set-up stores in the mailbox's capabilities."""
    return {
        "namespace": setup.namespace.as_dict(),
        "folders": {
            role: {"name": c.name, "exists": c.exists, "found_by": c.found_by}
            for role, c in setup.choices.items()
        },
        "folder_problems": [
            {"role": role, "folder": setup.choices[role].name, "said": said}
            for role, said in setup.refused.items()
        ],
    }


def folder_problems(capabilities: Mapping[str, Any] | None) -> list[FolderProblem]:
    """The folders the worker could not set up, as it recorded them."""
    out = []
    for item in (capabilities or {}).get("folder_problems") or []:
        if isinstance(item, dict) and item.get("role") in ROLES:
            out.append(
                FolderProblem(str(item["role"]), str(item.get("folder")), str(item.get("said")))
            )
    return out


def problem_notes(mailbox: Mailbox) -> list[str]:
    """One sentence per folder the worker could not set up, with what to set."""
    return [p.describe(mailbox.name) for p in folder_problems(mailbox.capabilities)]


def chosen_folders(capabilities: Mapping[str, Any] | None) -> dict[str, tuple[str, str, bool]]:
    """role -> (folder, how it was found, whether it exists), as the worker chose them."""
    stored = (capabilities or {}).get("folders") or {}
    return {
        role: (str(c.get("name")), str(c.get("found_by")), bool(c.get("exists")))
        for role, c in stored.items()
        if role in ROLES and isinstance(c, dict)
    }


@dataclass(frozen=True)
class FolderField:
    """One role's folder as the admin page shows it: the setting's field, and the folder the
    worker uses now (or will create) and how it found it."""

    role: str
    label: str
    purpose: str
    in_use: str
    found_by: str
    problem: str | None


def folder_fields(mailbox: Mailbox | None) -> list[FolderField]:
    """A field per role for the mailbox form (a new mailbox: nothing found yet)."""
    caps = mailbox.capabilities if mailbox is not None else None
    chosen = chosen_folders(caps)
    box_name = mailbox.name if mailbox is not None else ""
    refused = {p.role: p.describe(box_name) for p in folder_problems(caps)}
    out = []
    for role in ROLES:
        name, found_by, exists = chosen.get(role, ("", "", False))
        how = {
            "setting": "as set",
            "special-use": "by its special-use attribute",
            "name": "by its name",
            "default": "the default",
            "taken": "the default, but another role's folder",
        }.get(found_by, "")
        if name and not exists and role not in refused:
            how += ", created when first needed"
        out.append(FolderField(role, LABELS[role], PURPOSES[role], name, how, refused.get(role)))
    return out


def choices_note(namespace: Namespace, choices: Mapping[str, FolderChoice]) -> str:
    """One sentence: the folder each role would get on this server, and how it was found."""
    how = {
        "setting": "as set",
        "special-use": "special-use",
        "name": "by name",
        "default": "to be created",
        "taken": "another role's folder: set one",
    }
    where = (
        f"every folder under {namespace.prefix!r}, {namespace.separator!r} between levels"
        if namespace.prefix
        else f"folders at the top, {namespace.separator or 'no'!r} between levels"
    )
    parts = [
        f"{LABELS[role]} {c.name} ({how.get(c.found_by, c.found_by)}"
        + (", to be created)" if c.found_by == "setting" and not c.exists else ")")
        for role, c in choices.items()
        if role in LABELS
    ]
    return f"folders ({where}): " + "; ".join(parts)
