"""The IMAP connection wrapper: connect, probe, and fetch fast; every failure becomes a clear error.

A connection is discarded on any network or protocol error; retry and back-off live in one place
(`imapdesk.worker.backoff`), not here.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from imapdesk.domain.sync.ingest import FetchedMessage
from imapdesk.kernel.errors import MailServerError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
SPECIAL_USE = {
    b"\\Sent": "sent",
    b"\\Archive": "archive",
    b"\\Junk": "junk",
    b"\\Trash": "trash",
    b"\\Drafts": "drafts",
}


@dataclass(frozen=True)
class ImapAccount:
    """What it takes to log in. The password never appears in repr or logs."""

    host: str
    port: int
    security: str  # ssl | starttls | none
    username: str
    password: str = field(repr=False)
    ca_file: str | None = None
    label: str = ""

    def describe(self) -> str:
        return f"{self.username} at {self.host}:{self.port} ({self.security})"


@dataclass
class FolderStatus:
    uidvalidity: int
    uidnext: int
    exists: int
    highestmodseq: int | None
    permanent_flags: tuple[str, ...]


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verified TLS always; a private CA is added with ca_file, verification is never skipped."""
    ctx = ssl.create_default_context()
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise MailServerError(f"cannot read the CA file {ca_file!r}: {exc}") from exc
    return ctx


_FETCH_META = re.compile(
    rb"UID (?P<uid>\d+)|FLAGS \((?P<flags>[^)]*)\)|MODSEQ \((?P<modseq>\d+)\)"
    rb"|INTERNALDATE \"(?P<date>[^\"]+)\"|RFC822\.SIZE (?P<size>\d+)"
)


