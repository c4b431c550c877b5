"""Demo mailboxes and synthetic mail corpora.

`demo_mailboxes()` builds the mail behind `imapdesk demo`: two shared boxes full of the kind of
mail a real helpdesk receives (legacy charsets, Outlook and Gmail HTML, attachments, winmail.dat,
broken threading, auto-replies, bounces, list mail), as the bytes real clients would send.

`synthetic_corpus()` streams many plain, realistic messages in threads for benchmarks and load
tests; it builds bytes from string templates because EmailMessage is far too slow for that.
"""

# The demo speaks Japanese, Chinese, Russian, French...: non-ASCII look-alikes are intended.
# ruff: noqa: RUF001

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
import textwrap
import time
import zlib
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage, Message, MIMEPart
from email.utils import format_datetime, formataddr
from functools import lru_cache
from typing import Literal, TypedDict, Unpack

__all__ = [
    "DemoMailbox",
    "DemoMessage",
    "SyntheticCorpus",
    "demo_mailboxes",
    "synthetic_corpus",
    "synthetic_thread_count",
]

SEEN = "\\Seen"
ANSWERED = "\\Answered"
FLAGGED = "\\Flagged"

SUPPORT_ADDRESS = "support@example.test"
INFO_ADDRESS = "info@example.test"
_OUR_DOMAIN = "example.test"
_MX = "mx.example.test"


@dataclass(frozen=True)
class DemoMessage:
    """One message to APPEND: target folder, RFC 5322 bytes (CRLF), IMAP system flags."""

    folder: str
    raw: bytes
    flags: tuple[str, ...] = ()
    # Arrival time, for the APPEND INTERNALDATE; the Date header is the sender's own clock.
    internal_date: datetime | None = None


@dataclass
class DemoMailbox:
    """A shared mailbox of the demo and its messages in arrival order."""

    name: str
    address: str
    messages: list[DemoMessage] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Small generated files


def _png(width: int, height: int, rows: Sequence[bytes]) -> bytes:
    """A valid RGB PNG; `rows` holds width*3 bytes per row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + row for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _error_dialog_png() -> bytes:
    """A 64x40 'screenshot': grey window, red title bar, a white message box."""
    width, height = 64, 40
    rows = []
    for y in range(height):
        row = bytearray()
        for x in range(width):
            if y < 8:
                pixel = (200, 40, 40)
            elif 14 <= y < 30 and 8 <= x < 56:
                pixel = (255, 255, 255) if not (20 <= y < 23 and 12 <= x < 44) else (60, 60, 60)
            else:
                pixel = (230, 230, 230)
            row += bytes(pixel)
        rows.append(bytes(row))
    return _png(width, height, rows)


def _gateway_png() -> bytes:
    """A 48x24 '502' banner: dark background with three light blocks."""
    width, height = 48, 24
    rows = []
    for y in range(height):
        row = bytearray()
        for x in range(width):
            lit = 6 <= y < 18 and x % 16 in range(3, 13)
            row += bytes((240, 240, 240) if lit else (30, 30, 45))
        rows.append(bytes(row))
    return _png(width, height, rows)


def _pdf(lines: Sequence[str]) -> bytes:
    """A small but valid one-page PDF 1.4 showing `lines` in Helvetica."""
    text_ops = ["BT", "/F1 12 Tf", "72 770 Td", "16 TL"]
    for line in lines:
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        text_ops.append(f"({escaped}) Tj T*")
    text_ops.append("ET")
    stream = "\n".join(text_ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _tnef(attachment_name: str, attachment: bytes) -> bytes:
    """A minimal TNEF stream (winmail.dat) carrying one attachment, as Outlook sends it."""
    out = bytearray(struct.pack("<IH", 0x223E9F78, 0x1A2B))

    def attribute(level: int, attr_id: int, data: bytes) -> None:
        checksum = sum(data) & 0xFFFF
        out.extend(
            struct.pack("<BII", level, attr_id, len(data)) + data + struct.pack("<H", checksum)
        )

    message, attach = 0x01, 0x02
    attribute(message, 0x00089006, struct.pack("<I", 0x00010000))  # attTnefVersion
    attribute(message, 0x00069007, struct.pack("<II", 1252, 0))  # attOemCodepage
    attribute(message, 0x00078008, b"IPM.Microsoft Mail.Note\x00")  # attMessageClass
    attribute(attach, 0x00069002, struct.pack("<HIHHI", 1, 0xFFFFFFFF, 0, 0, 0))  # RendData
    attribute(attach, 0x00018010, attachment_name.encode("cp1252") + b"\x00")  # attAttachTitle
    attribute(attach, 0x0006800F, attachment)  # attAttachData
    return bytes(out)


def _users_csv() -> bytes:
    first = ["Anna", "Ben", "Clara", "David", "Eva", "Felix", "Greta", "Henrik", "Ines", "Jonas"]
    last = ["Koch", "Lang", "Meyer", "Neumann", "Otto", "Peters", "Richter", "Schulz"]
    lines = ["email,first_name,last_name,role,team"]
    for n in range(1, 49):
        given, family = first[n % len(first)], last[n % len(last)]
        email = f"{given.lower()}.{family.lower()}{n}@example.de"
        if n == 37:
            email = f"{given.lower()}.{family.lower()}{n}@example,de"  # the row that breaks
        role = "admin" if n % 12 == 0 else "agent"
        lines.append(f"{email},{given},{family},{role},{'Support' if n % 3 else 'Billing'}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


# --------------------------------------------------------------------------------------------
# Building demo messages


def _tz(hours: float) -> timezone:
    return timezone(timedelta(hours=hours))


@dataclass(frozen=True)
class _Person:
    name: str
    address: str
    tz: timezone = UTC
    # Extra headers the person's mail client adds (X-Mailer, User-Agent, ...).
    client: tuple[tuple[str, str], ...] = ()
    # Legacy clients write the display name, the subject and the text in their own charset,
    # not UTF-8.
    charset: str | None = None

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]


@dataclass(frozen=True)
class _Mail:
    """What a reply needs to know about the message it answers."""

    message_id: str
    references: tuple[str, ...]
    subject: str
    author: _Person
    date: datetime
    text: str


@dataclass(frozen=True)
class _Attachment:
    """A file attached to a message, e.g. ("invoice.pdf", "application/pdf", data)."""

    filename: str
    content_type: str
    data: bytes


class _Options(TypedDict, total=False):
    """What else `_DemoBuilder.write` may be told about a message; see there."""

    quote: Literal["attribution", "outlook"] | None
    subject_charset: str | None
    subject_q: bool
    thread_headers: bool
    extra: Sequence[tuple[str, str]]
    charset: str | None
    cte: str | None
    html: str | None
    attachments: Sequence[_Attachment]


def _encoded_words(text: str, charset: str, *, q: bool = False) -> str:
    """RFC 2047 encoded words in `charset`, as many characters per word as fit, folded.

    Each word is encoded on its own, so stateful charsets (ISO-2022-JP) return to ASCII in
    every word, and no character is split between two words.
    """

    def encode(chunk: str) -> str:
        data = chunk.encode(charset)
        if q:
            encoded = "".join(
                chr(b) if b < 128 and chr(b).isalnum() else "_" if b == 32 else f"={b:02X}"
                for b in data
            )
            return f"=?{charset}?Q?{encoded}?="
        return f"=?{charset}?B?{base64.b64encode(data).decode('ascii')}?="

    words: list[str] = []
    current = ""
    for char in text:
        if current and len(encode(current + char)) > 66:
            words.append(encode(current))
            current = char
        else:
            current += char
    if current:
        words.append(encode(current))
    return "\n ".join(words)


def _digest(*parts: object, size: int = 16) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=size).hexdigest()


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _attribution(mail: _Mail) -> str:
    local = mail.date.astimezone(mail.author.tz)
    when = (
        f"{_DAYS[local.weekday()]}, {local.day} {_MONTHS[local.month - 1]} {local.year}"
        f" at {local:%H:%M}"
    )
    return f"On {when}, {mail.author.name} <{mail.author.address}> wrote:"


def _quoted(mail: _Mail, *, outlook: bool = False) -> str:
    if outlook:
        local = mail.date.astimezone(mail.author.tz)
        header = (
            "________________________________\n"
            f"From: {mail.author.name} <{mail.author.address}>\n"
            f"Sent: {_DAYS[local.weekday()]}, {local.day} {_MONTHS[local.month - 1]}"
            f" {local.year} {local:%H:%M}\n"
            f"Subject: {mail.subject}\n\n"
        )
        return header + mail.text
    lines = mail.text.rstrip("\n").split("\n")
    return _attribution(mail) + "\n" + "\n".join(("> " + ln).rstrip() for ln in lines) + "\n"


class _DemoBuilder:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self._boxes: dict[str, list[tuple[datetime, int, DemoMessage]]] = {
            SUPPORT_ADDRESS: [],
            INFO_ADDRESS: [],
        }
        self._serial = 0

    # ---- time

    def ago(self, hours: float) -> datetime:
        """A moment about `hours` before now."""
        # A few minutes of deterministic jitter (less than the smallest gap between two
        # messages of a conversation, 30 minutes) so that times do not look machine-made.
        jitter = timedelta(minutes=int(hours * 37) % 23, seconds=int(hours * 97) % 60)
        return (self.now - timedelta(hours=hours) - jitter).replace(microsecond=0)

    # ---- message construction

    def compose(
        self,
        author: _Person,
        to: Sequence[str],
        subject: str,
        when: datetime,
        *,
        parent: _Mail | None = None,
        cc: Sequence[str] = (),
        subject_charset: str | None = None,
        subject_q: bool = False,
        thread_headers: bool = True,
        extra: Sequence[tuple[str, str]] = (),
        text: str = "",
    ) -> tuple[EmailMessage, _Mail]:
        self._serial += 1
        message_id = f"<{_digest(author.address, subject, when.isoformat(), self._serial)}"
        message_id += f"@{author.domain}>"
        msg = EmailMessage()
        msg["Date"] = format_datetime(when.astimezone(author.tz))
        if author.charset:
            msg.set_raw(
                "From", _encoded_words(author.name, author.charset) + f" <{author.address}>"
            )
        else:
            msg["From"] = formataddr((author.name, author.address))
        msg["To"] = ", ".join(to)
        if cc:
            msg["Cc"] = ", ".join(cc)
        subject_charset = subject_charset or author.charset
        if subject_charset:
            msg.set_raw("Subject", _encoded_words(subject, subject_charset, q=subject_q))
        else:
            msg["Subject"] = subject
        msg["Message-ID"] = message_id
        references: tuple[str, ...] = ()
        if parent is not None:
            references = (*parent.references, parent.message_id)
            if thread_headers:
                msg["In-Reply-To"] = parent.message_id
                msg["References"] = " ".join(references)
        for name, value in (*author.client, *extra):
            if value.startswith("=?"):
                msg.set_raw(name, value)  # already encoded in the sender's charset
            else:
                msg[name] = value
        return msg, _Mail(message_id, references, subject, author, when, text)

    def write(
        self,
        author: _Person,
        to: Sequence[str],
        subject: str,
        when: datetime,
        text: str,
        *,
        parent: _Mail | None = None,
        quote: Literal["attribution", "outlook"] | None = "attribution",
        cc: Sequence[str] = (),
        subject_charset: str | None = None,
        subject_q: bool = False,
        thread_headers: bool = True,
        extra: Sequence[tuple[str, str]] = (),
        charset: str | None = None,
        cte: str | None = None,
        html: str | None = None,
        attachments: Sequence[_Attachment] = (),
    ) -> tuple[EmailMessage, _Mail]:
        """A composed message with `text`, in a reply (unless `quote` is None) followed by a
        blank line and the parent quoted; then an HTML alternative and attachments, if any.

        The text parts are in `charset`, by default the author's own or UTF-8."""
        msg, mail = self.compose(
            author,
            to,
            subject,
            when,
            parent=parent,
            cc=cc,
            subject_charset=subject_charset,
            subject_q=subject_q,
            thread_headers=thread_headers,
            extra=extra,
            text=text,
        )
        charset = charset or author.charset or "utf-8"
        body = text
        if parent is not None and quote is not None:
            body += "\n" + _quoted(parent, outlook=quote == "outlook")
        msg.set_content(body, charset=charset, cte=cte)
        if html is not None:
            msg.add_alternative(html, subtype="html", charset=charset, cte="quoted-printable")
        for attachment in attachments:
            maintype, subtype = attachment.content_type.split("/")
            msg.add_attachment(attachment.data, maintype, subtype, filename=attachment.filename)
        return msg, mail

    def receive(
        self,
        box: str,
        author: _Person,
        subject: str,
        when: datetime,
        text: str,
        *,
        to: Sequence[str] | None = None,
        cc: Sequence[str] = (),
        parent: _Mail | None = None,
        flags: tuple[str, ...] = (),
        envelope_from: str | None = None,
        **options: Unpack[_Options],
    ) -> _Mail:
        """A message from `author` to `box` (or to `to`), delivered to `box` and to each of
        our boxes in `cc`."""
        msg, mail = self.write(
            author,
            [box] if to is None else to,
            subject,
            when,
            text,
            parent=parent,
            cc=cc,
            **options,
        )
        raw = self.serialize(msg)
        for address in (box, *cc):
            if address in self._boxes:
                self.deliver(address, raw, when, flags, envelope_from=envelope_from)
        return mail

    def answer(
        self, us: _Person, parent: _Mail, when: datetime, text: str, **options: Unpack[_Options]
    ) -> _Mail:
        """Our reply from the shared address `us` to the author of `parent`, filed in Sent."""
        msg, mail = self.write(
            us,
            [parent.author.address],
            _reply_subject(parent.subject),
            when,
            text,
            parent=parent,
            **options,
        )
        self.file_sent(us.address, self.serialize(msg), when)
        return mail

    def serialize(self, msg: EmailMessage) -> bytes:
        """CRLF bytes with boundaries derived from the Message-ID, so output is reproducible."""
        seed = _digest(msg["Message-ID"], size=6)
        counter = iter(range(1000))

        def prepare(part: Message, root: bool) -> None:
            if not root:
                del part["MIME-Version"]  # EmailMessage adds it to subparts; clients do not
            if part.get_content_maintype() == "multipart":
                part.set_boundary(f"----=_Part_{next(counter)}_{seed}")
                for sub in part.get_payload():
                    if isinstance(sub, Message):
                        prepare(sub, False)

        prepare(msg, True)
        return msg.as_bytes(policy=email_policy.SMTP)

    # ---- filing

    def _file(self, box: str, message: DemoMessage, when: datetime) -> None:
        self._serial += 1
        self._boxes[box].append((when, self._serial, message))

    def deliver(
        self,
        box: str,
        raw: bytes,
        when: datetime,
        flags: tuple[str, ...] = (),
        *,
        envelope_from: str | None = None,
        relay: str | None = None,
    ) -> None:
        """File an incoming message in INBOX with the trace headers our MTA prepends.

        `envelope_from` defaults to the From address; "" is the null sender of bounces and
        auto-replies.
        """
        arrived = when + timedelta(seconds=7)
        parsed = message_from_bytes(raw, policy=email_policy.compat32)
        from_address = _address_of(str(parsed["From"]))
        sender = from_address if envelope_from is None else envelope_from
        host = relay or "mail." + from_address.rsplit("@", 1)[-1].lower()
        queue_id = _digest(parsed["Message-ID"], box, size=5).upper()
        octet = int(queue_id[:2], 16) % 200 + 20
        trace = (
            f"Return-Path: <{sender}>\r\n"
            f"Delivered-To: {box}\r\n"
            f"Received: from {host} ({host} [192.0.2.{octet}])\r\n"
            f"\tby {_MX} (Postfix) with ESMTPS id {queue_id}\r\n"
            f"\tfor <{box}>; {format_datetime(arrived)}\r\n"
        ).encode("ascii")
        self._file(box, DemoMessage("INBOX", trace + raw, flags, arrived), arrived)

    def file_sent(self, box: str, raw: bytes, when: datetime) -> None:
        """A reply sent from the shared address, its copy appended to Sent."""
        self._file(box, DemoMessage("Sent", raw, (SEEN,), when), when)

    def last_filed(self, box: str) -> bytes:
        """The bytes of the message filed last in `box` (as it is in the folder)."""
        return self._boxes[box][-1][2].raw

    def mailboxes(self) -> list[DemoMailbox]:
        result = []
        for name, address in (("support", SUPPORT_ADDRESS), ("info", INFO_ADDRESS)):
            ordered = sorted(self._boxes[address], key=lambda item: (item[0], item[1]))
            result.append(DemoMailbox(name, address, [message for _, _, message in ordered]))
        return result


