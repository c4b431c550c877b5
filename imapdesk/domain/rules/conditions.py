"""Whether a rule's conditions hold for a conversation (and the message that set it off).

What a condition looks at is read once per occasion and only when a condition asks for it
(`Facts`), so that a hundred rules cost little more than one. Regular expressions run with
the `regex` library's timeout on a bounded text: a pattern that backtracks without end gives
up (and does not match) instead of stalling the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Any

import regex
from sqlalchemy import func
from sqlmodel import Session, col, select

from imapdesk.domain.teams.hours import is_open
from imapdesk.kernel.models import (
    Agent,
    Attachment,
    Conversation,
    ConversationTag,
    Direction,
    Mailbox,
    Message,
    Team,
    TeamMember,
    utcnow,
)

REGEX_TIMEOUT_SECONDS = 0.05
TEXT_LIMIT = 100_000  # the characters of a message's text a condition looks at


@lru_cache(maxsize=1024)
def _pattern(source: str) -> Any:
    return regex.compile(source, regex.IGNORECASE)


def regex_matches(pattern: str, text: str) -> bool:
    """Whether the pattern matches; a pattern that takes too long does not."""
    try:
        return (
            _pattern(pattern).search(text[:TEXT_LIMIT], timeout=REGEX_TIMEOUT_SECONDS) is not None
        )
    except (TimeoutError, regex.error):
        return False


def _addresses(values: list[dict[str, str]] | None) -> str:
    return ", ".join(
        f"{v.get('name') or ''} <{v.get('email') or ''}>".strip() for v in values or []
    )


class Facts:
    """What conditions look at, for one conversation and message, read on first use."""

    def __init__(
        self,
        session: Session,
        conversation: Conversation,
        message: Message | None,
        *,
        now: datetime | None = None,
    ) -> None:
        self.session = session
        self.conversation = conversation
        self._message = message
        self.now = now or utcnow()
        self._teams: dict[str, set[int]] = {}
        self._texts: dict[str, str] = {}
        self._folded: dict[str, str] = {}

    @cached_property
    def message(self) -> Message | None:
        """The message that set it off, else the conversation's newest inbound one."""
        if self._message is not None:
            return self._message
        return self.session.exec(
            select(Message)
            .where(
                col(Message.conversation_id) == self.conversation.id,
                col(Message.direction) == Direction.inbound,
            )
            .order_by(col(Message.date).desc(), col(Message.id).desc())
            .limit(1)
        ).first()

    @cached_property
    def mailbox(self) -> Mailbox | None:
        return self.session.get(Mailbox, self.conversation.mailbox_id)

    @cached_property
    def tags(self) -> set[str]:
        return {
            t.casefold()
            for t in self.session.exec(
                select(ConversationTag.tag).where(
                    col(ConversationTag.conversation_id) == self.conversation.id
                )
            )
        }

    @cached_property
    def assignee(self) -> Agent | None:
        aid = self.conversation.assignee_id
        return self.session.get(Agent, aid) if aid is not None else None

    @cached_property
    def has_attachments(self) -> bool:
        m = self.message
        if m is None or m.id is None:
            return False
        count = self.session.exec(
            select(func.count()).select_from(Attachment).where(col(Attachment.message_id) == m.id)
        ).one()
        return bool(count)

    def text_of(self, fld: str) -> str:
        if fld not in self._texts:
            self._texts[fld] = self._read_text(fld)[:TEXT_LIMIT]
        return self._texts[fld]

    def folded(self, fld: str) -> str:
        """The text casefolded (once per occasion, however many conditions look at it)."""
        if fld not in self._folded:
            self._folded[fld] = self.text_of(fld).casefold()
        return self._folded[fld]

    def _read_text(self, fld: str) -> str:
        m = self.message
        if fld == "subject":
            return (m.subject if m is not None else "") or self.conversation.subject
        if m is None:
            return ""
        if fld == "from":
            return f"{m.from_name or ''} <{m.from_email or ''}>"
        if fld == "to":
            return _addresses(m.to)
        if fld == "cc":
            return _addresses(m.cc)
        return m.text or ""

    def customer_domain(self) -> str:
        email = self.conversation.customer_email or (
            self.message.from_email if self.message is not None else None
        )
        return (email or "").rpartition("@")[2].lower()

    def team_members(self, ref: int | str) -> set[int]:
        key = str(ref)
        if key not in self._teams:
            query = select(TeamMember.agent_id).join(Team, col(Team.id) == col(TeamMember.team_id))
            if isinstance(ref, int) or key.isdigit():
                query = query.where(col(Team.id) == int(key))
            else:
                query = query.where(col(Team.name) == key)
            self._teams[key] = set(self.session.exec(query))
        return self._teams[key]


