"""Parsing RFC 5322 messages into what the helpdesk stores: addresses, bodies, attachments.

Built on the stdlib parser with the compat32 policy (fast, and lenient with real-world mail);
headers and charsets are decoded here, so broken encoded words, raw 8-bit headers and unknown
charsets never raise. The body follows the JMAP rules (RFC 8621 section 4.1.4) for which parts
are the text body, the HTML body and the attachments.
"""

from __future__ import annotations

import binascii
import codecs
import contextlib
import functools
import html as html_lib
import itertools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import MessageDefect
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime

import charset_normalizer
import nh3

from imapdesk.mail import tnef

log = logging.getLogger(__name__)

__all__ = [
    "ParsedAttachment",
    "ParsedMessage",
    "base_subject",
    "decode_bytes",
    "extract_msgids",
    "html_to_text",
    "normalize_msgid",
    "parse_message",
    "sanitize_html",
]

MAX_MSGID_LEN = 998  # Message.message_id and ThreadNode.msgid columns
MAX_EMAIL_LEN = 320
MAX_NAME_LEN = 300
MAX_FILENAME_LEN = 255
SNIPPET_LEN = 200
_MAX_DEPTH = 40  # MIME nesting we follow; deeper parts are dropped and reported
_MAX_PARTS = 2000
_DETECT_BYTES = 32_768  # what charset detection looks at
_DATE_MIN = datetime(1970, 1, 1)
_DATE_MAX = datetime(2200, 1, 1)


@dataclass
class ParsedAttachment:
    filename: str  # decoded (RFC 2047/2231), "" when none; a safe name (no path parts)
    content_type: str  # lower-case "type/subtype"
    data: bytes
    content_id: str | None  # without <>
    inline: bool  # Content-Disposition inline with a Content-ID, or an inline image
    # unpacked from a winmail.dat: the position of that one in the list (imapdesk/mail/tnef.py)
    unpacked_from: int | None = None
    # a winmail.dat that could not be unpacked: why
    unpack_error: str | None = None


@dataclass
class ParsedMessage:
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    subject: str = ""
    from_email: str | None = None
    from_name: str | None = None
    to: list[dict[str, str]] = field(default_factory=list)
    cc: list[dict[str, str]] = field(default_factory=list)
    reply_to: list[dict[str, str]] = field(default_factory=list)
    date: datetime | None = None  # naive UTC
    headers: str = ""
    text: str = ""
    html: str | None = None
    snippet: str = ""
    attachments: list[ParsedAttachment] = field(default_factory=list)
    auto_submitted: bool = False
    is_list: bool = False
    is_bounce: bool = False
    parse_error: str | None = None
    size: int = 0


# --- charsets -----------------------------------------------------------------------------------