def _address_of(header: str) -> str:
    start, end = header.rfind("<"), header.rfind(">")
    return header[start + 1 : end] if start != -1 and end > start else header.strip()


def _reply_subject(subject: str) -> str:
    return subject if subject.lower().startswith("re:") else "Re: " + subject


# ---- people

# Thunderbird 115 sends a bare "Mozilla Thunderbird"; older versions sent the full UA string.
_THUNDERBIRD = (("User-Agent", "Mozilla Thunderbird"),)
_SUPPORT = _Person("Example Support", SUPPORT_ADDRESS, _tz(1), _THUNDERBIRD)
_INFO = _Person("Example Team", INFO_ADDRESS, _tz(1), _THUNDERBIRD)
_OUTLOOK = (("X-Mailer", "Microsoft Outlook 16.0"), ("Content-Language", "en-us"))
_GMAIL: tuple[tuple[str, str], ...] = ()
_APPLE_IPHONE = (("X-Mailer", "iPhone Mail (21F90)"),)


def _outlook(topic: str, key: str) -> tuple[tuple[str, str], ...]:
    index = base64.b64encode(bytes.fromhex(_digest(key, size=22))).decode("ascii")
    return (("Thread-Topic", topic), ("Thread-Index", index))


def _exchange(
    b: _DemoBuilder,
    us: _Person,
    customer: _Person,
    subject: str,
    turns: Sequence[tuple[float, str]],
    **options: Unpack[_Options],
) -> _Mail:
    """A conversation that `customer` opens and then takes turns in with `us`, one of our shared
    addresses; `turns` holds (hours ago, text). We answered the customer's messages that have a
    turn after them: they are seen and answered. Returns the last message."""
    mail: _Mail | None = None
    for index, (hours, text) in enumerate(turns):
        when = b.ago(hours)
        if index % 2:
            assert mail is not None
            mail = b.answer(us, mail, when, text, **options)
        else:
            flags = (SEEN, ANSWERED) if index + 1 < len(turns) else ()
            subj = subject if mail is None else _reply_subject(mail.subject)
            mail = b.receive(
                us.address, customer, subj, when, text, parent=mail, flags=flags, **options
            )
    assert mail is not None
    return mail


# ---- the conversations of support@


