"""Outlook's mail with a winmail.dat: real TNEF files (tests/fixtures/tnef/README.md says where
they come from) in a message as Exchange sends it to other mail systems, a plain-text part and
the TNEF file as `application/ms-tnef`."""

from __future__ import annotations

import email.policy
import email.utils
from email.message import EmailMessage
from pathlib import Path

TNEF_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "tnef"
# the PDF inside MAPI_ATTACH_DATA_OBJ.tnef
PDF_NAME = "VIA_Nytt_1402.pdf"
PDF_SIZE = 213_685
# the inline images of unicode-mapi-attr-name.tnef's HTML body, by Content-ID
INLINE_CIDS = (
    "image001.png@01CF8C82.F4A2A290",
    "image002.png@01CF8C82.F4A2A290",
    "image003.png@01CF8C82.F4A2A290",
)


def tnef_sample(name: str) -> bytes:
    return (TNEF_DIR / name).read_bytes()


def winmail_mail(
    tnef: bytes,
    *,
    msgid: str,
    subject: str = "Contract for review",
    text: str = "Hello, the contract is attached.",
    sender: str = "Ola Nordmann <ola@nordvik.example>",
    to: str = "support@example.test",
    content_type: str = "application/ms-tnef",
) -> bytes:
    """A message with `text` and `tnef` attached as winmail.dat (Message-ID `<msgid>`)."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{msgid}>"
    msg["Date"] = email.utils.formatdate()
    msg.set_content(text)
    maintype, subtype = content_type.split("/")
    msg.add_attachment(tnef, maintype=maintype, subtype=subtype, filename="winmail.dat")
    return msg.as_bytes()