# Labels seen in mail mapped to the Python codec that decodes them best (usually a superset).
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "csgb2312": "gb18030",
    "euc-cn": "gb18030",
    "x-euc-cn": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "chinese": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "csshiftjis": "cp932",
    "euc-kr": "cp949",
    "x-euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "korean": "cp949",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "iso-8859-8-i": "iso8859_8",
    "iso-8859-6-i": "iso8859_6",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
    "x-user-defined": "cp1252",
    "utf8mb4": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
}
# Codecs that are no real mail charset: decoding with them would produce nonsense or worse.
_REFUSED_CODECS = frozenset(
    {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined", "unicode-internal"}
)
# Declared Latin-1/ASCII text is in practice windows-1252 (or UTF-8, which is easy to recognise).
_LATIN_CODECS = frozenset({"iso8859-1", "ascii", "cp1252"})
# Seven-bit stateful or wide encodings: their bytes look like ASCII but are not.
_NOT_ASCII_COMPATIBLE = frozenset(
    {"utf-7", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "hz"}
)


@functools.lru_cache(maxsize=256)
def _codec_for(label: str | None) -> str | None:
    """The Python codec name for a declared charset label, None when unknown or unusable."""
    if not label:
        return None
    name = label.strip().strip("\"'").strip().lower()
    if not name:
        return None
    name = _CHARSET_ALIASES.get(name, name)
    candidates = [name]
    if name.startswith("x-"):
        candidates.append(name[2:])
    candidates.append(name.replace("-", ""))
    candidates.append(name.replace("_", "-"))
    for candidate in candidates:
        candidate = _CHARSET_ALIASES.get(candidate, candidate)
        try:
            info = codecs.lookup(candidate)
        except (LookupError, ValueError):
            continue
        if info.name in _REFUSED_CODECS or not getattr(info, "_is_text_encoding", True):
            return None
        return info.name
    return None


def _cp1252(data: bytes) -> str:
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        # five byte values are undefined in cp1252; Latin-1 maps every byte
        return data.decode("latin-1")


def _iso2022jp_via_cp932(data: bytes) -> str:
    """Decode ISO-2022-JP with the Microsoft/NEC extensions (CP50220: circled digits, ㈱ ...).

    Python's iso2022_jp codecs refuse those characters, which Japanese mailers send every day;
    converting the JIS X 0208 runs to Shift_JIS and decoding as cp932 keeps them.
    """
    out = bytearray()
    mode = "ascii"
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b == 0x1B:
            seq = data[i + 1 : i + 3]
            if seq in (b"$B", b"$@"):
                mode = "jis"
                i += 3
                continue
            if seq in (b"(B", b"(J"):
                mode = "ascii"
                i += 3
                continue
            if seq == b"(I":
                mode = "kana"
                i += 3
                continue
            if data[i + 1 : i + 4] == b"$(D":
                mode = "jis"  # JIS X 0212: not in cp932, decodes to replacement characters
                i += 4
                continue
        if b == 0x0E:
            mode = "kana"
            i += 1
            continue
        if b == 0x0F:
            mode = "ascii"
            i += 1
            continue
        if b in (0x0A, 0x0D):
            out.append(b)
            i += 1
            continue
        if mode == "jis" and i + 1 < n and 0x21 <= b <= 0x7E and 0x21 <= data[i + 1] <= 0x7E:
            c2 = data[i + 1]
            s1 = ((b + 1) >> 1) + (0x70 if b <= 0x5E else 0xB0)
            if b & 1:
                s2 = c2 + 0x1F
                if s2 >= 0x7F:
                    s2 += 1
            else:
                s2 = c2 + 0x7E
            out += bytes((s1, s2))
            i += 2
            continue
        if mode == "kana" and 0x21 <= b <= 0x5F:
            out.append(b + 0x80)
        else:
            out.append(b)
        i += 1
    return out.decode("cp932", errors="replace")


def decode_bytes(
    data: bytes, charset: str | None, undeclared: UndeclaredCharset | None = None
) -> str:
    """Decode text in its declared charset, repairing the usual mislabels; text without a
    (known) charset as `undeclared` says (the message's policy, else `ON_ITS_OWN`). Never
    raises."""
    if not data:
        return ""
    codec = _codec_for(charset)
    if codec is None:  # undeclared or an unknown name
        return (undeclared or ON_ITS_OWN).decode(data)
    if codec not in _NOT_ASCII_COMPATIBLE and not codec.startswith("iso2022") and data.isascii():
        return data.decode("ascii")
    if codec in _LATIN_CODECS or codec == "iso8859-15":
        try:
            return data.decode("utf-8")  # Latin text is practically never valid UTF-8
        except UnicodeDecodeError:
            pass
        if codec == "iso8859-15":
            return data.decode("iso8859-15")
        return _cp1252(data)
    if codec == "utf-8":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("utf-8", errors="replace")
            # a few broken bytes in UTF-8 text, or Latin text mislabelled as UTF-8?
            if not text.replace("\ufffd", "").isascii():
                return text
            return _cp1252(data)
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        pass
    except Exception:  # codec machinery errors on hostile input
        return (undeclared or ON_ITS_OWN).decode(data)
    if codec.startswith("iso2022_jp"):
        return _iso2022jp_via_cp932(data)
    if codec == "euc_jp":
        try:
            return data.decode("euc_jis_2004")
        except UnicodeDecodeError:
            pass
    try:
        return data.decode(codec, errors="replace")
    except Exception:
        return (undeclared or ON_ITS_OWN).decode(data)


# --- undeclared 8-bit text ----------------------------------------------------------------------

# A charset guesser (charset-normalizer) is right about non-Latin text (Cyrillic, Greek, CJK:
# words made of 8-bit bytes) once it sees some 120 bytes of such words (measured on KOI8-R,
# windows-1251, ISO-8859-5, mac-cyrillic and Greek text cut at random places: wrong answers
# below that, none above), and wrong about Western text at any length: its accented letters are
# the same bytes in a dozen codepages, and it picks another one ("café crème" came out as
# "cafﻠ crﻟme"). So it only sees text with at least 200 bytes (a margin over 120) in runs of
# three or more 8-bit bytes: whole non-Latin words, which Western text (one or two accented
# letters among ASCII ones) does not have; everything else is read as windows-1252.
_GUESS_MIN_WORD_BYTES = 200
_EIGHT_BIT_WORD = re.compile(rb"[\x80-\xff]{3,}")


def _guess(sample: bytes) -> str | None:
    """The guesser's codec for undeclared text that is not UTF-8; None unless it has enough
    non-Latin words to be trusted."""
    if len(sample) > _DETECT_BYTES:
        sample = sample[:_DETECT_BYTES]
        cut = max(sample.rfind(b"\n"), sample.rfind(b" "))
        sample = sample[:cut] if cut > 0 else sample  # not inside a multibyte character
    if sum(map(len, _EIGHT_BIT_WORD.findall(sample))) < _GUESS_MIN_WORD_BYTES:
        return None
    try:
        best = charset_normalizer.from_bytes(sample).best()
    except Exception:  # heuristics over arbitrary bytes; never let them break parsing
        log.debug("charset detection failed", exc_info=True)
        return None
    codec = _codec_for(best.encoding) if best is not None and best.encoding else None
    if codec is None or codec == "utf-8" or codec in _NOT_ASCII_COMPATIBLE:
        return None
    return codec


def _usable_declared(label: str | None) -> str | None:
    """A declared charset that can read someone else's undeclared 8-bit bytes: an ASCII-based
    8-bit one (UTF-8 and ASCII are tried before any declaration anyway)."""
    codec = _codec_for(label)
    if (
        codec is None
        or codec in ("utf-8", "ascii")
        or codec in _NOT_ASCII_COMPATIBLE
        or codec.startswith("iso2022")
    ):
        return None
    return codec


def _leaves(msg: Message) -> list[Message]:
    """The message's leaf parts in order (attached messages' too), at most _MAX_PARTS."""
    found: list[Message] = []
    stack: list[Message] = [msg]
    while stack and len(found) < _MAX_PARTS:
        part = stack.pop()
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
        else:
            found.append(part)
    return found


def _raw_header_values(msg: Message) -> list[bytes]:
    return [str(value).encode("utf-8", "surrogateescape") for _name, value in msg.raw_items()]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class UndeclaredCharset:
    """How one message's 8-bit text without a declared charset is read: a text part with no
    charset, raw 8-bit headers, a charset label nobody knows. In order: UTF-8 when the bytes
    are valid UTF-8; else a charset the message declares elsewhere (its parts' Content-Type or
    HTML meta, then its headers' encoded words) in which the bytes decode; else the guesser's
    answer, worked out once over all of the message's undeclared text and only when that is
    long and non-Latin enough to be trusted (`_guess`); else windows-1252, where every byte
    means something and Western mailers' text is right. Without a message (`ON_ITS_OWN`), each
    text is decided on its own bytes."""

    __slots__ = ("_declared", "_guess_done", "_guessed", "_msg")

    def __init__(self, msg: Message | None = None) -> None:
        self._msg = msg
        self._declared: list[str] | None = None
        self._guessed: str | None = None
        self._guess_done = False

    def decode(self, data: bytes) -> str:
        if data.isascii():
            return data.decode("ascii")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        for codec in self.declared():
            try:
                data.decode(codec)
            except Exception:  # UnicodeDecodeError, or codec machinery on hostile bytes
                continue
            return decode_bytes(data, codec)
        guessed = self._guess(data)
        if guessed is not None:
            try:
                return data.decode(guessed)
            except Exception:  # the guess was made on other text of the message
                pass
        return _cp1252(data)

    def declared(self) -> list[str]:
        """The usable charsets the message declares, in the order they are tried."""
        if self._declared is None:
            self._declared = [] if self._msg is None else _declared_codecs(self._msg)
        return self._declared

    def _guess(self, data: bytes) -> str | None:
        if self._msg is None:
            return _guess(data)
        if not self._guess_done:
            self._guessed = _guess(_undeclared_sample(self._msg))
            self._guess_done = True
        return self._guessed


ON_ITS_OWN = UndeclaredCharset()


def _own_charset(part: Message, data: bytes | None = None) -> str | None:
    """The charset a part declares for itself: its Content-Type's, else (HTML) a meta tag's
    (`data`: the part's decoded payload, when the caller has it)."""
    try:
        label = part.get_content_charset()
    except Exception:  # a malformed RFC 2231 parameter
        label = None
    if label is None and part.get_content_type() == "text/html":
        data = _payload_bytes(part) if data is None else data
        if not data.isascii():
            meta = _META_CHARSET.search(data[:4096])
            label = meta.group(1).decode("ascii").lower() if meta else None
    return label


def _encoded_words(msg: Message) -> Iterator[re.Match[str]]:
    """The encoded words in the message's own headers."""
    for value in _raw_header_values(msg):
        if b"=?" in value:
            yield from _ENCODED_WORD.finditer(value.decode("ascii", "replace"))


def _word_charset(word: re.Match[str]) -> str:
    return word.group(1).split("*", 1)[0].lower()  # RFC 2231 language suffix


def _declared_codecs(msg: Message) -> list[str]:
    labels = [_own_charset(part) for part in _leaves(msg)]
    labels.extend(_word_charset(word) for word in _encoded_words(msg))
    found: list[str] = []
    for label in labels:
        codec = _usable_declared(label)
        if codec is not None and codec not in found:
            found.append(codec)
    return found


def _undeclared_texts(msg: Message) -> Iterator[bytes]:
    yield from _raw_header_values(msg)
    for word in _encoded_words(msg):
        if _codec_for(_word_charset(word)) is None:
            with contextlib.suppress(Exception):  # a broken word is shown as it is
                yield _decode_word_payload(word.group(2), word.group(3))
    for part in _leaves(msg):
        if part.get_content_maintype() == "text" and _codec_for(_own_charset(part)) is None:
            yield _payload_bytes(part)


def _undeclared_sample(msg: Message) -> bytes:
    """The message's 8-bit text in no known charset that is not UTF-8 (raw headers, encoded
    words and text parts in no known charset): what the guess is made on."""
    pieces: list[bytes] = []
    size = 0
    for piece in _undeclared_texts(msg):
        if not piece.isascii() and not _is_utf8(piece):
            pieces.append(piece)
            size += len(piece)
            if size >= _DETECT_BYTES:
                break
    return b"\n".join(pieces)


def _decode_8bit_str(value: str, undeclared: UndeclaredCharset = ON_ITS_OWN) -> str:
    """A header value read by compat32 (raw 8-bit bytes as surrogate escapes) decoded to text."""
    return undeclared.decode(value.encode("utf-8", "surrogateescape"))


# --- headers ------------------------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]*)\?([qQbB])\?(.*?)\?=", re.S)
_WS_RUN = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _decode_word_payload(encoding: str, payload: str) -> bytes:
    if encoding in "bB":
        chunk = "".join(payload.split())
        chunk = chunk.rstrip("=")
        chunk += "=" * (-len(chunk) % 4)
        try:
            return binascii.a2b_base64(chunk)
        except (binascii.Error, ValueError):
            trimmed = chunk.rstrip("=")
            trimmed = trimmed[: len(trimmed) - len(trimmed) % 4]
            return binascii.a2b_base64(trimmed)
    return binascii.a2b_qp(payload.encode("utf-8", "surrogateescape"), header=True)


def _decode_encoded_words(value: str, undeclared: UndeclaredCharset = ON_ITS_OWN) -> str:
    """RFC 2047 encoded words, also the broken kinds: glued to text, split multibyte chars."""
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(decode_bytes(bytes(pending), pending_charset or None, undeclared))
            pending.clear()
            pending_charset = None

    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos : match.start()]
        if gap and not (pending_charset is not None and gap.isspace()):
            flush()
            out.append(gap)
        charset = _word_charset(match)
        try:
            data = _decode_word_payload(match.group(2), match.group(3))
        except Exception:
            flush()
            out.append(match.group(0))
            pos = match.end()
            continue
        if charset != pending_charset:
            flush()
            pending_charset = charset
        pending.extend(data)
        pos = match.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def decode_header_text(value: str | None, undeclared: UndeclaredCharset = ON_ITS_OWN) -> str:
    """A header value as text: 8-bit decoded, unfolded, encoded words decoded, whitespace tidied."""
    if not value:
        return ""
    if not value.isascii():
        value = _decode_8bit_str(value, undeclared)
    if "=?" in value:
        value = _decode_encoded_words(value, undeclared)
    if not value.isprintable():
        value = _CONTROL.sub("", value)
    return _WS_RUN.sub(" ", value).strip()


