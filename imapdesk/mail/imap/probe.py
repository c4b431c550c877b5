"""What a server can do, asked once at connect: capabilities, whether it keeps keywords (and how
many), and its name. Stored on the mailbox by the worker and shown to the admin by the
connection test, so both judge the server the same way."""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from imapclient.exceptions import IMAPClientError

from imapdesk.mail.imap.session import ImapSession

# Dovecot on Maildir keeps this many distinct keywords per folder (letters a-z in file names)
DOVECOT_MAILDIR_KEYWORDS = 26
# Cyrus lets clients create this many user flags per folder: MAX_USER_FLAGS is 128, but imapd
# keeps the last 28 for replication (the 101st gets "NO Too many user flags in mailbox" while
# PERMANENTFLAGS still lists \*); a flag once used keeps its slot
CYRUS_USER_FLAGS = 100
# `keyword_limit` of a server known to keep any number of keywords per folder
UNLIMITED = "unlimited"
DOVECOT = "dovecot"
COURIER = "courier-imap"


def probe(imap: ImapSession) -> dict[str, object]:
    """What this server can do, stored on the mailbox and shown to the admin."""
    caps = imap.capabilities
    # --- write-back: which keywords the server keeps ---
    # PERMANENTFLAGS only comes with a read-write SELECT (EXAMINE reports none). The session is
    # logged out right after the probe, never CLOSEd, so nothing is expunged.
    inbox = imap.select("INBOX", readonly=False)
    permanent_flags = list(inbox.permanent_flags)
    server = server_name(imap)
    keywords = keeps_keywords(permanent_flags)
    keyword_limit, keyword_limit_basis = (
        known_keyword_limit(imap, server, inbox.exists) if keywords else (None, "")
    )
    # --- end write-back ---
    return {
        "capabilities": sorted(caps),
        "idle": "IDLE" in caps,
        "condstore": "CONDSTORE" in caps,
        "qresync": "QRESYNC" in caps,
        "move": "MOVE" in caps,
        "uidplus": "UIDPLUS" in caps,
        "objectid": "OBJECTID" in caps,
        "notify": "NOTIFY" in caps,
        "special_use": "SPECIAL-USE" in caps,
        "permanent_flags": permanent_flags,
        "keywords": keywords,
        "server": server,
        "keyword_limit": keyword_limit,
        "keyword_limit_basis": keyword_limit_basis,
        "probed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def server_name(imap: ImapSession) -> str | None:
    """The server's name from ID (RFC 2971), lowercased; else the product its greeting names
    (Courier-IMAP has no ID); None when neither says."""
    if not imap.has("ID"):
        return greeting_name(imap)
    try:
        info = imap.client.id_()
    except (IMAPClientError, OSError):
        return greeting_name(imap)
    if not info:
        return greeting_name(imap)
    pairs = list(info[0] if len(info) == 1 and isinstance(info[0], tuple | list) else info)
    values = dict(zip(pairs[::2], pairs[1::2], strict=False))
    name = values.get(b"name") or values.get("name")
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    if isinstance(name, str) and name.strip():
        return name.strip().lower()
    return greeting_name(imap)


def greeting_name(imap: ImapSession) -> str | None:
    """The server product the greeting names, lowercased, among those whose keyword limits are
    known; None for any other."""
    try:
        welcome = bytes(imap.client.welcome or b"").lower()
    except (IMAPClientError, OSError, TypeError):
        return None
    return next((name for name, mark in _GREETINGS if mark in welcome), None)


# --- write-back: how many keywords a folder keeps ---
# the greetings of servers without ID whose keyword limits are known: (name, mark)
_GREETINGS = ((COURIER, b"courier-imap"), ("cyrus imapd", b"cyrus"), (DOVECOT, b"dovecot"))
# Dovecot's X-GUID of a Maildir message is its file's base name: a Unix time, a dot, ...;
# dbox's is 32 hex digits, mbox's a digest (neither has a keyword limit)
_MAILDIR_GUID = re.compile(rb"^\d+\.")
_X_GUID = re.compile(rb'X-GUID\s+"?([^"\s)]*)', re.I)


def keeps_keywords(permanent_flags: Iterable[str]) -> bool:
    """Whether a folder keeps custom keywords: `\\*` in PERMANENTFLAGS (it takes new ones), or
    keywords listed there (it keeps those: a folder that takes no new ones lists them without
    `\\*`)."""
    flags = list(permanent_flags)
    return "\\*" in flags or any(not f.startswith("\\") for f in flags)


def known_keyword_limit(
    imap: ImapSession, server: str | None, inbox_messages: int
) -> tuple[int | str | None, str]:
    """How many distinct keywords a folder of this server keeps (an int, UNLIMITED, or None
    when not known) and on what grounds, in a few words for the admin. INBOX is selected."""
    if server is not None and server.startswith(DOVECOT):
        storage = dovecot_storage(imap, inbox_messages)
        if storage == "maildir":
            # more are accepted in the session, then lost when its index is rebuilt
            return DOVECOT_MAILDIR_KEYWORDS, "Dovecot on Maildir"
        if storage is not None:
            return UNLIMITED, "Dovecot on dbox or mbox"
        # most hosted Dovecots use Maildir: its limit costs a dbox server nothing but keeping
        # a 27th keyword in the database only, until a probe sees a message
        return DOVECOT_MAILDIR_KEYWORDS, "Dovecot, storage not seen yet: Maildir's limit assumed"
    if server is not None and server.startswith("cyrus"):
        return CYRUS_USER_FLAGS, "Cyrus: what clients may create of its 128 user flags"
    if server is not None and server.startswith(COURIER):
        return UNLIMITED, "Courier-IMAP"
    return None, ""


def dovecot_storage(imap: ImapSession, inbox_messages: int) -> str | None:
    """Dovecot's storage: "maildir", "other" (dbox, mbox), or None when INBOX has no message
    to tell by. Dovecot does not name it; the X-GUID of INBOX's first and newest message does."""
    if inbox_messages <= 0:
        return None
    try:
        reply = imap.command("FETCH", "1,*", "(X-GUID)", collect=("FETCH",))
    except (imaplib.IMAP4.error, IMAPClientError):
        return None
    guids = [
        m.group(1)
        for item in reply.untagged.get("FETCH", ())
        if isinstance(item, bytes) and (m := _X_GUID.search(item)) and m.group(1)
    ]
    if not reply.ok or not guids:
        return None
    return "maildir" if any(_MAILDIR_GUID.match(g) for g in guids) else "other"


# --- end write-back ---
