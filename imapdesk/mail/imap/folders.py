"""Which folder of a mailbox plays which part of the mapping, on any server: the one place for
the rule.

Servers name and place folders differently. Dovecot as packaged lists `Sent` at the top with `/`
between levels; Courier, Cyrus (`altnamespace: no`) and the Dovecot of hosting panels keep
every folder under the personal namespace's prefix `INBOX.` with `.` between levels and refuse
a folder outside it; Exchange says `Sent Items`, Gmail `[Gmail]/Sent Mail`, a German Outlook
`Gesendete Objekte`. So the personal namespace (NAMESPACE, RFC 2342, else the hierarchy
separator of `LIST "" ""`) is read at connect, and each role of the mapping (`ROLES`) gets its
folder by these steps, the first that answers:

1. the folder the admin set for this mailbox: a name as the server lists it, else taken
   relative to the namespace's prefix (`Done` is `INBOX.Done` under `INBOX.`);
2. the folder whose special-use attribute (RFC 6154) names the role;
3. a folder whose name, relative to the prefix (or as a child of INBOX, or under Gmail's
   `[Gmail]/`), is one of the role's usual names (`USUAL_NAMES`), in any case;
4. the role's default name under the prefix (`INBOX.Pending`), to be created: at connect for
   the folders the mapping creates (`CREATED_AT_CONNECT`), the others when first needed.

Nothing here knows the database: the worker stores the choice and says what went wrong.
"""

from __future__ import annotations

import imaplib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from imapclient.exceptions import IMAPClientError

from imapdesk.mail.imap.session import SPECIAL_USE, ImapSession

log = logging.getLogger(__name__)

# the roles of the mapping that live in a folder of their own (INBOX is INBOX everywhere)
ROLES = ("sent", "archive", "junk", "trash", "pending", "notes")
# the folders the mapping creates when a mailbox has none (IMAP-MAPPING.md); Sent, Junk and
# Trash are the server's own and are created only when something has to go there
CREATED_AT_CONNECT = ("pending", "notes", "archive")
DEFAULT_NAMES = {
    "sent": "Sent",
    "archive": "Archive",
    "junk": "Junk",
    "trash": "Trash",
    "pending": "Pending",
    "notes": "Notes",
}
# Names servers and clients give these folders where no special-use attribute says which is
# which (lowercase; compared with a folder's name relative to the namespace's prefix). The
# order is the preference when a mailbox has several. English names as servers and clients
# create them (Dovecot, Courier, Exchange, Apple Mail, Thunderbird, Gmail), then the names of
# localised servers and Outlook in the languages most often met.
USUAL_NAMES: dict[str, tuple[str, ...]] = {
    "sent": (
        "sent",
        "sent items",
        "sent messages",
        "sent mail",
        "sent-mail",
        "gesendet",
        "gesendete objekte",
        "gesendete elemente",
        "gesendete nachrichten",
        "posta inviata",
        "elementi inviati",
        "inviati",
        "envoyés",
        "messages envoyés",
        "éléments envoyés",
        "enviados",
        "elementos enviados",
        "itens enviados",
        "verzonden",
        "verzonden items",
        "sendt",
        "sendte elementer",
        "skickat",
        "skickade objekt",
        "wysłane",
        "elementy wysłane",
        "odeslané",
        "lähetetyt",
        "отправленные",
    ),
    "archive": (
        "archive",
        "archives",
        "archiv",
        "archivio",
        "archivo",
        "arquivo",
        "archief",
        "arkiv",
        "archiwum",
        "arkisto",
        "архив",
    ),
    "junk": (
        "junk",
        "spam",
        "junk e-mail",
        "junk email",
        "junk mail",
        "bulk mail",
        "junk-e-mail",
        "spamverdacht",
        "posta indesiderata",
        "courrier indésirable",
        "indésirables",
        "correo no deseado",
        "lixo eletrônico",
        "ongewenste e-mail",
        "uønsket e-post",
        "skräppost",
        "wiadomości-śmieci",
        "nevyžádaná pošta",
        "roskaposti",
        "спам",
    ),
    "trash": (
        "trash",
        "deleted items",
        "deleted messages",
        "deleted",
        "bin",
        "papierkorb",
        "gelöschte objekte",
        "gelöschte elemente",
        "cestino",
        "posta eliminata",
        "elementi eliminati",
        "corbeille",
        "éléments supprimés",
        "papelera",
        "elementos eliminados",
        "lixeira",
        "itens excluídos",
        "prullenbak",
        "verwijderde items",
        "papirkurv",
        "slettede elementer",
        "papperskorgen",
        "borttagna objekt",
        "kosz",
        "elementy usunięte",
        "koš",
        "roskakori",
        "корзина",
        "удаленные",
    ),
    "pending": ("pending",),
    "notes": ("notes",),
}
# Dovecot ends each answer with its timings: "(0.001 + 0.000 secs)."
_TIMINGS = re.compile(r"\s*\([\d.]+( \+ [\d.]+)* secs\)\.?$")
# where Gmail keeps its system folders (and Google Mail in Germany and the UK, once)
_PROVIDER_PARENTS = ("[gmail]", "[google mail]")


