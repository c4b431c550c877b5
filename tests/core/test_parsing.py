"""imapdesk.mail.parsing against real-world corpora (stalwart's expected parses, notmuch's
Maildirs) and
hand-built messages for the charsets, structures and hostile HTML that mail brings."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import json
import os
import random
import re
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import imapdesk.mail.parsing as parsing
from imapdesk.kernel.attachment_store import blob_path, store_blob
from imapdesk.mail.parsing import (
    ParsedMessage,
    base_subject,
    extract_msgids,
    normalize_msgid,
    parse_message,
    sanitize_html,
)
from tests.support.corpus import CORPUS

STALWART = CORPUS / "stalwart-eml"
NOTMUCH = CORPUS / "notmuch" / "test" / "corpora"

STALWART_FILES = sorted(STALWART.rglob("*.eml"))
NOTMUCH_FILES = sorted(
    p
    for p in NOTMUCH.rglob("*")
    if p.is_file() and p.name not in ("README", "COPYING") and not p.name.endswith(".txt")
)

# Where stalwart's expected parse and ours legitimately differ, and why.
# - malformed/*: ambiguous or broken boundaries; compat32 (and our recovery) cut the parts
#   differently from stalwart, so only "something readable" is checked there.
# - thirdparty/002: a base64 part with garbage after the padding; stalwart calls the part an
#   attachment, we decode what decodes and keep it as text.
# - thirdparty/015: three message/rfc822 parts whose inner multiparts are never closed;
#   stalwart lets the first swallow the others, we split at the outer boundary (3 attachments).
ATTACHMENT_COUNT_DIFFERS = {"thirdparty/002.eml", "thirdparty/015.eml"}
WORD = re.compile(r"[\w\ufffd]+")


def _words(text: str) -> set[str]:
    # words stalwart could not decode (U+FFFD inside) say nothing about ours
    return {w.lower() for w in WORD.findall(text) if "\ufffd" not in w}


def _header(part: dict[str, Any], name: str) -> Any:
    for header in part["headers"]:
        if header["name"] == name:
            return header["value"]
    return None


def _body(part: dict[str, Any]) -> tuple[str | None, str | None]:
    body = part["body"]
    if isinstance(body, dict):
        kind = next(iter(body))
        if kind in ("Text", "Html"):
            return kind, body[kind]
    return None, None


def _expected(eml: Path) -> dict[str, Any]:
    data = json.loads(eml.with_suffix(".json").read_text())
    top = data["parts"][0]
    subject = _header(top, "subject")
    sender = _header(top, "from")
    address = None
    if isinstance(sender, dict) and isinstance(sender.get("Address"), dict):
        mailboxes = sender["Address"].get("List") or []
        if mailboxes:
            address = mailboxes[0].get("address")
    texts: list[str] = []
    for index in data["text_body"]:
        kind, value = _body(data["parts"][index])
        if value is not None:
            texts.append(value if kind == "Text" else html.unescape(re.sub(r"<[^>]*>", " ", value)))
    has_html = any(_body(data["parts"][i])[0] == "Html" for i in data["html_body"])
    return {
        "subject": subject.get("Text") if isinstance(subject, dict) else None,
        "from": address,
        "text": "\n".join(texts),
        "has_html": has_html,
        "attachments": len(data["attachments"]),
    }


def _same_modulo_replacement(expected: str, ours: str) -> bool:
    """Equal, where stalwart's U+FFFD (a byte it could not decode) matches any one character."""
    pattern = "".join("." if c == "\ufffd" else re.escape(c) for c in expected)
    return re.fullmatch(pattern, ours) is not None


def test_the_corpora_are_there() -> None:
    assert len(STALWART_FILES) == 107
    assert {p.parent.name for p in STALWART_FILES} == {"legacy", "malformed", "rfc", "thirdparty"}
    assert len(NOTMUCH_FILES) == 320


