"""Hearing of changes as they happen, and how late a server tells of them.

- `Idle` (RFC 2177) starts, waits in and ends an IDLE on an `ImapSession`. imapclient's own IDLE
  refuses an untagged response that comes before the server's continuation (a server with
  NOTIFY sends one whenever a watched folder changed meanwhile), cannot read a literal in a
  response (Dovecot 2.3 sends a folder name with 8-bit characters as one), and waits on the
  socket only: what the server sent in the same packet as the continuation (Dovecot tells
  there of a change made since the last IDLE) stays in the read buffer until the IDLE ends.
  This one reads with imaplib's response reader, as imapclient does underneath, what is
  buffered first, and files every untagged response where `ImapSession.take_news` (the
  selected folder) and `take_statuses` (other folders) find them.
- `notify_set` (RFC 5465) asks the server to tell of new, expunged and re-flagged mail in the
  selected folder (as IDLE would) and in the given other folders, as STATUS responses, whatever
  the connection is doing: a change in another folder made while the connection was busy is
  told all the same.
- `status` asks STATUS of a folder; `take_statuses` takes the STATUS responses a server sent
  unasked.
- `measure_push_delay` times how long an idling connection takes to hear of an APPEND: a lazy
  IDLE tells only when its server looks (Cyrus's `imapidlepoll`, Courier without enhanced IDLE).

Two things Dovecot 2.3's NOTIFY does not keep, found by measuring: it tells nothing of a folder
with 8-bit characters in its name through the `mailboxes` filter (`notifiable` says which names
a caller should poll instead); and for a folder that is not selected it stops telling at once
once that folder's transaction log is rotated (5 minutes and 32 KB of changes on), falling back
to looking every 30 s (`mailbox_idle_check_interval`). The selected folder's news (IDLE, or
NOTIFY's `selected` filter) is told on time whatever the log does: the folder that matters most
is to be selected, and the others' news taken as a hint, with a look now and then.
"""

from __future__ import annotations

import contextlib
import imaplib
import io
import secrets
import select
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from imapclient.exceptions import IMAPClientError
from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.response_parser import parse_response

from imapdesk.kernel.errors import MailServerError
from imapdesk.mail.imap.protocol import ImapReply, quoted_folder
from imapdesk.mail.imap.session import ImapSession

# the events of NOTIFY asked for every followed folder (FlagChange needs the other two)
NOTIFY_EVENTS = "(MessageNew MessageExpunge FlagChange)"
# imaplib checks a command against the states it may be sent in, and takes a command it does not
# know (`xatom`) as allowed only in the state of its first use: NOTIFY is sent in either
imaplib.Commands.setdefault("NOTIFY", ("AUTH", "SELECTED"))
# the folder `measure_push_delay` creates for its APPENDs, and deletes again
PROBE_FOLDER = "imapdesk push check"
_PROBE_MESSAGE = (
    b"From: imapdesk <imapdesk@localhost>\r\n"
    b"Subject: imapdesk push check\r\n"
    b"Message-ID: <push-check-%s@imapdesk.invalid>\r\n"
    b"\r\n"
    b"imapdesk times how soon an idling connection hears of new mail. Deleted at once.\r\n"
)


@dataclass(frozen=True)
class StatusNews:
    """What a STATUS response said of a folder. A NOTIFY update may carry only what changed
    (Dovecot sends `(HIGHESTMODSEQ 7)` alone for a flag change): absent values are None."""

    folder: str
    uidvalidity: int | None = None
    uidnext: int | None = None
    messages: int | None = None
    highestmodseq: int | None = None

    def merged(self, newer: StatusNews) -> StatusNews:
        """This status brought up to date by a newer (possibly partial) one."""
        return StatusNews(
            self.folder,
            _newer(self.uidvalidity, newer.uidvalidity),
            _newer(self.uidnext, newer.uidnext),
            _newer(self.messages, newer.messages),
            _newer(self.highestmodseq, newer.highestmodseq),
        )

    def differs(self, newer: StatusNews) -> bool:
        """Whether `newer` tells of a change: a value it has that differs from this one."""
        pairs = (
            (self.uidvalidity, newer.uidvalidity),
            (self.uidnext, newer.uidnext),
            (self.messages, newer.messages),
            (self.highestmodseq, newer.highestmodseq),
        )
        return any(new is not None and new != old for old, new in pairs)


def _newer(old: int | None, new: int | None) -> int | None:
    return old if new is None else new


def notifiable(folder: str) -> bool:
    """Whether NOTIFY can be asked to tell of this folder (see the module's note)."""
    return folder.isascii()


# -- STATUS -----------------------------------------------------------------------------------


