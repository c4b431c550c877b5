"""Automatic mail and loops: nothing automatic is ever sent to a message that is itself automatic.

Automatic is Auto-Submitted other than "no", a null sender, mailer-daemon or postmaster (a
delivery status notification) or list mail. What imapdesk sends automatically carries
`Auto-Submitted: auto-replied` (`imapdesk.mail.compose.compose(..., automatic=True)`).
"""

from __future__ import annotations

import re

from imapdesk.kernel.models import Message

_LIST_HEADER = re.compile(r"(?im)^(list-id|list-unsubscribe):|^precedence:[ \t]*(bulk|list|junk)")


def is_automatic(message: Message) -> bool:
    """Auto-Submitted other than "no", a null sender, mailer-daemon, a DSN or list mail: never
    answered automatically."""
    local = (message.from_email or "").partition("@")[0].lower()
    return bool(
        message.auto_submitted
        or not message.from_email
        or local in ("mailer-daemon", "postmaster")
        or _LIST_HEADER.search(message.headers or "")
    )


def may_send_automatically(answered: Message | None) -> bool:
    """Whether an automatic message (an acknowledgement, an auto-reply) may answer this one."""
    return answered is not None and not is_automatic(answered)
