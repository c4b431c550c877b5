"""The demo mailboxes and the synthetic corpus: parseable, decodable, threaded, reproducible."""

from __future__ import annotations

import csv
import email
import io
import re
import statistics
import struct
import time
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

import pytest

from imapdesk.devtools.demo_data import (
    CHINESE_SUBJECT,
    CROSS_BOX_SUBJECT,
    EMOJI_SUBJECT,
    FRENCH_SUBJECT,
    GERMAN_SUBJECT,
    INLINE_IMAGE_CID,
    INVOICE_PDF,
    JAPANESE_NAME,
    JAPANESE_SUBJECT,
    NEWSLETTER_BANNER,
    NEWSLETTER_PIXEL,
    OUTLOOK_STRIPPED_SUBJECT,
    RUSSIAN_SUBJECT,
    DemoMailbox,
    DemoMessage,
    SyntheticCorpus,
    demo_mailboxes,
    synthetic_corpus,
    synthetic_thread_count,
)

NOW = datetime(2024, 6, 14, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def boxes() -> dict[str, DemoMailbox]:
    return {box.name: box for box in demo_mailboxes(NOW)}


def _parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _all(boxes: dict[str, DemoMailbox]) -> list[tuple[str, DemoMessage, EmailMessage]]:
    return [(box.name, m, _parse(m.raw)) for box in boxes.values() for m in box.messages]


def _find(boxes: dict[str, DemoMailbox], subject: str, box: str = "support") -> EmailMessage:
    found = [msg for name, _, msg in _all(boxes) if name == box and str(msg["Subject"]) == subject]
    assert found, f"no message {subject!r} in {box}"
    return found[0]


def _decode_compat32(value: str) -> str:
    return str(make_header(decode_header(value)))


# ---- the demo mailboxes: structure


def test_two_shared_boxes(boxes: dict[str, DemoMailbox]) -> None:
    assert boxes["support"].address == "support@example.test"
    assert boxes["info"].address == "info@example.test"
    for box in boxes.values():
        assert {m.folder for m in box.messages} == {"INBOX", "Sent"}
        for message in box.messages:
            assert isinstance(message.raw, bytes)
            assert isinstance(message.flags, tuple)


def _conversation_roots(box: DemoMailbox) -> int:
    """Conversations as a helpdesk would see them: reply chains, plus subject for Outlook."""
    parents: dict[str, str] = {}
    subjects: dict[str, str] = {}
    for message in box.messages:
        msg = _parse(message.raw)
        mid = str(msg["Message-ID"])
        if msg["In-Reply-To"]:
            parents[mid] = str(msg["In-Reply-To"])
        subjects[mid] = re.sub(r"^(re|out of office):\s*", "", str(msg["Subject"]), flags=re.I)
    roots = set()
    for mid in subjects:
        while mid in parents and parents[mid] in subjects:
            mid = parents[mid]
        roots.add(subjects[mid].lower())
    return len(roots)


def test_conversation_counts(boxes: dict[str, DemoMailbox]) -> None:
    assert 23 <= _conversation_roots(boxes["support"]) <= 28
    assert 9 <= _conversation_roots(boxes["info"]) <= 12


def test_every_message_parses_with_both_policies(boxes: dict[str, DemoMailbox]) -> None:
    for _, message, _ in _all(boxes):
        for pol in (policy.default, policy.compat32):
            msg = email.message_from_bytes(message.raw, policy=pol)
            assert msg.defects == []
            for part in msg.walk():
                assert part.defects == [], (msg["Subject"], part.get_content_type())
                if part.get_content_maintype() == "text":
                    payload = part.get_payload(decode=True)
                    assert isinstance(payload, bytes)
                    payload.decode(part.get_content_charset() or "us-ascii")
        msg = _parse(message.raw)
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                assert isinstance(part.get_content(), str)


def test_crlf_only_and_line_length(boxes: dict[str, DemoMailbox]) -> None:
    for _, message, _ in _all(boxes):
        raw = message.raw
        assert b"\r" not in raw.replace(b"\r\n", b"")
        assert b"\n" not in raw.replace(b"\r\n", b"")
        assert raw.endswith(b"\r\n")
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_deterministic_for_a_given_now() -> None:
    assert demo_mailboxes(NOW) == demo_mailboxes(NOW)
    assert demo_mailboxes(NOW) != demo_mailboxes(NOW + timedelta(days=1))


def test_dates_spread_over_the_last_days(boxes: dict[str, DemoMailbox]) -> None:
    dates = []
    for _, message, msg in _all(boxes):
        date = parsedate_to_datetime(str(msg["Date"]))
        assert NOW - timedelta(days=7) <= date <= NOW
        assert message.internal_date is not None
        assert date <= message.internal_date <= NOW
        dates.append(date)
    assert max(dates) - min(dates) > timedelta(days=4)
    assert NOW - max(dates) < timedelta(hours=3)
    # Each box lists its messages in arrival order, as APPEND would number them.
    for box in boxes.values():
        arrivals = [m.internal_date for m in box.messages]
        assert arrivals == sorted(arrivals)  # type: ignore[type-var]


def test_default_now_looks_fresh() -> None:
    before = datetime.now(UTC)
    latest = max(
        parsedate_to_datetime(str(_parse(m.raw)["Date"]))
        for box in demo_mailboxes()
        for m in box.messages
    )
    assert before - timedelta(hours=3) < latest <= datetime.now(UTC)


def test_senders_and_message_ids(boxes: dict[str, DemoMailbox]) -> None:
    customer_domains = set()
    for _, _, msg in _all(boxes):
        _, address = parseaddr(str(msg["From"]))
        domain = address.rsplit("@", 1)[1].lower()
        assert re.fullmatch(r"([a-z0-9-]+\.)*example\.[a-z]+", domain), domain
        message_id = str(msg["Message-ID"])
        assert message_id.startswith("<") and message_id.endswith(">")
        assert message_id[1:-1].rsplit("@", 1)[1].lower() == domain
        if domain != "example.test":
            customer_domains.add(domain.rsplit(".", 1)[1])
    assert {"com", "org", "net", "jp", "de", "fr", "cn"} <= customer_domains


def test_message_ids_unique_except_cross_box(boxes: dict[str, DemoMailbox]) -> None:
    for box in boxes.values():
        ids = [str(_parse(m.raw)["Message-ID"]) for m in box.messages]
        assert len(ids) == len(set(ids))


# ---- charsets


def test_japanese_iso_2022_jp(boxes: dict[str, DemoMailbox]) -> None:
    raw = next(m.raw for m in boxes["support"].messages if b"taro.yamada@example.jp>" in m.raw)
    assert b"Subject: =?ISO-2022-JP?B?" in raw
    assert b"From: =?ISO-2022-JP?B?" in raw
    msg = _parse(raw)
    assert str(msg["Subject"]) == JAPANESE_SUBJECT
    assert msg["From"].addresses[0].display_name == JAPANESE_NAME
    assert msg.get_content_charset() == "iso-2022-jp"
    assert msg["Content-Transfer-Encoding"] == "7bit"
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(body) < 0x80 and b"\x1b$B" in body  # 7-bit with JIS escape sequences
    assert "株式会社サンプル" in msg.get_content()

    legacy = email.message_from_bytes(raw, policy=policy.compat32)
    assert _decode_compat32(legacy["Subject"]) == JAPANESE_SUBJECT
    payload = legacy.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert "請求書番号" in payload.decode("iso-2022-jp")

    reply = _find(boxes, "Re: " + JAPANESE_SUBJECT)
    assert reply["In-Reply-To"]


def test_chinese_gb2312(boxes: dict[str, DemoMailbox]) -> None:
    raw = next(m.raw for m in boxes["support"].messages if b"wang.wei@example.cn" in m.raw)
    assert b"Subject: =?GB2312?B?" in raw
    msg = _parse(raw)
    assert str(msg["Subject"]) == CHINESE_SUBJECT
    assert msg.get_content_charset() == "gb2312"
    assert "无法登录" in msg.get_content()
    legacy = email.message_from_bytes(raw, policy=policy.compat32)
    assert _decode_compat32(legacy["Subject"]) == CHINESE_SUBJECT


def test_german_latin1_quoted_printable(boxes: dict[str, DemoMailbox]) -> None:
    msg = _find(boxes, GERMAN_SUBJECT)
    assert msg.get_content_charset() == "iso-8859-1"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg["From"].addresses[0].display_name == "Jürgen Müller"
    text = msg.get_content()
    assert "Grüßen" in text and "München" in text and "Änderung" in text
    assert "=?ISO-8859-1?Q?R=FCckfrage" in msg.as_string(policy=policy.compat32)


def test_french_windows_1252(boxes: dict[str, DemoMailbox]) -> None:
    msg = _find(boxes, FRENCH_SUBJECT)
    assert msg.get_content_charset() == "windows-1252"
    text = msg.get_content()
    # Characters that exist in windows-1252 but not in ISO-8859-1.
    for char in ("€", "\u2019", "\u2013", "Œ"):
        assert char in text
    payload = msg.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert payload.decode("latin-1") != text


def test_utf8_emoji(boxes: dict[str, DemoMailbox]) -> None:
    msg = _find(boxes, EMOJI_SUBJECT)
    assert "🎉" in str(msg["Subject"])
    assert msg.get_content_charset() == "utf-8"
    assert "🙏" in msg.get_content()


def test_russian_koi8_r(boxes: dict[str, DemoMailbox]) -> None:
    raw = next(m.raw for m in boxes["support"].messages if b"d.smirnov@example.org" in m.raw)
    assert b"=?KOI8-R?B?" in raw
    msg = _parse(raw)
    assert str(msg["Subject"]) == RUSSIAN_SUBJECT
    assert msg.get_content_charset() == "koi8-r"
    assert msg["Content-Transfer-Encoding"] == "8bit"
    assert "уведомления" in msg.get_content()
    assert msg["From"].addresses[0].display_name == "Дмитрий Смирнов"


# ---- HTML and attachments


def _png_ok(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height = size
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)
    return size


def test_outlook_html_alternative(boxes: dict[str, DemoMailbox]) -> None:
    msg = _find(boxes, "Cannot export reports to Excel")
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["X-Mailer"].startswith("Microsoft Outlook")
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and html is not None
    assert "MsoNormal" in html.get_content()
    assert "Monthly tickets" in plain.get_content()


def test_inline_image_cid_matches_a_part(boxes: dict[str, DemoMailbox]) -> None:
    msg = _find(boxes, "Error when saving an automation rule")
    html = msg.get_body(("html",))
    assert html is not None
    cids = re.findall(r'src="cid:([^"]+)"', html.get_content())
    assert cids == [INLINE_IMAGE_CID]
    images = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 1
    assert images[0]["Content-ID"] == f"<{INLINE_IMAGE_CID}>"
    assert images[0].get_content_disposition() == "inline"
    related = [p for p in msg.walk() if p.get_content_type() == "multipart/related"]
    assert related and images[0] in related[0].iter_parts()
    _png_ok(images[0].get_content())


def test_newsletter_with_remote_image_and_tracking_pixel(boxes: dict[str, DemoMailbox]) -> None:
    msg = next(m for name, _, m in _all(boxes) if name == "info" and m["List-Unsubscribe-Post"])
    html = msg.get_body(("html",))
    assert html is not None
    content = html.get_content()
    assert f'src="{NEWSLETTER_BANNER}"' in content
    assert f'src="{NEWSLETTER_PIXEL}" width="1" height="1"' in content
    assert msg["List-Id"]


def test_attachments(boxes: dict[str, DemoMailbox]) -> None:
    attachments = {}
    for _, _, msg in _all(boxes):
        for part in msg.iter_attachments():
            filename = part.get_filename()
            if part.get_content_maintype() == "message":
                continue  # the bounce's report parts
            assert filename
            attachments[filename] = (part.get_content_type(), part.get_content())
    content_type, pdf = attachments[INVOICE_PDF]
    assert content_type == "application/pdf"
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    startxref = int(pdf.rsplit(b"startxref", 1)[1].split()[0])
    assert pdf[startxref:].startswith(b"xref")

    content_type, data = attachments["users-import.csv"]
    assert content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(data)))
    assert len(rows) > 37 and None in rows[36]  # row 37 has one field too many

    content_type, png = attachments["screenshot-502.png"]
    assert content_type == "image/png"
    assert _png_ok(png) == (48, 24)

    content_type, tnef = attachments["winmail.dat"]
    assert content_type == "application/ms-tnef"
    assert struct.unpack("<I", tnef[:4])[0] == 0x223E9F78
    assert b"%PDF-1.4" in tnef

    assert "CV-Mateo-Fernández.pdf" in attachments