def _long_thread(b: _DemoBuilder) -> None:
    olivia = _Person("Olivia Bennett", "olivia.bennett@example.com", _tz(-5), _THUNDERBIRD)
    # Hours after the first message, and the text; Olivia writes first, then we take turns.
    turns: list[tuple[float, str]] = [
        (
            0,
            "Hi,\n\nsince we upgraded the desktop app to 4.2 yesterday, synchronisation stops "
            'after a few\nminutes with "Sync error E-1107". Restarting the app helps for a '
            "while, then it\nhappens again. This affects all five people in our office.\n\n"
            "We are on Windows 11, company network behind a proxy.\n\nThanks,\nOlivia\n",
        ),
        (
            1.5,
            "Hi Olivia,\n\nthanks for the report, and sorry for the trouble. E-1107 means the "
            "app lost its\nconnection to the sync service. Could you send us the log file from\n"
            "%APPDATA%\\ExampleApp\\logs\\sync.log after the next failure?\n\n"
            "Best regards,\nAlex\nExample Support\n",
        ),
        (
            3,
            "Hi Alex,\n\nthe log is 40 MB, too big to attach. Here are the lines around the error:"
            "\n\n  12:41:07 WARN  proxy returned 407 for /v2/sync/stream\n"
            "  12:41:07 ERROR E-1107 stream closed\n\nDoes that help?\n\nOlivia\n",
        ),
        (
            4,
            "Hi Olivia,\n\nit does: the proxy asks for authentication (407) on the streaming "
            "endpoint. 4.2\nmoved sync to a long-lived stream. Could you ask your IT whether the "
            "proxy allows\nconnections to sync.example.test on port 443 without authentication?\n\n"
            "Best regards,\nAlex\n",
        ),
        (
            20,
            "Hi Alex,\n\nIT added an exception for sync.example.test. It worked all morning, but "
            "now two\ncolleagues get the error again. Mine is fine.\n\nOlivia\n",
        ),
        (
            21,
            "Hi Olivia,\n\ngood progress. For the two colleagues: are they on laptops that switch "
            "between\nWi-Fi and the office LAN? The app keeps the old route for a while after a\n"
            "network change.\n\nAlex\n",
        ),
        (
            22.5,
            "Yes, both are on laptops and they move between meeting rooms all the time.\n\n"
            "Olivia\n",
        ),
        (
            23,
            'Thanks. Please have them try Settings > Network > "Reconnect on network change".'
            "\nIt is off by default in 4.2 (it was on in 4.1, which is a mistake on our side).\n\n"
            "Alex\n",
        ),
        (
            26,
            "That option fixed it for one of them. The other one still sees E-1107, about\n"
            "once an hour.\n\nOlivia\n",
        ),
        (
            27,
            "Could you send us that colleague's sync.log, zipped? It should be small enough "
            "then.\nYou can also upload it at https://files.example.test/upload/ref-7731 if "
            "email\nrefuses it.\n\nAlex\n",
        ),
        (
            44,
            "Uploaded it this morning under ref-7731.\n\nOlivia\n",
        ),
        (
            46,
            "Thank you. The log shows his laptop still uses an old proxy PAC file cached by\n"
            'Windows. Running "ipconfig /flushdns" and restarting the app should clear it.\n'
            "Our developers are also making 4.2.1 retry the stream instead of giving up.\n\nAlex\n",
        ),
        (
            49,
            "Flushing helped, no error since. When is 4.2.1 out? We would like to roll it out\n"
            "before the end of the month.\n\nOlivia\n",
        ),
        (
            50,
            "4.2.1 is planned for next Tuesday. I will write to you as soon as it is\n"
            "published.\n\nAlex\n",
        ),
        (
            118,
            "Hi Alex,\n\njust checking: is 4.2.1 still on track? One colleague saw E-1107 again\n"
            "today after a Windows update.\n\nThanks,\nOlivia\n",
        ),
    ]
    subject = "Sync keeps failing after upgrading to 4.2"
    _exchange(b, _SUPPORT, olivia, subject, [(140 - after, text) for after, text in turns])


JAPANESE_SUBJECT = "請求書の再発行について"
JAPANESE_NAME = "山田 太郎"


def _japanese(b: _DemoBuilder) -> None:
    taro = _Person(
        JAPANESE_NAME,
        "taro.yamada@example.jp",
        _tz(9),
        (("X-Mailer", "Becky! ver. 2.81.04"),),
        charset="ISO-2022-JP",
    )
    text = (
        "Example サポート御中\n\n"
        "いつもお世話になっております。\n"
        "株式会社サンプルの山田です。\n\n"
        "先月分（請求書番号 INV-2024-0815）の請求書について、\n"
        "宛名を「株式会社サンプル 経理部」に変更のうえ、\n"
        "再発行していただくことは可能でしょうか。\n\n"
        "お手数をおかけしますが、よろしくお願いいたします。\n\n"
        "--\n山田 太郎 (Taro Yamada)\n株式会社サンプル 経理部\nTEL: 03-0000-0000\n"
    )
    first = b.receive(
        SUPPORT_ADDRESS, taro, JAPANESE_SUBJECT, b.ago(95), text, flags=(SEEN, ANSWERED), cte="7bit"
    )

    reply = (
        "山田様\n\nお問い合わせありがとうございます。Example サポートの佐藤です。\n\n"
        "宛名を変更した請求書を再発行いたしました。\n"
        "管理画面の「請求」ページからダウンロードいただけます。\n\n"
        "よろしくお願いいたします。\n"
    )
    ours = b.answer(_SUPPORT, first, b.ago(90), reply, cte="base64")

    thanks = (
        "佐藤様\n\n早速のご対応ありがとうございます。\n"
        "ダウンロードできました。\n\n"
        "もう一点、来月から支払方法を銀行振込に変更したいのですが、\n"
        "手続きを教えていただけますでしょうか。\n\n山田\n"
    )
    b.receive(
        SUPPORT_ADDRESS,
        taro,
        "Re: " + JAPANESE_SUBJECT,
        b.ago(70),
        thanks,
        parent=ours,
        quote=None,
        cte="7bit",
    )


CHINESE_SUBJECT = "无法登录账户，请帮忙处理"


def _chinese(b: _DemoBuilder) -> None:
    wang = _Person(
        "王伟",
        "wang.wei@example.cn",
        _tz(8),
        (("X-Mailer", "Foxmail 7.2.25.228[cn]"),),
        charset="GB2312",
    )
    text = (
        "您好，\n\n"
        "我从昨天开始无法登录我们公司的账户。每次输入密码后页面都显示“用户名或密码错误”，\n"
        "但我确定密码是正确的。我也尝试了重置密码，但是一直收不到重置邮件。\n\n"
        "账户邮箱：wang.wei@example.cn\n"
        "公司名称：示例科技有限公司\n\n"
        "请尽快帮忙处理，谢谢！\n\n王伟\n"
    )
    b.receive(SUPPORT_ADDRESS, wang, CHINESE_SUBJECT, b.ago(30), text, cte="base64")


GERMAN_SUBJECT = "Rückfrage zur Bestellung 55821: Lieferadresse ändern"


def _german(b: _DemoBuilder) -> None:
    juergen = _Person(
        "Jürgen Müller",
        "j.mueller@example.de",
        _tz(1),
        (("X-Mailer", "Claws Mail 3.17.8 (GTK+ 2.24.33; x86_64-pc-linux-gnu)"),),
        charset="ISO-8859-1",
    )
    text = (
        "Sehr geehrte Damen und Herren,\n\n"
        "zu unserer Bestellung 55821 vom letzten Montag hätte ich eine Rückfrage:\n"
        "Die Lieferung soll bitte nicht an unsere Zentrale gehen, sondern an\n\n"
        "  Müller & Söhne GmbH, Lager Süd\n"
        "  Große Straße 12\n"
        "  80331 München\n\n"
        "Ist eine Änderung der Lieferadresse jetzt noch möglich? Falls für die Umstellung\n"
        "zusätzliche Gebühren anfallen, geben Sie mir bitte kurz Bescheid.\n\n"
        "Mit freundlichen Grüßen\n"
        "Jürgen Müller\n"
        "Einkauf, Müller & Söhne GmbH\n"
    )
    b.receive(
        SUPPORT_ADDRESS,
        juergen,
        GERMAN_SUBJECT,
        b.ago(52),
        text,
        subject_q=True,
        cte="quoted-printable",
    )


FRENCH_SUBJECT = "Problème de facturation – TVA intracommunautaire"


def _french(b: _DemoBuilder) -> None:
    amelie = _Person(
        "Amélie Laurent",
        "amelie.laurent@example.fr",
        _tz(1),
        (("X-Mailer", "Microsoft Outlook 16.0"), ("Content-Language", "fr")),
        charset="windows-1252",
    )
    text = (
        "Bonjour,\n\n"
        "Notre dernière facture (n° 2024-0917) d’un montant de 1 250,00 € inclut la TVA\n"
        "française, alors que nous vous avions communiqué notre numéro de TVA\n"
        "intracommunautaire – FR 00 123456789 – lors de l’inscription.\n\n"
        "Pourriez-vous émettre une facture rectificative sans TVA ? Notre service\n"
        "comptable en a besoin avant la clôture du trimestre.\n\n"
        "Je vous remercie par avance de votre retour.\n\n"
        "Bien cordialement,\n"
        "Amélie Laurent\n"
        "Responsable administrative – Œuvres & Cie\n"
    )
    b.receive(
        SUPPORT_ADDRESS,
        amelie,
        FRENCH_SUBJECT,
        b.ago(75),
        text,
        subject_q=True,
        extra=_outlook(_encoded_words(FRENCH_SUBJECT, "windows-1252", q=True), "amelie"),
        cte="quoted-printable",
    )


EMOJI_SUBJECT = "Love the new dashboard 🎉 one quick question"


def _emoji(b: _DemoBuilder) -> None:
    priya = _Person("Priya Sharma", "priya.sharma@example.net", _tz(5.5), _APPLE_IPHONE)
    text = (
        "Hey team 👋\n\n"
        "Just wanted to say the new dashboard is fantastic 😍 — the dark charts look great!\n\n"
        'One question: can I pin the "Open tickets" widget to the top? It keeps moving\n'
        "below the graphs on my phone 📱.\n\n"
        "Thanks a lot 🙏\nPriya\n\nSent from my iPhone\n"
    )
    b.receive(
        SUPPORT_ADDRESS,
        priya,
        EMOJI_SUBJECT,
        b.ago(6),
        text,
        subject_charset="UTF-8",
        cte="quoted-printable",
    )