def normalize_msgid(value: str) -> str | None:
    """A Message-ID without <> and whitespace; None when there is none."""
    if not value:
        return None
    start = value.find("<")
    if start != -1:
        end = value.find(">", start + 1)
        inner = value[start + 1 : end] if end != -1 else value[start + 1 :]
    else:
        inner = value
    inner = "".join(inner.split()).strip("<>")
    if not inner:
        return None
    if not inner.isascii():
        inner = _decode_8bit_str(inner)
    if not inner.isprintable():
        inner = _CONTROL.sub("", inner)
    return inner[:MAX_MSGID_LEN] or None


_MSGID_BRACKETED = re.compile(r"<([^<>]*)>")
_MSGID_BARE = re.compile(r"[^\s<>,;()\"]+@[^\s<>,;()\"]+")


def extract_msgids(value: str | None) -> list[str]:
    """The Message-IDs in a References/In-Reply-To value, in order, without duplicates."""
    if not value:
        return []
    found = _MSGID_BRACKETED.findall(value)
    if not found:
        found = _MSGID_BARE.findall(value)
    result: list[str] = []
    seen: set[str] = set()
    for item in found:
        msgid = normalize_msgid(item)
        if msgid and msgid not in seen:
            seen.add(msgid)
            result.append(msgid)
    return result


_ADDR_FALLBACK = re.compile(r"[^\s<>,;:\"()\[\]]+@[^\s<>,;:\"()\[\]]+")


# One mailbox of the everyday kinds: `"Name" <a@b>`, `Name <a@b>`, `<a@b>`, `a@b`. Anything
# fancier (comments, groups, quoted pairs) goes to the stdlib's parser, which is exact but slow:
# 30 µs an address adds up on a mailing-list message with a dozen in Cc.
_SIMPLE_MAILBOX = re.compile(
    r"""\s*(?:
        (?:"(?P<quoted>[^"\\]*)"|(?P<phrase>[^"<>,;:@()\\\[\]]*?))\s*<(?P<angle>[^<>"\s,;:()\\]*)>
      | (?P<bare>[^<>"\s,;:()\\]+@[^<>"\s,;:()\\]+)
      |
    )\s*(?:,|$)""",
    re.VERBOSE,
)


def _simple_addresses(raw: str) -> list[tuple[str, str]] | None:
    pairs: list[tuple[str, str]] = []
    pos = 0
    end = len(raw)
    while pos < end:
        match = _SIMPLE_MAILBOX.match(raw, pos)
        if match is None or match.end() == pos:
            return None
        pos = match.end()
        if match.group("angle") is not None:
            name = match.group("quoted")
            if name is None:
                name = " ".join(match.group("phrase").split())
            pairs.append((name, match.group("angle")))
        elif match.group("bare") is not None:
            pairs.append(("", match.group("bare")))
    return pairs


def _address_pairs(values: list[str]) -> tuple[str, list[tuple[str, str]]]:
    raw = ", ".join(v.replace("\r", "").replace("\n", "") for v in values if v)
    if not raw.strip():
        return raw, []
    pairs = _simple_addresses(raw)
    if pairs is not None:
        return raw, pairs
    try:
        return raw, getaddresses([raw])
    except Exception:
        return raw, []


def _parse_addresses(values: list[str], undeclared: UndeclaredCharset) -> list[dict[str, str]]:
    """Mailboxes with an addr-spec (local@domain); groups flattened, duplicates dropped."""
    raw, pairs = _address_pairs(values)
    result: list[dict[str, str]] = []
    seen: set[str] = set()
    for name, addr in pairs:
        email = _clean_addr(addr)
        if "@" not in email or email in seen:
            continue
        seen.add(email)
        result.append({"email": email, "name": decode_header_text(name, undeclared)[:MAX_NAME_LEN]})
    if not result and "@" in raw:
        # unparseable syntax: salvage the addr-specs at least
        for addr in _ADDR_FALLBACK.findall(raw):
            email = _clean_addr(addr)
            if "@" in email and email not in seen:
                seen.add(email)
                result.append({"email": email, "name": ""})
    return result


