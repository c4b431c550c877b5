"""Who may work in which mailbox.

Admins work in every mailbox. An agent works in every mailbox while `all_mailboxes` is set
(the default, as in Zendesk's "all tickets" or Freshdesk's "global access", so an upgrade or
a new `imapdesk user add` changes nothing for a small team), else only in the mailboxes of its
`AgentMailboxAccess` rows: a restricted agent without rows sees nothing. A mailbox an agent may
not work in does not exist for that agent: its conversations, messages and attachments answer
404, in the web UI and the REST API alike, and it is missing from every list and count.
For one conversation that rule is `ensure_can_see`, asked by the reads
(`imapdesk.domain.conversations.reads.visible_conversation`) and by every operation.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, col, delete, select

from imapdesk.kernel.errors import InvalidInput, NotFound
from imapdesk.kernel.models import Agent, AgentMailboxAccess, Conversation, Mailbox


def sees_every_mailbox(agent: Agent) -> bool:
    """Admins and agents with `all_mailboxes`: no mailbox is hidden from them."""
    return agent.is_active and (agent.is_admin or agent.all_mailboxes)


def visible_mailbox_ids(session: Session, agent: Agent) -> list[int]:
    """The ids of the mailboxes this agent may see, in id order."""
    if not agent.is_active:
        return []
    if sees_every_mailbox(agent):
        stmt = select(Mailbox.id)
    else:
        stmt = (
            select(Mailbox.id)
            .join(AgentMailboxAccess, col(AgentMailboxAccess.mailbox_id) == col(Mailbox.id))
            .where(col(AgentMailboxAccess.agent_id) == agent.id)
        )
    return [mid for mid in session.exec(stmt.order_by(col(Mailbox.id))) if mid is not None]


def can_see_mailbox(session: Session, agent: Agent, mailbox_id: int) -> bool:
    if not agent.is_active:
        return False
    if sees_every_mailbox(agent):
        return True
    row = session.get(AgentMailboxAccess, (agent.id, mailbox_id))
    return row is not None


def ensure_can_see(session: Session, agent: Agent, conversation: Conversation) -> None:
    """NotFound, as if it did not exist, unless the agent may see the conversation's mailbox."""
    if not can_see_mailbox(session, agent, conversation.mailbox_id):
        raise NotFound(f"no conversation {conversation.id}", conversation_id=conversation.id)


def granted_mailbox_ids(session: Session, agent: Agent) -> set[int]:
    """The mailboxes of the agent's access rows (what counts once `all_mailboxes` is unset)."""
    return set(
        session.exec(
            select(AgentMailboxAccess.mailbox_id).where(
                col(AgentMailboxAccess.agent_id) == agent.id
            )
        )
    )


def set_mailbox_access(
    session: Session, agent: Agent, *, all_mailboxes: bool, mailbox_ids: Iterable[int] = ()
) -> None:
    """Every mailbox, or exactly `mailbox_ids` (their rows are kept either way, so switching
    back to a restricted agent restores the choice)."""
    if agent.id is None:
        session.flush()
    wanted = set(mailbox_ids)
    if wanted:
        known = set(session.exec(select(Mailbox.id).where(col(Mailbox.id).in_(wanted))))
        if unknown := wanted - known:
            raise InvalidInput(f"no mailbox with id {min(unknown)}", field="mailboxes")
    have = granted_mailbox_ids(session, agent)
    if have - wanted:
        session.exec(
            delete(AgentMailboxAccess).where(
                col(AgentMailboxAccess.agent_id) == agent.id,
                col(AgentMailboxAccess.mailbox_id).in_(have - wanted),
            )
        )
    for mailbox_id in sorted(wanted - have):
        assert agent.id is not None
        session.add(AgentMailboxAccess(agent_id=agent.id, mailbox_id=mailbox_id))
    agent.all_mailboxes = all_mailboxes
    session.add(agent)
    session.flush()


def grant_mailbox(session: Session, mailbox: Mailbox, agents: Iterable[Agent]) -> None:
    """Give these agents the mailbox (for restricted agents; others see it anyway)."""
    assert mailbox.id is not None
    for agent in agents:
        if agent.id is not None and session.get(AgentMailboxAccess, (agent.id, mailbox.id)) is None:
            session.add(AgentMailboxAccess(agent_id=agent.id, mailbox_id=mailbox.id))
    session.flush()


def mailbox_ids_by_name(session: Session, names: Iterable[str]) -> list[int]:
    """The ids of the named mailboxes; InvalidInput naming the first that does not exist."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    found = {
        name: mid
        for name, mid in session.exec(
            select(Mailbox.name, Mailbox.id).where(col(Mailbox.name).in_(wanted))
        )
    }
    for name in wanted:
        if name not in found:
            raise InvalidInput(f"no mailbox named {name!r}", field="mailbox")
    return [mid for mid in found.values() if mid is not None]
