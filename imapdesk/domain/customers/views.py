"""Customers as an agent may see them, for the REST API and the web UI.

A customer's conversations are those with their address, in any mailbox; an agent sees the
ones in the mailboxes it may see (`imapdesk.domain.accounts.access`) and nothing of the
others: not a count, not a date. A customer none of whose conversations the agent may see does
not exist for it (404, missing from every list), as a conversation of a hidden mailbox does.
Conversations merged into another are the survivor's, and are not counted twice.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func
from sqlmodel import Session, col, select

from imapdesk.domain.accounts import access
from imapdesk.domain.conversations.reads import ConversationRow, conversation_rows
from imapdesk.domain.customers.organisations import organisation_of
from imapdesk.kernel.errors import InvalidInput, NotFound
from imapdesk.kernel.models import Agent, Conversation, Customer, CustomerNoteEdit

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# a customer's conversations listed on their page (the newest); the count says how many more
CONVERSATIONS_SHOWN = 100
# the conversation page's sidebar: the customer's other conversations (the newest)
OTHERS_SHOWN = 8
NOTE_HISTORY_SHOWN = 20
MAX_QUERY_WORDS = 8


@dataclass(frozen=True)
class Visibility:
    """The mailboxes an agent may see, as conditions on conversations."""

    everything: bool
    mailbox_ids: tuple[int, ...]

    @classmethod
    def of(cls, session: Session, agent: Agent) -> Visibility:
        if access.sees_every_mailbox(agent):
            return cls(True, ())
        return cls(False, tuple(access.visible_mailbox_ids(session, agent)))

    @property
    def nothing(self) -> bool:
        return not self.everything and not self.mailbox_ids

    def conversations(self) -> list[ColumnElement[bool]]:
        """Conditions for a conversation the agent may see (and that was not merged away)."""
        conds: list[ColumnElement[bool]] = [col(Conversation.merged_into_id).is_(None)]
        if not self.everything:
            conds.append(col(Conversation.mailbox_id).in_(self.mailbox_ids))
        return conds


@dataclass(frozen=True)
class CustomerSummary:
    customer: Customer
    # of the conversations the agent may see
    conversation_count: int
    last_message_at: datetime | None
    # who changed the note last
    note_updated_by: Agent | None = None


@dataclass(frozen=True)
class CustomerPage:
    items: list[CustomerSummary]
    next_cursor: str | None


@dataclass(frozen=True)
class NoteEditView:
    edit: CustomerNoteEdit
    agent_name: str | None
    agent_email: str | None


@dataclass(frozen=True)
class CustomerDetail:
    customer: Customer
    # the newest CONVERSATIONS_SHOWN of those the agent may see
    conversations: list[ConversationRow]
    conversation_count: int
    last_message_at: datetime | None
    note_updated_by: Agent | None
    note_history: list[NoteEditView] = field(default_factory=list)


@dataclass(frozen=True)
class CustomerCard:
    """The conversation page's sidebar: who the conversation is with, and their others."""

    email: str
    name: str | None
    organisation: str | None
    # None: no row yet (a conversation started from the helpdesk to a new address); saving a
    # note makes it
    customer: Customer | None
    others: list[ConversationRow]
    # how many others the agent may see (more than `others` shows)
    others_count: int
    note_updated_by: Agent | None = None


def _belongs(email: Any, visibility: Visibility) -> list[ColumnElement[bool]]:
    """Conditions for a conversation with `email` (an address, or a column) the agent may see."""
    return [col(Conversation.customer_email) == email, *visibility.conversations()]


def _visible_customer_condition(visibility: Visibility) -> ColumnElement[bool]:
    return exists().where(*_belongs(col(Customer.email), visibility))


def _encode_cursor(email: str) -> str:
    return base64.urlsafe_b64encode(email.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        email = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
        if not email or "\x00" in email:
            raise ValueError("empty")
        return email
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "the cursor is not one this API handed out; start again without it", field="cursor"
        ) from exc


def query_words(q: str | None) -> list[str]:
    """The words of a customer search: each must be in the name, the address or the domain."""
    words = [w for w in (q or "").replace("\x00", "").casefold().split() if w]
    return words[:MAX_QUERY_WORDS]