RUSSIAN_SUBJECT = "Не приходят уведомления на почту"


def _russian(b: _DemoBuilder) -> None:
    dmitry = _Person(
        "Дмитрий Смирнов",
        "d.smirnov@example.org",
        _tz(3),
        (("X-Mailer", "The Bat! (v9.1.18) Professional"),),
        charset="KOI8-R",
    )
    text = (
        "Здравствуйте!\n\n"
        "С прошлой пятницы нам не приходят уведомления о новых заявках на почту.\n"
        'В настройках всё включено, папку "Спам" тоже проверили - писем нет.\n\n'
        "Подскажите, пожалуйста, в чём может быть проблема?\n\n"
        "С уважением,\nДмитрий Смирнов\n"
    )
    b.receive(SUPPORT_ADDRESS, dmitry, RUSSIAN_SUBJECT, b.ago(41), text, cte="8bit")


_OUTLOOK_HTML = """<html xmlns:v="urn:schemas-microsoft-com:vml" \
xmlns:o="urn:schemas-microsoft-com:office:office" \
xmlns:w="urn:schemas-microsoft-com:office:word" \
xmlns:m="http://schemas.microsoft.com/office/2004/12/omml" \
xmlns="http://www.w3.org/TR/REC-html40">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=us-ascii">
<meta name="Generator" content="Microsoft Word 15 (filtered medium)">
<style><!--
/* Font Definitions */
@font-face
	{font-family:Calibri;
	panose-1:2 15 5 2 2 2 4 3 2 4;}
/* Style Definitions */
p.MsoNormal, li.MsoNormal, div.MsoNormal
	{margin:0cm;
	font-size:11.0pt;
	font-family:"Calibri",sans-serif;}
span.EmailStyle17
	{mso-style-type:personal-compose;
	font-family:"Calibri",sans-serif;
	color:windowtext;}
@page WordSection1
	{size:612.0pt 792.0pt;
	margin:72.0pt 72.0pt 72.0pt 72.0pt;}
div.WordSection1
	{page:WordSection1;}
--></style><!--[if gte mso 9]><xml>
<o:shapedefaults v:ext="edit" spidmax="1026" />
</xml><![endif]-->
</head>
<body lang="EN-US" link="#0563C1" vlink="#954F72" style="word-wrap:break-word">
<div class="WordSection1">
<p class="MsoNormal">Hello,<o:p></o:p></p>
<p class="MsoNormal"><o:p>&nbsp;</o:p></p>
<p class="MsoNormal">When I export the <b>Monthly tickets</b> report to Excel, the download \
starts but the file is empty (0 KB). CSV export works fine.<o:p></o:p></p>
<p class="MsoNormal"><o:p>&nbsp;</o:p></p>
<p class="MsoNormal">Steps:<o:p></o:p></p>
<ol style="margin-top:0cm" start="1" type="1">
<li class="MsoNormal" style="margin-left:0cm">Reports &gt; Monthly tickets<o:p></o:p></li>
<li class="MsoNormal" style="margin-left:0cm">Export &gt; Excel (.xlsx)<o:p></o:p></li>
</ol>
<p class="MsoNormal"><o:p>&nbsp;</o:p></p>
<p class="MsoNormal">We use Edge 124 on Windows 10. Can you help?<o:p></o:p></p>
<p class="MsoNormal"><o:p>&nbsp;</o:p></p>
<p class="MsoNormal">Kind regards,<o:p></o:p></p>
<p class="MsoNormal"><b><span style="color:#1F3864">Michael O&#8217;Brien</span></b>\
<o:p></o:p></p>
<p class="MsoNormal"><span style="font-size:9.0pt;color:gray">IT Operations | \
Contoso Example Ltd.<o:p></o:p></span></p>
</div>
</body>
</html>
"""


def _outlook_html(b: _DemoBuilder) -> None:
    michael = _Person("Michael O'Brien", "michael.obrien@example.com", _tz(0), _OUTLOOK)
    subject = "Cannot export reports to Excel"
    text = (
        "Hello,\n\n"
        "When I export the Monthly tickets report to Excel, the download starts but the\n"
        "file is empty (0 KB). CSV export works fine.\n\n"
        "Steps:\n\n"
        "  1.  Reports > Monthly tickets\n"
        "  2.  Export > Excel (.xlsx)\n\n"
        "We use Edge 124 on Windows 10. Can you help?\n\n"
        "Kind regards,\n"
        "Michael O'Brien\n"
        "IT Operations | Contoso Example Ltd.\n"
    )
    b.receive(
        SUPPORT_ADDRESS,
        michael,
        subject,
        b.ago(28),
        text,
        extra=(*_outlook(subject, "obrien"), ("X-MS-Has-Attach", ""), ("X-MS-TNEF-Correlator", "")),
        charset="us-ascii",
        cte="quoted-printable",
        html=_OUTLOOK_HTML,
    )


INLINE_IMAGE_CID = "ii_lx3k9q0b0"


def _gmail_inline_image(b: _DemoBuilder) -> None:
    sofia = _Person("Sofia Rossi", "sofia.rossi@example.net", _tz(1), _GMAIL)
    subject = "Error when saving an automation rule"
    text = (
        "Hi,\n\n"
        'when I try to save a new automation rule ("Tag VIP customers") I get the error\n'
        "below. Screenshot attached.\n\n"
        "[image: image.png]\n\n"
        "It happens in Chrome and Firefox.\n\n"
        "Thanks,\nSofia\n"
    )
    html = (
        '<div dir="ltr"><div>Hi,</div><div><br></div>'
        "<div>when I try to save a new automation rule (&quot;Tag VIP customers&quot;) I get "
        "the error below. Screenshot attached.</div><div><br></div>"
        f'<div><img src="cid:{INLINE_IMAGE_CID}" alt="image.png" width="320" height="200">'
        "<br></div><div><br></div><div>It happens in Chrome and Firefox.</div>"
        "<div><br></div><div>Thanks,</div><div>Sofia</div></div>\n"
    )
    when = b.ago(17)
    msg, _ = b.write(sofia, [SUPPORT_ADDRESS], subject, when, text, html=html)
    html_part = msg.get_body(("html",))
    assert html_part is not None
    html_part.add_related(
        _error_dialog_png(),
        "image",
        "png",
        cid=f"<{INLINE_IMAGE_CID}>",
        filename="image.png",
        disposition="inline",
        headers=[f"X-Attachment-Id: {INLINE_IMAGE_CID}"],
    )
    b.deliver(SUPPORT_ADDRESS, b.serialize(msg), when)


INVOICE_PDF = "invoice-1042.pdf"


def _invoice_pdf(b: _DemoBuilder) -> None:
    daniel = _Person("Daniel Kim", "daniel.kim@example.com", _tz(-8), _GMAIL)
    subject = "Question about invoice #1042 - charged twice?"
    text = (
        "Hello,\n\n"
        "our credit card statement shows two charges of $249.00 on the same day, but we\n"
        "only received one invoice (attached). Could you check whether we were charged\n"
        "twice and refund the second charge?\n\n"
        "Account: Kim Design Studio\n\n"
        "Best,\nDaniel Kim\n"
    )
    pdf = _pdf(
        [
            "Example Inc. - INVOICE 1042",
            "Bill to: Kim Design Studio",
            "Plan: Team (annual)    USD 249.00",
            "Paid by card ending 4242",
        ]
    )
    attachment = _Attachment(INVOICE_PDF, "application/pdf", pdf)
    b.receive(SUPPORT_ADDRESS, daniel, subject, b.ago(46), text, attachments=[attachment])


def _csv_import(b: _DemoBuilder) -> None:
    hannah = _Person("Hannah Fischer", "hannah.fischer@example.de", _tz(1), _THUNDERBIRD)
    subject = "Bulk user import stops at row 37"
    text = (
        "Hello support team,\n\n"
        "I am trying to import our agents with the attached CSV. The import stops with\n"
        '"Invalid row 37" and imports nothing at all. Is there a way to skip invalid\n'
        "rows, or at least see what is wrong with that row?\n\n"
        "Regards,\nHannah Fischer\n"
    )
    attachment = _Attachment("users-import.csv", "text/csv", _users_csv())
    b.receive(SUPPORT_ADDRESS, hannah, subject, b.ago(66), text, attachments=[attachment])


def _winmail(b: _DemoBuilder) -> None:
    robert = _Person("Robert Clarke", "robert.clarke@example.org", _tz(0), _OUTLOOK)
    subject = "Contract renewal - signed order form"
    text = (
        "Good afternoon,\n\n"
        "please find attached the signed order form for our renewal (3 years, 25 seats).\n"
        "Let me know if you need anything else from us.\n\n"
        "Kind regards,\n\nRobert Clarke\nHead of Procurement\n"
    )
    order_form = _pdf(["Order form - renewal", "25 seats, 36 months", "Signed: R. Clarke"])
    b.receive(
        SUPPORT_ADDRESS,
        robert,
        subject,
        b.ago(100),
        text,
        flags=(SEEN,),
        extra=(*_outlook(subject, "clarke"), ("X-MS-Has-Attach", "yes")),
        charset="us-ascii",
        attachments=[
            _Attachment(
                "winmail.dat", "application/ms-tnef", _tnef("Signed order form.pdf", order_form)
            )
        ],
    )


OUTLOOK_STRIPPED_SUBJECT = "Password reset link expired"