@pytest.mark.parametrize("eml", STALWART_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stalwart_corpus_matches_the_expected_parse(eml: Path) -> None:
    raw = eml.read_bytes()
    parsed = parse_message(raw)
    expected = _expected(eml)
    name = f"{eml.parent.name}/{eml.name}"
    malformed = eml.parent.name == "malformed"
    assert parsed.size == len(raw)

    if expected["subject"] is not None:
        want = " ".join(expected["subject"].split())
        assert _same_modulo_replacement(want, parsed.subject), (want, parsed.subject)
    if expected["from"] and "@" in expected["from"]:
        assert parsed.from_email == expected["from"].lower()

    want_words = _words(expected["text"])
    if want_words:
        if malformed:
            assert parsed.text.strip()
        else:
            got_words = _words(parsed.text)
            recall = len(want_words & got_words) / len(want_words)
            assert recall >= 0.9, (recall, expected["text"][:200], parsed.text[:200])
    if expected["has_html"] and not malformed:
        assert parsed.html

    if not malformed and name not in ATTACHMENT_COUNT_DIFFERS:
        assert len(parsed.attachments) == expected["attachments"]


@pytest.mark.parametrize("path", NOTMUCH_FILES, ids=lambda p: str(p.relative_to(NOTMUCH)))
def test_notmuch_corpus_parses(path: Path) -> None:
    raw = path.read_bytes()
    parsed = parse_message(raw)
    assert parsed.size == len(raw)
    assert parsed.from_email and "@" in parsed.from_email
    assert parsed.message_id
    # one test message has an asctime date without a year
    assert (parsed.date is None) == (path.name == "text-calendar.eml")
    for text in (parsed.subject, parsed.text, parsed.headers, parsed.html or ""):
        assert "\x00" not in text
        text.encode("utf-8")  # no lone surrogates
    if path.parent.name != "protected-headers" or "Subject:" in raw.decode("latin-1"):
        assert parsed.subject or path.name == "subjectless-protected-header.eml"


def test_the_default_notmuch_corpus_has_readable_bodies() -> None:
    for path in NOTMUCH_FILES:
        if "default" in path.relative_to(NOTMUCH).parts:
            parsed = parse_message(path.read_bytes())
            assert parsed.subject
            assert len(parsed.text) > 50, path
            assert parsed.snippet and len(parsed.snippet) <= 200
            assert parsed.parse_error is None


def test_unlisted_recipients_message() -> None:
    """`To: unlisted-recipients:; (no To-header on input)` breaks policy.default."""
    parsed = parse_message((NOTMUCH / "lkml" / "cur" / "1382298770.002930:2,").read_bytes())
    assert parsed.subject.startswith("Re: [RFC][PATCH 05/10] cifs: define superblock-level")
    assert parsed.from_email == "dhowells-h+wxahxf7alqt0dzr+alfa@public.gmane.org"
    assert parsed.from_name == "David Howells"
    assert parsed.to == []
    assert len(parsed.cc) == 6
    assert parsed.message_id == "23204.1277472412@redhat.com"
    assert parsed.references[:2] == ["22746.1277470713@redhat.com", "4C24A4A0.90408@suse.de"]
    assert parsed.date == datetime(2010, 6, 25, 13, 26, 52)
    assert parsed.parse_error is None


def test_the_fast_parse_reads_the_corpora_exactly_like_compat32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """_parse_fast splits well-formed MIME with byte searches; it must agree with the feed
    parser everywhere (attached messages aside: the fast path keeps their original bytes)."""

    def comparable(parsed: ParsedMessage) -> dict[str, Any]:
        data = dataclasses.asdict(parsed)
        for attachment in data["attachments"]:
            if attachment["content_type"].startswith("message/"):
                attachment["data"] = len(attachment["data"]) > 0
        return data

    fast_used = 0
    for path in [*STALWART_FILES, *NOTMUCH_FILES]:
        raw = path.read_bytes()
        fast_used += parsing._parse_fast(raw, (), 0, "mixed") is not None
        fast = comparable(parse_message(raw))
        with monkeypatch.context() as patch:
            patch.setattr(parsing, "_parse_fast", lambda *args: None)
            slow = comparable(parse_message(raw))
        assert fast == slow, path
    assert fast_used > 350


# --- hand-built messages ------------------------------------------------------------------------


def _message(headers: str, body: bytes, *, crlf: bool = False) -> bytes:
    head = headers.strip("\n").encode("ascii")
    raw = head + b"\n\n" + body
    return raw.replace(b"\n", b"\r\n") if crlf else raw


def test_iso_2022_jp_subject_and_body() -> None:
    subject = base64.b64encode("日本語の件名".encode("iso2022_jp")).decode()
    # "①" (NEC row 13) is outside JIS X 0208: Python's iso2022_jp codecs refuse it
    body = "こんにちは、世界。".encode("iso2022_jp") + b"\n\x1b$B-!\x1b(B\n"
    raw = _message(
        f"""
From: =?ISO-2022-JP?B?{base64.b64encode("山田".encode("iso2022_jp")).decode()}?= <yamada@example.jp>
Subject: =?ISO-2022-JP?B?{subject}?=
Content-Type: text/plain; charset=ISO-2022-JP
Content-Transfer-Encoding: 7bit
""",
        body,
    )
    parsed = parse_message(raw)
    assert parsed.subject == "日本語の件名"
    assert parsed.from_name == "山田"
    assert parsed.text == "こんにちは、世界。\n①"
    assert parsed.parse_error is None


def test_gb2312_is_decoded_as_gb18030() -> None:
    # 镕 and 喆 are GBK characters that strict GB2312 cannot decode
    subject = base64.b64encode("朱镕基和喆".encode("gb18030")).decode()
    raw = _message(
        f"""
From: someone@example.cn
Subject: =?gb2312?B?{subject}?=
Content-Type: text/plain; charset="gb2312"
Content-Transfer-Encoding: base64
""",
        base64.b64encode("你好\uff0c镕喆。".encode("gb18030")),
    )
    parsed = parse_message(raw)
    assert parsed.subject == "朱镕基和喆"
    assert parsed.text == "你好\uff0c镕喆。"


def test_shift_jis_and_euc_kr_bodies() -> None:
    sjis = _message(
        "From: a@example.jp\nContent-Type: text/plain; charset=Shift_JIS",
        "①テスト".encode("cp932"),
    )
    assert parse_message(sjis).text == "①テスト"
    euckr = _message(
        "From: a@example.kr\nContent-Type: text/plain; charset=euc-kr",
        "안녕하세요".encode("euc-kr"),
    )
    assert parse_message(euckr).text == "안녕하세요"


def test_windows_1252_declared_as_iso_8859_1() -> None:
    raw = _message(
        "From: a@example.com\nContent-Type: text/plain; charset=iso-8859-1",
        b"\x93Smart quotes\x94 cost \x805 \x96 na\xefve caf\xe9",
    )
    assert parse_message(raw).text == "“Smart quotes” cost €5 \u2013 naïve café"


def test_undeclared_utf8_body() -> None:
    raw = _message("From: a@example.com\nSubject: x", "Grüße aus Köln \u2013 5 €".encode())
    assert parse_message(raw).text == "Grüße aus Köln \u2013 5 €"


def test_undeclared_latin1_body_and_raw_8bit_headers() -> None:
    text = (
        "Sehr geehrte Damen und Herren, vielen Dank für Ihre schnelle Antwort. "
        "Die Größe der Lieferung war leider falsch, bitte prüfen Sie die Bestellung. "
        "Mit freundlichen Grüßen aus Köln, Jürgen Müller"
    )
    raw = (
        b"From: J\xfcrgen M\xfcller <jm@example.de>\n"
        b"Subject: Gr\xfc\xdfe aus K\xf6ln\n"
        b"Content-Type: text/plain\n\n" + text.encode("cp1252")
    )
    parsed = parse_message(raw)
    assert parsed.text == text
    assert parsed.subject == "Grüße aus Köln"
    assert parsed.from_name == "Jürgen Müller"
    assert parsed.from_email == "jm@example.de"


# --- undeclared 8-bit text: UTF-8, then what the message declares, then windows-1252; the
# guesser only for long non-Latin text (imapdesk.mail.parsing._guess says why)


def _mail(headers: list[bytes], body: bytes) -> bytes:
    """A message as a mailer sends it: CRLF lines, the usual headers first."""
    head = [
        b"Date: Mon, 3 Jun 2024 09:12:00 +0200",
        b"Message-ID: <8bit-" + hashlib.sha256(body).hexdigest()[:12].encode() + b"@example.net>",
        b"MIME-Version: 1.0",
        *headers,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@pytest.fixture
def guesses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of what the charset guesser was asked about."""
    asked: list[int] = []
    real = parsing.charset_normalizer.from_bytes

    def from_bytes(data: bytes, *args: Any, **kwargs: Any) -> Any:
        asked.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(parsing.charset_normalizer, "from_bytes", from_bytes)
    return asked


def test_undeclared_windows_1252_subject_and_body(guesses: list[int]) -> None:
    """The message of issue 12: `café crème` in windows-1252 and no charset anywhere, once
    shown as "cafﻠ crﻟme" (a guess) with the subject as "café crčme"."""
    raw = _mail(
        [
            b"From: Ren\xe9e Lef\xe8vre <renee@example.fr>",
            b"To: support@example.com",
            b"Subject: caf\xe9 cr\xe8me",
            b"Content-Type: text/plain",
            b"Content-Transfer-Encoding: 8bit",
        ],
        b"caf\xe9 cr\xe8me\r\n\r\nLe caf\xe9 co\xfbte 3,50 \x80 \x96 \x93merci\x94, "
        b"c\x9cur de la commande\x85\r\n",
    )
    parsed = parse_message(raw)
    assert parsed.subject == "café crème"
    assert parsed.text == (
        "café crème\n\nLe café coûte 3,50 € \u2013 \u201cmerci\u201d, cœur de la commande\u2026"
    )
    assert parsed.from_name == "Renée Lefèvre"
    assert "Subject: café crème" in parsed.headers
    assert guesses == []


def test_long_western_text_is_windows_1252_and_never_guessed(guesses: list[int]) -> None:
    """However long, Western text is not the guesser's: its accented letters are the same
    bytes in a dozen codepages (it took this French text for ISO-8859-10)."""
    paragraph = (
        "Bonjour Madame, je vous remercie pour votre réponse rapide. Le café crème était "
        "très bon, mais la commande n\u2019est pas arrivée à temps\u2026 Pourriez-vous "
        "vérifier où elle se trouve ? J\u2019ai le cœur gros : c\u2019est la deuxième fois. "
        "Cordialement, Hélène Lefèvre. "
    )
    text = (paragraph * 20).strip()
    raw = _mail(
        [b"From: helene@example.fr", b"Subject: Commande en retard", b"Content-Type: text/plain"],
        text.encode("cp1252"),
    )
    assert parse_message(raw).text == text
    assert guesses == []


def test_undeclared_body_read_in_the_charset_its_sibling_declares(guesses: list[int]) -> None:
    """The plain part of an alternative has no charset, the HTML part says ISO-8859-1: the
    plain one is read in it (as windows-1252, what ISO-8859-1 means in mail), not guessed."""
    plain = "Grüße aus Köln \u2013 die Größe stimmt nicht, bitte prüfen. Jürgen"
    html_part = "<p>Grüße aus Köln \u2013 die Größe stimmt nicht, bitte prüfen. Jürgen</p>"
    raw = _mail(
        [
            b"From: J\xfcrgen M\xfcller <jm@example.de>",
            b"Subject: Gr\xf6\xdfe falsch",
            b'Content-Type: multipart/alternative; boundary="alt"',
        ],
        b"--alt\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + plain.encode("cp1252")
        + b"\r\n--alt\r\nContent-Type: text/html; charset=ISO-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + html_part.encode("cp1252").replace(b"=", b"=3D").replace(b"\x96", b"=96")
        + b"\r\n--alt--\r\n",
    )
    parsed = parse_message(raw)
    assert parsed.text == plain
    assert parsed.subject == "Größe falsch"
    assert parsed.from_name == "Jürgen Müller"
    assert guesses == []


def test_a_sibling_declaration_reads_short_text_no_guess_could(guesses: list[int]) -> None:
    """Short Russian text without a charset (far too short to guess) beside an HTML part that
    declares KOI8-R: body and raw 8-bit subject are read as KOI8-R."""
    plain = "Здравствуйте! Заказ не пришёл."
    raw = _mail(
        [
            b"From: " + "Иван Петров".encode("koi8-r") + b" <ivan@example.ru>",
            b"Subject: " + "Заказ 4521".encode("koi8-r"),
            b'Content-Type: multipart/mixed; boundary="b1"',
        ],
        b"--b1\r\nContent-Type: text/plain\r\n\r\n"
        + plain.encode("koi8-r")
        + b"\r\n--b1\r\nContent-Type: text/html; charset=koi8-r\r\n"
        b"Content-Disposition: attachment; filename=order.html\r\n\r\n"
        + "<p>Заказ 4521</p>".encode("koi8-r")
        + b"\r\n--b1--\r\n",
    )
    parsed = parse_message(raw)
    assert parsed.text == plain
    assert parsed.subject == "Заказ 4521"
    assert parsed.from_name == "Иван Петров"
    assert guesses == []


def test_valid_utf8_comes_before_any_declaration(guesses: list[int]) -> None:
    """Undeclared bytes that are valid UTF-8 are UTF-8, even where another part declares
    ISO-8859-1 (Latin text is practically never valid UTF-8)."""
    text = "Grüße aus Köln \u2013 5 € für die Größe M"
    raw = _mail(
        [
            "From: Jürgen Müller <jm@example.de>".encode(),
            "Subject: Größe M \u2013 5 €".encode(),
            b'Content-Type: multipart/mixed; boundary="b2"',
        ],
        b"--b2\r\nContent-Type: text/plain\r\n\r\n"
        + text.encode()
        + b"\r\n--b2\r\nContent-Type: text/plain; charset=iso-8859-1; name=note.txt\r\n"
        b"Content-Disposition: attachment; filename=note.txt\r\n\r\n"
        + "Größe".encode("latin-1")
        + b"\r\n--b2--\r\n",
    )
    parsed = parse_message(raw)
    assert parsed.text == text
    assert parsed.subject == "Größe M \u2013 5 €"
    assert parsed.from_name == "Jürgen Müller"
    assert guesses == []


RUSSIAN = (
    "Здравствуйте! Спасибо за быстрый ответ. Увы, заказ до сих пор не пришёл, хотя прошло "
    "уже две недели. Пожалуйста, проверьте, где находится посылка, и сообщите мне номер для "
    "отслеживания. Мы также хотели бы узнать, можно ли изменить адрес доставки на наш офис "
    "возле Невского проспекта: он открыт по будням до шести вечера.\n\n"
    "Заранее спасибо,\n"
    "Иван Петров"
)


def test_long_undeclared_koi8_r_is_guessed_for_body_and_headers(guesses: list[int]) -> None:
    """Long Cyrillic text in KOI8-R and no charset: enough non-Latin words for the guesser,
    whose answer also reads the message's raw 8-bit subject and sender name (each far too short
    to guess on its own)."""
    raw = _mail(
        [
            b"From: " + "Иван Петров".encode("koi8-r") + b" <ivan@example.ru>",
            b"To: support@example.com",
            b"Subject: " + "Заказ не пришёл".encode("koi8-r"),
            b"Content-Type: text/plain",
            b"Content-Transfer-Encoding: 8bit",
        ],
        RUSSIAN.replace("\n", "\r\n").encode("koi8-r"),
    )
    parsed = parse_message(raw)
    assert parsed.text == RUSSIAN
    assert parsed.subject == "Заказ не пришёл"
    assert parsed.from_name == "Иван Петров"
    assert "Subject: Заказ не пришёл" in parsed.headers
    assert len(guesses) == 1, "one guess for the whole message"


def test_short_undeclared_non_latin_text_is_not_guessed(guesses: list[int]) -> None:
    """A line of Russian in KOI8-R alone: too little for a guess to be trusted, so it is read as
    windows-1252, every byte kept (readable again if the sender says what it was)."""
    line = "Заказ не пришёл, проверьте."
    raw = _mail(
        [b"From: ivan@example.ru", b"Subject: order", b"Content-Type: text/plain"],
        line.encode("koi8-r"),
    )
    parsed = parse_message(raw)
    assert parsed.text == line.encode("koi8-r").decode("cp1252")
    assert guesses == []


def test_broken_encoded_words() -> None:
    euro = base64.b64encode("€".encode()).decode()
    raw = _message(
        "From: x@example.com\n"
        # glued to text, split inside a multibyte character, an unknown charset, lower-case q
        "Subject: Price=?utf-8?q?_100?= =?UTF-8?B?4oI=?= =?utf-8?B?rA==?=!"
        f" =?x-unknown?q?caf=C3=A9?= =?utf-8?b?{euro}?=\n",
        b"body",
    )
    # white space between adjacent encoded words is not part of the text (RFC 2047 6.2)
    assert parse_message(raw).subject == "Price 100€! café€"


def test_unknown_and_hostile_charset_names() -> None:
    for charset in ("x-no-such-charset", "unicode-escape", "base64", "utf8mb4", '"utf-8"'):
        raw = _message(
            f"From: a@example.com\nContent-Type: text/plain; charset={charset}",
            "naïve \\u0041".encode(),
        )
        assert parse_message(raw).text == "naïve \\u0041", charset


def test_rfc2231_filename_with_continuation_and_charset() -> None:
    raw = _message(
        """
From: a@example.com
Content-Type: multipart/mixed; boundary="b"
""",
        b"""--b
Content-Type: text/plain

see attachments
--b
Content-Type: application/pdf
Content-Disposition: attachment;
 filename*0*=UTF-8''%E2%82%AC%20rates%20;
 filename*1*=%C3%BCber.pdf
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--b
Content-Type: application/octet-stream; name="=?utf-8?B?w6TDtsO8LnR4dA==?="
Content-Disposition: attachment

AAA=
--b
Content-Type: application/octet-stream
Content-Disposition: attachment; filename="../../etc/passwd"

x
--b--
""",
    )
    parsed = parse_message(raw)
    assert parsed.text == "see attachments"
    names = [a.filename for a in parsed.attachments]
    assert names == ["€ rates über.pdf", "äöü.txt", "passwd"]
    assert parsed.attachments[0].data == b"%PDF-1.4\n"
    assert parsed.attachments[0].content_type == "application/pdf"
    assert not any(a.inline for a in parsed.attachments)


def test_winmail_dat_is_kept_as_it_is() -> None:
    tnef = bytes(range(256)) * 4
    raw = _message(
        """
From: outlook@example.com
Content-Type: multipart/mixed; boundary="XX"
""",
        b"--XX\nContent-Type: text/plain\n\nhello\n--XX\n"
        b'Content-Type: application/ms-tnef; name="winmail.dat"\n'
        b"Content-Transfer-Encoding: base64\n"
        b'Content-Disposition: attachment; filename="winmail.dat"\n\n'
        + base64.encodebytes(tnef)
        + b"--XX--\n",
    )
    parsed = parse_message(raw)
    assert [(a.filename, a.content_type, a.data) for a in parsed.attachments] == [
        ("winmail.dat", "application/ms-tnef", tnef)
    ]


def test_inline_image_with_content_id() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
    raw = _message(
        """
From: a@example.com
Content-Type: multipart/alternative; boundary="alt"
""",
        b"--alt\nContent-Type: text/plain\n\nsee the logo\n--alt\n"
        b'Content-Type: multipart/related; boundary="rel"\n\n'
        b"--rel\nContent-Type: text/html; charset=utf-8\n\n"
        b'<p>see the <img src="cid:logo@example.com" alt="logo"></p>\n'
        b"--rel\nContent-Type: image/png\nContent-ID: < logo@example.com >\n"
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(png) + b"--rel--\n--alt--\n",
        crlf=True,
    )
    parsed = parse_message(raw)
    assert parsed.text == "see the logo"
    assert parsed.html is not None and 'src="cid:logo@example.com"' in parsed.html
    [image] = parsed.attachments
    assert (image.content_type, image.content_id, image.inline, image.data) == (
        "image/png",
        "logo@example.com",
        True,
        png,
    )


def test_text_part_with_disposition_attachment_is_an_attachment() -> None:
    raw = _message(
        'From: a@example.com\nContent-Type: multipart/mixed; boundary="b"',
        b"--b\nContent-Type: text/plain\n\nthe body\n--b\n"
        b"Content-Type: text/plain\nContent-Disposition: attachment; filename=log.txt\n\n"
        b"not the body\n--b\n"
        b"Content-Type: text/plain\nContent-Disposition: inline\n\nmore body\n--b--\n",
    )
    parsed = parse_message(raw)
    assert parsed.text == "the body\n\nmore body"
    assert [(a.filename, a.data) for a in parsed.attachments] == [("log.txt", b"not the body")]
    assert parsed.html is None


def test_html_only_message_gets_a_text_rendering() -> None:
    raw = _message(
        "From: a@example.com\nSubject: hi\nContent-Type: text/html; charset=utf-8",
        b"<html><head><title>T</title><style>p{color:red}</style></head><body>"
        b"<p>Hello&nbsp;<b>there</b>,</p><p>line one<br>line two</p>"
        b"<table><tr><td>a</td><td>b</td></tr></table><script>alert(1)</script></body></html>",
    )
    parsed = parse_message(raw)
    assert parsed.text == "Hello there,\n\nline one\nline two\n\na b"
    assert parsed.snippet == "Hello there, line one line two a b"
    assert parsed.html is not None
    assert "<b>there</b>" in parsed.html
    assert "script" not in parsed.html and "color:red" not in parsed.html


def test_attached_message_is_an_eml_attachment() -> None:
    inner = b"From: b@example.com\nSubject: Original / question\n\nthe original\n"
    raw = _message(
        'From: a@example.com\nContent-Type: multipart/mixed; boundary="b"',
        b"--b\nContent-Type: text/plain\n\nforwarding\n--b\nContent-Type: message/rfc822\n\n"
        + inner
        + b"--b--\n",
    )
    parsed = parse_message(raw)
    assert parsed.text == "forwarding"
    [attached] = parsed.attachments
    assert (attached.filename, attached.content_type) == (
        "Original _ question.eml",
        "message/rfc822",
    )
    assert attached.data == inner.rstrip(b"\n")


def test_bounce() -> None:
    raw = _message(
        """
From: Mail Delivery System <MAILER-DAEMON@mx.example.com>
Return-Path: <>
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=delivery-status; boundary="r"
""",
        b"""--r
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.
--r
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; nobody@example.org
Action: failed
Status: 5.1.1
--r
Content-Type: message/rfc822

From: support@example.org
Subject: Your ticket

hello
--r--
""",
    )
    parsed = parse_message(raw)
    assert parsed.is_bounce and parsed.auto_submitted
    assert parsed.text.startswith("I'm sorry")
    types = [a.content_type for a in parsed.attachments]
    assert types == ["message/delivery-status", "message/rfc822"]
    assert b"Status: 5.1.1" in parsed.attachments[0].data
    assert parsed.attachments[1].filename == "Your ticket.eml"


def test_bounce_detected_from_the_sender_alone() -> None:
    raw = _message("From: postmaster@example.com\nSubject: failure", b"could not deliver")
    parsed = parse_message(raw)
    assert parsed.is_bounce and parsed.auto_submitted and not parsed.is_list


@pytest.mark.parametrize(
    ("headers", "auto", "is_list"),
    [
        ("Auto-Submitted: auto-replied", True, False),
        ("Auto-Submitted: auto-generated (vacation)", True, False),
        ("Auto-Submitted: no", False, False),
        ("Auto-Submitted: No (a human)", False, False),
        ("List-Id: Helpdesk users <users.example.com>", False, True),
        ("Precedence: bulk", False, True),
        ("Precedence: junk", False, True),
        ("Precedence: auto_reply", True, False),
        ("Return-Path: < >", True, False),
        ("X-Autoreply: yes", True, False),
        ("Content-Type: multipart/report; report-type=disposition-notification", True, False),
        ("X-Nothing: here", False, False),
    ],
)
def test_automatic_and_list_mail(headers: str, auto: bool, is_list: bool) -> None:
    parsed = parse_message(_message(f"From: a@example.com\n{headers}", b"body"))
    assert (parsed.auto_submitted, parsed.is_list, parsed.is_bounce) == (auto, is_list, False)


class _Inventory(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]


HOSTILE_HTML = """<html><head><title>t</title>
<style>body { background: url(javascript:alert(1)) }</style>
<meta http-equiv="refresh" content="0;url=javascript:alert(2)">
<base href="javascript:alert(3)//"><link rel="stylesheet" href="http://evil.example/x.css">
</head><body onload="alert(4)">
<script>alert(5)</script><img src="x" onerror="alert(6)"><IMG SRC=x OnError=alert(7)>
<a href="javascript:alert(8)">a</a><a href="jav&#x61;script:alert(9)">b</a>
<a href="jav&#x09;ascript:alert(10)">c</a><a href=" JaVaScRiPt:alert(11)">d</a>
<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(12)">e</a>
<a href="vbscript:msgbox(13)">f</a><a href="data:text/html;base64,PHNjcmlwdD4=">g</a>
<a href="DaTa:text/html,<script>alert(14)</script>">h</a>
<svg><script>alert(15)</script><a xlink:href="javascript:alert(16)"><text>s</text></a></svg>
<svg onload="alert(17)"/><math><mtext><table><mglyph><style><img src=x onerror=alert(18)>
</style></mglyph></table></mtext></math><math href="javascript:alert(19)">m</math>
<iframe srcdoc="<script>alert(20)</script>"></iframe><iframe src="javascript:alert(21)">
</iframe><object data="javascript:alert(22)"></object><embed src="javascript:alert(23)">
<div style="width: expression(alert(24))">styled</div>
<form action="javascript:alert(25)"><button formaction="javascript:alert(26)">go</button></form>
<noscript><p title="</noscript><img src=x onerror=alert(27)>"></noscript>
<template><script>alert(28)</script></template><!--[if IE]><script>alert(29)</script><![endif]-->
<p onclick="alert(30)" ONMOUSEOVER="alert(31)" style="color:red">para</p>
<table background="javascript:alert(32)"><tr><td>cell</td></tr></table>
<a href="https://ok.example/path?q=1">ok</a><a href="mailto:help@example.com">mail</a>
<img src="cid:logo@example.com"><img src="data:image/png;base64,iVBORw0KGgo=">
<img src="/api/v1/logout"><a href="../admin">rel</a><a href="#top">top</a>
<img src="//cdn.example.com/logo.png">
</body></html>"""


def test_hostile_html_leaves_nothing_executable() -> None:
    cleaned = sanitize_html(HOSTILE_HTML)
    inventory = _Inventory()
    inventory.feed(cleaned)
    forbidden = {
        "script", "style", "iframe", "object", "embed", "form", "button", "svg", "math",
        "meta", "link", "base", "noscript", "template", "title", "html", "head", "body",
    }  # fmt: skip
    assert not inventory.tags & forbidden, inventory.tags & forbidden
    for tag, name, value in inventory.attributes:
        assert not name.startswith("on"), (tag, name)
        assert name not in ("style", "srcdoc", "action", "formaction", "background", "xlink:href")
        if name in ("href", "src"):
            # relative URLs would point into the helpdesk itself: only absolute ones remain
            if value.startswith("#") and tag == "a":
                continue
            scheme = re.sub(r"[\x00-\x20]", "", value).lower().partition(":")[0]
            allowed = {"http", "https", "mailto", "tel"} | (
                {"cid", "data"} if tag == "img" else set()
            )
            assert scheme in allowed, (tag, name, value)
    lowered = cleaned.lower()
    for needle in ("javascript", "vbscript", "expression(", "alert(", "<script", "srcdoc"):
        assert needle not in lowered, needle
    # what is harmless survives
    assert (
        '<a href="https://ok.example/path?q=1" rel="noopener noreferrer nofollow">ok</a>' in cleaned
    )
    assert 'href="mailto:help@example.com"' in cleaned
    assert '<img src="cid:logo@example.com">' in cleaned
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in cleaned
    assert "<td>cell</td>" in cleaned and "<p>para</p>" in cleaned
    assert '<a href="#top"' in cleaned
    assert '<img src="https://cdn.example.com/logo.png">' in cleaned
    assert "/api/v1/logout" not in cleaned and "../admin" not in cleaned


def test_hostile_html_in_a_message() -> None:
    raw = _message(
        "From: a@example.com\nContent-Type: text/html; charset=utf-8", HOSTILE_HTML.encode()
    )
    parsed = parse_message(raw)
    assert parsed.html is not None
    assert "javascript" not in parsed.html.lower() and "alert(" not in parsed.html
    assert "alert(" not in parsed.text
    assert "para" in parsed.text and "ok" in parsed.text


def test_layout_attributes_are_kept() -> None:
    cleaned = sanitize_html(
        '<table width="600" cellpadding="4" cellspacing="0" border="1" bgcolor="#fff" '
        'class="x" id="y"><tr><td colspan="2" align="center" valign="top">'
        '<font color="red" face="Arial" size="2">hi</font></td></tr></table><center>c</center>'
    )
    assert (
        '<table width="600" cellpadding="4" cellspacing="0" border="1" bgcolor="#fff">' in cleaned
    )
    assert '<td colspan="2" align="center" valign="top">' in cleaned
    assert '<font color="red" face="Arial" size="2">hi</font>' in cleaned
    assert "<center>c</center>" in cleaned
    assert "class=" not in cleaned and "id=" not in cleaned


# --- headers ------------------------------------------------------------------------------------


def test_message_ids_and_references() -> None:
    raw = _message(
        """
From: "Doe, Jane" <Jane.Doe@Example.COM>
To: support@example.org, "Bob" <bob@example.org>, support@example.org
Cc: undisclosed-recipients:;
Reply-To: =?utf-8?q?J=C3=A4ne?= <reply@example.com>
Message-ID:  < abc.123@example.com >
In-Reply-To: Your message of Monday <first@example.com> <second@example.com>
References: <root@example.com>
 <first@example.com> <root@example.com>
	<second@example.com>
Subject: =?utf-8?q?Re=3A_caf=C3=A9?=
 =?utf-8?q?_order?=
Date: Mon, 3 Jun 2024 11:59:58 +0200
""",
        b"hi",
    )
    parsed = parse_message(raw)
    assert parsed.message_id == "abc.123@example.com"
    assert parsed.in_reply_to == "second@example.com"
    assert parsed.references == ["root@example.com", "first@example.com", "second@example.com"]
    assert parsed.from_email == "jane.doe@example.com"
    assert parsed.from_name == "Doe, Jane"
    assert parsed.to == [
        {"email": "support@example.org", "name": ""},
        {"email": "bob@example.org", "name": "Bob"},
    ]
    assert parsed.cc == []
    assert parsed.reply_to == [{"email": "reply@example.com", "name": "Jäne"}]
    assert parsed.subject == "Re: café order"
    assert parsed.date == datetime(2024, 6, 3, 9, 59, 58)
    assert parsed.headers.startswith('From: "Doe, Jane" <Jane.Doe@Example.COM>\nTo:')
    assert "Date: Mon, 3 Jun 2024 11:59:58 +0200" in parsed.headers


def test_normalize_and_extract_msgids() -> None:
    assert normalize_msgid("<a@b>") == "a@b"
    assert normalize_msgid("  <a@\n b> (comment)") == "a@b"
    assert normalize_msgid("a@b") == "a@b"
    assert normalize_msgid("<>") is None
    assert normalize_msgid("   ") is None
    assert extract_msgids(None) == []
    assert extract_msgids("<a@b> <c@d>\n\t<a@b>") == ["a@b", "c@d"]
    assert extract_msgids("a@b, c@d") == ["a@b", "c@d"]  # brackets forgotten


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 3 Jun 2024 11:59:58 +0200", datetime(2024, 6, 3, 9, 59, 58)),
        ("3 Jun 2024 11:59:58 -0000", datetime(2024, 6, 3, 11, 59, 58)),
        ("Mon, 3 Jun 24 11:59 EST", datetime(2024, 6, 3, 16, 59)),
        ("Tue, 1 Jan 3000 00:00:00 +0000", None),
        ("Thu, 1 Jan 1920 00:00:00 +0000", None),
        ("Mon, 32 Foo 2024 99:99:99 +9999", None),
        ("yesterday", None),
        ("", None),
    ],
)
def test_dates(value: str, expected: datetime | None) -> None:
    parsed = parse_message(_message(f"From: a@example.com\nDate: {value}", b"x"))
    assert parsed.date == expected
    assert parsed.date is None or parsed.date.tzinfo is None


@pytest.mark.parametrize(
    ("subject", "key"),
    [
        ("Re: Fwd: [list] RE: AW: Hello   World (fwd)", "hello world"),
        ("WG: Re[2]: Hallo", "hallo"),
        ("SV: VS: Moi", "moi"),
        ("Réf. : Facture", "facture"),
        ("回复\uff1a转发: 你好", "你好"),
        ("RE: 転送: テスト", "テスト"),
        ("Re: [#42] Order 123", "order 123"),
        ("[Bug 123]", "[bug 123]"),
        ("Re: [Bug 123]", "[bug 123]"),
        ("Réponse", "réponse"),
        ("Regarding the invoice", "regarding the invoice"),
        ("", ""),
    ],
)
def test_base_subject(subject: str, key: str) -> None:
    assert base_subject(subject) == key


def test_base_subject_is_bounded() -> None:
    assert len(base_subject("Re: " + "x" * 1000)) == 255


# --- robustness ---------------------------------------------------------------------------------


def test_missing_header_body_separator() -> None:
    raw = b"From: a@example.com\nSubject: no blank line\nthis is the body\nand more\n"
    parsed = parse_message(raw)
    assert parsed.subject == "no blank line"
    assert parsed.from_email == "a@example.com"
    assert "this is the body" in parsed.text
    assert (
        parsed.parse_error is not None and "MissingHeaderBodySeparatorDefect" in parsed.parse_error
    )


def test_junk_line_among_headers_is_skipped() -> None:
    raw = (
        b"Received: from x by y\nthis line is junk\nFrom: a@example.com\nSubject: kept\n"
        b"Content-Type: text/plain; charset=utf-8\n\nthe body\n"
    )
    parsed = parse_message(raw)
    assert (parsed.subject, parsed.from_email, parsed.text) == ("kept", "a@example.com", "the body")
    assert parsed.parse_error is not None


def test_broken_multipart_still_shows_the_text() -> None:
    raw = _message(
        'From: a@example.com\nSubject: s\nContent-Type: multipart/mixed; boundary="nope"',
        b"--other\nContent-Type: text/plain\n\nthe text\n--other--\n",
    )
    parsed = parse_message(raw)
    assert "the text" in parsed.text
    assert parsed.parse_error is not None and "StartBoundaryNotFoundDefect" in parsed.parse_error


def test_multipart_boundary_without_semicolon_is_recovered() -> None:
    raw = _message(
        'From: a@example.com\nContent-Type: multipart/mixed\n\tboundary="bb"',
        b"--bb\nContent-Type: text/plain\n\nthe text\n--bb\nContent-Type: image/gif\n"
        b"Content-Transfer-Encoding: base64\n\nR0lGODlh\n--bb--\n",
    )
    parsed = parse_message(raw)
    assert parsed.text == "the text"
    assert [a.content_type for a in parsed.attachments] == ["image/gif"]


def test_quoted_printable_with_sloppy_transfer_encoding_header() -> None:
    raw = _message(
        "From: a@example.com\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding:   Quoted-Printable\t ",
        b"caf=C3=A9 =\nlong line",
    )
    assert parse_message(raw).text == "café long line"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\n\n\n",
        b"\x00" * 100,
        b"\xff\xfe" * 500,
        b"From: \n",
        b"Content-Type: multipart/mixed; boundary=x\n\n",
        b"Content-Type: multipart/mixed; boundary=x\n\n--x\n--x\n--x--",
        b"Content-Type: message/rfc822\n\nContent-Type: message/rfc822\n\n",
        b"Content-Type: text/plain; charset=\xff\xfe\n\nx",
        b"Subject: =?utf-8?b?====?= =?utf-8?q?=ZZ?= =??q?x?=\n\nx",
        b"Date: Mon, 99 Jan 99999999 99:99:99 +9999\n\nx",
        b"Content-Type: multipart/mixed; boundary=a\n\n"
        + b"--a\nContent-Type: multipart/mixed; boundary=a\n\n" * 300,
        b"Content-Type: text/html\n\n" + b"<div>" * 20000,
    ],
)
def test_never_raises(raw: bytes) -> None:
    parsed = parse_message(raw)
    assert isinstance(parsed, ParsedMessage)
    assert parsed.size == len(raw)
    for text in (parsed.text, parsed.subject, parsed.headers, parsed.snippet):
        assert "\x00" not in text
        text.encode("utf-8")


def test_never_raises_on_random_mutations() -> None:
    rng = random.Random(20240603)
    seeds = [p.read_bytes() for p in STALWART_FILES[::5]]
    for _ in range(300):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 20)):
            position = rng.randrange(len(raw) + 1)
            raw[position:position] = bytes([rng.randrange(256)]) * rng.randint(1, 3)
        parsed = parse_message(bytes(raw))
        assert parsed.size == len(raw)
        parsed.text.encode("utf-8")


def test_a_failing_stage_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(parsing, "_walk_parts", explode)
    parsed = parse_message(b"From: a@example.com\nSubject: s\n\nthe body\n")
    assert parsed.subject == "s"
    assert parsed.text == "the body"
    assert parsed.parse_error is not None and "RuntimeError: boom" in parsed.parse_error


# --- attachments storage ------------------------------------------------------------------------


def test_store_blob_is_content_addressed(tmp_path: Path) -> None:
    data = b"some attachment bytes"
    digest = store_blob(tmp_path, data)
    assert digest == hashlib.sha256(data).hexdigest()
    path = blob_path(tmp_path, digest)
    assert path == tmp_path / digest[:2] / digest
    assert path.read_bytes() == data
    assert store_blob(tmp_path, b"other bytes") != digest
    assert store_blob(tmp_path, b"") == hashlib.sha256(b"").hexdigest()


def test_store_blob_is_idempotent(tmp_path: Path) -> None:
    data = os.urandom(4096)
    digest = store_blob(tmp_path, data)
    path = blob_path(tmp_path, digest)
    before = path.stat()
    assert store_blob(tmp_path, data, fsync=True) == digest
    after = path.stat()
    # not written again (the same file, the same bytes), only touched: the clean-up of pasted
    # images never sent leaves bytes stored again lately alone (domain/outbound/images.py)
    assert before.st_ino == after.st_ino and path.read_bytes() == data
    assert after.st_mtime_ns >= before.st_mtime_ns
    assert sorted(p.name for p in path.parent.iterdir()) == [digest]  # no temp files left


def test_store_blob_repairs_a_truncated_file(tmp_path: Path) -> None:
    data = b"x" * 1000
    digest = store_blob(tmp_path, data)
    blob_path(tmp_path, digest).write_bytes(b"")
    assert store_blob(tmp_path, data) == digest
    assert blob_path(tmp_path, digest).read_bytes() == data


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABC", "a" * 63, "A" * 64, "g" * 64, ""])
def test_blob_path_refuses_anything_but_a_digest(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        blob_path(tmp_path, bad)


def test_sanitizing_keeps_the_quote_marks_of_mail_clients_and_no_other_class_or_id() -> None:
    html = (
        '<div class="gmail_quote evil" id="x" onclick="1"><div class="gmail_attr">On x wrote:'
        '</div><blockquote class="gmail_quote" type="cite" style="color:red">q</blockquote></div>'
        '<div id="divRplyFwdMsg">a</div><div id="appendonsend"></div><div id="other" class="foo">'
        'b</div><blockquote type="evil">c</blockquote><span class="gmail_quote">d</span>'
    )
    clean = sanitize_html(html)
    assert '<div class="gmail_quote"><div class="gmail_attr">' in clean
    assert '<blockquote class="gmail_quote" type="cite">q</blockquote>' in clean
    assert '<div id="divRplyFwdMsg">' in clean and '<div id="appendonsend">' in clean
    for gone in ("evil", "onclick", 'id="x"', "other", "foo", "style", "span class"):
        assert gone not in clean, gone
