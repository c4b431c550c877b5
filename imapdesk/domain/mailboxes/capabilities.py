"""What a mailbox's server can keep, in words for the admin: what plain clients will see."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imapdesk.domain.mailstate import keyword_limit, keywords_kept


def plain_client_notes(capabilities: Mapping[str, Any] | None) -> list[str]:
    """One sentence per limit that changes what colleagues on plain IMAP clients see."""
    caps = capabilities or {}
    if not caps.get("capabilities"):
        return ["not probed yet: the worker has not connected to this mailbox"]
    notes = []
    if keywords_kept(caps):
        limit = keyword_limit(caps)
        note = "assignee and tags are written as keywords (Thunderbird shows them as tags)"
        if limit:
            note += f"; this server keeps at most {limit} distinct keywords per folder"
        notes.append(note)
    else:
        notes.append(
            "this server keeps no custom keywords: plain clients see the claim as a star "
            "(\\Flagged) but not who holds it, and no tags; both stay in imapdesk only"
        )
    dropped = caps.get("keywords_dropped") or []
    if dropped:
        names = sorted({str(d.get("keyword")) for d in dropped if isinstance(d, dict)})
        notes.append(
            f"{len(names)} keyword(s) could not be kept by the server and live in imapdesk "
            f"only: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}"
        )
    if not caps.get("condstore"):
        notes.append(
            "no CONDSTORE: flag changes made in other clients are found by rescanning the "
            "folders, so they may take up to the rescan interval to show"
        )
    if not caps.get("move"):
        notes.append("no MOVE: status changes move mail by copy, then delete of that copy")
    if not caps.get("idle"):
        notes.append("no IDLE: new mail is found by polling")
    return notes
