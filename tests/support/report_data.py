"""Conversations and events with known times for the reports' tests (tests/core/test_reports.py,
tests/web/test_reports.py). The week of Monday 7 December 2026 in Berlin (UTC+1):

- A (support, tag billing, assignee Bob): created Mon 09:00; the rule's automatic
  acknowledgement at 09:01 (not a response); Bob's reply sent at 10:00 (1 h); closed by Bob at
  12:00 (3 h). SLA: first response met, resolution missed.
- B (support, no tag, nobody): created Tue 8 Dec 00:30 Berlin (still Mon 7 Dec in UTC); the
  customer writes again at 01:00; a reply from a mail client at 02:30 (2 h).
- C (sales, tag billing, assignee Alice): created Wed 09:00; Alice's reply at 09:30 (30 min);
  closed by the worker Thu 09:00 (24 h). SLA: first response missed (due 09:10), resolution
  met. (B's SLA record: first response due Tue 01:00 Berlin, breached, not attained: missed.)
- D (support, tag urgent, assignee Bob): created Wed 10:00; Bob's reply at 14:00 (4 h).
- E (support): created and first answered in November; answered again in the week (a reply,
  no first response in the week).
- F (support): started by Bob (outbound); his second message in the week: a reply, no first
  response (nobody waited).

First responses in the week: 30 min, 1 h, 2 h, 4 h: median 90 min, p90 204 min (linear).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.domain.conversations import operations
from imapdesk.domain.events import EventKind, record_event
from imapdesk.domain.outbound.delivery import MAIL_CLIENT_REPLY, after_sent
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    ActivitySource,
    Agent,
    Conversation,
    ConversationSla,
    Event,
    OutboundMail,
    OutboundState,
    Team,
    TeamMailbox,
    TeamMember,
)
from tests.support import factories as f

BERLIN = ZoneInfo("Europe/Berlin")
MINUTE = 60
HOUR = 3600


def berlin(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN).astimezone(UTC)  # type: ignore[misc]


@dataclass
class Scenario:
    support: int
    sales: int
    team: int
    convs: dict[str, int]


def _at(session: Session, rows: list[Event], at: datetime) -> None:
    for row in rows:
        row.created_at = at
        session.add(row)
    session.flush()


def _new_events(session: Session, after: int) -> list[Event]:
    session.flush()
    return list(session.exec(select(Event).where(col(Event.id) > after)))


def _top(session: Session) -> int:
    session.flush()
    return max([e.id or 0 for e in session.exec(select(Event))], default=0)


def created(session: Session, conv: Conversation, at: datetime, **payload: Any) -> None:
    payload.setdefault("direction", "inbound")
    for kind in (EventKind.conversation_created, EventKind.message_received):
        row = record_event(
            session, kind, mailbox_id=conv.mailbox_id, conversation_id=conv.id, payload=payload
        )
        row.created_at = at
    session.flush()


def customer_wrote(session: Session, conv: Conversation, at: datetime) -> None:
    for kind in (EventKind.customer_replied, EventKind.message_received):
        row = record_event(
            session,
            kind,
            mailbox_id=conv.mailbox_id,
            conversation_id=conv.id,
            payload={"direction": "inbound"},
        )
        row.created_at = at
    session.flush()


def sent(
    session: Session, conv: Conversation, at: datetime, agent: Agent | None, kind: str = "reply"
) -> None:
    """A reply as imapdesk sends it: the activity's event when queued (a minute before), the
    delivery's when the server took it (`after_sent`; no agent: a rule's automatic reply)."""
    before = _top(session)
    source = ActivitySource.web if agent is not None else ActivitySource.system
    out = OutboundMail(
        mailbox_id=conv.mailbox_id,
        conversation_id=conv.id,
        agent_id=agent.id if agent is not None else None,
        source=source,
        kind=kind,
        msgid=f"out-{conv.id}-{at.timestamp()}@example.com",
        envelope_from="support@example.com",
        recipients=["customer@example.com"],
        raw=b"",
        state=OutboundState.sent,
    )
    session.add(out)
    session.flush()
    operations._record(
        session,
        conv,
        source=source,
        agent=agent,
        actor="" if agent is not None else "rule Acknowledge",
        action="replied",
        details={"outbound_id": out.id, "kind": kind, "automatic": agent is None},
    )
    _at(session, _new_events(session, before), at - timedelta(minutes=1))
    before = _top(session)
    after_sent(session, out)
    _at(session, _new_events(session, before), at)


def client_reply(session: Session, conv: Conversation, at: datetime) -> None:
    """A reply a colleague sent from a mail client, seen in Sent."""
    before = _top(session)
    operations._record(
        session,
        conv,
        source=ActivitySource.imap,
        agent=None,
        actor=operations.MAIL_CLIENT,
        action="replied",
        details={"message_id": None, "via": MAIL_CLIENT_REPLY, "to": ["c@example.com"]},
    )
    _at(session, _new_events(session, before), at)


def closed(session: Session, conv: Conversation, at: datetime, agent: Agent | None) -> None:
    before = _top(session)
    operations.set_status(
        session,
        conv,
        "closed",
        source=ActivitySource.web if agent is not None else ActivitySource.system,
        agent=agent,
        actor="" if agent is not None else "imapdesk",
    )
    _at(session, _new_events(session, before), at)


def build(engine: Engine, alice_id: int, bob_id: int) -> Scenario:
    with unit_of_work(engine) as s:
        alice, bob = s.get(Agent, alice_id), s.get(Agent, bob_id)
        assert alice is not None and bob is not None
        support, sales = f.mailbox(s, "support"), f.mailbox(s, "sales")
        assert support.id is not None and sales.id is not None
        team = Team(name="Tier 1")
        s.add(team)
        s.flush()
        assert team.id is not None
        s.add(TeamMember(team_id=team.id, agent_id=bob_id))
        s.add(TeamMailbox(mailbox_id=support.id, team_id=team.id))
        a = f.conversation(s, support, "A", tags=("billing",), assignee_id=bob_id)
        b = f.conversation(s, support, "B")
        c = f.conversation(s, sales, "C", tags=("billing",), assignee_id=alice_id)
        d = f.conversation(s, support, "D", tags=("urgent",), assignee_id=bob_id)
        e = f.conversation(s, support, "E")
        g = f.conversation(s, support, "F", assignee_id=bob_id)

        created(s, a, berlin(2026, 12, 7, 9, 0))
        sent(s, a, berlin(2026, 12, 7, 9, 1), None)  # the rule's acknowledgement
        sent(s, a, berlin(2026, 12, 7, 10, 0), bob)
        closed(s, a, berlin(2026, 12, 7, 12, 0), bob)

        created(s, b, berlin(2026, 12, 8, 0, 30))
        customer_wrote(s, b, berlin(2026, 12, 8, 1, 0))
        client_reply(s, b, berlin(2026, 12, 8, 2, 30))

        created(s, c, berlin(2026, 12, 9, 9, 0))
        sent(s, c, berlin(2026, 12, 9, 9, 30), alice)
        closed(s, c, berlin(2026, 12, 10, 9, 0), None)

        created(s, d, berlin(2026, 12, 9, 10, 0))
        sent(s, d, berlin(2026, 12, 9, 14, 0), bob)

        created(s, e, berlin(2026, 11, 20, 9, 0))
        sent(s, e, berlin(2026, 11, 20, 11, 0), bob)
        sent(s, e, berlin(2026, 12, 10, 11, 0), bob)

        created(s, g, berlin(2026, 11, 30, 9, 0), direction="outbound")
        sent(s, g, berlin(2026, 12, 10, 15, 0), bob)

        assert a.id and b.id and c.id and d.id and e.id and g.id
        s.add(
            ConversationSla(
                conversation_id=a.id,
                first_response_due=berlin(2026, 12, 7, 11, 0),
                first_response_at=berlin(2026, 12, 7, 10, 0),
                first_response_met=True,
                resolution_due=berlin(2026, 12, 7, 11, 30),
                resolved_at=berlin(2026, 12, 7, 12, 0),
                resolution_met=False,
                breached=True,
            )
        )
        s.add(
            ConversationSla(
                conversation_id=c.id,
                first_response_due=berlin(2026, 12, 9, 9, 10),
                first_response_at=berlin(2026, 12, 9, 9, 30),
                first_response_met=False,
                first_response_breached=True,
                resolution_due=berlin(2026, 12, 11, 9, 0),
                resolved_at=berlin(2026, 12, 10, 9, 0),
                resolution_met=True,
                breached=True,
            )
        )
        # breached, not attained yet: missed on the day it was due
        s.add(
            ConversationSla(
                conversation_id=b.id,
                first_response_due=berlin(2026, 12, 8, 1, 0),
                first_response_breached=True,
                breached=True,
            )
        )
        # no target set: not in the attainment
        s.add(ConversationSla(conversation_id=d.id, first_response_met=True))
        return Scenario(
            support=support.id,
            sales=sales.id,
            team=team.id,
            convs={"A": a.id, "B": b.id, "C": c.id, "D": d.id, "E": e.id, "F": g.id},
        )
