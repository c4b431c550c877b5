"""The failure policy: what a failed attempt costs an action.

A lost connection is not the action's fault: the loop reconnects with back-off and the action
stays as it is. Any other failure counts an attempt, records `last_error` and retries with
exponential back-off; after `writeback_max_attempts` (or at once when retrying cannot help,
`WriteBackError.permanent`) the action is `failed`, visibly: its state, `last_error` and an
Activity on the conversation.
"""

from __future__ import annotations

import imaplib
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session

from imapdesk.kernel.errors import MailServerError
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    ImapActionState,
    PendingImapAction,
    utcnow,
)
from imapdesk.kernel.settings import Settings

# a lost connection: reconnect and try the same action again, without counting an attempt
CONNECTION_LOST: tuple[type[BaseException], ...] = (imaplib.IMAP4.abort, OSError)
# ... or not even made (ImapSession turns every connect failure into MailServerError)
CANNOT_CONNECT: tuple[type[BaseException], ...] = (imaplib.IMAP4.abort, OSError, MailServerError)


class WriteBackError(MailServerError):
    """An action could not be applied; `permanent` when retrying cannot help."""

    code = "writeback_error"

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def expected(exc: BaseException) -> bool:
    """A failure the server or the action explains (anything else is a bug worth a trace)."""
    return isinstance(exc, WriteBackError | imaplib.IMAP4.error | MailServerError)


def error_message(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


@dataclass(frozen=True)
class FailedAttempt:
    """What the policy decided: `retry_in` seconds, or None when the action failed for good."""

    attempts: int
    retry_in: float | None


def count_failed_attempt(
    db: Session, action: PendingImapAction, exc: BaseException, settings: Settings
) -> FailedAttempt:
    """Count the attempt on the action's row: due again after the back-off, or failed for good
    (with an Activity on its conversation)."""
    message = error_message(exc)
    action.attempts += 1
    action.last_error = f"{utcnow():%Y-%m-%d %H:%M:%S} UTC: {message}"[:2000]
    permanent = isinstance(exc, WriteBackError) and exc.permanent
    if permanent or action.attempts >= settings.writeback_max_attempts:
        action.state = ImapActionState.failed
        action.next_attempt_at = None
        if action.conversation_id is not None:
            db.add(
                Activity(
                    conversation_id=action.conversation_id,
                    source=ActivitySource.system,
                    actor="write-back",
                    action="writeback_failed",
                    details={"action_id": action.id, "kind": action.kind, "error": message},
                )
            )
        return FailedAttempt(action.attempts, None)
    delay = min(
        settings.writeback_retry_max_seconds,
        settings.writeback_retry_initial_seconds * 2 ** (action.attempts - 1),
    )
    action.next_attempt_at = utcnow() + timedelta(seconds=delay)
    return FailedAttempt(action.attempts, delay)