@dataclass(frozen=True)
class Namespace:
    """The personal namespace: where the user's own folders live, and the separator between
    levels (None: the server has no hierarchy)."""

    prefix: str = ""
    separator: str | None = "/"

    def full_name(self, name: str) -> str:
        """A name given relative to the prefix, as the server knows it (names already under
        the prefix, and INBOX, stay as they are)."""
        if not self.prefix or name.upper() == "INBOX" or self.holds(name):
            return name
        return self.prefix + name

    def holds(self, name: str) -> bool:
        """Whether `name` is under the prefix (the INBOX part of `INBOX.` in any case)."""
        return _starts_with(name, self.prefix)

    def relative(self, name: str) -> str | None:
        """The name below the prefix, or None for a folder outside the personal namespace."""
        if not self.prefix:
            return name
        return name[len(self.prefix) :] if self.holds(name) else None

    def as_dict(self) -> dict[str, str | None]:
        return {"prefix": self.prefix, "separator": self.separator}

    @classmethod
    def of(cls, stored: Mapping[str, Any] | None) -> Namespace:
        """The namespace as `as_dict` stored it (the server's default when nothing is)."""
        if not stored:
            return cls()
        separator = stored.get("separator")
        return cls(str(stored.get("prefix") or ""), str(separator) if separator else None)


@dataclass(frozen=True)
class ListedFolder:
    """A folder as LIST shows it."""

    name: str
    special_use: str | None = None  # sent, archive, junk, trash, drafts
    separator: str | None = "/"


@dataclass(frozen=True)
class FolderChoice:
    """The folder of one role: its name on the server, whether it exists, and how it was
    chosen (`setting`, `special-use`, `name`, `default`; `taken`: the default is another
    role's folder, so this role has none)."""

    role: str
    name: str
    exists: bool
    found_by: str


@dataclass
class FolderSetup:
    """What `set_up_folders` found and did."""

    namespace: Namespace
    listed: list[ListedFolder]
    choices: dict[str, FolderChoice]
    created: list[str] = field(default_factory=list)
    # role -> why its folder could not be had (the server's words when it refused the CREATE)
    refused: dict[str, str] = field(default_factory=dict)


# -- reading the server --------------------------------------------------------------------------


def list_folders(imap: ImapSession) -> list[ListedFolder]:
    """Every selectable folder with its special-use role and separator."""
    out: list[ListedFolder] = []
    for flags, delimiter, name in imap.client.list_folders():
        if b"\\Noselect" in flags or b"\\NonExistent" in flags:
            continue
        role = next((SPECIAL_USE[f] for f in flags if f in SPECIAL_USE), None)
        out.append(ListedFolder(str(name), role, _text(delimiter)))
    return out