# ---- threads and special senders


def test_replies_reference_earlier_messages(boxes: dict[str, DemoMailbox]) -> None:
    for box in boxes.values():
        dates = {}
        for message in box.messages:
            msg = _parse(message.raw)
            dates[str(msg["Message-ID"])] = parsedate_to_datetime(str(msg["Date"]))
        for message in box.messages:
            msg = _parse(message.raw)
            parent = msg["In-Reply-To"]
            if parent is None:
                assert msg["References"] is None
                continue
            references = str(msg["References"]).split()
            assert references[-1] == str(parent)
            for ref in references:
                assert ref in dates, (box.name, msg["Subject"], ref)
                assert dates[ref] < dates[str(msg["Message-ID"])]


def test_our_replies_in_sent(boxes: dict[str, DemoMailbox]) -> None:
    for box in boxes.values():
        sent = [m for m in box.messages if m.folder == "Sent"]
        assert sent
        for message in sent:
            msg = _parse(message.raw)
            assert message.flags == ("\\Seen",)
            assert msg["From"].addresses[0].addr_spec == box.address
            assert str(msg["Subject"]).startswith("Re: ")
            assert "[#" not in str(msg["Subject"])
            assert msg["In-Reply-To"]
            assert "Delivered-To" not in msg


def test_long_thread(boxes: dict[str, DemoMailbox]) -> None:
    subject = "Sync keeps failing after upgrading to 4.2"
    thread = [
        msg for _, _, msg in _all(boxes) if str(msg["Subject"]).removeprefix("Re: ") == subject
    ]
    assert len(thread) >= 15
    senders = Counter(msg["From"].addresses[0].addr_spec for msg in thread)
    assert set(senders) == {"olivia.bennett@example.com", "support@example.test"}
    assert max(len(str(msg["References"] or "").split()) for msg in thread) == len(thread) - 1