def status(imap: ImapSession, folder: str) -> tuple[StatusNews, list[StatusNews]]:
    """STATUS of `folder`, and any other STATUS the server sent meanwhile (NOTIFY news that
    would otherwise be set aside by the command)."""
    earlier = take_statuses(imap)
    items = "UIDVALIDITY UIDNEXT MESSAGES" + (" HIGHESTMODSEQ" if imap.condstore else "")
    reply = imap.command("STATUS", quoted_folder(folder), f"({items})", collect=("STATUS",))
    if not reply.ok:
        raise MailServerError(f"STATUS {folder} failed: {reply.said}")
    told = _statuses(reply.untagged.get("STATUS", ()))
    mine = [s for s in told if s.folder == folder]
    if not mine:
        raise MailServerError(f"STATUS {folder}: the server answered without its status")
    others = [s for s in told if s is not mine[-1]]
    return mine[-1], earlier + others


def take_statuses(imap: ImapSession) -> list[StatusNews]:
    """The STATUS responses the server sent unasked since the last look (NOTIFY)."""
    _kind, data = imap.client._imap.response("STATUS")
    if data == [None]:
        return []
    return _statuses(data)


def _statuses(data: Iterable[Any]) -> list[StatusNews]:
    """STATUS responses as imaplib files them: `name (ITEM value ...)` each, a name sent as a
    literal being a (prefix, literal) tuple followed by the rest of its line."""
    out: list[StatusNews] = []
    pending: tuple[bytes, bytes] | None = None
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):
            pending = (bytes(item[0]), bytes(item[1]))
            continue
        parts: list[Any] = [pending, bytes(item)] if pending is not None else [bytes(item)]
        pending = None
        try:
            parsed = parse_response(parts)
        except (IMAPClientError, ValueError):
            continue
        if len(parsed) == 2 and isinstance(parsed[1], tuple):
            out.append(_status_news(parsed[0], parsed[1]))
    return out


def _status_news(name: Any, values: tuple[Any, ...]) -> StatusNews:
    found: dict[bytes, int] = {}
    for key, value in zip(values[::2], values[1::2], strict=False):
        if isinstance(key, bytes) and isinstance(value, int):
            found[key.upper()] = value
    return StatusNews(
        folder_name(name),
        uidvalidity=found.get(b"UIDVALIDITY"),
        uidnext=found.get(b"UIDNEXT"),
        messages=found.get(b"MESSAGES"),
        highestmodseq=found.get(b"HIGHESTMODSEQ"),
    )


def folder_name(raw: Any) -> str:
    """A folder name as a response gives it: modified UTF-7, or 8-bit text (see the module's
    note on Dovecot), or a number when the name is all digits."""
    if isinstance(raw, int):
        return str(raw)
    data = bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw).encode()
    if data.isascii():
        try:
            return str(decode_utf7(data))
        except (UnicodeError, ValueError):
            return data.decode("ascii")
    return data.decode("utf-8", "replace")


# -- NOTIFY -----------------------------------------------------------------------------------


def notify_set(imap: ImapSession, folders: Sequence[str], *, selected: bool = False) -> ImapReply:
    """NOTIFY SET: tell of new, expunged and re-flagged mail in these (not selected) folders,
    and with `selected`, in the folder selected (as IDLE does: EXISTS, EXPUNGE, FETCH)."""
    specs = [f"(selected {NOTIFY_EVENTS})"] if selected else []
    if folders:
        names = " ".join(quoted_folder(f) for f in folders)
        specs.append(f"(mailboxes ({names}) {NOTIFY_EVENTS})")
    if not specs:
        return imap.command("NOTIFY", "NONE")
    return imap.command("NOTIFY", "SET", " ".join(specs))


# -- IDLE -------------------------------------------------------------------------------------