def list_customers(
    session: Session,
    agent: Agent,
    q: str | None = None,
    *,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> CustomerPage:
    """Customers the agent may see, by address, keyset-paginated; `q`: words each found in the
    name (any script, any case), the address or its domain. Two queries a page."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}", field="limit")
    after = _decode_cursor(cursor) if cursor else None
    visibility = Visibility.of(session, agent)
    if visibility.nothing:
        return CustomerPage([], None)
    stmt = select(Customer).where(_visible_customer_condition(visibility))
    for word in query_words(q):
        stmt = stmt.where(col(Customer.search_key).contains(word, autoescape=True))
    if after is not None:
        stmt = stmt.where(col(Customer.email) > after)
    found = list(session.exec(stmt.order_by(col(Customer.email)).limit(limit + 1)))
    more = len(found) > limit
    found = found[:limit]
    stats = _stats(session, [c.email for c in found], visibility)
    authors = _agents(session, {c.note_updated_by_id for c in found})
    items = [
        CustomerSummary(c, *stats.get(c.email, (0, None)), authors.get(c.note_updated_by_id or 0))
        for c in found
    ]
    return CustomerPage(items, _encode_cursor(found[-1].email) if more and found else None)


def _stats(
    session: Session, emails: Sequence[str], visibility: Visibility
) -> dict[str, tuple[int, datetime | None]]:
    """Per address: how many of its conversations the agent may see, and their latest date."""
    if not emails:
        return {}
    rows = session.exec(
        select(
            col(Conversation.customer_email),
            func.count(col(Conversation.id)),
            func.max(col(Conversation.last_message_at)),
        )
        .where(col(Conversation.customer_email).in_(emails), *visibility.conversations())
        .group_by(col(Conversation.customer_email))
    )
    return {email: (int(count), last) for email, count, last in rows if email is not None}


def visible_customer(session: Session, agent: Agent, customer_id: int) -> Customer:
    """The customer, if the agent may see one of their conversations; NotFound otherwise, as
    if there were no such customer."""
    customer = session.get(Customer, customer_id)
    visibility = Visibility.of(session, agent)
    if customer is None or visibility.nothing or not _has_visible(session, customer, visibility):
        raise NotFound(f"no customer {customer_id}", customer_id=customer_id)
    return customer


def _has_visible(session: Session, customer: Customer, visibility: Visibility) -> bool:
    found = session.exec(
        select(col(Conversation.id)).where(*_belongs(customer.email, visibility)).limit(1)
    ).first()
    return found is not None


def _conversations(
    session: Session,
    email: str,
    visibility: Visibility,
    *,
    limit: int,
    without: int | None = None,
) -> tuple[list[ConversationRow], int, datetime | None]:
    """The newest `limit` conversations with this address the agent may see, with how many
    there are in all and the latest date."""
    conds = _belongs(email, visibility)
    if without is not None:
        conds.append(col(Conversation.id) != without)
    total, last = session.exec(
        select(func.count(col(Conversation.id)), func.max(col(Conversation.last_message_at))).where(
            and_(*conds)
        )
    ).one()
    if not total:
        return [], 0, None
    newest = list(
        session.exec(
            select(Conversation)
            .where(*conds)
            .order_by(
                col(Conversation.last_message_at).is_(None),
                col(Conversation.last_message_at).desc(),
                col(Conversation.id).desc(),
            )
            .limit(limit)
        )
    )
    return conversation_rows(session, newest), int(total), last


def customer_detail(
    session: Session, agent: Agent, customer_id: int, *, limit: int = CONVERSATIONS_SHOWN
) -> CustomerDetail:
    """A customer with the conversations the agent may see (the newest `limit`) and the
    history of their note."""
    customer = visible_customer(session, agent, customer_id)
    rows, total, last = _conversations(
        session, customer.email, Visibility.of(session, agent), limit=limit
    )
    return CustomerDetail(
        customer=customer,
        conversations=rows,
        conversation_count=total,
        last_message_at=last,
        note_updated_by=_agent(session, customer.note_updated_by_id),
        note_history=note_history(session, customer),
    )


def note_history(
    session: Session, customer: Customer, limit: int = NOTE_HISTORY_SHOWN
) -> list[NoteEditView]:
    """The latest changes of the note, newest first, with who made them."""
    rows = session.exec(
        select(CustomerNoteEdit, Agent.name, Agent.email)
        .join(Agent, col(Agent.id) == col(CustomerNoteEdit.agent_id), isouter=True)
        .where(col(CustomerNoteEdit.customer_id) == customer.id)
        .order_by(col(CustomerNoteEdit.created_at).desc(), col(CustomerNoteEdit.id).desc())
        .limit(limit)
    )
    return [NoteEditView(edit, name, email) for edit, name, email in rows]


def _agent(session: Session, agent_id: int | None) -> Agent | None:
    return session.get(Agent, agent_id) if agent_id is not None else None


def _agents(session: Session, ids: set[int | None]) -> dict[int, Agent]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    found = session.exec(select(Agent).where(col(Agent.id).in_(wanted)))
    return {a.id: a for a in found if a.id is not None}


def customer_by_email(session: Session, email: str) -> Customer | None:
    return session.exec(select(Customer).where(col(Customer.email) == email.lower())).first()


def customer_card(
    session: Session, agent: Agent, conversation: Conversation, *, limit: int = OTHERS_SHOWN
) -> CustomerCard | None:
    """The sidebar of a conversation the agent may see (the caller checked): its customer and
    their other conversations the agent may see; None when it is with nobody (only notes)."""
    email = conversation.customer_email
    if not email:
        return None
    customer = customer_by_email(session, email)
    others, count, _last = _conversations(
        session, email, Visibility.of(session, agent), limit=limit, without=conversation.id
    )
    return CustomerCard(
        email=email,
        name=(customer.name if customer else None) or conversation.customer_name,
        organisation=customer.organisation if customer else organisation_of(email),
        customer=customer,
        others=others,
        others_count=count,
        note_updated_by=_agent(session, customer.note_updated_by_id) if customer else None,
    )