def test_outlook_reply_without_thread_headers(boxes: dict[str, DemoMailbox]) -> None:
    reply = _find(boxes, "RE: " + OUTLOOK_STRIPPED_SUBJECT)
    assert reply["In-Reply-To"] is None and reply["References"] is None
    assert reply["Thread-Topic"] == OUTLOOK_STRIPPED_SUBJECT
    original = _find(boxes, OUTLOOK_STRIPPED_SUBJECT)
    assert reply["From"].addresses[0].addr_spec == original["From"].addresses[0].addr_spec


def test_same_message_delivered_to_both_boxes(boxes: dict[str, DemoMailbox]) -> None:
    def ids(box: DemoMailbox) -> dict[str, EmailMessage]:
        return {
            str(msg["Message-ID"]): msg
            for msg in (_parse(m.raw) for m in box.messages if m.folder == "INBOX")
        }

    support, info = ids(boxes["support"]), ids(boxes["info"])
    shared = set(support) & set(info)
    assert len(shared) == 2
    for mid in shared:
        assert CROSS_BOX_SUBJECT in str(support[mid]["Subject"])
        assert support[mid]["Delivered-To"] == "support@example.test"
        assert info[mid]["Delivered-To"] == "info@example.test"
        recipients = {
            a for _, a in getaddresses([str(support[mid]["To"]), str(support[mid]["Cc"])])
        }
        assert recipients == {"support@example.test", "info@example.test"}


