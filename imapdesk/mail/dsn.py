"""Delivery status notifications (RFC 3464): what a bounce says about the message it returns.

The domain (`imapdesk.domain.outbound.delivery`) matches the report to the reply it is about
and flags that reply as failed; the ingest threads a bounce by the Message-ID reported here.
No database here.
"""

from __future__ import annotations

import email
import email.message
import email.policy
from dataclasses import dataclass, field

from imapdesk.mail.parsing import normalize_msgid


@dataclass
class DsnReport:
    original_msgid: str | None = None
    failed: bool = False
    recipients: list[str] = field(default_factory=list)
    diagnostic: str = ""


def dsn_report(raw: bytes) -> DsnReport:
    """What a multipart/report (RFC 3464) says: the Message-ID it reports on, whether delivery
    failed and the remote server's words. Never raises."""
    report = DsnReport()
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        for part in msg.walk():
            ctype = part.get_content_type()
            if ctype == "message/delivery-status":
                blocks = part.get_payload()
                for block in blocks if isinstance(blocks, list) else []:
                    if not isinstance(block, email.message.Message):
                        continue
                    action = str(block.get("Action", "")).strip().lower()
                    if action == "failed":
                        report.failed = True
                    rcpt = block.get("Final-Recipient") or block.get("Original-Recipient")
                    if rcpt:
                        report.recipients.append(str(rcpt).split(";", 1)[-1].strip())
                    words = " ".join(
                        str(block.get(h, "")).strip() for h in ("Status", "Diagnostic-Code")
                    ).strip()
                    if words and not report.diagnostic:
                        report.diagnostic = " ".join(words.split())
            elif ctype in ("message/rfc822", "message/global") and report.original_msgid is None:
                inner = part.get_payload()
                if (
                    isinstance(inner, list)
                    and inner
                    and isinstance(inner[0], email.message.Message)
                ):
                    report.original_msgid = normalize_msgid(str(inner[0].get("Message-ID", "")))
            elif ctype == "text/rfc822-headers" and report.original_msgid is None:
                payload = part.get_payload(decode=True) or b""
                headers = email.message_from_bytes(bytes(payload), policy=email.policy.compat32)
                report.original_msgid = normalize_msgid(str(headers.get("Message-ID", "")))
    except Exception:  # a broken report is still a message; it just tells us nothing
        return report
    return report
