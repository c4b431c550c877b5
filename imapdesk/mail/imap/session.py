"""One logged-in IMAP connection: connect, folders, fetch fast, write flags and move mail; every
failure becomes a clear error.

A connection is discarded on any network or protocol error; retry and back-off live in one place
(`imapdesk.worker.backoff`), not here. Commands imapclient has no helper for (or that are read
faster by hand) go through `ImapSession.command`, the one way to send a raw command and read
its untagged responses.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from imapdesk.kernel.errors import MailServerError
from imapdesk.mail.imap.protocol import (
    FetchedMessage,
    ImapReply,
    MessageFlags,
    flags_of_fetched,
    quoted_folder,
    read_fetch_items,
    search_hits,
    uid_set,
)
from imapdesk.mail.oauth2 import TokenSource, sasl_mechanism

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
SPECIAL_USE = {
    b"\\Sent": "sent",
    b"\\Archive": "archive",
    b"\\Junk": "junk",
    b"\\Trash": "trash",
    b"\\Drafts": "drafts",
}
# what the server tells about the selected folder along with the responses to other commands
_NEWS = ("EXISTS", "EXPUNGE", "FETCH", "VANISHED")


@dataclass(frozen=True)
class ImapAccount:
    """What it takes to log in. The password never appears in repr or logs. With `oauth2`, the
    login is SASL XOAUTH2 or OAUTHBEARER with the token it gives (the password is unused)."""

    host: str
    port: int
    security: str  # ssl | starttls | none
    username: str
    password: str = field(repr=False)
    ca_file: str | None = None
    label: str = ""
    oauth2: TokenSource | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        return f"{self.username} at {self.host}:{self.port} ({self.security})"


@dataclass
class FolderStatus:
    uidvalidity: int
    uidnext: int
    exists: int
    highestmodseq: int | None
    permanent_flags: tuple[str, ...]
    flags: tuple[str, ...] = ()  # the FLAGS of a SELECT: system flags and the keywords in use


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verified TLS always; a private CA is added with ca_file, verification is never skipped."""
    ctx = ssl.create_default_context()
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise MailServerError(f"cannot read the CA file {ca_file!r}: {exc}") from exc
    return ctx


class TooManyConnections(MailServerError):
    """The server refused a connection because the user (or its address) has too many open:
    the caller shares those it has (worker/connections.py) rather than retrying."""

    code = "too_many_connections"


