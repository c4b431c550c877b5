"""What a rule may say, checked before it is stored, and keeping rules (create, change, order,
delete).

A rule: `trigger` (an event, or a time-based trigger with `trigger_amount`), `match` (`all` or
`any` of the conditions), `conditions` ({"field", "op", "value"}), `actions` ({"type", ...}),
`stop` (no rule after it is evaluated for that occasion), `enabled`, and its `position`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import regex
from sqlalchemy import func
from sqlmodel import Session, col, select

from imapdesk.domain.events import EventKind
from imapdesk.kernel.errors import Conflict, InvalidInput, NotFound
from imapdesk.kernel.models import ConversationStatus, Rule, utcnow

NAME_MAX = 200
PATTERN_MAX = 500  # a regular expression's length at most
TEXT_MAX = 2000  # a condition's value, a notification's text
NOTE_MAX = 20_000
CONDITIONS_MAX = 50
ACTIONS_MAX = 20

# trigger -> the event kinds it reacts to
EVENT_TRIGGERS: dict[str, tuple[str, ...]] = {
    "conversation.created": (EventKind.conversation_created,),
    "conversation.customer_replied": (EventKind.customer_replied,),
    "conversation.agent_replied": (EventKind.agent_replied, EventKind.reply_sent),
    "note.added": (EventKind.note_added,),
    "conversation.status_changed": (EventKind.status_changed,),
    "conversation.assigned": (EventKind.assigned,),
    "conversation.tagged": (EventKind.tagged,),
    "sla.warning": (EventKind.sla_warning,),
}
# time-based triggers -> the unit of `trigger_amount`
TIME_TRIGGERS: dict[str, str] = {
    "time.no_reply": "business hours",  # the customer has waited that long for an answer
    "time.pending": "days",  # pending that long
}
TRIGGER_LABELS: dict[str, str] = {
    "conversation.created": "a conversation is created",
    "conversation.customer_replied": "the customer replies",
    "conversation.agent_replied": "an agent replies",
    "note.added": "a note is added",
    "conversation.status_changed": "the status changes",
    "conversation.assigned": "it is assigned",
    "conversation.tagged": "it is tagged",
    "sla.warning": "an SLA is about to be breached",
    "time.no_reply": "no reply for N business hours",
    "time.pending": "pending for N days",
}

TEXT_FIELDS = ("from", "to", "cc", "subject", "text")
TEXT_OPS = ("contains", "not_contains", "is", "matches", "not_matches")
IS_OPS = ("is", "is_not")
FIELDS: dict[str, tuple[str, ...]] = {
    **{f: TEXT_OPS for f in TEXT_FIELDS},
    "mailbox": IS_OPS,
    "customer_domain": IS_OPS,
    "tag": ("has", "has_not"),
    "status": IS_OPS,
    "assignee": IS_OPS,
    "team": IS_OPS,
    "business_hours": ("is",),
    "attachments": ("is",),
}
ACTIONS = (
    "assign",
    "assign_team",
    "tag",
    "untag",
    "status",
    "snooze",
    "note",
    "reply",
    "notify",
    "webhook",
)


def _fail(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, field=field)


def _check_condition(raw: Any, n: int) -> dict[str, Any]:
    where = f"conditions[{n}]"
    if not isinstance(raw, dict):
        raise _fail("a condition is an object with field, op and value", where)
    fld, op, value = raw.get("field"), raw.get("op", "is"), raw.get("value")
    if fld not in FIELDS:
        raise _fail(f"field is one of {', '.join(FIELDS)}", where)
    if op not in FIELDS[fld]:
        raise _fail(f"op for {fld} is one of {', '.join(FIELDS[fld])}", where)
    out: dict[str, Any] = {"field": fld, "op": op}
    if fld in ("business_hours", "attachments"):
        if not isinstance(value, bool):
            raise _fail("value is true or false", where)
        out["value"] = value
        if fld == "business_hours" and raw.get("calendar_id") is not None:
            if not isinstance(raw["calendar_id"], int):
                raise _fail("calendar_id is a number", where)
            out["calendar_id"] = raw["calendar_id"]
        return out
    if isinstance(value, int) and not isinstance(value, bool) and fld in ("mailbox", "team"):
        out["value"] = value
        return out
    if not isinstance(value, str) or len(value) > TEXT_MAX:
        raise _fail(f"value is a text of at most {TEXT_MAX} characters", where)
    if op in ("matches", "not_matches"):
        if len(value) > PATTERN_MAX:
            raise _fail(f"a pattern is at most {PATTERN_MAX} characters", where)
        try:
            regex.compile(value)
        except regex.error as exc:
            raise _fail(f"not a valid regular expression: {exc}", where) from exc
    if fld == "status" and value not in {s.value for s in ConversationStatus}:
        raise _fail("value is a status: open, pending, closed, spam or deleted", where)
    out["value"] = value
    return out


def _text(raw: dict[str, Any], key: str, where: str, limit: int) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise _fail(f"{key} is a text of 1 to {limit} characters", where)
    return value


def _check_action(raw: Any, n: int) -> dict[str, Any]:
    where = f"actions[{n}]"
    if not isinstance(raw, dict) or raw.get("type") not in ACTIONS:
        raise _fail(f"an action's type is one of {', '.join(ACTIONS)}", where)
    kind = raw["type"]
    out: dict[str, Any] = {"type": kind}
    if kind == "assign":
        out["agent"] = _text(raw, "agent", where, 320)
    elif kind == "assign_team":
        team = raw.get("team")
        if not isinstance(team, int | str) or isinstance(team, bool) or team == "":
            raise _fail("team is a team's id or name", where)
        out["team"] = team
    elif kind in ("tag", "untag"):
        out["tag"] = _text(raw, "tag", where, 100).strip()
    elif kind == "status":
        status = raw.get("status")
        if status not in {s.value for s in ConversationStatus}:
            raise _fail("status is open, pending, closed, spam or deleted", where)
        out["status"] = status
    elif kind == "snooze":
        hours = raw.get("hours")
        if not isinstance(hours, int | float) or isinstance(hours, bool) or not 0 < hours <= 8760:
            raise _fail("hours is a number from above 0 to 8760", where)
        out["hours"] = hours
    elif kind == "note":
        out["text"] = _text(raw, "text", where, NOTE_MAX)
    elif kind == "reply":
        saved = raw.get("saved_reply_id")
        if not isinstance(saved, int) or isinstance(saved, bool):
            raise _fail("saved_reply_id is a saved reply's id", where)
        out["saved_reply_id"] = saved
    elif kind == "notify":
        ids = raw.get("agent_ids", [])
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise _fail("agent_ids is a list of agent ids", where)
        out["agent_ids"] = ids
        out["assignee"] = bool(raw.get("assignee", False))
        if not ids and not out["assignee"]:
            raise _fail("notify whom: agent_ids, or assignee: true", where)
        out["text"] = _text(raw, "text", where, TEXT_MAX)
    elif kind == "webhook":
        url = raw.get("url")
        if url is not None:
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise _fail("url is an http(s) address", where)
            out["url"] = url[:2000]
    return out


def check_rule(data: dict[str, Any]) -> dict[str, Any]:
    """The rule's fields, checked and normalised (InvalidInput naming the field otherwise)."""
    name = data.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= NAME_MAX:
        raise _fail(f"a rule's name is 1 to {NAME_MAX} characters", "name")
    trigger = data.get("trigger")
    if trigger not in EVENT_TRIGGERS and trigger not in TIME_TRIGGERS:
        raise _fail(f"trigger is one of {', '.join(TRIGGER_LABELS)}", "trigger")
    amount = data.get("trigger_amount")
    if trigger in TIME_TRIGGERS:
        if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= 10_000:
            raise _fail(
                f"trigger_amount ({TIME_TRIGGERS[trigger]}) is 1 to 10000", "trigger_amount"
            )
    else:
        amount = None
    match = data.get("match", "all")
    if match not in ("all", "any"):
        raise _fail("match is all or any", "match")
    conditions = data.get("conditions") or []
    actions = data.get("actions") or []
    if not isinstance(conditions, list) or len(conditions) > CONDITIONS_MAX:
        raise _fail(f"conditions is a list of at most {CONDITIONS_MAX}", "conditions")
    if not isinstance(actions, list) or not 1 <= len(actions) <= ACTIONS_MAX:
        raise _fail(f"actions is a list of 1 to {ACTIONS_MAX}", "actions")
    return {
        "name": name.strip(),
        "trigger": trigger,
        "trigger_amount": amount,
        "match": match,
        "conditions": [_check_condition(c, n) for n, c in enumerate(conditions)],
        "actions": [_check_action(a, n) for n, a in enumerate(actions)],
        "stop": bool(data.get("stop", False)),
        "enabled": bool(data.get("enabled", True)),
    }


