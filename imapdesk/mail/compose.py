"""Composing outgoing mail: the RFC 5322 message, built with the stdlib `email` package.

Policy SMTP: every header is encoded as RFC 2047 needs, nothing by hand; lines end in CRLF.
What to write (who answers whom, which subject, which references) is the domain's
(`imapdesk.domain.outbound.replies`); this module only turns it into bytes. No database here.

What people type (a subject, a recipient) is checked here before it becomes a header: text that
no header can hold, or a recipient that does not read as exactly one address, is refused
(`InvalidInput` naming the field), never cleaned up into something else. Text taken from stored
mail or settings is made writable instead (`header_safe`).
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import html as html_lib
import ipaddress
import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import MessageError, NonASCIILocalPartDefect, ObsoleteHeaderDefect
from email.headerregistry import Address, AddressHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import cast

import idna

from imapdesk.kernel.errors import InvalidInput
from imapdesk.mail.parsing import normalize_msgid

NOTE_HEADER = "X-Imapdesk-Note"
_MAX_REFERENCES = 40

# RFC 5321 4.5.3.1: a local part of 64 octets, a domain of 255, a path of 256 (an address of 254)
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_ADDRESS = 254
# RFC 5322's line limit; the subject is folded when written, but nobody reads more than this
MAX_SUBJECT = 998
MAX_DISPLAY_NAME = 200
MAX_FILENAME = 255
# a recipient as typed: a display name (quoted, perhaps encoded) and an address, with room
_MAX_RECIPIENT_ENTRY = 2 * (MAX_DISPLAY_NAME + MAX_ADDRESS)

# what no header can hold: C0 controls (CR, LF, NUL, TAB, ...), DEL, C1 controls (NEL, ...), the
# Unicode line and paragraph separators, and lone surrogates (which no charset can write)
_NOT_IN_HEADER = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NOT_IN_HEADER_RUN = re.compile(_NOT_IN_HEADER.pattern + "+")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_QUOTED_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MIME_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# the header parser of the `email` package (policy default): RFC 5322 with its defects listed
_HEADERS = HeaderRegistry()


def _named(char: str) -> str:
    return f"U+{ord(char):04X}"


def check_header_text(value: str, *, field: str, max_length: int | None = None) -> str:
    """`value` when it can be a header's text (a subject, a name); InvalidInput naming `field`
    when it holds a line break or a control character, or is longer than `max_length`."""
    bad = _NOT_IN_HEADER.search(value)
    if bad is not None:
        raise InvalidInput(
            f"{field} contains {_named(bad.group())}, a line break or control character that "
            "no mail header can hold",
            field=field,
        )
    if max_length is not None and len(value) > max_length:
        raise InvalidInput(
            f"{field} has {len(value)} characters, more than the {max_length} allowed",
            field=field,
        )
    return value


def check_text(value: str, *, field: str) -> str:
    """`value` when it can be written as UTF-8 (a body); InvalidInput naming `field` when it
    holds a lone surrogate (JSON can carry one, no charset can write it)."""
    bad = _LONE_SURROGATE.search(value)
    if bad is not None:
        raise InvalidInput(
            f"{field} contains {_named(bad.group())}, which is not a character", field=field
        )
    return value


def header_safe(value: str | None) -> str:
    """Text from stored mail or settings (a subject, a display name) made writable as a header:
    each run of line breaks and control characters becomes one space. Never for what a person
    typed: that is refused (`check_header_text`), not changed."""
    return _NOT_IN_HEADER_RUN.sub(" ", value or "").strip()


def _not_an_address(entry: str, field: str, why: str) -> InvalidInput:
    shown = entry if len(entry) <= 80 else entry[:77] + "..."
    return InvalidInput(f"{shown!r} in {field} is not one email address: {why}", field=field)


def _check_domain(domain: str) -> bool:
    """A host name (letters, digits, inner hyphens) or an address literal (`[192.0.2.1]`)."""
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        try:
            ipaddress.ip_address(literal[5:] if literal[:5].lower() == "ipv6:" else literal)
        except ValueError:
            return False
        return True
    return len(domain) <= MAX_DOMAIN and all(_HOST_LABEL.fullmatch(p) for p in domain.split("."))


def ascii_domain(domain: str) -> str:
    """An international domain name (`exämple.fr`) in its IDNA form (`xn--exmple-cua.fr`),
    which is the same domain and goes through every mail server; ValueError (saying why) when
    it is no domain name. An ASCII domain is returned as it is."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(str(exc) or "not an international domain name") from exc


def needs_smtputf8(address: Address | str) -> bool:
    """Whether sending to (or from) this address needs SMTPUTF8: a non-ASCII local part has
    no ASCII form (a non-ASCII domain has one, `ascii_domain`)."""
    spec = address.addr_spec if isinstance(address, Address) else address
    return not spec.isascii()


def envelope_address(addr_spec: str) -> str:
    """An address as the SMTP envelope takes it: an international domain in its IDNA form
    (where the local part is ASCII: otherwise it goes as UTF-8, with SMTPUTF8, as it is)."""
    local, at, domain = addr_spec.rpartition("@")
    if not at or domain.isascii() or not local.isascii():
        return addr_spec
    try:
        return f"{local}@{ascii_domain(domain)}"
    except ValueError:
        return addr_spec  # the server refuses it, with its own words