def _outlook_stripped(b: _DemoBuilder) -> None:
    james = _Person("James Wilson", "james.wilson@example.com", _tz(-5), _OUTLOOK)
    subject = OUTLOOK_STRIPPED_SUBJECT
    text = (
        "Hi,\n\nthe password reset link you send expires before I can click it. I requested\n"
        'three of them this morning and every one says "link expired".\n\nJames\n'
    )
    first = b.receive(
        SUPPORT_ADDRESS,
        james,
        subject,
        b.ago(60),
        text,
        flags=(SEEN, ANSWERED),
        extra=_outlook(subject, "wilson"),
    )

    reply = (
        "Hi James,\n\nreset links are valid for 30 minutes. If your company mail filter\n"
        "opens links to scan them, it uses up the link before you do. I have sent you a\n"
        "new link that can only be used after you log in with the code 482 913.\n\n"
        "Best regards,\nSam\nExample Support\n"
    )
    ours = b.answer(_SUPPORT, first, b.ago(58), reply)

    # Outlook answered without In-Reply-To/References but kept "RE: " and the Thread-Topic.
    again = (
        "Hi Sam,\n\nthat worked, thank you! Our IT says the scanner is Safe Links; maybe worth\n"
        "adding to your help pages.\n\nJames\n"
    )
    b.receive(
        SUPPORT_ADDRESS,
        james,
        "RE: " + subject,
        b.ago(35),
        again,
        parent=ours,
        quote="outlook",
        thread_headers=False,
        extra=_outlook(subject, "wilson-2"),
    )


CROSS_BOX_SUBJECT = "Reseller partnership and an SSO question"


def _cross_box(b: _DemoBuilder) -> None:
    thomas = _Person("Thomas Wagner", "thomas.wagner@example.net", _tz(1), _THUNDERBIRD)
    text = (
        "Hello,\n\n"
        "two things, so I am writing to both of your addresses:\n\n"
        "1. We are an IT service provider in Vienna and would like to resell your product\n"
        "   to our clients. Who can I talk to about reseller terms?\n"
        "2. Technical: does your SSO support Azure AD (Entra ID) group claims for role\n"
        "   mapping?\n\n"
        "Best regards,\nThomas Wagner\nWagner IT Services\n"
    )
    first = b.receive(
        SUPPORT_ADDRESS, thomas, CROSS_BOX_SUBJECT, b.ago(26), text, cc=[INFO_ADDRESS]
    )
    b.receive(
        SUPPORT_ADDRESS,
        thomas,
        "Re: " + CROSS_BOX_SUBJECT,
        b.ago(3),
        "Hello again,\n\nany news on either question? A short answer would be enough.\n\nThomas\n",
        cc=[INFO_ADDRESS],
        parent=first,
    )


def _auto_reply(b: _DemoBuilder) -> None:
    karen = _Person("Karen Lee", "karen.lee@example.com", _tz(-8), _GMAIL)
    subject = "API returns 429 Too Many Requests"
    turns = [
        (
            22,
            "Hi,\n\nour nightly sync job gets HTTP 429 after about 300 requests. The docs say the"
            "\nlimit is 1000 per minute. Did something change?\n\nKaren Lee\nLead Engineer\n",
        ),
        (
            20,
            "Hi Karen,\n\nthe limit is 1000 requests per minute per account, but at most 5 per\n"
            "second. Your job sends bursts of ~20 per second. Please spread the requests or\n"
            "honour the Retry-After header we send with the 429.\n\nBest regards,\nAlex\n",
        ),
    ]
    ours = _exchange(b, _SUPPORT, karen, subject, turns)

    away = (
        "Thank you for your email. I am out of the office until Monday with limited access\n"
        "to email. For urgent matters please contact engineering@example.com.\n\nKaren\n"
    )
    b.receive(
        SUPPORT_ADDRESS,
        karen,
        "Out of office: Re: " + subject,
        b.ago(20) + timedelta(seconds=40),
        away,
        parent=ours,
        quote=None,
        envelope_from="",
        extra=(("Auto-Submitted", "auto-replied"), ("X-Auto-Response-Suppress", "All")),
    )