@dataclass(frozen=True)
class RuleSpec:
    """A rule as the engine applies it: a plain copy, kept between batches while no rule
    changes (`imapdesk.domain.rules.engine.enabled_rules`)."""

    id: int
    name: str
    trigger: str
    trigger_amount: int | None
    match: str
    conditions: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    stop: bool
    # the conditions as one function of the facts (imapdesk.domain.rules.conditions)
    check: Callable[[Any], bool] = field(compare=False, repr=False)

    @classmethod
    def of(cls, rule: Rule) -> RuleSpec:
        from imapdesk.domain.rules.conditions import compile_conditions

        assert rule.id is not None
        conditions = list(rule.conditions or [])
        return cls(
            id=rule.id,
            name=rule.name,
            trigger=rule.trigger,
            trigger_amount=rule.trigger_amount,
            match=rule.match,
            conditions=conditions,
            actions=list(rule.actions or []),
            stop=rule.stop,
            check=compile_conditions(conditions, rule.match),
        )


def list_rules(session: Session) -> list[Rule]:
    return list(session.exec(select(Rule).order_by(col(Rule.position), col(Rule.id))))


def get_rule(session: Session, rule_id: int) -> Rule:
    rule = session.get(Rule, rule_id)
    if rule is None:
        raise NotFound(f"no rule {rule_id}")
    return rule


