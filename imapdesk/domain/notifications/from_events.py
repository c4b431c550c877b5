"""The event log into notifications (consumer `notifications`, run by worker/notifications.py):
- `conversation.assigned`: the new assignee, unless they took it themselves;
- `conversation.customer_replied`: the conversation's assignee;
- `note.added`: each agent the note mentions (`@handle`) who may see the conversation, not
  its author;
- `sla.warning`: the conversation's assignee;
- `rule.notify`: the agents its payload names (`{"agent_ids": [...], "text": ...}`).
Each as the agent chose (imapdesk.domain.notifications.inbox). The notifications and the
events' receipts are written in one transaction: each event notifies once."""

from __future__ import annotations

from sqlmodel import Session, col, select

from imapdesk.domain import events
from imapdesk.domain.accounts.access import can_see_mailbox
from imapdesk.domain.events import EventKind
from imapdesk.domain.notifications.inbox import notify
from imapdesk.domain.notifications.mentions import mentioned_agents
from imapdesk.kernel.models import Agent, Conversation, Event, Message

CONSUMER = "notifications"
RULE_NOTIFY = "rule.notify"
KINDS: tuple[str, ...] = (
    str(EventKind.assigned),
    str(EventKind.customer_replied),
    str(EventKind.note_added),
    str(EventKind.sla_warning),
    RULE_NOTIFY,
)


def _subject(conversation: Conversation | None) -> str:
    if conversation is None:
        return ""
    subject = (conversation.subject or "(no subject)").strip()
    return f"#{conversation.id} {subject}"[:200]


def _who(event: Event) -> str:
    return event.actor or "someone"


def _assignee(session: Session, conversation: Conversation | None) -> Agent | None:
    if conversation is None or conversation.assignee_id is None:
        return None
    return session.get(Agent, conversation.assignee_id)


def handle_event(session: Session, event: Event) -> int:
    """The notifications one event makes; how many."""
    conversation = (
        session.get(Conversation, event.conversation_id) if event.conversation_id else None
    )
    made = 0

    def tell(agent_id: int | None, kind: str, text: str) -> None:
        nonlocal made
        if agent_id is None:
            return
        row = notify(
            session,
            agent_id,
            kind,
            text,
            conversation_id=conversation.id if conversation is not None else None,
            event_id=event.id,
        )
        made += row is not None

    details = (event.payload or {}).get("details") or {}
    if event.kind == EventKind.assigned:
        email = details.get("to") or details.get("assignee")
        if not email:
            return 0
        target = session.exec(select(Agent).where(col(Agent.email) == email)).first()
        if target is None or target.id == event.agent_id:
            return 0
        tell(target.id, "assigned", f"{_who(event)} assigned {_subject(conversation)} to you")
    elif event.kind == EventKind.customer_replied:
        assignee = _assignee(session, conversation)
        if assignee is not None:
            tell(
                assignee.id, "customer_replied", f"The customer replied on {_subject(conversation)}"
            )
    elif event.kind == EventKind.note_added:
        message_id = details.get("message_id") or event.message_id
        message = session.get(Message, message_id) if message_id else None
        if message is None or conversation is None:
            return 0
        for agent in mentioned_agents(session, message.text or ""):
            if agent.id == event.agent_id:
                continue
            if not can_see_mailbox(session, agent, conversation.mailbox_id):
                continue
            tell(agent.id, "mentioned", f"{_who(event)} mentioned you on {_subject(conversation)}")
    elif event.kind == EventKind.sla_warning:
        assignee = _assignee(session, conversation)
        if assignee is not None:
            tell(assignee.id, "sla_warning", f"SLA about to breach: {_subject(conversation)}")
    elif event.kind == RULE_NOTIFY:
        payload = event.payload or {}
        text = str(payload.get("text") or f"A rule notified you about {_subject(conversation)}")
        for agent_id in dict.fromkeys(payload.get("agent_ids") or []):
            if isinstance(agent_id, int):
                tell(agent_id, "rule_notify", text)
    return made


def consume(session: Session, limit: int = 200) -> tuple[int, int]:
    """Handle the events waiting, in the caller's transaction; (events, notifications)."""
    # every event, not only KINDS: a receipt for each lets the floor move past the others
    # (advance_floor counts an event without a receipt as not handled)
    pending = events.pending_events(session, CONSUMER, limit=limit)
    made = sum(handle_event(session, e) for e in pending if e.kind in KINDS)
    events.mark_handled(session, CONSUMER, pending)
    session.flush()
    return len(pending), made