def test_auto_reply(boxes: dict[str, DemoMailbox]) -> None:
    auto = [msg for _, _, msg in _all(boxes) if msg["Auto-Submitted"] == "auto-replied"]
    out_of_office = [m for m in auto if str(m["Subject"]).startswith("Out of office")]
    assert len(out_of_office) == 1
    assert out_of_office[0]["Return-Path"] == "<>"
    assert out_of_office[0]["In-Reply-To"]


def test_bounce(boxes: dict[str, DemoMailbox]) -> None:
    bounce = next(msg for _, _, msg in _all(boxes) if msg.get_content_type() == "multipart/report")
    assert bounce.get_param("report-type") == "delivery-status"
    assert bounce["From"].addresses[0].username == "MAILER-DAEMON"
    types = [p.get_content_type() for p in bounce.iter_parts()]
    assert types == ["text/plain", "message/delivery-status", "message/rfc822"]
    status = list(bounce.iter_parts())[1].get_payload()
    assert isinstance(status, list) and isinstance(status[1], Message)
    assert status[1]["Status"] == "5.1.1"
    original = list(bounce.iter_parts())[2].get_content()
    sent_ids = {
        str(_parse(m.raw)["Message-ID"]) for m in boxes["support"].messages if m.folder == "Sent"
    }
    assert str(original["Message-ID"]) in sent_ids
    # compat32 sees the same structure
    legacy = email.message_from_bytes(bounce.as_bytes(), policy=policy.compat32)
    assert legacy.get_content_type() == "multipart/report"


