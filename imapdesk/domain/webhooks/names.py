"""The public webhook event names (docs: PRODUCT.md, "Names for what comes next") and which
internal event kinds (imapdesk.domain.events.EventKind) each stands for."""

from __future__ import annotations

from imapdesk.domain.events import EventKind

PUBLIC_EVENTS: tuple[str, ...] = (
    "conversation.created",
    "conversation.updated",
    "conversation.status_changed",
    "conversation.assigned",
    "message.received",
    "reply.sent",
    "reply.failed",
    "note.added",
    "sla.warning",
    "sla.breached",
)

# internal kinds without a public name of their own are `conversation.updated`
_PUBLIC_BY_KIND: dict[str, str] = {
    EventKind.conversation_created: "conversation.created",
    EventKind.message_received: "message.received",
    EventKind.customer_replied: "conversation.updated",
    EventKind.agent_replied: "conversation.updated",
    EventKind.status_changed: "conversation.status_changed",
    EventKind.assigned: "conversation.assigned",
    EventKind.unassigned: "conversation.updated",
    EventKind.tagged: "conversation.updated",
    EventKind.untagged: "conversation.updated",
    EventKind.updated: "conversation.updated",
    EventKind.note_added: "note.added",
    EventKind.reply_sent: "reply.sent",
    EventKind.reply_failed: "reply.failed",
    EventKind.sla_warning: "sla.warning",
    EventKind.sla_breached: "sla.breached",
}

# the internal kinds a webhook may be sent for
WEBHOOK_KINDS: tuple[str, ...] = tuple(str(k) for k in _PUBLIC_BY_KIND)


def public_name(kind: str) -> str | None:
    """The public event name of an internal event kind; None: not sent to webhooks."""
    return _PUBLIC_BY_KIND.get(kind)
