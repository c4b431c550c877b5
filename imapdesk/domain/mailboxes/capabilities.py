"""What a mailbox's server can keep, in words for the admin: what plain clients will see."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from imapdesk.domain.mailboxes.keywords import describe
from imapdesk.domain.mailstate import keyword_limit, keyword_limit_known, keywords_kept
from imapdesk.kernel.models import UnkeptKeyword

# at most this many unkept keywords named in one note (the admin page lists them all)
_NAMED_KEYWORDS = 10


def plain_client_notes(
    capabilities: Mapping[str, Any] | None, unkept: Sequence[UnkeptKeyword] = ()
) -> list[str]:
    """One sentence per limit that changes what colleagues on plain IMAP clients see;
    `unkept`: the keywords the mailbox's folders refused or cannot keep."""
    caps = capabilities or {}
    if not caps.get("capabilities"):
        return ["not probed yet: the worker has not connected to this mailbox"]
    notes = []
    if keywords_kept(caps):
        note = "assignee and tags are written as keywords (Thunderbird shows them as tags)"
        limit = keyword_limit(caps)
        basis = str(caps.get("keyword_limit_basis") or "")
        if limit:
            note += f"; this server keeps at most {limit} distinct keywords per folder"
        elif keyword_limit_known(caps):
            note += "; this server keeps any number of keywords"
        else:
            note += "; how many keywords a folder keeps is not known: each is read back"
        if basis:
            note += f" ({basis})"
        notes.append(note)
    else:
        notes.append(
            "this server keeps no custom keywords: plain clients see the claim as a star "
            "(\\Flagged) but not who holds it, and no tags; both stay in imapdesk only"
        )
    if unkept:
        shown = "; ".join(describe(row) for row in unkept[:_NAMED_KEYWORDS])
        more = (
            f"; and {len(unkept) - _NAMED_KEYWORDS} more" if len(unkept) > _NAMED_KEYWORDS else ""
        )
        notes.append(
            f"{len(unkept)} keyword(s) are not kept in the mailbox, so what they stand for "
            f"(tags, assignees) lives in imapdesk only and is never sent there again: "
            f"{shown}{more}"
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


_HEARD = {
    "notify": "IDLE tells of changes in INBOX and NOTIFY of those in the other followed folders",
    "idle": "IDLE tells of changes in INBOX; the other folders are checked with STATUS every "
    "few seconds",
    "poll": "INBOX is asked for changes with NOOP several times a second; the other folders "
    "are checked with STATUS every few seconds",
}


def sync_notes(capabilities: Mapping[str, Any] | None) -> list[str]:
    """How the worker keeps the mailbox in step, in words for the admin: the IMAP connections
    it has and how it hears of new mail (worker/connections.py, worker/mailbox_sync.py), what
    the server refused, and how soon the server tells of new mail (the probe's push delay)."""
    caps = capabilities or {}
    notes: list[str] = []
    connections = caps.get("connections") or {}
    if connections:
        heard = _HEARD.get(str(connections.get("push")), "")
        notes.append(
            f"{connections.get('open', 0)} IMAP connection(s) open, at most "
            f"{connections.get('max', '?')}" + (f": {heard}" if heard else "")
        )
        if connections.get("refused"):
            notes.append(
                f"the server refused more IMAP connections ({connections['refused']}; "
                f"{connections.get('refused_at') or 'lately'}): imapdesk shares "
                f"{connections.get('allowed', 1)} and tries for more again every few minutes; "
                "changes wait their turn and none is lost. Close other clients' connections or "
                "raise the server's limit per user (Dovecot: mail_max_userip_connections)"
            )
    push = caps.get("push") or {}
    mechanism = str(push.get("mechanism") or "").upper()
    delay = push.get("delay_ms")
    if push.get("lazy"):
        told = (
            f"after {delay / 1000:.1f} s"
            if isinstance(delay, int)
            else f"not within {push.get('waited_s', '?')} s"
        )
        notes.append(
            f"the server's {mechanism} told of new mail {told} (it looks only now and then): "
            "INBOX is polled instead"
        )
    elif isinstance(delay, int):
        notes.append(f"the server tells of new mail {delay} ms after it arrives ({mechanism})")
    return notes