def test_mailing_list_message(boxes: dict[str, DemoMailbox]) -> None:
    listed = [msg for _, _, msg in _all(boxes) if msg["List-Id"]]
    assert any("status.lists.example.net" in str(m["List-Id"]) for m in listed)
    assert all(m["Precedence"] in ("list", "bulk") for m in listed)


def test_flags(boxes: dict[str, DemoMailbox]) -> None:
    inbox = [m for box in boxes.values() for m in box.messages if m.folder == "INBOX"]
    unseen = [m for m in inbox if "\\Seen" not in m.flags]
    assert len(unseen) > len(inbox) / 2
    assert sum(1 for m in inbox if not m.flags) == len(unseen)
    assert sum(1 for m in inbox if "\\Flagged" in m.flags) == 1
    assert any(m.flags == ("\\Seen",) for m in inbox)
    assert {flag for m in inbox for flag in m.flags} <= {"\\Seen", "\\Answered", "\\Flagged"}


# ---- the synthetic corpus


def _headers(raw: bytes) -> Message:
    return email.message_from_bytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")


@pytest.fixture(scope="module")
def corpus() -> tuple[SyntheticCorpus, list[bytes]]:
    generated = synthetic_corpus(3_000, seed=7)
    return generated, list(generated)


def test_corpus_deterministic_for_a_seed() -> None:
    assert list(synthetic_corpus(300, seed=3)) == list(synthetic_corpus(300, seed=3))
    assert list(synthetic_corpus(300, seed=3)) != list(synthetic_corpus(300, seed=4))


def test_corpus_count_and_thread_metadata(corpus: tuple[SyntheticCorpus, list[bytes]]) -> None:
    generated, messages = corpus
    assert len(messages) == 3_000 == len(generated)
    assert generated.thread_count == synthetic_thread_count(3_000, seed=7)
    assert sum(generated.thread_sizes) == 3_000
    # Follow In-Reply-To back to the roots: one root per announced thread.
    parent: dict[str, str | None] = {}
    for raw in messages:
        head = _headers(raw)
        parent[str(head["Message-ID"])] = head["In-Reply-To"]
    roots: Counter[str] = Counter()
    for mid in parent:
        while parent[mid] is not None:
            mid = str(parent[mid])
        roots[mid] += 1
    assert len(roots) == generated.thread_count
    assert sorted(roots.values()) == sorted(generated.thread_sizes)
    lengths = generated.thread_sizes
    assert sum(1 for n in lengths if n <= 3) > 0.7 * len(lengths)
    assert any(10 <= n <= 30 for n in lengths)
    assert max(lengths) <= 30
    assert list(synthetic_corpus(0)) == [] and synthetic_thread_count(0) == 0