def _parse_internaldate(value: bytes) -> datetime | None:
    try:
        parsed = datetime.strptime(value.decode(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None
    return parsed.astimezone(UTC)


def _decode_flags(value: bytes) -> tuple[str, ...]:
    return tuple(f for f in value.decode("utf-8", "replace").split() if f)


class ImapSession:
    """One logged-in connection. Raises MailServerError with what to fix on any failure."""

    def __init__(self, account: ImapAccount) -> None:
        self.account = account
        # kinds of news (EXISTS, EXPUNGE, FETCH) the server sent along with the responses to
        # other commands: see `take_news`
        self._news: set[str] = set()
        self.client: IMAPClient = self._connect()
        self.capabilities: frozenset[str] = frozenset(
            c.decode().upper() for c in self.client.capabilities()
        )
        self.condstore = False
        if "CONDSTORE" in self.capabilities:
            try:
                self.client.enable("CONDSTORE")
                self.condstore = True
            except IMAPClientError:
                log.warning("%s: CONDSTORE advertised but ENABLE failed", account.label)

    # -- connecting ------------------------------------------------------------------------
    def _connect(self) -> IMAPClient:
        acc = self.account
        try:
            if acc.security == "ssl":
                client = IMAPClient(
                    acc.host,
                    port=acc.port,
                    ssl=True,
                    ssl_context=tls_context(acc.ca_file),
                    timeout=CONNECT_TIMEOUT,
                )
            else:
                client = IMAPClient(acc.host, port=acc.port, ssl=False, timeout=CONNECT_TIMEOUT)
                if acc.security == "starttls":
                    client.starttls(tls_context(acc.ca_file))
        except ssl.SSLCertVerificationError as exc:
            raise MailServerError(
                f"the TLS certificate of {acc.host}:{acc.port} is not trusted "
                f"({exc.verify_message}); if the server uses a private CA, "
                "give its certificate with --ca-file"
            ) from exc
        except ssl.SSLError as exc:
            raise MailServerError(
                f"TLS with {acc.host}:{acc.port} failed ({exc}); check --imap-security "
                "(ssl for port 993, starttls for 143)"
            ) from exc
        except (ConnectionRefusedError, socket.gaierror, TimeoutError, OSError) as exc:
            raise MailServerError(
                f"cannot reach the IMAP server {acc.host}:{acc.port}: {exc}; check the host, "
                "the port and that the server is running"
            ) from exc
        except IMAPClientError as exc:
            raise MailServerError(f"IMAP server {acc.host}:{acc.port} refused: {exc}") from exc
        try:
            client.login(acc.username, acc.password)
        except LoginError as exc:
            _close_quietly(client)
            detail = str(exc)
            if "connection" in detail.lower() and "limit" in detail.lower():
                raise MailServerError(
                    f"the IMAP server refused {acc.username}: too many connections from this "
                    f"address ({detail}); raise the server's per-user connection limit "
                    "(Dovecot: mail_max_userip_connections) or close other clients"
                ) from exc
            raise MailServerError(
                f"IMAP login failed for {acc.describe()}: wrong user name or password "
                f"(the server said: {detail})"
            ) from exc
        except (IMAPClientError, OSError) as exc:
            _close_quietly(client)
            raise MailServerError(f"IMAP login for {acc.describe()} failed: {exc}") from exc
        return client

    def close(self) -> None:
        _close_quietly(self.client)

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    # -- folders -----------------------------------------------------------------------------
    def list_folders(self) -> list[tuple[str, str | None]]:
        """(name, special-use role) of every folder."""
        out: list[tuple[str, str | None]] = []
        for flags, _delim, name in self.client.list_folders():
            if b"\\Noselect" in flags or b"\\NonExistent" in flags:
                continue
            role = next((SPECIAL_USE[f] for f in flags if f in SPECIAL_USE), None)
            if role is None and name.upper() == "INBOX":
                role = "inbox"
            out.append((name, role))
        return out

    def select(self, folder: str, *, readonly: bool = True) -> FolderStatus:
        info = self.client.select_folder(folder, readonly=readonly)
        self.take_news()  # a new view: what the SELECT said is the whole state, not news
        return FolderStatus(
            uidvalidity=int(info[b"UIDVALIDITY"]),
            uidnext=int(info.get(b"UIDNEXT", 0)),
            exists=int(info.get(b"EXISTS", 0)),
            highestmodseq=int(info[b"HIGHESTMODSEQ"]) if b"HIGHESTMODSEQ" in info else None,
            permanent_flags=tuple(
                f.decode() if isinstance(f, bytes) else str(f)
                for f in info.get(b"PERMANENTFLAGS", ())
            ),
        )

    def status(self, folder: str) -> FolderStatus:
        """STATUS of a folder (it may be the selected one); NONEXISTENT raises."""
        info = self.client.folder_status(folder, ["UIDVALIDITY", "UIDNEXT", "MESSAGES"])
        return FolderStatus(
            uidvalidity=int(info[b"UIDVALIDITY"]),
            uidnext=int(info[b"UIDNEXT"]),
            exists=int(info[b"MESSAGES"]),
            highestmodseq=None,
            permanent_flags=(),
        )

    def take_news(self) -> set[str]:
        """What the server told about the selected folder (EXISTS, EXPUNGE, FETCH) with the
        responses to other commands since the last call. A server tells each change once, with
        whatever response comes next: news that rode along with a SEARCH or a FETCH would
        otherwise be lost, and a NOOP would not tell it again."""
        pending: dict[str, Any] = self.client._imap.untagged_responses
        kinds = {kind for kind in _NEWS if pending.pop(kind, None)}
        pending.pop("RECENT", None)
        kinds |= self._news
        self._news = set()
        return kinds

    def all_uids(self) -> list[int]:
        return sorted(self.client.search("ALL"))

    def flags_since(self, modseq: int | None) -> list[FetchedMessage]:
        """UID, FLAGS (and MODSEQ) of the messages changed since `modseq` (CHANGEDSINCE,
        RFC 7162), or of every message when there is no modseq or no CONDSTORE."""
        imap: Any = self.client._imap
        items = "(UID FLAGS MODSEQ)" if self.condstore else "(UID FLAGS)"
        if self.condstore and modseq is not None:
            items += f" (CHANGEDSINCE {modseq})"
        typ, data = imap.uid("FETCH", "1:*", items)
        if typ != "OK":
            raise MailServerError(f"UID FETCH FLAGS failed: {data!r}")
        out: list[FetchedMessage] = []
        for line in data:
            if isinstance(line, bytes):
                msg = FetchedMessage(uid=0, raw=b"")
                _apply_meta(msg, line)
                if msg.uid:
                    out.append(msg)
                else:
                    self._news.add("FETCH")  # a change told without its UID
        return out

    def uids_from(self, first_uid: int) -> list[int]:
        """UIDs >= first_uid in the selected folder, ascending."""
        found = self.client.search(["UID", f"{max(first_uid, 1)}:*"])
        return sorted(u for u in found if u >= first_uid)

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """RFC822.SIZE of each UID (to keep huge messages out of the bulk batches)."""
        if not uids:
            return {}
        imap: Any = self.client._imap
        typ, data = imap.uid("FETCH", _uid_set(sorted(uids)), "(UID RFC822.SIZE)")
        if typ != "OK":
            raise MailServerError(f"UID FETCH RFC822.SIZE failed: {data!r}")
        out: dict[int, int] = {}
        for line in data:
            if isinstance(line, bytes):
                msg = FetchedMessage(uid=0, raw=b"")
                if b"RFC822.SIZE" not in line:
                    self._news.add("FETCH")  # another message's flags changed meanwhile
                    continue
                _apply_meta(msg, line)
                if msg.uid:
                    out[msg.uid] = msg.size
        return out

    # -- fetching ----------------------------------------------------------------------------
    def fetch_messages(
        self, uids: Iterable[int], *, header_only: bool = False
    ) -> list[FetchedMessage]:
        """UID FETCH of whole messages with BODY.PEEK[] (never sets \\Seen).

        Goes through imaplib directly: imapclient's generic response parser costs more CPU
        than the whole rest of the ingest for large literals.
        """
        uid_list = sorted(set(uids))
        if not uid_list:
            return []
        items = "UID FLAGS INTERNALDATE RFC822.SIZE " + (
            "BODY.PEEK[HEADER]" if header_only else "BODY.PEEK[]"
        )
        if self.condstore:
            items += " MODSEQ"
        imap: Any = self.client._imap
        typ, data = imap.uid("FETCH", _uid_set(uid_list), f"({items})")
        if typ != "OK":
            raise MailServerError(f"UID FETCH failed: {data!r}")
        out: list[FetchedMessage] = []
        current: FetchedMessage | None = None
        for part in data:
            if isinstance(part, tuple):
                meta, literal = part
                current = FetchedMessage(uid=0, raw=bytes(literal), truncated=header_only)
                _apply_meta(current, meta)
                out.append(current)
            elif isinstance(part, bytes) and current is not None:
                # the items after the literal, e.g. b' FLAGS (\\Seen))'
                _apply_meta(current, part)
                current = None
            elif isinstance(part, bytes):
                # a FETCH that the server sent for another reason (a flag change): no literal
                self._news.add("FETCH")
        return [m for m in out if m.uid]


_NEWS = ("EXISTS", "EXPUNGE", "FETCH", "VANISHED")


def _apply_meta(msg: FetchedMessage, meta: bytes) -> None:
    for m in _FETCH_META.finditer(meta):
        if m.group("uid"):
            msg.uid = int(m.group("uid"))
        elif m.group("flags") is not None:
            msg.flags = _decode_flags(m.group("flags"))
        elif m.group("modseq"):
            msg.modseq = int(m.group("modseq"))
        elif m.group("date"):
            msg.internal_date = _parse_internaldate(m.group("date"))
        elif m.group("size"):
            msg.size = int(m.group("size"))


def _uid_set(uids: Sequence[int]) -> str:
    """Compact sequence set: 1:5,7,9:12."""
    parts: list[str] = []
    start = prev = uids[0]
    for uid in uids[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if start != prev else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


def _close_quietly(client: IMAPClient) -> None:
    try:
        client.logout()
    except (IMAPClientError, OSError, imaplib.IMAP4.error):
        with contextlib.suppress(IMAPClientError, OSError):
            client.shutdown()