def _clean_addr(addr: str) -> str:
    addr = "".join(addr.split()).strip("<>")
    if not addr.isascii():
        addr = _decode_8bit_str(addr)
    if "=?" in addr:
        addr = _decode_encoded_words(addr)
    if not addr.isprintable():
        addr = _CONTROL.sub("", addr)
    return addr.lower()[:MAX_EMAIL_LEN]


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        value = value.replace("\r", "").replace("\n", "")
        if not value.isascii():
            value = value.encode("ascii", "ignore").decode("ascii")
        parsed = parsedate_to_datetime(value)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    except Exception:
        return None
    if not _DATE_MIN <= parsed < _DATE_MAX:
        return None
    return parsed


# --- subjects -----------------------------------------------------------------------------------

_REPLY_PREFIX = re.compile(
    r"""^\s*(?:
        (?:re|fwd?|aw|wg|sv|vs|vb|vl|antw|antwort|doorst|réf|ref|rif|tr|rv|enc|r|i|odp|pd
           |ynt|ilt|İlt|fs|答复|回复|回覆|转发|轉寄|轉發|転送|返信|전달|회신|답장
           |ответ|отв|пересл|πρθ|απ|σχετ)
        \.?\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:\uff1a]
      | \[[^\[\]]{0,100}\]            # [list-tag], [SPAM], [EXTERNAL] ...
      | \((?:fwd|fw)\)                # (fwd) as a prefix
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_REPLY_ONLY_PREFIX = re.compile(
    r"^\s*(?:re|fwd?|aw|wg|sv|vs|réf|回复|転送)\.?\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:\uff1a]\s*",
    re.IGNORECASE,
)
_FWD_SUFFIX = re.compile(r"\s*\((?:fwd|fw)\)\s*$", re.IGNORECASE)


def base_subject(subject: str) -> str:
    """The subject as threading compares it (RFC 5256's "base subject"): no Re:/Fwd:/[list]
    prefixes, casefolded."""
    if not subject:
        return ""
    text = _WS_RUN.sub(" ", subject).strip()
    stripped = text
    while True:
        shorter = _FWD_SUFFIX.sub("", _REPLY_PREFIX.sub("", stripped, count=1))
        if shorter == stripped:
            break
        stripped = shorter
    if not stripped:
        # the subject is only tags ("[Bug 123]"): drop just the reply prefixes
        stripped = text
        while True:
            shorter = _REPLY_ONLY_PREFIX.sub("", stripped, count=1)
            if shorter == stripped:
                break
            stripped = shorter
    return stripped.strip().casefold()[:255]


# --- HTML ---------------------------------------------------------------------------------------

_HTML_TAGS = {
    "a", "abbr", "acronym", "address", "article", "aside", "b", "bdi", "bdo", "big",
    "blockquote", "br", "caption", "center", "cite", "code", "col", "colgroup", "dd", "del",
    "details", "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "font", "footer", "h1",
    "h2", "h3", "h4", "h5", "h6", "header", "hr", "i", "img", "ins", "kbd", "li", "main", "mark",
    "nav", "ol", "p", "pre", "q", "rp", "rt", "ruby", "s", "samp", "section", "small", "span",
    "strike", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
    "time", "tr", "tt", "u", "ul", "var", "wbr",
}  # fmt: skip
# Removed together with everything inside them.
_HTML_DROP_WITH_CONTENT = {
    "script", "style", "title", "template", "iframe", "frame", "frameset", "noframes", "object",
    "embed", "applet", "svg", "math", "noscript", "noembed", "xmp", "select", "textarea",
}  # fmt: skip
_LAYOUT_ATTRS = {"align", "valign", "width", "height", "bgcolor", "color", "border", "dir"}
_HTML_ATTRIBUTES: dict[str, set[str]] = {
    "*": _LAYOUT_ATTRS | {"lang", "title"},
    "a": {"href"},
    "img": {"src", "alt", "hspace", "vspace"},
    "font": {"face", "size"},
    "table": {"cellpadding", "cellspacing", "summary", "frame", "rules"},
    "td": {"colspan", "rowspan", "nowrap", "abbr", "scope"},
    "th": {"colspan", "rowspan", "nowrap", "abbr", "scope"},
    "col": {"span"},
    "colgroup": {"span"},
    "ol": {"start", "type", "reversed"},
    "ul": {"type"},
    "li": {"value", "type"},
    "hr": {"size", "noshade"},
    "del": {"datetime"},
    "ins": {"datetime"},
    "time": {"datetime"},
    "details": {"open"},
}
# the marks mail clients put on the quoted history (imapdesk/mail/quoting.py collapses it), and
# nothing
# else of `class`, `id` or `type`
_HTML_QUOTE_CLASSES: dict[str, set[str]] = {
    "div": {
        "gmail_quote",
        "gmail_quote_container",
        "gmail_attr",
        "yahoo_quoted",
        "moz-cite-prefix",
    },
    "blockquote": {"gmail_quote"},
}
_HTML_QUOTE_VALUES: dict[str, dict[str, set[str]]] = {
    "blockquote": {"type": {"cite"}},
    "div": {"id": {"divRplyFwdMsg", "appendonsend"}},
}
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}
_SCHEME_NOISE = re.compile(r"[\x00-\x20\x7f]+")
_HAS_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:")


def _filter_attribute(element: str, attribute: str, value: str) -> str | None:
    if attribute not in ("href", "src"):
        return value
    head = _SCHEME_NOISE.sub("", value[:40]).lower()
    if not _HAS_SCHEME.match(head):
        # a relative URL would point into the helpdesk itself (`<img src="/api/...">` is a
        # request made with the agent's session); only in-page anchors and //host stay
        if head.startswith("//"):
            return "https:" + value.strip()
        return value if element == "a" and head.startswith("#") else None
    # cid: and data: are for images only; a link to a data: URL is a classic phishing vector
    if element == "a" and head.startswith(("data:", "cid:")):
        return None
    return value


# nh3.clean rather than nh3.Cleaner: the class only exists in newer nh3 releases, and building
# the sanitizer per call costs microseconds next to the parsing of a mail's HTML.
_clean_html = functools.partial(
    nh3.clean,
    tags=_HTML_TAGS,
    clean_content_tags=_HTML_DROP_WITH_CONTENT,
    attributes=_HTML_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    allowed_classes=_HTML_QUOTE_CLASSES,
    tag_attribute_values=_HTML_QUOTE_VALUES,
    url_schemes=_URL_SCHEMES,
    link_rel="noopener noreferrer nofollow",
    strip_comments=True,
)


def _filter_attribute_no_remote(element: str, attribute: str, value: str) -> str | None:
    """`_filter_attribute`, and an image keeps its source only when it is the message's own
    (cid:, data:): one from elsewhere would be fetched (a tracking pixel) by whoever shows it."""
    kept = _filter_attribute(element, attribute, value)
    if kept is None or element != "img" or attribute != "src":
        return kept
    return kept if _SCHEME_NOISE.sub("", kept[:40]).lower().startswith(("cid:", "data:")) else None


def sanitize_html(html: str, *, remote_images: bool = True) -> str:
    """HTML made safe to show: formatting and layout kept; scripts, styles, forms, frames,
    event handlers and non-http(s)/mailto/tel links removed. Images stay (blocked by the CSP);
    without `remote_images`, images from elsewhere lose their source (their alt text stays),
    for readers that show the HTML without that CSP (the REST API's)."""
    if not html:
        return ""
    if "\x00" in html:
        html = html.replace("\x00", "")
    try:
        if not remote_images:
            return _clean_html(html, attribute_filter=_filter_attribute_no_remote)
        return _clean_html(html)
    except Exception:  # e.g. lone surrogates, which the Rust side refuses
        log.debug("sanitising HTML failed", exc_info=True)
        return "<pre>" + html_lib.escape(html, quote=False) + "</pre>"


# text rendering of sanitised HTML (attribute values there are always double-quoted)
_BR = "\ue000"
_PARA = "\ue001"
_BLOCK = "\ue002"
_TAG_BR = re.compile(r"<br\b", re.I)
_TAG_PARA = re.compile(r"</?(?:p|h[1-6]|blockquote|table|ul|ol|pre|hr|dl)\b", re.I)
_TAG_BLOCK = re.compile(
    r"</?(?:div|tr|li|dd|dt|section|article|header|footer|center|address|caption|details|"
    r"summary|figure|figcaption|main|nav|aside)\b",
    re.I,
)
_TAG_CELL = re.compile(r"<t[dh]\b", re.I)
_TAG_ANY = re.compile(r"<[^>\"]*(?:\"[^\"]*\"[^>\"]*)*>")
_TEXT_WS = re.compile(r"[ \t\r\n\f\v\xa0\u200b]+")
_BREAK_RUN = re.compile(r" ?[\ue000-\ue002][ \ue000-\ue002]*")


def _break_for(match: re.Match[str]) -> str:
    run = match.group(0)
    newlines = min(run.count(_BR), 2)
    if _PARA in run:
        newlines = 2
    elif _BLOCK in run:
        newlines = max(newlines, 1)
    return "\n" * newlines


def _sanitized_html_to_text(clean: str) -> str:
    text = _TAG_BR.sub(_BR + "<br", clean)
    text = _TAG_PARA.sub(lambda m: _PARA + m.group(0), text)
    text = _TAG_BLOCK.sub(lambda m: _BLOCK + m.group(0), text)
    text = _TAG_CELL.sub(" <td", text)
    text = _TAG_ANY.sub("", text)
    text = html_lib.unescape(text)
    text = _TEXT_WS.sub(" ", text)
    text = _BREAK_RUN.sub(_break_for, text)
    return text.strip()


def html_to_text(html: str) -> str:
    """A plain-text rendering of (unsanitised) HTML, for the text body and snippets."""
    return _sanitized_html_to_text(sanitize_html(html)) if html else ""


# --- bodies -------------------------------------------------------------------------------------

_TEXT_TYPES = ("text/plain", "text/html")
_INLINE_MEDIA = ("image", "audio", "video")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
# defects that are noise (the part still decodes) rather than a damaged message
_MINOR_DEFECTS = frozenset({"InvalidBase64PaddingDefect", "InvalidBase64CharactersDefect"})


@dataclass
class _Walk:
    text_body: list[Message] = field(default_factory=list)
    html_body: list[Message] = field(default_factory=list)
    attachments: list[Message] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    ctypes: dict[int, str] = field(default_factory=dict)  # id(part) -> the type we treat it as
    parts: int = 0
    truncated: bool = False


def _disposition(part: Message) -> str | None:
    value = part.get("content-disposition")
    if value is None:
        return None
    return str(value).partition(";")[0].strip().lower() or None


def _has_name(part: Message) -> bool:
    return bool(part.get_param("filename", header="content-disposition") or part.get_param("name"))


def _record_defects(part: Message, walk: _Walk) -> None:
    for defect in part.defects:
        name = type(defect).__name__ if isinstance(defect, MessageDefect) else str(defect)
        if name not in _MINOR_DEFECTS and name not in walk.defects:
            walk.defects.append(name)


def _walk_parts(
    parts: list[Message] | list[Message | str],
    multipart_type: str,
    in_alternative: bool,
    html_body: list[Message] | None,
    text_body: list[Message] | None,
    walk: _Walk,
    depth: int,
) -> None:
    """RFC 8621 parseStructure: which leaves are text body, HTML body and attachments."""
    text_len = len(text_body) if text_body is not None else -1
    html_len = len(html_body) if html_body is not None else -1
    for i, part in enumerate(parts):
        if not isinstance(part, Message):
            continue
        walk.parts += 1
        if walk.parts > _MAX_PARTS or depth > _MAX_DEPTH:
            walk.truncated = True
            return
        _record_defects(part, walk)
        ctype = part.get_content_type()
        maintype, _, subtype = ctype.partition("/")
        if maintype == "multipart" and part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                _walk_parts(
                    payload,
                    subtype,
                    in_alternative or subtype == "alternative",
                    html_body,
                    text_body,
                    walk,
                    depth + 1,
                )
            continue
        if maintype == "multipart":
            recovered = _recover_multipart(part)
            if recovered is not None:
                _walk_parts(
                    [recovered], multipart_type, in_alternative, html_body, text_body, walk, depth
                )
                continue
            ctype = "text/plain"  # a multipart without usable boundary: its payload is all we have
            maintype = "text"
        walk.ctypes[id(part)] = ctype
        disposition = _disposition(part)
        is_media = maintype in _INLINE_MEDIA
        is_inline = (
            disposition != "attachment"
            and (ctype in _TEXT_TYPES or is_media)
            and (i == 0 or (multipart_type != "related" and (is_media or not _has_name(part))))
        )
        if is_media:
            walk.attachments.append(part)  # we keep every non-text leaf as an attachment
        if not is_inline:
            if not is_media:
                walk.attachments.append(part)
            continue
        if multipart_type == "alternative":
            if ctype == "text/plain" and text_body is not None:
                text_body.append(part)
            elif ctype == "text/html" and html_body is not None:
                html_body.append(part)
            continue
        if in_alternative:
            if ctype == "text/plain":
                html_body = None
            elif ctype == "text/html":
                text_body = None
        if text_body is not None:
            text_body.append(part)
        if html_body is not None:
            html_body.append(part)
    if multipart_type == "alternative" and text_body is not None and html_body is not None:
        if text_len == len(text_body) and html_len != len(html_body):
            text_body.extend(html_body[html_len:])  # HTML only: it is the text too
        if html_len == len(html_body) and text_len != len(text_body):
            html_body.extend(text_body[text_len:])


_BOUNDARY_PARAM = re.compile(r"""boundary\s*=\s*(?:"([^"]+)"|'([^']+)'|([^\s;"']+))""", re.I)
_BOUNDARY_LINE = re.compile(r"^--([^\s-][^\r\n]{0,200}?)\s*$", re.M)


def _recover_multipart(part: Message) -> Message | None:
    """A multipart whose boundary compat32 could not use (a missing ';', no parameter at all):
    find the boundary in the header text or the body's first delimiter line and re-parse."""
    payload = part.get_payload()
    if not isinstance(payload, str) or not payload:
        return None
    boundary = None
    header = str(part.get("content-type", "")).replace("\r", "").replace("\n", "")  # unfold
    match = _BOUNDARY_PARAM.search(header)
    if match:
        boundary = next(g for g in match.groups() if g)
    else:
        line = _BOUNDARY_LINE.search(payload)
        if line and payload.count("--" + line.group(1)) > 1:
            boundary = line.group(1)
    if not boundary or ("--" + boundary) not in payload:
        return None
    subtype = part.get_content_subtype()
    if not re.fullmatch(r"[a-z0-9.+-]+", subtype):
        subtype = "mixed"
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\n\n'
    try:
        body = payload.encode("utf-8", "surrogateescape")
        recovered = BytesParser(policy=compat32).parsebytes(head.encode() + body)
    except Exception:
        return None
    return recovered if recovered.is_multipart() else None


def _payload_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    raw_cte = part.get("content-transfer-encoding")
    if raw_cte is not None:
        # compat32 only recognises an exact, lower-cased value; mailers add spaces and tabs
        cte = str(raw_cte).strip().lower()
        if cte != str(raw_cte).lower():
            try:
                if cte == "quoted-printable":
                    return binascii.a2b_qp(data)
                if cte == "base64":
                    chunk = b"".join(data.split())
                    return binascii.a2b_base64(chunk[: len(chunk) - len(chunk) % 4])
            except (binascii.Error, ValueError):
                return data
    return data


def _part_text(
    part: Message, ctype: str, cache: dict[int, str], undeclared: UndeclaredCharset
) -> str:
    key = id(part)
    cached = cache.get(key)
    if cached is not None:
        return cached
    data = _payload_bytes(part)
    text = decode_bytes(data, _own_charset(part, data), undeclared)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    cache[key] = text
    return text


def _safe_filename(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _CONTROL.sub("", name.replace("\t", " ").replace("\r", "").replace("\n", ""))
    name = name.strip().strip(".").strip()
    if len(name) > MAX_FILENAME_LEN:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME_LEN - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_FILENAME_LEN]
    return name


def _param_text(part: Message, param: str, header: str, undeclared: UndeclaredCharset) -> str:
    value = part.get_param(param, header=header)
    if value is None:
        return ""
    if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded latin-1 string)
        charset, _language, text = value
        try:
            raw = str(text).encode("latin-1", "surrogateescape")
        except UnicodeEncodeError:
            raw = str(text).encode("utf-8", "surrogateescape")
        return decode_header_text(decode_bytes(raw, charset or "utf-8"))
    return decode_header_text(str(value).strip('"'), undeclared)


def _first_raw_header(msg: Message, name: str) -> str | None:
    for key, value in msg.raw_items():
        if key.lower() == name:
            return str(value)
    return None


def _attachment(part: Message, undeclared: UndeclaredCharset) -> ParsedAttachment:
    ctype = part.get_content_type()
    filename = _param_text(part, "filename", "content-disposition", undeclared) or _param_text(
        part, "name", "content-type", undeclared
    )
    if ctype.startswith("message/"):
        data = _message_part_bytes(part)
        if not filename and ctype in ("message/rfc822", "message/global"):
            inner = part.get_payload(0) if part.is_multipart() else None
            subject = ""
            if isinstance(inner, Message):
                subject = decode_header_text(_first_raw_header(inner, "subject"), undeclared)
            subject = subject.replace("/", "_").replace("\\", "_")[: MAX_FILENAME_LEN - 4]
            filename = (subject or "message") + ".eml"
    else:
        data = _payload_bytes(part)
    raw_cid = part.get("content-id")
    content_id = normalize_msgid(str(raw_cid)) if raw_cid is not None else None
    disposition = _disposition(part)
    is_image = ctype.startswith("image/")
    inline = disposition != "attachment" and (
        (disposition == "inline" and content_id is not None)
        or (is_image and (content_id is not None or disposition == "inline"))
    )
    return ParsedAttachment(
        filename=_safe_filename(filename),
        content_type=ctype,
        data=data,
        content_id=content_id,
        inline=inline,
    )


def _message_part_bytes(part: Message) -> bytes:
    """The bytes of a message/* part (compat32 parsed it into Message objects)."""
    payload = part.get_payload()
    try:
        if isinstance(payload, list):
            original = getattr(payload[0], _ORIGINAL_BYTES, None) if len(payload) == 1 else None
            if isinstance(original, bytes):
                return original
            chunks = [p.as_bytes() for p in payload if isinstance(p, Message)]
            if part.get_content_type() == "message/delivery-status":
                return b"\n".join(chunk.rstrip(b"\n") + b"\n" for chunk in chunks)
            return b"".join(chunks)
    except Exception:
        # the generator refuses some headers it can read ("embedded header"): write it plainly
        log.debug("re-serialising a message part failed", exc_info=True)
        if isinstance(payload, list):
            return b"".join(_flatten(p) for p in payload if isinstance(p, Message))
    return _payload_bytes(part)


def _flatten(msg: Message, depth: int = 0) -> bytes:
    """A Message back to bytes without the generator's checks and refolding."""
    out = [f"{name}: {value}\n" for name, value in msg.raw_items()]
    out.append("\n")
    payload = msg.get_payload()
    if isinstance(payload, list) and depth < _MAX_DEPTH:
        boundary = msg.get_boundary() or ""
        if msg.preamble is not None:
            out.append(msg.preamble + "\n")
        for sub in payload:
            if isinstance(sub, Message):
                out.append(f"--{boundary}\n")
                out.append(_flatten(sub, depth + 1).decode("utf-8", "surrogateescape") + "\n")
        out.append(f"--{boundary}--\n")
        if msg.epilogue:
            out.append(msg.epilogue)
    elif isinstance(payload, str):
        out.append(payload)
    return "".join(out).encode("utf-8", "surrogateescape")


def _text_to_html(text: str) -> str:
    return "<pre>" + html_lib.escape(text, quote=False) + "</pre>"


# --- the message --------------------------------------------------------------------------------


def _header_block(raw: bytes) -> bytes | None:
    """The header lines (without the blank line after them), None when there is no blank line."""
    end = _header_end(raw)
    return raw[: end - (4 if raw[end - 4 : end] == b"\r\n\r\n" else 2)] if end else None


def _decode_block(data: bytes, undeclared: UndeclaredCharset | None = None) -> str:
    """A block of raw lines (the header, a body without structure) as text: UTF-8, else line by
    line as the message's undeclared text (`undeclared`), else windows-1252."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if undeclared is None:
            text = _cp1252(data)
        else:
            text = "".join(undeclared.decode(line) for line in data.splitlines(keepends=True))
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text.replace("\x00", "")


_JUNK_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]+")
_C0_BYTES = bytes(range(0x09)) + b"\x0b" + bytes(range(0x0E, 0x20)) + b"\x7f"
_C1_UTF8 = re.compile(rb"\xc2[\x80-\x9f]")


def _clean_str(value: str) -> str:
    """No control characters (bar tab, newline, form feed), NULs or lone surrogates: PostgreSQL
    refuses the last two, and the others are binary debris nobody wants to read."""
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
        data = value.encode("utf-8")
    # checked on the bytes: a regex over a long str costs far more than this
    if len(data.translate(None, _C0_BYTES)) != len(data) or (
        b"\xc2" in data and _C1_UTF8.search(data)
    ):
        value = _JUNK_CONTROLS.sub("", value)
    return value


def _snippet(text: str) -> str:
    return " ".join(text[: SNIPPET_LEN * 5].split())[:SNIPPET_LEN]


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse a message. Never raises: what went wrong is in `parse_error`."""
    try:
        raw = bytes(raw)
    except Exception:
        return ParsedMessage(parse_error="not bytes")
    result = ParsedMessage(size=len(raw))
    errors: list[str] = []
    walk = _Walk()
    try:
        msg = _parse_bytes(raw)
        _record_defects(msg, walk)
        if "MissingHeaderBodySeparatorDefect" in walk.defects:
            repaired = _repair_header_block(raw)
            if repaired is not None:
                msg = BytesParser(policy=compat32).parsebytes(repaired)
    except Exception as exc:  # the parser is lenient; this is a last resort
        errors.append(f"unparseable: {type(exc).__name__}: {exc}")
        result.text = _clean_str(_decode_block(raw))
        result.snippet = _snippet(result.text)
        result.parse_error = "; ".join(errors)
        return result

    undeclared = UndeclaredCharset(msg)
    try:
        _fill_headers(result, msg, raw, undeclared)
    except Exception as exc:
        log.debug("header parsing failed", exc_info=True)
        errors.append(f"headers: {type(exc).__name__}: {exc}")
    try:
        _fill_body(result, msg, walk, undeclared)
    except Exception as exc:
        log.debug("body parsing failed", exc_info=True)
        errors.append(f"body: {type(exc).__name__}: {exc}")
    if (
        not result.text
        and result.html is None
        and not result.attachments
        and (errors or walk.defects)
    ):
        # the structure is too broken to find a body: show what is there rather than nothing
        block = _header_block(raw)
        body = raw[len(block) :] if block is not None else b""
        result.text = _clean_str(_decode_block(body, undeclared).strip())
        result.snippet = _snippet(result.text)
    if walk.defects:
        errors.insert(0, "defects: " + ", ".join(walk.defects))
    if walk.truncated:
        errors.append(f"MIME structure truncated at {_MAX_PARTS} parts / depth {_MAX_DEPTH}")
    if errors:
        result.parse_error = "; ".join(errors)
    return result


def _parse_bytes(raw: bytes) -> Message:
    """compat32 parsing, fast. The feed parser walks every body line through several Python calls,
    which is most of its time; well-formed messages are split here with byte searches instead
    (headers still parsed by compat32), anything unusual goes to the feed parser as a whole, so
    broken mail is read exactly as compat32 reads it."""
    if b"\r" not in raw or raw.count(b"\r") == raw.count(b"\r\n"):  # bare CRs: leave to compat32
        try:
            fast = _parse_fast(raw, (), 0, "mixed")
        except (RecursionError, ValueError, LookupError):
            fast = None
        if fast is not None:
            return fast
    return BytesParser(policy=compat32).parsebytes(raw)


_FAST_MAX_DEPTH = 12
# an attached message keeps its bytes as received; re-serialising would re-encode 8-bit headers
_ORIGINAL_BYTES = "_imapdesk_original_bytes"
_PLAIN_CTES = ("7bit", "8bit", "binary")


def _body_text(body: bytes) -> str:
    """The payload string compat32 stores: ASCII with surrogate escapes, line ends as they are."""
    return body.decode("ascii", "surrogateescape")


_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*\r?(?=\n|\Z)")


def _delimiter_lines(body: bytes, needle: bytes) -> list[tuple[int, int, bool]]:
    """(line start, line end before its LF, is the close delimiter) of each delimiter line."""
    found: list[tuple[int, int, bool]] = []
    pos = body.find(needle)
    while pos != -1:
        if pos == 0 or body[pos - 1] == 0x0A:
            tail = _DELIMITER_TAIL.match(body, pos + len(needle))
            if tail is not None:
                found.append((pos, tail.end(), tail.group(1) is not None))
        pos = body.find(needle, pos + 1)
    return found


def _parse_fast(
    raw: bytes, boundaries: tuple[bytes, ...], depth: int, parent_subtype: str
) -> Message | None:
    """One entity (message or body part) parsed like compat32 would; None for anything unusual."""
    if depth > _FAST_MAX_DEPTH:
        return None
    if raw.startswith(b"\n") or raw.startswith(b"\r\n"):
        if depth == 0 or parent_subtype == "digest":
            return None
        part = Message()  # a body part without headers: text/plain
        part.set_payload(_body_text(raw[2 if raw.startswith(b"\r\n") else 1 :]))
        return part
    end = _header_end(raw)
    if end is None:
        return None
    head = BytesParser(policy=compat32).parsebytes(raw[:end], headersonly=True)
    if head.defects or head.get_payload():
        return None
    if depth and parent_subtype == "digest" and "content-type" not in head:
        return None  # defaults to message/rfc822 in a digest
    maintype, _, subtype = head.get_content_type().partition("/")
    body = raw[end:]
    if maintype == "message":
        if subtype not in ("rfc822", "global"):
            return None
        inner = _parse_fast(body, boundaries, depth + 1, "")
        if inner is None:
            return None
        setattr(inner, _ORIGINAL_BYTES, body)
        head.set_payload([inner])
        return head
    if maintype != "multipart":
        head.set_payload(_body_text(body))
        return head
    boundary = head.get_boundary()
    if not boundary:
        return None
    cte = str(head.get("content-transfer-encoding", "8bit")).lower()  # as the feed parser does
    if cte not in _PLAIN_CTES:
        return None
    delimiter = boundary.encode("ascii", "surrogateescape")
    if any(b.startswith(delimiter) or delimiter.startswith(b) for b in boundaries):
        return None  # nested boundaries that could match each other's lines: compat32 decides
    lines = _delimiter_lines(body, b"--" + delimiter)
    close = next((i for i, (_start, _end, closing) in enumerate(lines) if closing), None)
    if not close:  # no start, no close, or the close first
        return None
    parts: list[Message | str] = []
    for opening, following in itertools.pairwise(lines[: close + 1]):
        segment = body[opening[1] + 1 : following[0]]
        if segment.endswith(b"\r\n"):
            segment = segment[:-2]
        elif segment.endswith(b"\n"):
            segment = segment[:-1]
        else:
            return None  # a delimiter straight after the previous one
        sub = _parse_fast(segment, (*boundaries, delimiter), depth + 1, subtype)
        if sub is None:
            return None
        parts.append(sub)
    head.set_payload(parts)
    # preamble and epilogue as compat32 sets them (the generator writes them back out when a
    # message/rfc822 attachment is serialised)
    start = lines[0][0]
    if start:
        preamble = body[:start]
        preamble = preamble[:-2] if preamble.endswith(b"\r\n") else preamble[:-1]
        head.preamble = _body_text(preamble)
    epilogue = _body_text(body[lines[close][1] + 1 :])
    head.epilogue = None if depth and not epilogue else epilogue
    return head


def _header_end(raw: bytes) -> int | None:
    """Where the body starts (after the blank line), None when there is no blank line."""
    crlf = raw.find(b"\r\n\r\n")
    lf = raw.find(b"\n\n")
    if crlf == -1 and lf == -1:
        return None
    if lf != -1 and (crlf == -1 or lf < crlf + 2):
        return lf + 2
    return crlf + 4


_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:")
_KNOWN_HEADER = re.compile(
    rb"^(?:from|to|cc|subject|date|message-id|mime-version|content-type|"
    rb"content-transfer-encoding|received|return-path|reply-to|in-reply-to|references):",
    re.I,
)


def _repair_header_block(raw: bytes) -> bytes | None:
    """A junk line among the headers makes compat32 end the header there and read the rest,
    Subject and Content-Type included, as body. Drop such lines when real headers follow them;
    a message that simply lacks the blank line before its body is left alone."""
    block = _header_block(raw)
    end = len(block) if block is not None else len(raw)
    lines = raw[:end].splitlines(keepends=True)
    kept: list[bytes] = []
    junk = 0
    known_after_junk = 0
    for line in lines:
        if _HEADER_LINE.match(line) or (line[:1] in (b" ", b"\t") and kept):
            kept.append(line)
            if junk and _KNOWN_HEADER.match(line):
                known_after_junk += 1
        elif not kept and line.startswith(b"From "):
            kept.append(line)  # mbox envelope line
        else:
            junk += 1
    if not junk or known_after_junk < 2:
        return None
    return b"".join(kept) + raw[end:]


_FIRST_TOKEN = re.compile(r"[\s;(]")


def _fill_headers(
    result: ParsedMessage, msg: Message, raw: bytes, undeclared: UndeclaredCharset
) -> None:
    headers: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        headers.setdefault(name.lower(), []).append(str(value))

    def first(name: str) -> str | None:
        values = headers.get(name)
        return values[0] if values else None

    block = _header_block(raw)
    if block is not None:
        result.headers = _decode_block(block, undeclared)
    else:
        result.headers = _clean_str(
            "\n".join(
                f"{name}: {_decode_8bit_str(str(value), undeclared)}"
                for name, value in msg.raw_items()
            )
        )

    result.message_id = normalize_msgid(first("message-id") or "")
    in_reply_to = extract_msgids(first("in-reply-to"))
    result.in_reply_to = in_reply_to[-1] if in_reply_to else None
    result.references = extract_msgids(" ".join(headers.get("references", ())))
    result.subject = decode_header_text(first("subject"), undeclared)
    _raw_from, senders = _address_pairs(headers.get("from", []))
    sender_local = ""
    if senders:
        name, addr = senders[0]
        email = _clean_addr(addr)
        sender_local = email.partition("@")[0]
        if "@" in email:
            result.from_email = email
        elif email and not name:
            name = addr  # "From: MAILER-DAEMON", "From: Whomever": a name, not an address
        result.from_name = decode_header_text(name, undeclared)[:MAX_NAME_LEN] or None
    result.to = _parse_addresses(headers.get("to", []), undeclared)
    result.cc = _parse_addresses(headers.get("cc", []), undeclared)
    result.reply_to = _parse_addresses(headers.get("reply-to", []), undeclared)
    result.date = _parse_date(first("date"))

    ctype = msg.get_content_type()
    report_type = ""
    if ctype == "multipart/report":
        report_type = str(msg.get_param("report-type") or "").strip().lower()
    from_daemon = sender_local in ("mailer-daemon", "postmaster")
    auto = _FIRST_TOKEN.split((first("auto-submitted") or "").strip().lower(), 1)[0]
    precedence = (first("precedence") or "").strip().lower()
    return_path = first("return-path")
    null_sender = return_path is not None and "".join(return_path.split()) in ("<>", "")
    result.auto_submitted = bool(
        (auto and auto != "no")
        or null_sender
        or from_daemon
        or ctype == "multipart/report"
        or precedence == "auto_reply"
        or "x-autoreply" in headers
        or "x-autorespond" in headers
    )
    result.is_list = "list-id" in headers or precedence in ("bulk", "list", "junk")
    result.is_bounce = report_type == "delivery-status" or from_daemon


def _fill_body(
    result: ParsedMessage, msg: Message, walk: _Walk, undeclared: UndeclaredCharset
) -> None:
    try:
        _walk_parts([msg], "mixed", False, walk.html_body, walk.text_body, walk, 0)
    finally:
        # whatever was found before an error is still worth keeping
        _render_body(result, walk, undeclared)


def _render_body(result: ParsedMessage, walk: _Walk, undeclared: UndeclaredCharset) -> None:
    cache: dict[int, str] = {}
    sanitized: dict[int, str] = {}

    def clean_html(part: Message) -> str:
        key = id(part)
        if key not in sanitized:
            sanitized[key] = sanitize_html(_part_text(part, "text/html", cache, undeclared))
        return sanitized[key]

    texts: list[str] = []
    for part in walk.text_body:
        ctype = walk.ctypes.get(id(part), "")
        if ctype == "text/html":
            texts.append(_sanitized_html_to_text(clean_html(part)))
        elif ctype == "text/plain":
            texts.append(_part_text(part, ctype, cache, undeclared).strip("\n"))
    result.text = _clean_str("\n\n".join(t for t in texts if t.strip()))

    html_parts = [(part, walk.ctypes.get(id(part), "")) for part in walk.html_body]
    if any(ctype == "text/html" for _part, ctype in html_parts):
        pieces: list[str] = []
        for part, ctype in html_parts:
            if ctype == "text/html":
                piece = clean_html(part)
            elif ctype == "text/plain":
                piece = _part_text(part, ctype, cache, undeclared).strip("\n")
                piece = _text_to_html(piece) if piece.strip() else ""
            else:
                continue
            if piece.strip():
                pieces.append(piece)
        if pieces:
            result.html = _clean_str("\n".join(pieces))
            if not result.text.strip():
                result.text = _clean_str(_sanitized_html_to_text(result.html))
    result.snippet = _snippet(result.text)

    attachments: list[ParsedAttachment] = []
    for part in walk.attachments:
        try:
            attachments.append(_attachment(part, undeclared))
        except Exception as exc:
            log.debug("attachment extraction failed", exc_info=True)
            walk.defects.append(f"attachment: {type(exc).__name__}")
    result.attachments = attachments
    _unpack_tnef(result, undeclared)


def _unpack_tnef(result: ParsedMessage, undeclared: UndeclaredCharset) -> None:
    """A winmail.dat's files become attachments after the others (the original stays, and
    says why when it could not be unpacked); its body becomes the message's where the
    message has none of its own (Outlook's rich text mail sends only a winmail.dat)."""
    for index, container in enumerate(list(result.attachments)):
        if not tnef.is_tnef(container.content_type, container.filename):
            continue
        contents = tnef.unpack(container.data)
        container.unpack_error = contents.error
        for f in contents.files:
            is_image = f.content_type.startswith("image/")
            result.attachments.append(
                ParsedAttachment(
                    filename=_safe_filename(f.filename),
                    content_type=f.content_type,
                    data=f.data,
                    content_id=f.content_id,
                    inline=is_image and f.content_id is not None,
                    unpacked_from=index,
                )
            )
        if result.html is None and contents.html:
            result.html = _clean_str(sanitize_html(_tnef_text(contents.html, undeclared))) or None
        if not result.text.strip():
            if contents.text:
                result.text = _clean_str(_tnef_text(contents.text, undeclared).strip())
            elif result.html:
                result.text = _clean_str(_sanitized_html_to_text(result.html))
            result.snippet = _snippet(result.text)


def _tnef_text(value: str | bytes, undeclared: UndeclaredCharset) -> str:
    text = value if isinstance(value, str) else decode_bytes(value, None, undeclared)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