def test_corpus_threads_are_consistent(corpus: tuple[SyntheticCorpus, list[bytes]]) -> None:
    _, messages = corpus
    seen: dict[str, str] = {}  # Message-ID -> thread root
    customers: dict[str, str] = {}  # thread root -> customer address
    previous_date = None
    for raw in messages:
        head = _headers(raw)
        mid = str(head["Message-ID"])
        assert mid not in seen
        date = parsedate_to_datetime(str(head["Date"]))
        if previous_date is not None:
            assert date > previous_date
        previous_date = date
        parent = head["In-Reply-To"]
        if parent is None:
            assert head["References"] is None
            seen[mid] = mid
            customers[mid] = parseaddr(str(head["From"]))[1]
            continue
        assert parent in seen, "In-Reply-To must name an earlier message"
        root = seen[parent]
        references = str(head["References"]).split()
        assert references[-1] == parent and references[0] == root
        assert all(seen.get(ref) == root for ref in references)
        assert str(head["Subject"]).startswith("Re: ")
        seen[mid] = root
        addresses = {parseaddr(str(head["From"]))[1], parseaddr(str(head["To"]))[1]}
        assert customers[root] in addresses
    assert len(set(customers.values())) == len(customers)  # a distinct customer per thread


def test_corpus_sizes(corpus: tuple[SyntheticCorpus, list[bytes]]) -> None:
    _, messages = corpus
    sizes = [len(raw) for raw in messages]
    assert min(sizes) >= 2_000 and max(sizes) <= 50_000
    assert 7_500 <= statistics.median(sizes) <= 13_000
    small = [len(raw) for raw in synthetic_corpus(500, seed=2, min_size=4_500, max_size=6_000)]
    assert min(small) >= 4_500 and max(small) <= 6_000
    with pytest.raises(ValueError):
        synthetic_corpus(1, min_size=9_000, max_size=8_000)


def test_corpus_format(corpus: tuple[SyntheticCorpus, list[bytes]]) -> None:
    _, messages = corpus
    kinds: Counter[str] = Counter()
    for raw in messages:
        assert b"\r" not in raw.replace(b"\r\n", b"")
        assert b"\n" not in raw.replace(b"\r\n", b"")
        assert raw.endswith(b"\r\n")
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998
        kinds[_headers(raw).get_content_type()] += 1
    total = len(messages)
    assert kinds.keys() == {"text/plain", "multipart/alternative", "multipart/mixed"}
    assert 0.20 <= kinds["multipart/alternative"] / total <= 0.30
    assert 0.03 <= kinds["multipart/mixed"] / total <= 0.07
    for raw in messages[::15]:
        msg = _parse(raw)
        assert msg.defects == [] and all(not p.defects for p in msg.walk())
        body = msg.get_body(("plain",))
        assert body is not None and body.get_content().strip()
        if msg.get_content_type() == "multipart/mixed":
            (attachment,) = msg.iter_attachments()
            assert attachment.get_content().startswith(b"%PDF-1.4")


def test_corpus_generation_rate(capsys: pytest.CaptureFixture[str]) -> None:
    count = 10_000
    started = time.perf_counter()
    total = sum(len(raw) for raw in synthetic_corpus(count, seed=11))
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(
            f"\nsynthetic_corpus: {count / elapsed:,.0f} messages/s, "
            f"{total / elapsed / 1e6:,.0f} MB/s ({count} messages, {total / 1e6:.0f} MB)"
        )
