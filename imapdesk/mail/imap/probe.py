"""What a server can do, asked once at connect: capabilities, whether it keeps keywords (and how
many), and its name. Stored on the mailbox by the worker and shown to the admin by the
connection test, so both judge the server the same way."""

from __future__ import annotations

from datetime import UTC, datetime

from imapclient.exceptions import IMAPClientError

from imapdesk.mail.imap.session import ImapSession

# Dovecot on Maildir keeps this many distinct keywords per folder
DOVECOT_MAILDIR_KEYWORDS = 26


def probe(imap: ImapSession) -> dict[str, object]:
    """What this server can do, stored on the mailbox and shown to the admin."""
    caps = imap.capabilities
    # --- write-back: which keywords the server keeps ---
    # PERMANENTFLAGS only comes with a read-write SELECT (EXAMINE reports none). The session is
    # logged out right after the probe, never CLOSEd, so nothing is expunged.
    permanent_flags = list(imap.select("INBOX", readonly=False).permanent_flags)
    server = server_name(imap)
    keywords = "\\*" in permanent_flags
    # Dovecot on Maildir keeps 26 distinct keywords per folder and silently loses more when
    # its index is rebuilt; IMAP does not tell Maildir from dbox, so any Dovecot gets the limit
    # (on dbox that costs nothing but keeping a 27th keyword in the database only).
    keyword_limit = DOVECOT_MAILDIR_KEYWORDS if keywords and server == "dovecot" else None
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
        "probed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def server_name(imap: ImapSession) -> str | None:
    """The server's name from ID (RFC 2971), lowercased; None when it does not say."""
    if not imap.has("ID"):
        return None
    try:
        info = imap.client.id_()
    except (IMAPClientError, OSError):
        return None
    if not info:
        return None
    pairs = list(info[0] if len(info) == 1 and isinstance(info[0], tuple | list) else info)
    values = dict(zip(pairs[::2], pairs[1::2], strict=False))
    name = values.get(b"name") or values.get("name")
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return name.strip().lower() if isinstance(name, str) and name.strip() else None
