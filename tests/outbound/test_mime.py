"""The mail layer's part of outbound mail, without a server or a database: composing a message
(RFC 2047 headers, the References chain capped, the note and automatic markers, attachments)
and reading what a delivery status notification (RFC 3464) says."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from imapdesk.mail.compose import (
    NOTE_HEADER,
    Upload,
    compose,
    html_with_signature,
    mail_address,
    new_msgid,
    with_signature,
)
from imapdesk.mail.dsn import dsn_report


def _parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_compose_encodes_headers_and_caps_the_references() -> None:
    refs = [f"r{i}@example.org" for i in range(60)]
    raw = compose(
        sender=mail_address("support@example.com", "Zoë at Support"),
        to=[mail_address("emile@customer.example", "Émile")],
        subject="Re: Ihre Rückfrage [#7]",
        msgid="m1@example.com",
        text=with_signature("Hallo", "Zoë", None, "Example Support"),
        html=html_with_signature("<p>Hallo</p></body>", "<Zoë>"),
        in_reply_to="r59@example.org",
        references=refs,
        attachments=[Upload("notes.txt", "text/plain", b"paid"), Upload("x.bin", "", b"\0")],
    )
    assert b"\r\n" in raw and all(b < 0x80 for b in raw.split(b"\r\n\r\n", 1)[0])
    msg = _parsed(raw)
    assert msg["Subject"] == "Re: Ihre Rückfrage [#7]"
    assert msg["From"].addresses[0].display_name == "Zoë at Support"
    assert (msg["Message-ID"], msg["In-Reply-To"]) == ("<m1@example.com>", "<r59@example.org>")
    kept = msg["References"].split()
    assert len(kept) == 40 and kept[0] == "<r0@example.org>" and kept[-1] == "<r59@example.org>"
    assert msg[NOTE_HEADER] is None and msg["Auto-Submitted"] is None
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None
    assert text.get_content().replace("\r\n", "\n") == "Hallo\n\n-- \nZoë\n\nExample Support\n"
    assert html is not None and '<div class="signature">-- <br>&lt;Zoë&gt;</div></body>' in (
        html.get_content()
    )
    attached = {a.get_filename(): a.get_content_type() for a in msg.iter_attachments()}
    assert attached == {"notes.txt": "text/plain", "x.bin": "application/octet-stream"}


def test_a_note_and_automatic_mail_are_marked() -> None:
    sender = mail_address("support@example.com")
    note = _parsed(
        compose(sender=sender, to=[sender], subject="n", msgid="n@x", text="t", note=True)
    )
    assert note[NOTE_HEADER] == "1"
    auto = _parsed(
        compose(sender=sender, to=[sender], subject="a", msgid="a@x", text="t", automatic=True)
    )
    assert auto["Auto-Submitted"] == "auto-replied"
    assert new_msgid("support@example.com").endswith("@example.com")


_DSN = b"""From: Mail Delivery System <MAILER-DAEMON@mx.example.com>
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="r"

--r
Content-Type: text/plain

Your message could not be delivered.
--r
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; nobody@customer.example
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1   no such
 user

--r
Content-Type: text/rfc822-headers

From: support@example.com
Message-ID: <ours@example.com>
Subject: Re: Broken printer

--r--
"""


def test_a_delivery_status_notification_says_what_failed() -> None:
    report = dsn_report(_DSN)
    assert report.failed
    assert report.original_msgid == "ours@example.com"
    assert report.recipients == ["nobody@customer.example"]
    assert report.diagnostic == "5.1.1 smtp; 550 5.1.1 no such user"
    delayed = dsn_report(_DSN.replace(b"Action: failed", b"Action: delayed"))
    assert not delayed.failed and delayed.original_msgid == "ours@example.com"
    nothing = dsn_report(b"\xff\xfe not a message")
    assert (nothing.failed, nothing.original_msgid, nothing.recipients) == (False, None, [])
