"""winmail.dat: the files (and the body) Outlook and Exchange pack into one TNEF attachment
(`application/ms-tnef`), which no other mail client opens.

Read with tnefparse (PyPI; pure Python, no dependencies, LGPL; tested on real winmail.dat
files, used widely; the only other TNEF library there, pytnef, stopped in 2006). Its last
release is from 2021, so what it cannot be trusted with is checked here: it reads a stream cut
short without a word (`_drop_cut_files` leaves out what was cut), and a damaged one makes it
raise anything, which is caught and said in `TnefContents.error`. It is given bytes and never
touches the disk. A malformed winmail.dat costs nothing but its unpacking: the caller keeps
the original.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from dataclasses import dataclass, field
from typing import Any

from tnefparse import properties as mapi
from tnefparse.tnef import TNEF

log = logging.getLogger(__name__)
# the decoder logs what it cannot read in a damaged file as errors; what that costs is said
# once, in the attachment's `unpack_error`
logging.getLogger("tnefparse").setLevel(logging.CRITICAL)

TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
TNEF_NAMES = frozenset({"winmail.dat", "win.dat"})
# the first four bytes of every TNEF stream (0x223E9F78, little-endian)
TNEF_SIGNATURE = b"\x78\x9f\x3e\x22"
# attached messages inside are unpacked this deep, and so many files at most
MAX_DEPTH = 4
MAX_FILES = 500
# The decoder copies the rest of the stream for each object it reads (and reads an attached
# Outlook item's stream again), so a stream of many small objects costs the square of its
# size: a crafted 2 MB file would take half a minute, a 10 MB one hours. A stream is read only
# when the bytes it would copy, counted beforehand, stay under this (a second or two; a 40 MB
# winmail.dat with 20 files copies about 3 GB).
MAX_COPY_BYTES = 8 * 1024**3
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


@dataclass(frozen=True)
class TnefFile:
    filename: str  # as the sender's Outlook named it (the caller makes it safe)
    content_type: str  # lower case "type/subtype"
    data: bytes
    content_id: str | None  # without <>: an image the HTML body shows (cid:)


@dataclass
class TnefContents:
    files: list[TnefFile] = field(default_factory=list)
    html: str | bytes | None = None
    text: str | bytes | None = None
    # why it could not be unpacked (None: it was)
    error: str | None = None


def is_tnef(content_type: str, filename: str) -> bool:
    """Whether an attachment is a TNEF file, by its type or, as mailers send it as
    application/octet-stream too, by its usual name."""
    return content_type.lower() in TNEF_TYPES or filename.strip().lower() in TNEF_NAMES


def unpack(data: bytes) -> TnefContents:
    """The files and body of a TNEF stream. Never raises. A stream cut short gives the files
    that came whole before the cut, and says so in `error`."""
    if not data.startswith(TNEF_SIGNATURE):
        return TnefContents(error="not a TNEF file (it does not start with the TNEF signature)")
    if (cost := copy_cost(data)) > MAX_COPY_BYTES:
        return TnefContents(
            error=f"it holds too many parts to unpack ({len(data):,} bytes, which the decoder "
            f"would copy over {cost // 1024**3:,} GB to read)"
        )
    try:
        tnef = TNEF(data, do_checksum=False)
        contents = TnefContents(html=tnef.htmlbody or None, text=tnef.body or None)
        owners: list[int] = []
        for index, attachment in enumerate(tnef.attachments):
            before = len(contents.files)
            _collect(attachment, contents, depth=0)
            owners.extend([index] * (len(contents.files) - before))
        _drop_cut_files(data, tnef, contents, owners)
        if not tnef.attachments and not tnef.has_body() and contents.error is None:
            # every winmail.dat carries a body or files: this one lost them
            contents.error = "the file holds no body and no file (it may have been cut short)"
    except Exception as exc:  # a damaged file makes the decoder raise anything
        log.info("winmail.dat could not be unpacked", exc_info=True)
        return TnefContents(error=f"the file is damaged ({type(exc).__name__}: {exc})"[:500])
    return contents


def copy_cost(data: bytes, budget: int = MAX_COPY_BYTES) -> int:
    """The bytes the decoder would copy to read `data`: for the stream and for every stream
    it might find inside (an attached Outlook item's starts with the same signature), the rest
    of the data at each object, as it reads them. Counted from the objects' declared lengths
    alone, so it costs a few steps per object and stops once over `budget`."""
    cost = 0
    start = 0
    while start >= 0 and cost <= budget:
        cost += _walk_cost(data, start, budget - cost)
        start = data.find(TNEF_SIGNATURE, start + 1)
    return cost


def _walk_cost(data: bytes, start: int, budget: int) -> int:
    # as the decoder walks: signature and key, then objects while more than 12 bytes are left
    offset, end, cost = start + 6, len(data), 0
    while offset + 12 < end and cost <= budget:
        cost += end - offset
        declared = int.from_bytes(data[offset + 5 : offset + 9], "little") + 11
        offset += min(end - offset, declared)
    return cost


def _collect(attachment: Any, contents: TnefContents, depth: int) -> None:
    if len(contents.files) >= MAX_FILES:
        contents.error = f"only the first {MAX_FILES} files were unpacked"
        return
    embedded = getattr(attachment, "embed", None)
    if embedded is None:
        contents.files.append(_file(attachment))
    elif depth < MAX_DEPTH:
        # an attached Outlook item: its own files (its body is not a file to offer)
        for inner in embedded.attachments:
            _collect(inner, contents, depth + 1)


@dataclass
class _Seen:
    """What the stream held of one attachment: its objects read whole."""

    objects: set[int] = field(default_factory=set)


def _drop_cut_files(data: bytes, tnef: TNEF, contents: TnefContents, owners: list[int]) -> None:
    """The decoder takes what is there without a word, so a stream that ends inside an object
    (each declares its length: a 32-bit count after its level, id and type) would give the
    file it was reading cut short, as if whole, and one that ends between the objects of an
    attachment a file without its contents or its name. An attachment ends with its
    properties (attAttachment, MS-OXTNEF 2.1.3.3: its long name, type, Content-ID, and often
    its contents), which Exchange and Outlook always write: the last attachment is whole
    once they came whole (a stream short of only their checksum, as Outlook writes some, is
    whole). Otherwise its files are left out and the error says why; the original stays."""
    offset = 6  # the signature and the key
    seen: list[_Seen] = []
    cut = None
    for obj in tnef.objects:
        declared = int.from_bytes(data[offset + 5 : offset + 9], "little") + 11
        if obj.name == TNEF.ATTATTACHRENDDATA:
            seen.append(_Seen())
        missing = offset + declared - len(data)
        if missing > 0:
            cut = f"the file is cut short at byte {len(data)}, inside an object of {declared} bytes"
            if seen and obj.name == TNEF.ATTATTACHMENT and missing <= 2:
                seen[-1].objects.add(obj.name)
            break
        if seen and obj.level == TNEF.LVL_ATTACHMENT:
            seen[-1].objects.add(obj.name)
        offset += obj.length
    rest = data[offset:] if cut is None else b""
    if rest[:1] in (bytes([TNEF.LVL_MESSAGE]), bytes([TNEF.LVL_ATTACHMENT])):
        # the header of one more object, too short for the decoder to look at (a stray
        # line end after the last object is no object)
        cut = f"the file is cut short at byte {len(data)}, inside an object's header"
    if seen and TNEF.ATTATTACHMENT not in seen[-1].objects:
        last_owner = len(seen) - 1
        dropped = [
            f for f, owner in zip(contents.files, owners, strict=True) if owner == last_owner
        ]
        contents.files = [
            f for f, owner in zip(contents.files, owners, strict=True) if owner != last_owner
        ]
        names = ", ".join(f.filename or "unnamed" for f in dropped) or "unnamed"
        cut = (cut or "the file ends before its last attachment does") + (
            f": its last file ({names}) is left out"
        )
    elif cut:
        cut += ": its files came out whole before it"
    if cut:
        contents.error = cut


def _file(attachment: Any) -> TnefFile:
    props = {p.name: p.data for p in attachment.mapi_attrs}
    filename = _text(attachment.long_filename()) or _text(attachment.name)
    declared = _text(props.get(mapi.MAPI_ATTACH_MIME_TAG)).lower()
    content_type = declared if _MEDIA_TYPE.fullmatch(declared) else ""
    if not content_type:
        guessed, _encoding = mimetypes.guess_type(filename, strict=False)
        content_type = guessed or "application/octet-stream"
    content_id = _text(props.get(mapi.MAPI_ATTACH_CONTENT_ID)).strip().strip("<>") or None
    data = attachment.data if isinstance(attachment.data, bytes) else bytes(attachment.data)
    return TnefFile(filename, content_type, data, content_id)


def _text(value: Any) -> str:
    """A MAPI string property as text: tnefparse gives str, bytes, or a list of either."""
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return ""
    return value.replace("\x00", "").strip()
