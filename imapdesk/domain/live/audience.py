"""Who may still see what: the access of the agents behind open live streams, read again for
every batch of changes (api/web/live.py), so that a stream keeps no permission from when it
opened. One read for all the streams of a process, whatever their number.

The rule is imapdesk.domain.accounts.access's (`sees_every_mailbox`, else the agent's access
rows), asked here for many agents at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection

from sqlmodel import Session, col, select

from imapdesk.domain.accounts.access import sees_every_mailbox
from imapdesk.kernel.models import Agent, AgentMailboxAccess, Mailbox


def visible_mailboxes(db: Session, agent_ids: Collection[int]) -> dict[int, frozenset[int]]:
    """The mailboxes each of these agents may see now. An agent who is gone or deactivated is
    missing from the answer: it may see nothing."""
    if not agent_ids:
        return {}
    agents = [
        agent
        for agent in db.exec(select(Agent).where(col(Agent.id).in_(set(agent_ids))))
        if agent.id is not None and agent.is_active
    ]
    every: frozenset[int] = frozenset()
    if any(sees_every_mailbox(agent) for agent in agents):
        every = frozenset(mid for mid in db.exec(select(Mailbox.id)) if mid is not None)
    restricted = [agent.id for agent in agents if not sees_every_mailbox(agent)]
    granted: dict[int, set[int]] = defaultdict(set)
    if restricted:
        rows = db.exec(
            select(AgentMailboxAccess.agent_id, AgentMailboxAccess.mailbox_id)
            .join(Mailbox, col(Mailbox.id) == col(AgentMailboxAccess.mailbox_id))
            .where(col(AgentMailboxAccess.agent_id).in_(restricted))
        )
        for agent_id, mailbox_id in rows:
            granted[agent_id].add(mailbox_id)
    return {
        agent.id: every if sees_every_mailbox(agent) else frozenset(granted[agent.id])
        for agent in agents
        if agent.id is not None
    }
