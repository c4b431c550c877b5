"""A customer's note: what agents keep about the person (their plan, how they like to be
answered), shared by every agent who may see one of their conversations.

Each change is kept (`CustomerNoteEdit`: who, from where, the note it left), which is the
note's audit trail: the activity log belongs to conversations, and a note belongs to no single
one. A change is made over the version of the note the agent was shown: when someone changed
it meanwhile, the change is refused (409) with the note as it is now, so that two agents
writing at once never silently lose one's words.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, col

from imapdesk.domain.customers.directory import save_people
from imapdesk.domain.customers.views import customer_by_email
from imapdesk.kernel.errors import Conflict, InvalidInput, NotFound
from imapdesk.kernel.models import (
    ActivitySource,
    Agent,
    Conversation,
    Customer,
    CustomerNoteEdit,
    utcnow,
)

NOTE_MAX = 10_000


def clean_note(note: str) -> str:
    """The note as kept: Unix line ends, no trailing spaces, at most NOTE_MAX characters."""
    text = note.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
    if len(text) > NOTE_MAX:
        raise InvalidInput(
            f"the note has {len(text)} characters; at most {NOTE_MAX} are kept", field="note"
        )
    return text


def save_note(
    session: Session,
    agent: Agent,
    customer: Customer,
    note: str,
    *,
    base_version: int | None,
    source: ActivitySource,
) -> bool:
    """Set the note of a customer the agent may see (the caller checked). `base_version`: the
    `note_version` the agent edited (None: whatever it is now). Returns whether it changed."""
    assert customer.id is not None and agent.id is not None
    text = clean_note(note)
    if base_version is not None and base_version != customer.note_version:
        raise _changed_meanwhile(session, customer)
    if text == customer.note:
        return False
    now = utcnow()
    changed = session.execute(
        update(Customer)
        .where(col(Customer.id) == customer.id, col(Customer.note_version) == customer.note_version)
        .values(
            note=text,
            note_version=customer.note_version + 1,
            note_updated_at=now,
            note_updated_by_id=agent.id,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(changed, "rowcount", 1) != 1:  # another writer came first
        session.refresh(customer)
        raise _changed_meanwhile(session, customer)
    session.add(
        CustomerNoteEdit(
            customer_id=customer.id, agent_id=agent.id, source=source, note=text, created_at=now
        )
    )
    session.flush()
    session.refresh(customer)
    return True


def _changed_meanwhile(session: Session, customer: Customer) -> Conflict:
    who = session.get(Agent, customer.note_updated_by_id) if customer.note_updated_by_id else None
    return Conflict(
        f"{who.name if who else 'Someone'} changed the note meanwhile, so yours was not "
        "saved: add your words to theirs and save again",
        field="note",
        note=customer.note,
        note_version=customer.note_version,
    )


def customer_of_conversation(session: Session, conversation: Conversation) -> Customer:
    """The customer row of a conversation (the agent may see it: the caller checked), made
    now when the ingest has not made it yet (a conversation started from the helpdesk)."""
    email = conversation.customer_email
    if not email:
        raise NotFound(
            f"conversation {conversation.id} is with no customer", conversation_id=conversation.id
        )
    customer = customer_by_email(session, email)
    if customer is None:
        save_people(session.connection(), {email.lower(): conversation.customer_name})
        customer = customer_by_email(session, email)
    assert customer is not None
    return customer
