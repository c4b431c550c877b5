"""Automation rules with real mail (Dovecot, the aiosmtpd relay, the worker): a customer's mail
arrives, a rule tags it, assigns it round robin among the available agents of a team and sends
one automatic acknowledgement (Auto-Submitted, into the customer's box through the relay); the
tag and the assignment reach the mailbox as a manual change does; automatic mail and list
mail get no reply; a customer gets one acknowledgement per window. Both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.kernel.models import (
    Agent,
    Conversation,
    ConversationStatus,
    OutboundState,
    PendingImapAction,
)
from imapdesk.kernel.settings import Settings
from tests.rules.scene import (
    activities,
    agents,
    outbound_of,
    rule,
    saved_reply,
    start_consumer,
    tags,
    team,
    unavailable,
)
from tests.support.imap import folder_messages, imap_client, where_on_server
from tests.support.mail import customer_mail
from tests.support.outbound import add_sending_mailbox, conversation_of, status_of
from tests.support.worker import caught_up, make_settings, running_worker, wait_for


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        db_url,
        tmp_path / "data",
        sender_poll_seconds=0.1,
        smtp_retry_initial_seconds=0.3,
        smtp_retry_max_seconds=1.0,
        rules_poll_seconds=0.1,
    )


def _deliver(
    mailserver: LocalMailServer,
    sender: str,
    to: str,
    subject: str,
    headers: dict[str, str] | None = None,
) -> str:
    msgid, raw = customer_mail(sender, to, subject, headers=headers)
    mailserver.deliver(to, raw)
    return msgid


def _assignee(engine: Engine, cid: int) -> str | None:
    with Session(engine) as db:
        conv = db.get(Conversation, cid)
        assert conv is not None
        agent = db.get(Agent, conv.assignee_id) if conv.assignee_id else None
        return agent.handle if agent is not None else None


def _flags_on_server(account: MailAccount, msgid: str) -> frozenset[str]:
    client = imap_client(account)
    try:
        places = where_on_server(client).get(msgid, [])
    finally:
        client.logout()
    # wherever it is: a reply may move it (the mailbox's status after a reply)
    return frozenset().union(*(flags for _folder, _uid, flags in places))


def test_a_rule_tags_assigns_round_robin_and_acknowledges_once(
    settings: Settings,
    engine: Engine,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    running_relay: LocalSmtpRelay,
) -> None:
    mailbox_id = add_sending_mailbox(engine, settings, mail_account, running_relay)
    people = agents(engine, "alice", "bob", "carol")
    unavailable(engine, people["carol"])  # on holiday: gets nothing
    team(engine, "Support", [people["alice"], people["bob"], people["carol"]])
    ack = saved_reply(engine, people["alice"], "Thank you: we have your message.")
    rule(
        engine,
        name="Acknowledge and route",
        trigger="conversation.created",
        conditions=[{"field": "subject", "op": "matches", "value": r"order|invoice"}],
        actions=[
            {"type": "tag", "tag": "triage"},
            {"type": "assign_team", "team": "Support"},
            {"type": "reply", "saved_reply_id": ack},
        ],
        stop=True,
    )
    start_consumer(engine)
    other = mailserver.create_account(prefix="other")
    with running_worker(settings, engine):
        # mail taken in by a first sync sets off no rule: the customer writes once it is live
        wait_for(lambda: caught_up(engine, mailbox_id), timeout=60, what="the first sync")
        first = _deliver(mailserver, customer.user, mail_account.user, "My order is late")
        cid = wait_for(
            lambda: conversation_of(engine, first), timeout=60, what="the first conversation"
        )
        wait_for(lambda: "triage" in tags(engine, cid), timeout=60, what="the rule's tag")
        holder = _assignee(engine, cid)
        assert holder in ("alice", "bob")
        # the acknowledgement reaches the customer through the relay, once
        wait_for(
            lambda: any(o.state == OutboundState.sent for o in outbound_of(engine, cid)),
            timeout=30,
            what="the acknowledgement sent",
        )
        # an acknowledgement is no answer: the conversation stays open, its mail unanswered
        assert status_of(engine, cid) == ConversationStatus.open
        received = wait_for(
            lambda: folder_messages(customer), timeout=60, what="the acknowledgement"
        )
        assert len(received) == 1
        assert received[0].message["Auto-Submitted"] == "auto-replied"
        assert received[0].message["In-Reply-To"].strip("<>") == first
        assert "we have your message" in received[0].message.get_content()
        # the state reaches the mailbox like a manual change: flag, assignee and tag keywords
        wanted = {"\\Flagged", f"$Assigned_{holder}", "triage"}
        wait_for(
            lambda: wanted <= _flags_on_server(mail_account, first),
            timeout=20,
            what="the flag and the keywords on the message",
        )
        # not \Answered: no write-back was ever queued for it (the send is recorded already)
        with Session(engine) as db:
            queued = db.exec(
                select(PendingImapAction).where(col(PendingImapAction.conversation_id) == cid)
            ).all()
        assert not any("\\Answered" in (a.payload.get("add") or []) for a in queued)
        assert "\\Answered" not in _flags_on_server(mail_account, first)
        # every change is the rule's in the activity log
        actors = {a.actor for a in activities(engine, cid) if a.action in ("tagged", "assigned")}
        assert actors == {"rule Acknowledge and route"}
        replied = activities(engine, cid, "replied")
        assert [a.actor for a in replied] == ["rule Acknowledge and route"]

        # the next conversation goes to the other available agent; the same customer gets no
        # second acknowledgement within the window (nothing is queued for it)
        second = _deliver(mailserver, customer.user, mail_account.user, "Invoice missing")
        cid2 = wait_for(
            lambda: conversation_of(engine, second), timeout=60, what="the second conversation"
        )
        wait_for(lambda: "triage" in tags(engine, cid2), timeout=60, what="the second tag")
        assert {holder, _assignee(engine, cid2)} == {"alice", "bob"}
        assert outbound_of(engine, cid2) == []

        # automatic mail and list mail: routed like any other, never answered
        auto = _deliver(
            mailserver,
            other.user,
            mail_account.user,
            "Out of office: your order",
            headers={"Auto-Submitted": "auto-replied"},
        )
        listed = _deliver(
            mailserver,
            other.user,
            mail_account.user,
            "[announce] order news",
            headers={"List-Id": "<announce.lists.example>", "Precedence": "list"},
        )
        for msgid in (auto, listed):
            cid_n = wait_for(
                lambda m=msgid: conversation_of(engine, m), timeout=60, what="automatic mail"
            )
            wait_for(
                lambda c=cid_n: "triage" in tags(engine, c),
                timeout=60,
                what="automatic mail routed",
            )
            assert outbound_of(engine, cid_n) == []
        # round robin carried on: alice, bob, alice, bob (carol is unavailable)
        handles = [_assignee(engine, c) for c in (cid, cid2)]
        handles += [_assignee(engine, conversation_of(engine, m) or 0) for m in (auto, listed)]
        assert handles in (["alice", "bob", "alice", "bob"], ["bob", "alice", "bob", "alice"])
    assert folder_messages(other) == []
    assert len(folder_messages(customer)) == 1