def _unique_name(session: Session, name: str, rule_id: int | None) -> None:
    clash = session.exec(select(Rule).where(col(Rule.name) == name)).first()
    if clash is not None and clash.id != rule_id:
        raise Conflict(f"a rule named {name!r} exists already", field="name")


def create_rule(session: Session, data: dict[str, Any]) -> Rule:
    """A new rule, last in order unless `position` is given."""
    checked = check_rule(data)
    _unique_name(session, checked["name"], None)
    position = data.get("position")
    if not isinstance(position, int) or isinstance(position, bool):
        last = session.exec(select(func.max(Rule.position))).one()
        position = (last or 0) + 1
    rule = Rule(**checked, position=position)
    session.add(rule)
    session.flush()
    return rule


def rule_fields(rule: Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "trigger": rule.trigger,
        "trigger_amount": rule.trigger_amount,
        "match": rule.match,
        "conditions": list(rule.conditions or []),
        "actions": list(rule.actions or []),
        "stop": rule.stop,
        "enabled": rule.enabled,
    }


def update_rule(session: Session, rule_id: int, changes: dict[str, Any]) -> Rule:
    """Change the given fields (the others stay); `position` moves it."""
    rule = get_rule(session, rule_id)
    merged = {**rule_fields(rule), **{k: v for k, v in changes.items() if k != "position"}}
    checked = check_rule(merged)
    _unique_name(session, checked["name"], rule_id)
    for key, value in checked.items():
        setattr(rule, key, value)
    if isinstance(changes.get("position"), int) and not isinstance(changes["position"], bool):
        rule.position = changes["position"]
    rule.updated_at = utcnow()
    session.add(rule)
    session.flush()
    return rule


def delete_rule(session: Session, rule_id: int) -> None:
    session.delete(get_rule(session, rule_id))
    session.flush()


def move_rule(session: Session, rule_id: int, step: int) -> None:
    """One place up (step -1) or down (+1); positions are renumbered 1..n."""
    rules = list_rules(session)
    index = next((i for i, r in enumerate(rules) if r.id == rule_id), None)
    if index is None:
        raise NotFound(f"no rule {rule_id}")
    other = index + step
    if 0 <= other < len(rules):
        rules[index], rules[other] = rules[other], rules[index]
    for n, rule in enumerate(rules, start=1):
        if rule.position != n:
            rule.position = n
            rule.updated_at = utcnow()  # the engine's copy of the rules is read again
            session.add(rule)
    session.flush()