def read_namespace(imap: ImapSession, listed: Sequence[ListedFolder] = ()) -> Namespace:
    """The personal namespace (RFC 2342); without NAMESPACE, the separator of `LIST "" ""`,
    and `INBOX` + separator as the prefix where every folder but INBOX lives below it."""
    if imap.has("NAMESPACE"):
        try:
            personal = imap.client.namespace().personal
        except (IMAPClientError, imaplib.IMAP4.error) as exc:
            if isinstance(exc, imaplib.IMAP4.abort):
                raise
            log.warning("%s: NAMESPACE failed (%s): no prefix", imap.account.label, exc)
        else:
            if personal:
                prefix, separator = personal[0][0], personal[0][1]
                return Namespace(_text(prefix) or "", _text(separator))
    separator = _root_separator(imap)
    others = [f.name for f in listed if f.name.upper() != "INBOX"]
    if separator and others and all(_starts_with(n, "INBOX" + separator) for n in others):
        return Namespace("INBOX" + separator, separator)
    return Namespace("", separator)


def _root_separator(imap: ImapSession) -> str | None:
    try:
        root = imap.client.list_folders("", "")
    except (IMAPClientError, imaplib.IMAP4.error) as exc:
        if isinstance(exc, imaplib.IMAP4.abort):
            raise
        return "/"
    return _text(root[0][1]) if root else "/"


# -- choosing -------------------------------------------------------------------------------------


def choose_folders(
    listed: Sequence[ListedFolder],
    namespace: Namespace,
    settings: Mapping[str, str] | None = None,
) -> dict[str, FolderChoice]:
    """The folder of every role (see the module for the steps). A folder serves one role
    only: one the admin set or a special-use attribute names is not taken by name for
    another role."""
    settings = {r: n.strip() for r, n in (settings or {}).items() if r in ROLES and n.strip()}
    choices: dict[str, FolderChoice] = {}
    for role, name in settings.items():
        choices[role] = _set_by_admin(role, name, listed, namespace)
    set_by_admin = {c.name.casefold() for c in choices.values()}
    for role in ROLES:
        if role in choices:
            continue
        marked = next(
            (f for f in listed if f.special_use == role and f.name.casefold() not in set_by_admin),
            None,
        )
        if marked is not None:
            choices[role] = FolderChoice(role, marked.name, True, "special-use")
    taken = {c.name.casefold() for c in choices.values()}
    taken |= {f.name.casefold() for f in listed if f.special_use is not None}
    for role in ROLES:
        if role in choices:
            continue
        found = _by_name(role, [f for f in listed if f.name.casefold() not in taken], namespace)
        if found is not None:
            choices[role] = FolderChoice(role, found, True, "name")
            taken.add(found.casefold())
        else:
            default = namespace.full_name(DEFAULT_NAMES[role])
            # a default another role has taken (an admin set `Trash` as the archive) is no
            # folder for this one: `taken`, never created, reported as such
            how = "taken" if default.casefold() in taken else "default"
            choices[role] = FolderChoice(role, default, False, how)
    return {role: choices[role] for role in ROLES}


def find_folder(name: str, listed: Iterable[ListedFolder], namespace: Namespace) -> str | None:
    """A folder an admin named, as the server lists it: the name as given, else relative to
    the prefix, each as written and then in any case; None when the server has neither."""
    folders = list(listed)
    for candidate in dict.fromkeys((name, namespace.full_name(name))):
        exact = next((f.name for f in folders if f.name == candidate), None)
        if exact is None:
            exact = next(
                (f.name for f in folders if f.name.casefold() == candidate.casefold()), None
            )
        if exact is not None:
            return exact
    return None


def _set_by_admin(
    role: str, name: str, listed: Sequence[ListedFolder], namespace: Namespace
) -> FolderChoice:
    """The folder an admin named; to be created (under the prefix) when the server lacks it."""
    found = find_folder(name, listed, namespace)
    return FolderChoice(role, found or namespace.full_name(name), found is not None, "setting")