def too_many_connections(said: str) -> bool:
    """Whether a refusal says there are too many connections: RFC 5530's `[LIMIT]` (Dovecot's
    mail_max_userip_connections), `[UNAVAILABLE]`, or words to that effect (Gmail, Exchange)."""
    text = said.lower()
    if "[limit]" in text or "[unavailable]" in text:
        return True
    return ("connection" in text or "session" in text) and any(
        word in text for word in ("limit", "too many", "maximum number")
    )


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
            if too_many_connections(str(exc)):  # some servers refuse at the greeting
                raise TooManyConnections(
                    f"the IMAP server {acc.host}:{acc.port} refused another connection: {exc}"
                ) from exc
            raise MailServerError(f"IMAP server {acc.host}:{acc.port} refused: {exc}") from exc
        try:
            _log_in(client, acc)
        except LoginError as exc:
            _close_quietly(client)
            detail = str(exc)
            if too_many_connections(detail):
                raise TooManyConnections(
                    f"the IMAP server refused {acc.username}: too many connections from this "
                    f"address ({detail}); raise the server's per-user connection limit "
                    "(Dovecot: mail_max_userip_connections) or close other clients"
                ) from exc
            credentials = "OAuth2 token" if acc.oauth2 is not None else "user name or password"
            raise MailServerError(
                f"IMAP login failed for {acc.describe()}: wrong {credentials} "
                f"(the server said: {detail})"
            ) from exc
        except (IMAPClientError, OSError) as exc:
            _close_quietly(client)
            raise MailServerError(f"IMAP login for {acc.describe()} failed: {exc}") from exc
        except MailServerError:  # no OAuth2 token to log in with
            _close_quietly(client)
            raise
        return client

    def close(self) -> None:
        _close_quietly(self.client)

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    def noop(self) -> None:
        """Check that the connection still answers (raises when it does not)."""
        self.client.noop()

    # -- raw commands -----------------------------------------------------------------------
    def command(self, *words: str, collect: Iterable[str] = ()) -> ImapReply:
        """Send one command as written (e.g. "UID", "EXPUNGE", "4:6") and take the untagged
        responses of the kinds in `collect` that came with it.

        Built on imaplib's public API: `xatom` sends any command and returns the tagged answer
        (a BAD raises), `response(kind)` takes what arrived of one kind. Responses of those
        kinds that were still waiting from earlier commands are not this command's answer: they
        are set aside first, and news among them (EXISTS, EXPUNGE, FETCH) is kept for
        `take_news`.
        """
        wire = self._wire()
        kinds = tuple(k.upper() for k in collect)
        for kind in kinds:
            _kind, earlier = wire.response(kind)
            if kind in _NEWS and earlier != [None]:
                self._news.add(kind)
        typ, text = wire.xatom(*words)
        untagged: dict[str, tuple[object, ...]] = {}
        for kind in kinds:
            _kind, data = wire.response(kind)
            if data != [None]:
                untagged[kind] = tuple(data)
        return ImapReply(" ".join(words), str(typ), tuple(text or ()), untagged)

    def take_news(self) -> set[str]:
        """What the server told about the selected folder (EXISTS, EXPUNGE, FETCH) with the
        responses to other commands since the last call. A server tells each change once, with
        whatever response comes next: news that rode along with a SEARCH or a FETCH would
        otherwise be lost, and a NOOP would not tell it again."""
        wire = self._wire()
        kinds = {kind for kind in _NEWS if wire.response(kind)[1] != [None]}
        wire.response("RECENT")  # never read: dropped so it does not pile up
        kinds |= self._news
        self._news = set()
        return kinds

    def _wire(self) -> imaplib.IMAP4:
        """imapclient's imaplib connection. imapclient has no public way to send a command
        it does not know, nor to take the untagged responses it leaves behind; imaplib has
        (`xatom`, `response`), on this object, which imapclient keeps as a private member."""
        wire: imaplib.IMAP4 = self.client._imap
        return wire

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

    def create_folder(self, name: str) -> None:
        """CREATE the folder and SUBSCRIBE to it, so plain clients show it."""
        self.client.create_folder(name)
        self.subscribe(name)

    def subscribe(self, name: str) -> None:
        self.client.subscribe_folder(name)

    def select(self, folder: str, *, readonly: bool = True) -> FolderStatus:
        info = self.client.select_folder(folder, readonly=readonly)
        self.take_news()  # a new view: what the SELECT said is the whole state, not news
        return FolderStatus(
            uidvalidity=int(info[b"UIDVALIDITY"]),
            uidnext=int(info.get(b"UIDNEXT", 0)),
            exists=int(info.get(b"EXISTS", 0)),
            highestmodseq=int(info[b"HIGHESTMODSEQ"]) if b"HIGHESTMODSEQ" in info else None,
            permanent_flags=_flag_names(info.get(b"PERMANENTFLAGS", ())),
            flags=_flag_names(info.get(b"FLAGS", ())),
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

    # -- reading the selected folder ----------------------------------------------------------
    def all_uids(self) -> list[int]:
        return sorted(self.client.search("ALL"))

    def uids_from(self, first_uid: int) -> list[int]:
        """UIDs >= first_uid in the selected folder, ascending."""
        found = self.client.search(["UID", f"{max(first_uid, 1)}:*"])
        return sorted(u for u in found if u >= first_uid)

    def search(self, criteria: str) -> list[int]:
        """UID SEARCH with criteria as written; the UIDs found, ascending."""
        reply = self.command("UID", "SEARCH", criteria, collect=("SEARCH",))
        if not reply.ok:
            raise MailServerError(f"UID SEARCH {criteria} failed: {reply.said}")
        return search_hits(reply.untagged.get("SEARCH", ()))

    def uids_present(self, uids: Sequence[int]) -> list[int]:
        """Which of these UIDs are still in the selected folder."""
        if not uids:
            return []
        wanted = set(uids)
        return [u for u in self.search(f"UID {uid_set(sorted(wanted))}") if u in wanted]

    def flags_since(self, modseq: int | None) -> list[FetchedMessage]:
        """UID, FLAGS (and MODSEQ) of the messages changed since `modseq` (CHANGEDSINCE,
        RFC 7162), or of every message when there is no modseq or no CONDSTORE."""
        items = "(UID FLAGS MODSEQ)" if self.condstore else "(UID FLAGS)"
        if self.condstore and modseq is not None:
            items += f" (CHANGEDSINCE {modseq})"
        reply = self.command("UID", "FETCH", "1:*", items, collect=("FETCH",))
        if not reply.ok:
            raise MailServerError(f"UID FETCH FLAGS failed: {reply.said}")
        out: list[FetchedMessage] = []
        for line in reply.untagged.get("FETCH", ()):
            if isinstance(line, bytes):
                msg = FetchedMessage(uid=0, raw=b"")
                read_fetch_items(msg, line)
                if msg.uid:
                    out.append(msg)
                else:
                    self._news.add("FETCH")  # a change told without its UID
        return out

    def fetch_flags(self, uids: Sequence[int]) -> dict[int, MessageFlags]:
        """FLAGS (and MODSEQ) of these UIDs in the selected folder; missing ones are gone."""
        if not uids:
            return {}
        items = "(UID FLAGS MODSEQ)" if self.condstore else "(UID FLAGS)"
        reply = self.command("UID", "FETCH", uid_set(sorted(set(uids))), items, collect=("FETCH",))
        if not reply.ok:
            raise MailServerError(f"UID FETCH FLAGS failed: {reply.said}")
        return flags_of_fetched(reply.untagged.get("FETCH", ()), uids)

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """RFC822.SIZE of each UID (to keep huge messages out of the bulk batches)."""
        if not uids:
            return {}
        reply = self.command(
            "UID", "FETCH", uid_set(sorted(uids)), "(UID RFC822.SIZE)", collect=("FETCH",)
        )
        if not reply.ok:
            raise MailServerError(f"UID FETCH RFC822.SIZE failed: {reply.said}")
        out: dict[int, int] = {}
        for line in reply.untagged.get("FETCH", ()):
            if isinstance(line, bytes):
                msg = FetchedMessage(uid=0, raw=b"")
                if b"RFC822.SIZE" not in line:
                    self._news.add("FETCH")  # another message's flags changed meanwhile
                    continue
                read_fetch_items(msg, line)
                if msg.uid:
                    out[msg.uid] = msg.size
        return out

    def fetch_messages(
        self, uids: Iterable[int], *, header_only: bool = False
    ) -> list[FetchedMessage]:
        """UID FETCH of whole messages with BODY.PEEK[] (never sets \\Seen).

        A raw command: imapclient's generic response parser costs more CPU than the whole
        rest of the ingest for large literals.
        """
        uid_list = sorted(set(uids))
        if not uid_list:
            return []
        items = "UID FLAGS INTERNALDATE RFC822.SIZE " + (
            "BODY.PEEK[HEADER]" if header_only else "BODY.PEEK[]"
        )
        if self.condstore:
            items += " MODSEQ"
        reply = self.command("UID", "FETCH", uid_set(uid_list), f"({items})", collect=("FETCH",))
        if not reply.ok:
            raise MailServerError(f"UID FETCH failed: {reply.said}")
        out: list[FetchedMessage] = []
        current: FetchedMessage | None = None
        for part in reply.untagged.get("FETCH", ()):
            if isinstance(part, tuple):
                meta, literal = part
                current = FetchedMessage(uid=0, raw=bytes(literal), truncated=header_only)
                read_fetch_items(current, meta)
                out.append(current)
            elif isinstance(part, bytes) and current is not None:
                # the items after the literal, e.g. b' FLAGS (\\Seen))'
                read_fetch_items(current, part)
                current = None
            elif isinstance(part, bytes):
                # a FETCH that the server sent for another reason (a flag change): no literal
                self._news.add("FETCH")
        return [m for m in out if m.uid]

    # -- writing the selected folder ----------------------------------------------------------
    def store_flags(
        self,
        uids: Sequence[int],
        op: str,
        flags: Sequence[str],
        *,
        unchanged_since: int | None = None,
    ) -> ImapReply:
        """`UID STORE <op>FLAGS.SILENT (flags)` (op "+" or "-"), conditional with a MODSEQ
        (RFC 7162 UNCHANGEDSINCE): the reply's `modified` are the UIDs left alone."""
        item = f"{op}FLAGS.SILENT ({' '.join(flags)})"
        if unchanged_since is not None:
            item = f"(UNCHANGEDSINCE {unchanged_since}) {item}"
        return self.command("UID", "STORE", uid_set(sorted(uids)), item, collect=("MODIFIED",))

    def move(self, uids: Sequence[int], folder: str) -> ImapReply:
        """`UID MOVE` (RFC 6851); the reply's `copied` maps old UIDs to new ones."""
        return self._copy_or_move("MOVE", uids, folder)

    def copy(self, uids: Sequence[int], folder: str) -> ImapReply:
        """`UID COPY`; the reply's `copied` maps old UIDs to new ones (UIDPLUS)."""
        return self._copy_or_move("COPY", uids, folder)

    def expunge(self, uids: Sequence[int]) -> ImapReply:
        """`UID EXPUNGE` (UIDPLUS): exactly these UIDs, never other \\Deleted mail."""
        return self.command("UID", "EXPUNGE", uid_set(sorted(uids)))

    def _copy_or_move(self, command: str, uids: Sequence[int], folder: str) -> ImapReply:
        return self.command(
            "UID",
            command,
            uid_set(sorted(uids)),
            quoted_folder(folder),
            collect=("COPYUID", "TRYCREATE"),
        )


def _flag_names(values: Iterable[object]) -> tuple[str, ...]:
    return tuple(f.decode() if isinstance(f, bytes) else str(f) for f in values)


def _log_in(client: IMAPClient, account: ImapAccount) -> None:
    """LOGIN with the password, or AUTHENTICATE with an OAuth2 token: XOAUTH2 or OAUTHBEARER,
    whichever the server offers (see `sasl_mechanism`). A token the server refuses is given
    back and a fresh one tried once: it may have been revoked or have expired early."""
    if account.oauth2 is None:
        client.login(account.username, account.password)
        return
    mechanism = sasl_mechanism(c.decode() for c in client.capabilities())
    token = account.oauth2.access_token()
    try:
        _authenticate(client, mechanism, account.username, token)
    except LoginError:
        account.oauth2.refused(token)
        fresh = account.oauth2.access_token()
        if fresh == token:
            raise
        _authenticate(client, mechanism, account.username, fresh)


def _authenticate(client: IMAPClient, mechanism: str, user: str, token: str) -> None:
    if mechanism == "OAUTHBEARER":
        client.oauthbearer_login(user, token)
    else:
        client.oauth2_login(user, token)


def _close_quietly(client: IMAPClient) -> None:
    try:
        client.logout()
    except (IMAPClientError, OSError, imaplib.IMAP4.error):
        with contextlib.suppress(IMAPClientError, OSError):
            client.shutdown()