def _text_condition(facts: Facts, fld: str, op: str, value: str) -> bool:
    if op == "contains":
        return value.casefold() in facts.folded(fld)
    if op == "not_contains":
        return value.casefold() not in facts.folded(fld)
    if op == "is":
        return value.casefold().strip() == facts.folded(fld).strip()
    if op == "matches":
        return regex_matches(value, facts.text_of(fld))
    return not regex_matches(value, facts.text_of(fld))  # not_matches


def _is(op: str, result: bool) -> bool:
    return result if op in ("is", "has") else not result


def _values(value: Any) -> set[str]:
    return {v.strip().casefold() for v in str(value).split(",") if v.strip()}


def holds(facts: Facts, condition: dict[str, Any]) -> bool:
    fld, op, value = condition["field"], condition["op"], condition.get("value")
    conv = facts.conversation
    if fld in ("from", "to", "cc", "subject", "text"):
        return _text_condition(facts, fld, op, str(value))
    if fld == "mailbox":
        box = facts.mailbox
        hit = box is not None and (
            box.id == value or (isinstance(value, str) and box.name.casefold() in _values(value))
        )
        return _is(op, hit)
    if fld == "customer_domain":
        return _is(op, facts.customer_domain() in _values(value))
    if fld == "tag":
        return _is(op, bool(_values(value) & facts.tags))
    if fld == "status":
        return _is(op, str(getattr(conv.status, "value", conv.status)) in _values(value))
    if fld == "assignee":
        wanted = _values(value)
        agent = facts.assignee
        if "none" in wanted and conv.assignee_id is None:
            return _is(op, True)
        hit = agent is not None and bool({agent.email.casefold(), agent.handle} & wanted)
        return _is(op, hit)
    if fld == "team":
        return _is(
            op, conv.assignee_id is not None and conv.assignee_id in facts.team_members(value or "")
        )
    if fld == "business_hours":
        return is_open(facts.session, condition.get("calendar_id"), facts.now) == value
    if fld == "attachments":
        return facts.has_attachments == value
    return False


def all_hold(facts: Facts, conditions: list[dict[str, Any]], match: str) -> bool:
    if not conditions:
        return True
    check: Callable[[Any], bool] = all if match == "all" else any
    return check(holds(facts, c) for c in conditions)


Check = Callable[[Facts], bool]


def compile_condition(condition: dict[str, Any]) -> Check:
    """One condition as a function of the facts, with what it can work out once (its value
    casefolded, its pattern compiled) worked out here rather than for every message."""
    fld, op, value = condition["field"], condition["op"], condition.get("value")
    if fld in ("from", "to", "cc", "subject", "text") and op in ("contains", "not_contains"):
        wanted = str(value).casefold()
        if op == "contains":
            return lambda facts: wanted in facts.folded(fld)
        return lambda facts: wanted not in facts.folded(fld)
    if fld in ("from", "to", "cc", "subject", "text") and op in ("matches", "not_matches"):
        pattern, hit = str(value), op == "matches"
        _pattern(pattern)  # compiled (and cached) now
        return lambda facts: regex_matches(pattern, facts.text_of(fld)) == hit
    if fld == "customer_domain":
        domains, hit = _values(value), op == "is"
        return lambda facts: (facts.customer_domain() in domains) == hit
    return lambda facts: holds(facts, condition)


def compile_conditions(conditions: list[dict[str, Any]], match: str) -> Check:
    """All (or any) of the conditions as one function of the facts."""
    checks = [compile_condition(c) for c in conditions]
    if not checks:
        return lambda facts: True
    if len(checks) == 1:
        return checks[0]
    if match == "all":
        return lambda facts: all(check(facts) for check in checks)
    return lambda facts: any(check(facts) for check in checks)