def _address(local: str, domain: str, name: str, *, entry: str, field: str) -> Address:
    """The header address of these parts, within the RFC's limits. An international domain is
    written in its IDNA form; a non-ASCII local part is kept (RFC 6531: it can be sent only
    through a server that offers SMTPUTF8, which the caller checks with `needs_smtputf8`)."""
    if not local or not domain:
        raise _not_an_address(entry, field, "it needs a local part and a domain")
    try:
        domain = ascii_domain(domain)
    except ValueError as exc:
        raise _not_an_address(entry, field, f"{domain!r} is not a domain name ({exc})") from exc
    if not _check_domain(domain):
        raise _not_an_address(entry, field, f"{domain!r} is not a domain name")
    check_header_text(name, field=field, max_length=MAX_DISPLAY_NAME)
    try:
        address = Address(display_name=name, username=local, domain=domain)
        addr_spec = address.addr_spec
    except (ValueError, IndexError) as exc:
        raise _not_an_address(entry, field, "it cannot be written") from exc
    # the limits are in octets, as the address goes over the wire
    if len(addr_spec.encode()) - len(domain) - 1 > MAX_LOCAL_PART:
        raise _not_an_address(
            entry, field, f"the part before @ is longer than {MAX_LOCAL_PART} characters"
        )
    if len(addr_spec.encode()) > MAX_ADDRESS:
        raise _not_an_address(entry, field, f"it is longer than {MAX_ADDRESS} characters")
    return address


def _spec_parts(addr_spec: str) -> tuple[str, str]:
    """The local part (unquoted) and the domain of an address as `email.utils` reads it."""
    local, _, domain = addr_spec.rpartition("@")
    return email.utils.unquote(local), domain


def parse_recipient(entry: str, *, field: str) -> Address:
    """One recipient as typed (`Name <local@domain>`, `local@domain`) as a header address.

    Strict, and never a guess: exactly one address with nothing but a display name around it,
    read the same by the RFC 5322 parser and by the lenient one that others use (where the two
    disagree, as over `<a@x> b@y` or a quoted CRLF, an attacker picks the reading); an address
    written back must read back the same. InvalidInput naming `field` otherwise."""
    text = entry.strip()
    if not text:
        raise _not_an_address(entry, field, "it is empty")
    check_header_text(text, field=field, max_length=_MAX_RECIPIENT_ENTRY)
    if any(c in _QUOTED_STRING.sub("", text) for c in "()"):
        # a comment is dropped by every reader: what was typed in it would silently vanish
        raise _not_an_address(entry, field, "no comments in parentheses; quote the name")
    try:
        parsed = _HEADERS("To", text)
    except (ValueError, IndexError, MessageError) as exc:
        raise _not_an_address(entry, field, "it does not parse") from exc
    # obsolete syntax (an unquoted "J. Smith") reads unambiguously, and so does a non-ASCII
    # local part (RFC 6531, checked for SMTPUTF8 by the caller); every other defect does not
    defects = [
        d
        for d in parsed.defects
        if not isinstance(d, ObsoleteHeaderDefect | NonASCIILocalPartDefect)
    ]
    if defects:
        raise _not_an_address(entry, field, str(defects[0]).rstrip(".") or "it does not parse")
    header = cast(AddressHeader, parsed)  # the registry's To: is an address list
    if any(group.display_name is not None for group in header.groups):
        raise _not_an_address(entry, field, "a group is not a recipient")
    if len(header.addresses) != 1:
        raise _not_an_address(
            entry, field, f"it holds {len(header.addresses)} addresses; give one per entry"
        )
    found = header.addresses[0]
    lenient = [_spec_parts(addr) for _, addr in email.utils.getaddresses([text]) if addr]
    if lenient != [(found.username, found.domain)]:
        raise _not_an_address(entry, field, "it reads differently to different mail programs")
    address = _address(found.username, found.domain, found.display_name, entry=entry, field=field)
    again = cast(AddressHeader, _HEADERS("To", str(address))).addresses
    wanted = [(address.display_name, address.addr_spec)]
    if [(a.display_name, a.addr_spec) for a in again] != wanted:
        raise _not_an_address(entry, field, "it does not read back the same")
    return address


def recipient_entries(value: str) -> list[str]:
    """A typed list of recipients (a form field) split into entries at the commas and
    semicolons that separate them, not at those inside a quoted name or angle brackets."""
    entries: list[str] = []
    current: list[str] = []
    quoted = escaped = angle = False
    for char in value:
        if escaped:
            escaped = False
        elif quoted:
            escaped = char == "\\"
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char in "<>":
            angle = char == "<"
        elif char in ",;" and not angle:
            entries.append("".join(current))
            current = []
            continue
        current.append(char)
    entries.append("".join(current))
    return [e.strip() for e in entries if e.strip()]


