"""What goes over the wire: sequence sets, quoted folder names, and reading the server's answers
(FETCH items, SEARCH hits, the COPYUID and MODIFIED response codes).

Pure functions and value types: no connection here, see `session`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imapclient.imap_utf7 import encode as encode_utf7


@dataclass
class FetchedMessage:
    """One message as a UID FETCH returned it."""

    uid: int
    raw: bytes
    flags: tuple[str, ...] = ()
    modseq: int | None = None
    internal_date: datetime | None = None
    size: int = 0
    truncated: bool = False  # only the header was fetched: the message is over the size limit


@dataclass(frozen=True)
class MessageFlags:
    """Flags and MODSEQ of one message as last read from the server."""

    flags: tuple[str, ...]
    modseq: int | None


@dataclass(frozen=True)
class ImapReply:
    """What the server answered a raw command: the tagged status and text, and the untagged
    responses of the kinds asked for that came with it (response codes such as COPYUID and
    MODIFIED included: imaplib files a bracketed code under its name)."""

    command: str
    status: str  # OK | NO (a BAD raises imaplib.IMAP4.error)
    text: tuple[Any, ...]
    untagged: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    @property
    def said(self) -> str:
        """The tagged text, for an error message."""
        return said(self.text)

    def tells(self, code: str) -> bool:
        """Whether the server gave this response code (e.g. TRYCREATE) with its answer."""
        return code in self.untagged or f"[{code}".encode() in b" ".join(map(as_bytes, self.text))

    @property
    def modified(self) -> list[int]:
        """The UIDs a conditional STORE left alone (RFC 7162 MODIFIED): changed meanwhile."""
        out: list[int] = []
        for value in self.untagged.get("MODIFIED", ()):
            out.extend(expand_set(as_bytes(value).decode().strip()))
        return out

    @property
    def copied(self) -> dict[int, int]:
        """Old UID -> new UID from COPYUID (RFC 4315), told in the tagged OK (COPY) or an
        untagged OK before the EXPUNGEs (MOVE)."""
        mapping: dict[int, int] = {}
        for value in self.untagged.get("COPYUID", ()):
            m = _COPYUID.match(as_bytes(value).strip())
            if m is None:
                continue
            old = expand_set(m.group(2).decode())
            new = expand_set(m.group(3).decode())
            if len(old) == len(new):
                mapping.update(zip(old, new, strict=True))
        return mapping


_FETCH_META = re.compile(
    rb"UID (?P<uid>\d+)|FLAGS \((?P<flags>[^)]*)\)|MODSEQ \((?P<modseq>\d+)\)"
    rb"|INTERNALDATE \"(?P<date>[^\"]+)\"|RFC822\.SIZE (?P<size>\d+)"
)
_FETCH_UID = re.compile(rb"UID (\d+)")
_FETCH_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_FETCH_MODSEQ = re.compile(rb"MODSEQ \((\d+)\)")
_COPYUID = re.compile(rb"(\d+) ([0-9:,]+) ([0-9:,]+)")


def read_fetch_items(msg: FetchedMessage, meta: bytes) -> None:
    """Set what these FETCH items say (UID, FLAGS, MODSEQ, INTERNALDATE, RFC822.SIZE)."""
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


def flags_of_fetched(lines: Iterable[Any], wanted: Iterable[int]) -> dict[int, MessageFlags]:
    """UID -> flags (and MODSEQ) from FETCH responses, for the UIDs asked about; a line
    without UID or FLAGS (an unsolicited update) says nothing here."""
    uids = set(wanted)
    out: dict[int, MessageFlags] = {}
    for value in lines:
        line = as_bytes(value)
        m_uid = _FETCH_UID.search(line)
        m_flags = _FETCH_FLAGS.search(line)
        if not m_uid or not m_flags:
            continue
        uid = int(m_uid.group(1))
        if uid not in uids:
            continue
        m_modseq = _FETCH_MODSEQ.search(line)
        out[uid] = MessageFlags(
            _decode_flags(m_flags.group(1)), int(m_modseq.group(1)) if m_modseq else None
        )
    return out


def search_hits(lines: Iterable[Any]) -> list[int]:
    """The UIDs of SEARCH responses, ascending, each once."""
    found: set[int] = set()
    for line in lines:
        found.update(int(x) for x in as_bytes(line).split() if x.isdigit())
    return sorted(found)


def uid_set(uids: Sequence[int]) -> str:
    """Compact sequence set of ascending UIDs: 1:5,7,9:12."""
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


def expand_set(value: str) -> list[int]:
    """A sequence set in its written order (COPYUID pairs sets position by position)."""
    out: list[int] = []
    for part in value.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":", 1))
            out.extend(range(a, b + 1) if a <= b else range(a, b - 1, -1))
        elif part:
            out.append(int(part))
    return out


def quoted_folder(name: str) -> str:
    """A folder name as a command argument: modified UTF-7 (RFC 3501 5.1.3), quoted."""
    encoded = encode_utf7(name).decode("ascii")
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def said(text: Iterable[Any]) -> str:
    """What the server said, as one line for an error message."""
    return " ".join(_as_text(d) for d in text if d is not None)[:300]


def as_bytes(value: Any) -> bytes:
    """A response item as bytes (a literal comes as a tuple of its parts)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, tuple):
        return b" ".join(as_bytes(v) for v in value)
    return str(value).encode()


def _as_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _parse_internaldate(value: bytes) -> datetime | None:
    try:
        parsed = datetime.strptime(value.decode(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None
    return parsed.astimezone(UTC)


def _decode_flags(value: bytes) -> tuple[str, ...]:
    return tuple(f for f in value.decode("utf-8", "replace").split() if f)
