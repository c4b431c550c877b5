"""winmail.dat unpacked (imapdesk/mail/tnef.py, through parse_message): real TNEF files give
their files with names and types beside the original, an HTML body with its inline images
where the message has none, and a damaged file gives its error and the original alone, at any
length it is cut to."""

from __future__ import annotations

import hashlib

import pytest

from imapdesk.mail import tnef
from imapdesk.mail.parsing import parse_message
from tests.support.winmail import INLINE_CIDS, PDF_NAME, PDF_SIZE, tnef_sample, winmail_mail


def test_the_pdf_and_the_other_files_come_out_beside_the_original() -> None:
    raw = tnef_sample("MAPI_ATTACH_DATA_OBJ.tnef")
    parsed = parse_message(winmail_mail(raw, msgid="w1@nordvik.example"))
    assert parsed.parse_error is None
    original, *files = parsed.attachments
    assert (original.filename, original.content_type, original.data) == (
        "winmail.dat",
        "application/ms-tnef",
        raw,
    )
    assert original.unpack_error is None and original.unpacked_from is None
    assert [(f.filename, f.content_type, f.unpacked_from) for f in files] == [
        ("VIA_Nytt_1402.doc", "application/msword", 0),
        (PDF_NAME, "application/pdf", 0),
        ("VIA_Nytt_14021.htm", "text/html", 0),
    ]
    pdf = files[1].data
    assert len(pdf) == PDF_SIZE and pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-1024:]
    # the message's own text is untouched
    assert parsed.text == "Hello, the contract is attached."


def test_mailers_that_send_it_as_octet_stream_are_unpacked_by_its_name() -> None:
    raw = tnef_sample("two-files.tnef")
    parsed = parse_message(
        winmail_mail(raw, msgid="w2@nordvik.example", content_type="application/octet-stream")
    )
    assert [(a.filename, len(a.data)) for a in parsed.attachments] == [
        ("winmail.dat", len(raw)),
        ("AUTHORS", 244),
        ("README", 893),
    ]


def test_names_in_any_language_and_inline_images_keep_their_content_ids() -> None:
    parsed = parse_message(winmail_mail(tnef_sample("umlaut.tnef"), msgid="w3@nordvik.example"))
    files = {a.filename: a for a in parsed.attachments[1:]}
    assert files["UmlautAnhang-äüö.txt"].content_type == "text/plain"
    image = files["image003.jpg"]
    assert (image.content_type, image.content_id, image.inline) == (
        "image/jpeg",
        "image003.jpg@01D2EE6A.85652C70",
        True,
    )
    assert not files["TBZ PARIV GmbH.jpg"].inline  # an attached photo, not shown in the text


def test_an_html_body_inside_becomes_the_message_html_with_its_images() -> None:
    parsed = parse_message(
        winmail_mail(tnef_sample("unicode-mapi-attr-name.tnef"), msgid="w4@nordvik.example")
    )
    assert parsed.html is not None
    for cid in INLINE_CIDS:
        assert f"cid:{cid}" in parsed.html
    images = [a for a in parsed.attachments if a.content_id in INLINE_CIDS]
    assert len(images) == 3 and all(a.inline and a.content_type == "image/png" for a in images)
    assert all(a.data.startswith(b"\x89PNG") for a in images)
    # sanitised like any HTML mail
    assert "<script" not in parsed.html.lower()


def test_a_body_of_its_own_wins_over_the_one_inside() -> None:
    raw = tnef_sample("unicode-mapi-attr-name.tnef")
    mail = winmail_mail(raw, msgid="w5@nordvik.example")
    parsed = parse_message(mail.replace(b"Content-Type: text/plain", b"Content-Type: text/html"))
    assert parsed.html is not None and "Hello, the contract is attached." in parsed.html
    assert "cid:" not in parsed.html


def cut_lengths(size: int) -> list[int]:
    return sorted({0, 1, 4, 5, 6, 12, 50, *range(100, size, 37), size - 3, size - 1})


def object_ends(data: bytes) -> set[int]:
    """Where TNEF's objects end (MS-OXTNEF 2.1.3: level, id, type, a 32-bit length, the
    data, a 16-bit checksum): a stream cut there looks whole to any reader."""
    ends, offset = {6}, 6
    while offset + 9 <= len(data):
        offset += 11 + int.from_bytes(data[offset + 5 : offset + 9], "little")
        ends.add(offset)
    return ends


@pytest.mark.parametrize("name", ["two-files.tnef", "umlaut.tnef"])
def test_cut_short_anywhere_the_message_is_kept_and_no_file_is_offered_cut(name: str) -> None:
    whole = tnef_sample(name)
    complete = {(f.filename, hashlib.sha256(f.data).hexdigest()) for f in tnef.unpack(whole).files}
    boundaries = object_ends(whole)
    for length in cut_lengths(len(whole)):
        damaged = whole[:length]
        parsed = parse_message(winmail_mail(damaged, msgid=f"cut{length}@nordvik.example"))
        original = parsed.attachments[0]
        assert (original.filename, original.data) == ("winmail.dat", damaged), length
        assert parsed.text == "Hello, the contract is attached.", length
        offered = {(a.filename, hashlib.sha256(a.data).hexdigest()) for a in parsed.attachments[1:]}
        # only files exactly as they are in the whole file; a cut inside an object is said
        assert offered <= complete, length
        if length not in boundaries:
            assert original.unpack_error, length


def test_what_is_not_tnef_says_so() -> None:
    for data in (b"", b"PK\x03\x04 a zip file", b"\x78\x9f\x3e\x22", bytes(range(256)) * 40):
        contents = tnef.unpack(data)
        assert contents.files == [] and contents.error, data[:8]
    parsed = parse_message(winmail_mail(b"not TNEF at all", msgid="w6@nordvik.example"))
    assert [a.filename for a in parsed.attachments] == ["winmail.dat"]
    assert parsed.attachments[0].unpack_error == (
        "not a TNEF file (it does not start with the TNEF signature)"
    )
    assert parsed.parse_error is None


def test_garbage_after_the_signature_never_raises() -> None:
    whole = tnef_sample("two-files.tnef")
    for seed in range(200):
        noise = hashlib.sha256(str(seed).encode()).digest() * 8
        at = 6 + seed * 13 % (len(whole) - 6)
        damaged = whole[:at] + noise + whole[at + len(noise) :]
        contents = tnef.unpack(damaged)
        assert isinstance(contents.files, list)
        assert contents.error is None or isinstance(contents.error, str)


def test_a_stream_of_countless_small_objects_is_refused_before_it_is_read() -> None:
    """The decoder copies the rest of the stream for every object: such a file would hold a
    parse process for hours (its cost is counted first, not timed here)."""
    tiny = (
        bytes([1])
        + (0x0005).to_bytes(2, "little")
        + (0).to_bytes(2, "little")
        + (1).to_bytes(4, "little")
        + b"x\0\0"
    )
    crafted = tnef.TNEF_SIGNATURE + b"\0\0" + tiny * 400_000
    assert tnef.copy_cost(crafted) > tnef.MAX_COPY_BYTES
    parsed = parse_message(winmail_mail(crafted, msgid="many@nordvik.example"))
    (original,) = parsed.attachments
    assert original.data == crafted
    assert original.unpack_error is not None and "too many parts" in original.unpack_error
    # real files cost a few times their size
    for name in ("MAPI_ATTACH_DATA_OBJ.tnef", "umlaut.tnef", "two-files.tnef"):
        assert tnef.copy_cost(tnef_sample(name)) < 20 * len(tnef_sample(name))