class Idle:
    """One IDLE command on a session: `start`, `wait` (repeatedly), `done`.

    What the server tells meanwhile is filed with the session's other untagged responses:
    `ImapSession.take_news` and `take_statuses` read it.
    """

    def __init__(self, imap: ImapSession) -> None:
        self.imap = imap
        self._wire: imaplib.IMAP4 = imap.client._imap
        self._tag: bytes | None = None

    @property
    def idling(self) -> bool:
        return self._tag is not None

    def start(self) -> None:
        """Send IDLE and read until the server's continuation (responses before it are kept)."""
        wire = self._wire
        tag = wire._command("IDLE")
        while wire._get_response() is not None:
            self._check_bye()
            answer = _answered(wire, tag)
            if answer is not None:
                raise MailServerError(f"the server refused IDLE: {answer}")
        self._tag = tag

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the server to tell something; True when it did."""
        told = False
        deadline = time.monotonic() + timeout
        while self._readable(max(0.0, deadline - time.monotonic()) if not told else 0.0):
            self._wire._get_response()
            self._check_bye()
            told = True
            if self._tag is not None and _answered(self._wire, self._tag) is not None:
                self._tag = None  # the server ended the IDLE by itself
                break
        return told

    def done(self) -> None:
        """End the IDLE (news that comes with the end is kept like the rest)."""
        tag, self._tag = self._tag, None
        if tag is None:
            return
        wire = self._wire
        wire.send(b"DONE\r\n")
        while (answer := _answered(wire, tag)) is None:
            wire._get_response()
            self._check_bye()
        if not answer.startswith("OK"):
            raise MailServerError(f"IDLE ended with {answer}")

    def _check_bye(self) -> None:
        bye = self._wire.untagged_responses.pop("BYE", None)
        if bye is not None:
            raise imaplib.IMAP4.abort(f"the server closed the connection: {bye!r}")

    def _readable(self, timeout: float) -> bool:
        """Whether a response is waiting: read from the socket but not taken yet, held by TLS,
        or arriving within `timeout`."""
        sock = self._wire.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        before = sock.gettimeout()
        sock.setblocking(False)
        try:
            if cast(io.BufferedReader, self._wire.file).peek(1):
                return True
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        finally:
            sock.settimeout(before)
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
        return bool(poller.poll(timeout * 1000))


def _answered(wire: imaplib.IMAP4, tag: bytes) -> str | None:
    """The tagged answer to `tag` ("OK ...", "NO ..."), taken, once it has come."""
    answer = cast("tuple[str, list[bytes | None]] | None", wire.tagged_commands.get(tag))
    if answer is None:
        return None
    del wire.tagged_commands[tag]
    typ, text = answer
    return " ".join([typ, *(t.decode("utf-8", "replace") for t in text if t)])


# -- how late a server tells ----------------------------------------------------------------


@dataclass(frozen=True)
class PushDelay:
    """How soon an idling connection heard of an APPEND (None: not within the time waited)."""

    mechanism: str  # "notify" or "idle"
    seconds: float | None
    waited: float

    def lazy(self, threshold: float) -> bool:
        return self.seconds is None or self.seconds > threshold


def measure_push_delay(
    listener: ImapSession,
    writer: ImapSession,
    *,
    mechanism: str,
    trials: int = 2,
    timeout: float = 4.0,
    prefix: str = "",
) -> PushDelay:
    """The longest of `trials` delays between an APPEND on `writer` and `listener` hearing of it,
    by IDLE on the selected folder or by NOTIFY, in a folder of its own (`prefix` + PROBE_FOLDER,
    created and deleted again; no mail of the mailbox is touched). Leaves `listener` with no
    folder selected and no NOTIFY set."""
    folder = prefix + PROBE_FOLDER
    with contextlib.suppress(IMAPClientError):
        writer.client.create_folder(folder)
    worst: float | None = 0.0
    try:
        if mechanism == "notify":
            reply = notify_set(listener, [folder])
            if not reply.ok:
                raise MailServerError(f"NOTIFY SET failed: {reply.said}")
        else:
            listener.select(folder, readonly=True)
        for _ in range(trials):
            heard = _one_trial(listener, writer, folder, mechanism=mechanism, timeout=timeout)
            if heard is None:
                worst = None
                break
            worst = max(worst or 0.0, heard)
    finally:
        if mechanism == "notify":
            with contextlib.suppress(IMAPClientError, MailServerError):
                listener.command("NOTIFY", "NONE")
        else:
            with contextlib.suppress(IMAPClientError):
                listener.client.close_folder()  # read-only: CLOSE expunges nothing
        take_statuses(listener)
        listener.take_news()
        with contextlib.suppress(IMAPClientError):
            writer.client.delete_folder(folder)
    return PushDelay(mechanism, worst, timeout)


def _one_trial(
    listener: ImapSession, writer: ImapSession, folder: str, *, mechanism: str, timeout: float
) -> float | None:
    take_statuses(listener)
    listener.take_news()
    idle = Idle(listener)
    idle.start()
    try:
        writer.client.append(folder, _PROBE_MESSAGE % secrets.token_hex(8).encode())
        appended = time.monotonic()
        deadline = appended + timeout
        while time.monotonic() < deadline:
            idle.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            heard = (
                any(s.folder == folder for s in take_statuses(listener))
                if mechanism == "notify"
                else "EXISTS" in listener.take_news()
            )
            if heard:
                return time.monotonic() - appended
        return None
    finally:
        idle.done()