def _bounce(b: _DemoBuilder) -> None:
    marek = _Person("Marek Nowak", "marek.nowak@example.org", _tz(1), _THUNDERBIRD)
    subject = "Change of billing address"
    turns = [
        (
            130,
            "Hello,\n\nplease change our billing address to ul. Przykładowa 7, 00-001 Warszawa,"
            "\nstarting with the next invoice.\n\nThank you,\nMarek Nowak\n",
        ),
        (
            12,
            "Hello Marek,\n\nwe have updated the billing address; the next invoice will show\n"
            "it. Please note that invoices already issued cannot be changed.\n\nKind regards,\n"
            "Example Support\n",
        ),
    ]
    ours = _exchange(b, _SUPPORT, marek, subject, turns, cte="quoted-printable")
    sent_raw = b.last_filed(SUPPORT_ADDRESS)

    when = ours.date + timedelta(seconds=3)
    daemon = _Person("Mail Delivery System", "MAILER-DAEMON@smtp.example.test", _tz(0))
    report, _ = b.compose(
        daemon,
        [SUPPORT_ADDRESS],
        "Undelivered Mail Returned to Sender",
        when,
        extra=(("Auto-Submitted", "auto-replied"),),
    )
    notice = MIMEPart()
    notice.set_content(
        "This is the mail system at host smtp.example.test.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients. It's attached below.\n\n"
        "For further assistance, please send mail to postmaster.\n\n"
        "                   The mail system\n\n"
        "<marek.nowak@example.org>: host mx.example.org[192.0.2.80] said: 550 5.1.1\n"
        "    <marek.nowak@example.org>: Recipient address rejected: User unknown in\n"
        "    virtual mailbox table (in reply to RCPT TO command)\n",
        headers=["Content-Description: Notification"],
    )
    per_message = MIMEPart()
    per_message["Reporting-MTA"] = "dns; smtp.example.test"
    per_message["X-Postfix-Queue-ID"] = "4Vt8kQ2Lmzz9sWc"
    per_message["X-Postfix-Sender"] = f"rfc822; {SUPPORT_ADDRESS}"
    per_message["Arrival-Date"] = format_datetime(when)
    per_recipient = MIMEPart()
    per_recipient["Final-Recipient"] = "rfc822; marek.nowak@example.org"
    per_recipient["Original-Recipient"] = "rfc822;marek.nowak@example.org"
    per_recipient["Action"] = "failed"
    per_recipient["Status"] = "5.1.1"
    per_recipient["Remote-MTA"] = "dns; mx.example.org"
    per_recipient["Diagnostic-Code"] = (
        "smtp; 550 5.1.1 <marek.nowak@example.org>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    status = MIMEPart()
    status["Content-Description"] = "Delivery report"
    status["Content-Type"] = "message/delivery-status"
    status.set_payload([per_message, per_recipient])
    original = MIMEPart()
    original.set_content(message_from_bytes(sent_raw, policy=email_policy.default), cte="8bit")
    original["Content-Description"] = "Undelivered Message"
    report.set_payload([notice, status, original])
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = "multipart/report; report-type=delivery-status"
    b.deliver(
        SUPPORT_ADDRESS, b.serialize(report), when, envelope_from="", relay="smtp.example.test"
    )


def _mailing_list(b: _DemoBuilder) -> None:
    status = _Person("Example Cloud Status", "status@lists.example.net", _tz(0))
    subject = "[Example Cloud] Scheduled maintenance: eu-west database cluster"
    text = (
        "Scheduled maintenance\n=====================\n\n"
        "Region:   eu-west\nWindow:   Saturday 02:00-04:00 UTC\nImpact:   API writes may be "
        "delayed up to 60 seconds; reads unaffected.\n\n"
        "We will post updates at https://status.example.net/incidents/8841\n\n--\n"
        "You are receiving this because support@example.test subscribed to status updates.\n"
        "Unsubscribe: https://lists.example.net/unsubscribe/status/4f2a9c\n"
    )
    b.receive(
        SUPPORT_ADDRESS,
        status,
        subject,
        b.ago(36),
        text,
        to=["status-subscribers@lists.example.net"],
        envelope_from="status-bounces@lists.example.net",
        extra=(
            ("Sender", "status-bounces@lists.example.net"),
            ("List-Id", "Example Cloud status updates <status.lists.example.net>"),
            ("List-Unsubscribe", "<https://lists.example.net/unsubscribe/status/4f2a9c>"),
            ("List-Post", "NO"),
            ("List-Archive", "<https://lists.example.net/archive/status>"),
            ("Precedence", "list"),
        ),
    )


def _simple_threads(b: _DemoBuilder) -> None:
    """Ordinary conversations: a question, sometimes our answer and their reply."""
    maria = _Person("María García", "maria.garcia@example.com", _tz(-6), _GMAIL)
    maria_turns = [
        (
            120,
            "Hello,\n\nI was charged twice for my March subscription (order 88120 and 88121).\n"
            "Could you refund one of them?\n\nThanks,\nMaría\n",
        ),
        (
            117,
            "Hello María,\n\nyou are right, order 88121 was a duplicate. We have refunded it;\n"
            "the money should be back on your card within 5 business days.\n\nBest regards,\n"
            "Sam\n",
        ),
        (110, "Great, thank you for the quick help!\n\nMaría\n"),
    ]
    subject = "Refund for duplicate charge"
    _exchange(b, _SUPPORT, maria, subject, maria_turns, cte="quoted-printable")

    noah = _Person("Noah Thompson", "noah.thompson@example.net", _tz(-5), _APPLE_IPHONE)
    text = (
        "Hi there,\n\nany plans for a dark mode in the agent inbox? We work night shifts and\n"
        "the white background is painful at 3 am. Happy to test a beta.\n\nNoah\n"
    )
    subject = "Feature request: dark mode"
    b.receive(SUPPORT_ADDRESS, noah, subject, b.ago(80), text, flags=(SEEN, FLAGGED))

    liam = _Person("Liam Murphy", "liam.murphy@example.org", _tz(0), _THUNDERBIRD)
    liam_turns = [
        (
            110,
            "Hello,\n\nI am the only admin on our account and I am going on parental leave.\n"
            "How do I give admin rights to a colleague?\n\nThanks,\nLiam\n",
        ),
        (
            108,
            "Hi Liam,\n\ngo to Settings > Team, open your colleague's profile and choose the role"
            '\n"Administrator". Congratulations, and enjoy the time off!\n\nAlex\n',
        ),
    ]
    _exchange(b, _SUPPORT, liam, "How do I add a second admin?", liam_turns)

    ava = _Person("Ava Patel", "ava.patel@example.com", _tz(-5), _GMAIL)
    subject = "URGENT: dashboard shows 502 Bad Gateway"
    text = (
        'Hi,\n\nour whole team gets "502 Bad Gateway" when opening the dashboard. Is there\n'
        "an outage? We have customers waiting.\n\nAva Patel\n"
    )
    first = b.receive(SUPPORT_ADDRESS, ava, subject, b.ago(2), text)
    b.receive(
        SUPPORT_ADDRESS,
        ava,
        "Re: " + subject,
        b.ago(2) + timedelta(minutes=10),
        "Screenshot attached. Still happening, 10 minutes later.\n\nAva\n",
        parent=first,
        attachments=[_Attachment("screenshot-502.png", "image/png", _gateway_png())],
    )

    ethan = _Person("Ethan Brown", "ethan.brown@example.net", _tz(-7), _GMAIL)
    text = (
        "Hello,\n\nplease cancel our subscription at the end of the current billing period.\n"
        "We are merging with another company that uses a different tool.\n\nEthan Brown\n"
    )
    b.receive(SUPPORT_ADDRESS, ethan, "Cancel my subscription", b.ago(14), text)

    isabella = _Person("Isabella Moore", "isabella.moore@example.com", _tz(10), _APPLE_IPHONE)
    text = (
        "Hi,\n\nI lost my phone with the authenticator app and cannot log in anymore.\n"
        "I still have access to this email address. What can I do?\n\n"
        "Isabella\n\nSent from my iPad\n"
    )
    b.receive(SUPPORT_ADDRESS, isabella, "Lost phone - can't log in (2FA)", b.ago(9), text)

    lucas = _Person("Lucas Silva", "lucas.silva@example.com", _tz(-3), _GMAIL)
    subject = "Webhook signature verification always fails"
    text = (
        "Hi,\n\nwe verify your webhook signatures like this (Python):\n\n"
        "    expected = hmac.new(secret, request.body, hashlib.sha256).hexdigest()\n"
        "    if not hmac.compare_digest(expected, request.headers['X-Signature']):\n"
        "        abort(401)\n\n"
        "but it never matches. Is the signature computed over the raw body or the\n"
        "parsed JSON?\n\nThanks,\nLucas\n"
    )
    html = (
        '<div dir="ltr">Hi,<div><br></div><div>we verify your webhook signatures like this '
        "(Python):</div><div><br></div><pre>    expected = hmac.new(secret, request.body, "
        "hashlib.sha256).hexdigest()\n    if not hmac.compare_digest(expected, "
        "request.headers[&#39;X-Signature&#39;]):\n        abort(401)</pre><div>but it never "
        "matches. Is the signature computed over the raw body or the parsed JSON?</div>"
        "<div><br></div><div>Thanks,</div><div>Lucas</div></div>\n"
    )
    b.receive(SUPPORT_ADDRESS, lucas, subject, b.ago(50), text, html=html)

    femke = _Person("Femke de Vries", "femke.devries@example.org", _tz(1), _THUNDERBIRD)
    text = (
        "Dear support,\n\nunder Article 15 GDPR I request a copy of all personal data you\n"
        "hold about me (femke.devries@example.org), including the data of my former\n"
        "employer's account where I was an agent.\n\nKind regards,\nFemke de Vries\n"
    )
    b.receive(SUPPORT_ADDRESS, femke, "GDPR data access request", b.ago(85), text)


# ---- the conversations of info@

_NEWSLETTER_HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Example Weekly</title></head>
<body style="margin:0;background:#f4f4f7">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">
<table role="presentation" width="600" style="background:#ffffff">
<tr><td><img src="https://images.example.net/banner.png" width="600" height="180" \
alt="Example Weekly" style="display:block"></td></tr>
<tr><td style="padding:24px;font-family:Arial,sans-serif;font-size:15px;color:#333">
<h1 style="font-size:22px">5 ways to answer customers faster</h1>
<p>Saved replies, keyboard shortcuts and a shared inbox that everyone can see: this week we \
look at how small teams cut their first-response time in half.</p>
<p><a href="https://news.example.net/c/8f2a91?u=https%3A%2F%2Fblog.example.net%2Ffaster" \
style="background:#3b5bdb;color:#fff;padding:10px 18px;text-decoration:none">Read the \
article</a></p>
<p style="font-size:12px;color:#888">You receive this because info@example.test signed up at \
example.net. <a href="https://news.example.net/unsubscribe/8f2a91">Unsubscribe</a></p>
</td></tr></table>
<img src="https://t.example.net/open/8f2a91.gif?m=20240611" width="1" height="1" alt="" \
style="display:none">
</td></tr></table>
</body></html>
"""

NEWSLETTER_BANNER = "https://images.example.net/banner.png"
NEWSLETTER_PIXEL = "https://t.example.net/open/8f2a91.gif?m=20240611"


def _info_box(b: _DemoBuilder) -> None:
    news = _Person("Example Weekly", "newsletter@news.example.net", _tz(0))
    text = (
        "EXAMPLE WEEKLY\n\n5 ways to answer customers faster\n\n"
        "Saved replies, keyboard shortcuts and a shared inbox that everyone can see: this\n"
        "week we look at how small teams cut their first-response time in half.\n\n"
        "Read the article: https://blog.example.net/faster\n\n"
        "Unsubscribe: https://news.example.net/unsubscribe/8f2a91\n"
    )
    b.receive(
        INFO_ADDRESS,
        news,
        "5 ways to answer customers faster ✉️",
        b.ago(48),
        text,
        envelope_from="bounce-8f2a91@news.example.net",
        extra=(
            ("List-Id", "Example Weekly <weekly.news.example.net>"),
            ("List-Unsubscribe", "<https://news.example.net/unsubscribe/8f2a91>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("Precedence", "bulk"),
            ("X-Campaign-Id", "weekly-2024-24"),
        ),
        cte="quoted-printable",
        html=_NEWSLETTER_HTML,
    )

    claire = _Person("Claire Dubois", "claire.dubois@example.fr", _tz(1), _APPLE_IPHONE)
    subject = "Demande d'interview – article sur le support client"
    text = (
        "Bonjour,\n\nje suis journaliste pour « Le Quotidien Numérique » et je prépare un\n"
        "article sur les outils de support client. Seriez-vous disponible pour un court\n"
        "entretien téléphonique cette semaine ?\n\nBien à vous,\nClaire Dubois\n"
    )
    b.receive(INFO_ADDRESS, claire, subject, b.ago(54), text, flags=(SEEN,), cte="quoted-printable")

    sarah = _Person("Sarah Johnson", "sarah.johnson@example.org", _tz(-5), _GMAIL)
    sarah_turns = [
        (
            100,
            "Hello,\n\nwe are a small animal shelter run by volunteers (registered charity).\n"
            "Do you offer discounts for nonprofits? We would need 4 agent seats.\n\n"
            "Sarah Johnson\nHappy Paws Rescue\n",
        ),
        (
            97,
            "Hi Sarah,\n\nyes: registered charities get 50% off every plan. Just reply with your\n"
            "registration number and we will apply the discount to your account.\n\n"
            "Warm regards,\nJordan\nExample Team\n",
        ),
        (72, "Wonderful! Our registration number is CH-1187342.\n\nSarah\n"),
    ]
    _exchange(b, _INFO, sarah, "Discount for a nonprofit?", sarah_turns)

    li = _Person("李娜", "li.na@example.cn", _tz(8), _GMAIL)
    text = (
        "Dear Example team,\n\nI lead business development at a software distributor in\n"
        "Shanghai. We are interested in a partnership to bring your helpdesk to the\n"
        "Chinese market, including localisation. Could we schedule a call?\n\n"
        "Best regards,\n李娜 (Li Na)\n"
    )
    subject = "Partnership opportunity in China"
    b.receive(INFO_ADDRESS, li, subject, b.ago(40), text, cte="base64")

    markus = _Person("Markus Weber", "markus.weber@example.de", _tz(1), _THUNDERBIRD)
    text = (
        "Hallo,\n\nwir sind nächste Woche in Ihrer Stadt. Könnten wir Sie am Donnerstag\n"
        "gegen 14 Uhr in Ihrem Büro besuchen? Wie ist die genaue Adresse?\n\n"
        "Viele Grüße\nMarkus Weber\n"
    )
    # 8bit UTF-8, as Thunderbird sends it
    b.receive(INFO_ADDRESS, markus, "Besuch in Ihrem Büro", b.ago(24), text)

    mateo = _Person("Mateo Fernández", "mateo.fernandez@example.com", _tz(1), _GMAIL)
    text = (
        "Hello,\n\nI would like to apply for the Frontend Developer position listed on your\n"
        "website. My CV is attached. I have five years of experience with TypeScript\n"
        "and accessible UI design.\n\nBest regards,\nMateo Fernández\n"
    )
    cv = _pdf(["Mateo Fernandez - Curriculum Vitae", "Frontend Developer, 5 years"])
    b.receive(
        INFO_ADDRESS,
        mateo,
        "Application: Frontend Developer",
        b.ago(64),
        text,
        cte="quoted-printable",
        attachments=[_Attachment("CV-Mateo-Fernández.pdf", "application/pdf", cv)],
    )

    events = _Person("HelpCon Europe", "speakers@events.example.net", _tz(1), _GMAIL)
    text = (
        "Hello,\n\nwe would love to have someone from your team speak at HelpCon Europe\n"
        "(Berlin, 14-15 November) about running support on open standards. Talks are 25\n"
        "minutes. Please let us know by the end of the month.\n\nThe HelpCon team\n"
    )
    subject = "Speaking invitation: HelpCon Europe"
    b.receive(INFO_ADDRESS, events, subject, b.ago(90), text, flags=(SEEN,))

    seo = _Person("Rank Experts", "offers@seo-rank.example.net", _tz(5))
    text = (
        "Dear Website Owner,\n\nWe noticed your website example.test is not on the FIRST PAGE\n"
        "of Google!!! Our team can guarantee #1 ranking in 30 days. Reply now for a FREE\n"
        "audit.\n\nBest Regards\nSEO Team\n"
    )
    subject = "Get your website on Google page 1 - guaranteed"
    b.receive(INFO_ADDRESS, seo, subject, b.ago(8), text)

    anna = _Person("Anna Kowalska", "anna.kowalska@example.org", _tz(1), _OUTLOOK)
    subject = "Data residency in the EU"
    text = (
        "Hello,\n\nbefore we sign up: where is our data stored? We need all customer data,\n"
        "including attachments and backups, to stay within the EU.\n\nKind regards,\n"
        "Anna Kowalska\nData Protection Officer\n"
    )
    b.receive(INFO_ADDRESS, anna, subject, b.ago(18), text, extra=_outlook(subject, "kowalska"))


def demo_mailboxes(now: datetime | None = None) -> list[DemoMailbox]:
    """The demo's shared boxes support@ and info@ with their INBOX and Sent messages.

    Dates are relative to `now` (default: the current time), spread over the six days before
    it, so the demo looks fresh; the same `now` always yields the same bytes.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    builder = _DemoBuilder(now.replace(microsecond=0))
    for conversation in (
        _long_thread,
        _japanese,
        _chinese,
        _german,
        _french,
        _emoji,
        _russian,
        _outlook_html,
        _gmail_inline_image,
        _invoice_pdf,
        _csv_import,
        _winmail,
        _outlook_stripped,
        _cross_box,
        _auto_reply,
        _bounce,
        _mailing_list,
        _simple_threads,
        _info_box,
    ):
        conversation(builder)
    return builder.mailboxes()


# --------------------------------------------------------------------------------------------
# Synthetic corpus for benchmarks and load tests

_FIRST_NAMES = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Daniel",
    "Lisa",
    "Matthew",
    "Nancy",
    "Anthony",
    "Betty",
    "Mark",
    "Sandra",
    "Paul",
    "Ashley",
    "Steven",
    "Emily",
    "Andrew",
    "Donna",
    "Kenji",
    "Yuki",
    "Wei",
    "Mei",
    "Lukas",
    "Lena",
    "Pierre",
    "Camille",
    "Luca",
    "Giulia",
    "Pablo",
    "Lucia",
    "Arjun",
    "Priya",
    "Olga",
    "Ivan",
    "Aisha",
    "Omar",
    "Sven",
    "Ingrid",
]
_LAST_NAMES = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Walker",
    "Hall",
    "Young",
    "King",
    "Wright",
    "Tanaka",
    "Sato",
    "Wang",
    "Chen",
    "Schmidt",
    "Weber",
    "Dubois",
    "Moreau",
    "Rossi",
    "Bianchi",
    "Fernandez",
    "Ruiz",
    "Sharma",
    "Patel",
    "Ivanova",
    "Petrov",
    "Khan",
    "Haddad",
    "Larsen",
    "Nilsson",
]
# Names real clients send as RFC 2047 UTF-8 encoded words.
_UNICODE_NAMES = (
    "José Álvarez",
    "Zoë Müller",
    "Søren Østergaard",
    "François Lefèvre",
    "Łukasz Wójcik",
    "Ana Conceição",
    "Jürgen Groß",
    "Çağla Yılmaz",
)
_CUSTOMER_DOMAINS = (
    "example.com",
    "example.org",
    "example.net",
    "example.de",
    "example.fr",
    "example.jp",
    "example.cn",
    "example.co.uk",
    "mail.example.com",
    "corp.example.net",
)
_SUBJECTS = (
    "Cannot log in after password reset",
    "Invoice {n} shows the wrong VAT rate",
    "Question about order #{n}",
    "Export to CSV is missing columns",
    "Refund request for order {n}",
    "API returns 500 on /v2/items",
    "How do I change the account owner?",
    "Upgrade from Starter to Team plan",
    "Emails from your system land in spam",
    "Feature request: custom fields on tickets",
    "Mobile app crashes on startup (version 3.{n})",
    "Two-factor authentication codes not accepted",
    "Webhook deliveries delayed by hours",
    "Need a copy of invoice {n}",
    "Import from our old helpdesk",
    "Slow dashboard since this morning",
    "SSO login loops back to the sign-in page",
    "Cancel subscription for account {n}",
    "Attachment upload fails for large files",
    "Wrong time zone in reports",
)
_SENTENCES = (
    "Thank you for getting back to me so quickly.",
    "We noticed the problem for the first time on Monday morning, right after the update.",
    "I have attached the details you asked for in your previous message.",
    "Our team uses the web app in Chrome and Firefox on Windows and macOS.",
    "The error appears only for some users, and we could not find a pattern yet.",
    "Could you please check whether something changed on your side?",
    "We already cleared the browser cache and tried a private window.",
    "The import stops at the same row every time, even after fixing the file.",
    "This is blocking our month-end reporting, so a quick answer would be appreciated.",
    "When we click the button, nothing happens and the console shows a 403 error.",
    "Our accountant needs the corrected invoice before the end of the quarter.",
    "I tried the steps from your help article, but the result is the same.",
    "It worked fine until last week, and we did not change any settings.",
    "Please let me know if you need access to our account to investigate.",
    "We have about forty agents and three shared mailboxes connected.",
    "The customer says they never received our reply, although it is in the Sent folder.",
    "Is there a way to export all conversations with their attachments?",
    "We would also like to know whether the API supports pagination with cursors.",
    "Our security team asked whether data is encrypted at rest and in transit.",
    "I can reproduce it with a brand-new test account as well.",
    "The sync log shows a timeout after exactly thirty seconds.",
    "We are evaluating whether to roll this out to the whole company next month.",
    "Thanks again for your patience while we sort this out.",
    "For reference, our account ID is listed in the signature below.",
    "The same message was delivered twice to two of our colleagues.",
    "Searching for the order number returns no results, even though the ticket exists.",
    "Could you confirm the renewal date and the number of seats on our plan?",
    "After switching the language to German, some labels are still in English.",
)