@dataclass(frozen=True)
class Upload:
    """A file an agent attaches (multipart upload in the API)."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class InlineImage:
    """An image the HTML shows by `cid:` (pasted into the composer): a part of the
    multipart/related around the HTML, with this Content-ID (without angle brackets)."""

    cid: str
    content_type: str
    data: bytes
    filename: str = "image"


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "imapdesk.invalid"


def new_msgid(address: str) -> str:
    """A Message-ID in the domain of `address` (the mailbox's), without angle brackets."""
    value = normalize_msgid(make_msgid(idstring="imapdesk", domain=_domain(address)))
    assert value is not None
    return value


def mail_address(email_addr: str, name: str | None = None, *, field: str = "to") -> Address:
    """A stored address (a mailbox's, a customer's from their mail) with its display name as a
    header address; the name is made writable (`header_safe`). InvalidInput naming `field`
    when the address cannot be sent to."""
    local, domain = _spec_parts(email_addr.strip())
    return _address(
        local, domain, header_safe(name)[:MAX_DISPLAY_NAME], entry=email_addr, field=field
    )


def with_signature(body: str, *signatures: str | None) -> str:
    """The text, then "-- " and the signatures (the agent's, then the mailbox's)."""
    sigs = [sig.strip("\n") for sig in signatures if sig and sig.strip()]
    text = body.rstrip("\n")
    if sigs:
        text += "\n\n-- \n" + "\n\n".join(sigs)
    return text + "\n"


def html_with_signature(html: str, *signatures: str | None) -> str:
    """The HTML with the signatures (escaped) in a "signature" block before `</body>`."""
    sigs = [sig.strip("\n") for sig in signatures if sig and sig.strip()]
    if not sigs:
        return html
    block = (
        '<div class="signature">-- <br>'
        + "<br><br>".join(
            "<br>".join(html_lib.escape(line) for line in sig.splitlines()) for sig in sigs
        )
        + "</div>"
    )
    at = html.lower().rfind("</body>")
    return html[:at] + block + html[at:] if at >= 0 else html + block


def compose(
    *,
    sender: Address,
    to: Sequence[Address],
    cc: Sequence[Address] = (),
    subject: str,
    msgid: str,
    text: str,
    html: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    attachments: Sequence[Upload] = (),
    inline_images: Sequence[InlineImage] = (),
    forwarded: bytes | None = None,
    note: bool = False,
    automatic: bool = False,
    date: datetime | None = None,
) -> bytes:
    """The RFC 5322 bytes (CRLF), every header encoded by the email package: in ASCII (RFC
    2047), unless an address has a non-ASCII local part, which has no ASCII form: then the
    headers are UTF-8 (RFC 6532), for a server that offers SMTPUTF8."""
    utf8 = any(needs_smtputf8(a) for a in (sender, *to, *cc))
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    msg = EmailMessage(policy=policy)
    msg["From"] = sender
    if to:
        msg["To"] = tuple(to)
    if cc:
        msg["Cc"] = tuple(cc)
    msg["Subject"] = check_header_text(subject, field="subject")
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = f"<{msgid}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    refs = list(dict.fromkeys(r for r in references if r))
    if len(refs) > _MAX_REFERENCES:  # the first (the thread's root) and the most recent
        refs = refs[:1] + refs[-(_MAX_REFERENCES - 1) :]
    if refs:
        msg["References"] = " ".join(f"<{r}>" for r in refs)
    if note:
        msg[NOTE_HEADER] = "1"
    if automatic:
        msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
        if inline_images:
            # text/plain | multipart/related (text/html + the images it shows by cid:)
            html_part = cast(EmailMessage, msg.get_payload()[1])  # type: ignore[index]
            for image in inline_images:
                maintype, _, subtype = image.content_type.partition("/")
                html_part.add_related(
                    image.data,
                    maintype=maintype,
                    subtype=subtype,
                    cid=f"<{image.cid}>",
                    disposition="inline",
                    filename=image.filename,
                )
    for upload in attachments:
        maintype, subtype = _attachment_type(upload)
        if maintype == "text":
            msg.add_attachment(
                upload.data.decode("utf-8", "replace"), subtype=subtype, filename=upload.filename
            )
        else:
            msg.add_attachment(
                upload.data, maintype=maintype, subtype=subtype, filename=upload.filename
            )
    if forwarded is not None:
        original = email.message_from_bytes(forwarded, policy=email.policy.default)
        msg.add_attachment(original, disposition="inline")
    return msg.as_bytes(policy=policy)


def _attachment_type(upload: Upload) -> tuple[str, str]:
    """The upload's MIME type when it is one (the client's word is a hint: parameters dropped,
    anything that is not two tokens replaced by a guess from the name)."""
    for ctype in (upload.content_type, mimetypes.guess_type(upload.filename)[0]):
        maintype, _, subtype = (ctype or "").split(";")[0].strip().lower().partition("/")
        if (
            _MIME_TOKEN.fullmatch(maintype)
            and _MIME_TOKEN.fullmatch(subtype)
            and maintype != "multipart"
        ):
            return maintype, subtype
    return "application", "octet-stream"