def _by_name(role: str, listed: Sequence[ListedFolder], namespace: Namespace) -> str | None:
    """The folder named as this role's folders usually are, directly below the prefix
    first, then among INBOX's children and Gmail's system folders."""
    names = USUAL_NAMES[role]
    best: tuple[int, int, str] | None = None
    for folder in listed:
        if folder.name.upper() == "INBOX":
            continue
        for depth, leaf in _leaf_names(folder, namespace):
            key = leaf.strip().casefold()
            if key in names:
                rank = (names.index(key), depth, folder.name)
                if best is None or rank < best:
                    best = rank
    return best[2] if best is not None else None


def _leaf_names(folder: ListedFolder, namespace: Namespace) -> Iterable[tuple[int, str]]:
    """(how far from the top, name) of each reading of the folder's name that puts it at
    the top of the user's own folders."""
    separator = folder.separator or namespace.separator
    relative = namespace.relative(folder.name)
    if relative is None:
        return
    if not separator or separator not in relative:
        yield 0, relative
        return
    parent, _, leaf = relative.partition(separator)
    if separator in leaf:
        return
    if parent.upper() == "INBOX" or parent.casefold() in _PROVIDER_PARENTS:
        yield 1, leaf


# -- creating -------------------------------------------------------------------------------------


def create_folder(imap: ImapSession, name: str) -> str | None:
    """CREATE and SUBSCRIBE; None when the folder is there now, else the server's words. A
    lost connection raises."""
    try:
        imap.create_folder(name)
    except imaplib.IMAP4.abort:
        raise
    except (IMAPClientError, imaplib.IMAP4.error) as exc:
        said = _server_words(exc)
        if "exist" not in said.lower():
            return said
        try:
            imap.subscribe(name)  # there already (another client made it): subscribed all the same
        except imaplib.IMAP4.abort:
            raise
        except (IMAPClientError, imaplib.IMAP4.error):
            pass
    return None


def set_up_folders(
    imap: ImapSession,
    settings: Mapping[str, str] | None = None,
    *,
    create: Iterable[str] = CREATED_AT_CONNECT,
) -> FolderSetup:
    """Read the namespace and the folders, choose the folder of every role, and create those
    of the roles in `create` (and every folder the admin set) that the server lacks. A folder
    the server refuses is reported in `refused`, never retried here."""
    listed = list_folders(imap)
    namespace = read_namespace(imap, listed)
    choices = choose_folders(listed, namespace, settings)
    wanted = set(create) | {r for r, c in choices.items() if c.found_by == "setting"}
    setup = FolderSetup(namespace, listed, choices)
    for role in ROLES:
        choice = choices[role]
        if role not in wanted or choice.exists:
            continue
        if choice.found_by == "taken":
            setup.refused[role] = "it is the folder of another role"
            continue
        said = create_folder(imap, choice.name)
        if said is None:
            setup.created.append(choice.name)
            log.info("%s: created the folder %s", imap.account.label, choice.name)
        else:
            setup.refused[role] = f"the server said: {said}"
            log.warning(
                "%s: the server would not create the folder %s: %s",
                imap.account.label,
                choice.name,
                said,
            )
    if setup.created:
        setup.listed = list_folders(imap)
        setup.choices = choose_folders(setup.listed, namespace, settings)
    return setup


def _server_words(exc: BaseException) -> str:
    """What the server said, without imapclient's preamble and Dovecot's timings."""
    text = str(exc).strip()
    for noise in ("create failed:", "CREATE command error:"):
        if text.lower().startswith(noise.lower()):
            text = text[len(noise) :].strip()
    text = _TIMINGS.sub("", text).strip()
    return text or type(exc).__name__


def _starts_with(name: str, prefix: str) -> bool:
    """Whether `name` starts with `prefix`, the INBOX part compared in any case (RFC 3501)."""
    if not prefix:
        return True
    if prefix[:5].upper() == "INBOX":
        return name[:5].upper() == "INBOX" and name[5 : len(prefix)] == prefix[5:]
    return name.startswith(prefix)


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