@lru_cache(maxsize=8)
def _filler(length: int, style: str) -> tuple[str, tuple[int, ...]]:
    """A fixed text of at least `length` characters in CRLF lines of at most 76 characters,
    and the offsets where its paragraphs start. `style`: "text", "quote" or "html"."""
    rng = random.Random(f"imapdesk-filler-{style}")
    parts: list[str] = []
    starts: list[int] = []
    total = 0
    while total < length:
        paragraph = " ".join(rng.choice(_SENTENCES) for _ in range(rng.randint(2, 6)))
        wrapped = textwrap.wrap(paragraph, 72)
        if style == "html":
            wrapped[0] = "<p>" + wrapped[0]
            wrapped[-1] += "</p>"
        elif style == "quote":
            wrapped = ["> " + line for line in wrapped]
        wrapped.append(">" if style == "quote" else "")
        block = "\r\n".join(wrapped) + "\r\n"
        starts.append(total)
        parts.append(block)
        total += len(block)
    return "".join(parts), tuple(starts)


def _plan_threads(count: int, seed: int) -> list[int]:
    """Thread lengths summing to `count`: many of 1-3 messages, a few of 10-30."""
    rng = random.Random(seed)
    sizes: list[int] = []
    remaining = count
    while remaining > 0:
        r = rng.random()
        if r < 0.50:
            size = 1
        elif r < 0.72:
            size = 2
        elif r < 0.84:
            size = 3
        elif r < 0.96:
            size = rng.randint(4, 9)
        else:
            size = rng.randint(10, 30)
        size = min(size, remaining)
        sizes.append(size)
        remaining -= size
    return sizes


def synthetic_thread_count(count: int, seed: int = 1) -> int:
    """How many threads (conversations) `synthetic_corpus(count, seed=seed)` produces."""
    return len(_plan_threads(count, seed))


@dataclass
class _SynthThread:
    customer: str  # "Name <address>", as it appears in From/To
    customer_plain: str  # how a reply's attribution line names the customer
    greeting: str
    domain: str
    tz_offset: int  # seconds east of UTC
    subject: str
    size: int
    ids: list[str] = field(default_factory=list)
    last_author: str = ""
    last_date: str = ""


_MAX_REFERENCES = 12  # like many clients: the first message and the last eleven
_MAX_ACTIVE_THREADS = 40  # how many conversations run at once (their messages interleave)
_CRLF = "\r\n"


class _Filler:
    """Draws exact-length runs of CRLF lines from a fixed text."""

    def __init__(self, rng: random.Random, length: int, style: str) -> None:
        self._rng = rng
        self._text, self._starts = _filler(length, style)
        # HTML must not be cut inside a tag: it ends on a whole line padded with spaces.
        self._whole_lines = style == "html"

    def take(self, n: int) -> str:
        """Exactly `n` characters (n >= 2) ending in CRLF; "" when n < 2."""
        if n < 2:
            return ""
        text = self._text
        last = bisect_right(self._starts, len(text) - n) - 1
        offset = self._starts[self._rng.randrange(last + 1)]
        if not self._whole_lines:
            chunk = text[offset : offset + n - 2]
            if chunk.endswith("\r"):  # never leave a bare CR
                chunk = chunk[:-1] + "."
            return chunk + _CRLF
        end = text.rfind(_CRLF, offset, offset + n) + 2
        if end <= offset + 1:  # not even one whole line fits
            return " " * (n - 2) + _CRLF
        chunk = text[offset:end]
        pad = n - len(chunk)
        if pad >= 2:
            return chunk + " " * (pad - 2) + _CRLF
        if pad == 1:
            return chunk[:-2] + " " + _CRLF
        return chunk


class SyntheticCorpus(Iterator[bytes]):
    """An iterator over synthetic RFC 5322 messages that knows what it will produce.

    `thread_count` and `thread_sizes` (in order of each thread's first message) tell a
    benchmark how many conversations to expect.
    """

    def __init__(
        self,
        count: int,
        *,
        seed: int = 1,
        min_size: int = 2_000,
        max_size: int = 50_000,
        domain: str = "example.test",
        start: datetime | None = None,
    ) -> None:
        if count < 0:
            raise ValueError("count must not be negative")
        if max_size < 4_000:
            raise ValueError("max_size must be at least 4000 bytes")
        if not 0 < min_size <= max_size:
            raise ValueError("min_size must be positive and not exceed max_size")
        self.count = count
        self.seed = seed
        self.min_size = min_size
        self.max_size = max_size
        self.domain = domain
        self.start = start or datetime(2024, 1, 8, 7, 30, tzinfo=UTC)
        self.thread_sizes: tuple[int, ...] = tuple(_plan_threads(count, seed))
        self.thread_count = len(self.thread_sizes)
        self._messages = self._generate()

    def __next__(self) -> bytes:
        return next(self._messages)

    def __len__(self) -> int:
        return self.count

    def _new_thread(self, rng: random.Random, index: int, size: int) -> _SynthThread:
        domain = _CUSTOMER_DOMAINS[rng.randrange(len(_CUSTOMER_DOMAINS))]
        if rng.random() < 0.1:
            name = _UNICODE_NAMES[rng.randrange(len(_UNICODE_NAMES))]
            local = f"customer{index}"
            display = "=?UTF-8?B?" + base64.b64encode(name.encode()).decode("ascii") + "?="
            plain = f"{local}@{domain}"  # bodies stay ASCII
            greeting = "Hello,"
        else:
            first = _FIRST_NAMES[rng.randrange(len(_FIRST_NAMES))]
            last = _LAST_NAMES[rng.randrange(len(_LAST_NAMES))]
            local = f"{first.lower()}.{last.lower()}{index}"
            display = f"{first} {last}"
            plain = f"{display} <{local}@{domain}>"
            greeting = f"Hi {first},"
        subject = _SUBJECTS[rng.randrange(len(_SUBJECTS))].format(n=rng.randint(1000, 99999))
        return _SynthThread(
            customer=f"{display} <{local}@{domain}>",
            customer_plain=plain,
            greeting=greeting,
            domain=domain,
            tz_offset=rng.choice((-8, -5, 0, 1, 2, 5, 8, 9)) * 3600,
            subject=subject,
            size=size,
        )

    def _generate(self) -> Iterator[bytes]:
        rng = random.Random(f"imapdesk-synthetic-{self.seed}")
        min_size, max_size = self.min_size, self.max_size
        log_lo, log_hi = math.log(min_size), math.log(max_size)
        length = 3 * max_size + 4_000
        text, quote, html = (_Filler(rng, length, s) for s in ("text", "quote", "html"))
        support = f"Example Support <support@{self.domain}>"
        clock = self.start.timestamp()
        sizes = self.thread_sizes
        next_thread = 0
        active: list[_SynthThread] = []

        for seq in range(self.count):
            if next_thread < len(sizes) and (
                not active or (len(active) < _MAX_ACTIVE_THREADS and rng.random() < 0.45)
            ):
                thread = self._new_thread(rng, next_thread, sizes[next_thread])
                next_thread += 1
                active.append(thread)
            else:
                thread = active[rng.randrange(len(active))]
            position = len(thread.ids)
            if position + 1 == thread.size:
                active.remove(thread)

            clock += 1 + int(rng.expovariate(1 / 150))
            if position % 2 == 0:
                sender, recipient, id_domain = thread.customer, support, thread.domain
                offset, sign_off, greeting = thread.tz_offset, "Best regards", "Hello,"
            else:
                sender, recipient, id_domain = support, thread.customer, self.domain
                offset, sign_off, greeting = (
                    3600,
                    "Kind regards,\r\nExample Support",
                    thread.greeting,
                )
            local = time.gmtime(clock + offset)
            date = (
                f"{_DAYS[local.tm_wday]}, {local.tm_mday} {_MONTHS[local.tm_mon - 1]} "
                f"{local.tm_year} {local.tm_hour:02d}:{local.tm_min:02d}:{local.tm_sec:02d} "
                f"{'+' if offset >= 0 else '-'}{abs(offset) // 3600:02d}00"
            )
            message_id = f"<{seq:x}.{rng.getrandbits(40):010x}@{id_domain}>"
            head = [
                f"From: {sender}\r\n",
                f"To: {recipient}\r\n",
                f"Subject: {'Re: ' if position else ''}{thread.subject}\r\n",
                f"Date: {date}\r\n",
                f"Message-ID: {message_id}\r\n",
            ]
            attribution = ""
            if position:
                refs = thread.ids
                if len(refs) > _MAX_REFERENCES:
                    refs = [refs[0], *refs[1 - _MAX_REFERENCES :]]
                head.append(f"In-Reply-To: {thread.ids[-1]}\r\n")
                head.append("References: " + "\r\n ".join(refs) + "\r\n")
                attribution = f"\r\nOn {thread.last_date}, {thread.last_author} wrote:\r\n"
            head.append("MIME-Version: 1.0\r\n")
            thread.ids.append(message_id)
            thread.last_author = thread.customer_plain if position % 2 == 0 else support
            thread.last_date = date

            target = int(math.exp(log_lo + (log_hi - log_lo) * rng.random()))
            opening = greeting + "\r\n\r\n"
            closing = f"\r\n{sign_off}\r\n" + attribution
            kind = rng.random()
            if kind < 0.05:  # with a small attachment
                boundary = f"----=_Part_{seq}_{rng.getrandbits(32):08x}"
                name = f"report-{seq}.pdf"
                payload = b"%PDF-1.4\n" + rng.randbytes(min(max(target // 6, 300), 6_000))
                encoded = base64.encodebytes(payload).decode("ascii").replace("\n", _CRLF)
                head.append(f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n')
                before = (
                    f"This is a multi-part message in MIME format.\r\n\r\n--{boundary}\r\n"
                    'Content-Type: text/plain; charset="utf-8"\r\n'
                    "Content-Transfer-Encoding: 7bit\r\n\r\n" + opening
                )
                after = (
                    f"\r\n--{boundary}\r\n"
                    f'Content-Type: application/pdf; name="{name}"\r\n'
                    f'Content-Disposition: attachment; filename="{name}"\r\n'
                    f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--{boundary}--\r\n"
                )
                header = "".join(head)
                budget = target - len(header) - len(before) - len(closing) - len(after)
                body = before + self._text_body(text, quote, budget, closing, attribution) + after
            elif kind < 0.30:  # multipart/alternative, as most webmail and Outlook send
                boundary = f"----=_Alt_{seq}_{rng.getrandbits(32):08x}"
                head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n')
                before = (
                    f"--{boundary}\r\n"
                    'Content-Type: text/plain; charset="utf-8"\r\n'
                    "Content-Transfer-Encoding: 7bit\r\n\r\n" + opening
                )
                html_head = (
                    f"\r\n--{boundary}\r\n"
                    'Content-Type: text/html; charset="utf-8"\r\n'
                    "Content-Transfer-Encoding: 7bit\r\n\r\n"
                    '<html><head><meta charset="utf-8"></head><body>\r\n'
                    f"<div>{greeting}</div>\r\n"
                )
                html_tail = (
                    f"<div>{sign_off.replace(_CRLF, '<br>')}</div>\r\n"
                    f"</body></html>\r\n\r\n--{boundary}--\r\n"
                )
                header = "".join(head)
                fixed = len(header) + len(before) + len(closing) + len(html_head) + len(html_tail)
                budget = target - fixed
                text_budget = max(budget * 2 // 5, 2)
                body = (
                    before
                    + self._text_body(text, quote, text_budget, closing, attribution)
                    + html_head
                    + html.take(max(budget - text_budget, 2))
                    + html_tail
                )
            else:
                head.append(
                    'Content-Type: text/plain; charset="utf-8"\r\n'
                    "Content-Transfer-Encoding: 7bit\r\n\r\n"
                )
                header = "".join(head)
                budget = target - len(header) - len(opening) - len(closing)
                body = opening + self._text_body(text, quote, budget, closing, attribution)
            yield (header + body).encode("ascii")

    @staticmethod
    def _text_body(text: _Filler, quote: _Filler, budget: int, closing: str, cite: str) -> str:
        """New text, the closing, and in replies the quoted previous message."""
        if not cite or budget < 8:
            return text.take(max(budget, 2)) + closing
        new = budget // 2
        return text.take(new) + closing + quote.take(budget - new)


def synthetic_corpus(
    count: int,
    *,
    seed: int = 1,
    min_size: int = 2_000,
    max_size: int = 50_000,
    domain: str = "example.test",
    start: datetime | None = None,
) -> SyntheticCorpus:
    """`count` realistic messages in threads, as CRLF bytes ready for IMAP APPEND.

    Deterministic for a seed. Sizes are log-uniform between `min_size` and `max_size` (median
    near their geometric mean, ~10 KB by default); a message exceeds its drawn size only when its
    headers and MIME structure alone need more (never beyond `max_size`). About 25% are
    multipart/alternative with HTML and 5% carry a small PDF attachment; the rest are
    text/plain. Dates increase from `start` (default 2024-01-08 07:30 UTC); threads interleave.
    The returned iterator carries `thread_count` and `thread_sizes`;
    `synthetic_thread_count()` gives the count up front.
    """
    return SyntheticCorpus(
        count, seed=seed, min_size=min_size, max_size=max_size, domain=domain, start=start
    )
