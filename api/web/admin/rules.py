"""Automation rules: the list in order (moved up and down, deleted), a form to add or change
one, and the dry run over the last 100 conversations. The rules live in
imapdesk.domain.rules.

The form is a plain HTML form: the trigger (and N for a time-based one), then one row of
fields per condition (`conditions-<i>-field`, `-op`, `-value`, `-calendar_id`) and per action
(`actions-<i>-type` and the inputs of that type, e.g. `actions-<i>-agent`), in the order of
`<i>` (gaps allowed). A row whose field or type is empty is left out. The rows become the
structures `imapdesk.domain.rules.definitions.check_rule` checks, as the REST API's JSON does;
an error re-renders the form with what the admin entered and the error beside its row.
frontend/static/rules_form.js adds and removes rows; without script the existing rows and one
blank row of each can be edited.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from sqlmodel import Session, col, select
from starlette.datastructures import FormData

from imapdesk.api.deps import RowId, SessionDep, WriteSessionDep
from imapdesk.api.web.admin.page import Csrf, all_mailboxes, as_sentence, redirect, render
from imapdesk.api.web.auth import WebAdmin, check_csrf
from imapdesk.api.web.flash import flash
from imapdesk.domain.outbound.saved_replies import list_saved_replies
from imapdesk.domain.rules import definitions
from imapdesk.domain.rules.engine import dry_run
from imapdesk.kernel.errors import ImapdeskError, InvalidInput
from imapdesk.kernel.models import (
    Agent,
    BusinessCalendar,
    ConversationStatus,
    ConversationTag,
    Rule,
    Team,
)

router = APIRouter()

FIELD_LABELS: dict[str, str] = {
    "subject": "Subject",
    "from": "From",
    "to": "To",
    "cc": "Cc",
    "text": "Message text",
    "mailbox": "Mailbox",
    "customer_domain": "Customer's domain",
    "tag": "Tag",
    "status": "Status",
    "assignee": "Assignee",
    "team": "Assignee's team",
    "business_hours": "Within business hours",
    "attachments": "Message has attachments",
}
OP_LABELS: dict[str, str] = {
    "contains": "contains",
    "not_contains": "does not contain",
    "is": "is",
    "is_not": "is not",
    "matches": "matches (regular expression)",
    "not_matches": "does not match",
    "has": "has",
    "has_not": "has not",
}
# what input a condition's value takes
VALUE_KINDS: dict[str, str] = {
    **{f: "text" for f in definitions.TEXT_FIELDS},
    "customer_domain": "text",
    "mailbox": "mailbox",
    "tag": "tag",
    "status": "status",
    "assignee": "agent",
    "team": "team",
    "business_hours": "hours",
    "attachments": "bool",
}
ACTION_LABELS: dict[str, str] = {
    "assign": "Assign to an agent",
    "assign_team": "Assign to a team's next agent",
    "tag": "Add a tag",
    "untag": "Remove a tag",
    "status": "Set the status",
    "snooze": "Snooze",
    "note": "Add a note",
    "reply": "Reply with a saved reply",
    "notify": "Notify agents",
    "webhook": "Call the webhooks",
}
# every input an action row has (one group per type; only the type's own are read)
ACTION_INPUTS = (
    "agent",
    "team",
    "tag",
    "status",
    "hours",
    "text",
    "saved_reply_id",
    "notify_text",
    "url",
)
ALL_OPS = tuple(OP_LABELS)
TAGS_OFFERED = 500  # the tags offered for completion at most
ROWS_READ = 4 * definitions.CONDITIONS_MAX  # rows of one list read from a form at most
VALUE_MAX = definitions.NOTE_MAX
_ROW_KEY = re.compile(r"^(conditions|actions)-(\d{1,6})-([a-z_]+)$")

Row = dict[str, Any]


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def blank_condition() -> Row:
    return {"field": "", "op": "", "value": "", "calendar_id": "", "error": None}


def blank_action() -> Row:
    row: Row = dict.fromkeys(ACTION_INPUTS, "")
    row.update(type="", agent_ids=[], assignee=False, error=None)
    return row


def condition_row(condition: dict[str, Any]) -> Row:
    """A stored condition as the form's row."""
    return {
        **blank_condition(),
        "field": _as_text(condition.get("field")),
        "op": _as_text(condition.get("op")),
        "value": _as_text(condition.get("value")),
        "calendar_id": _as_text(condition.get("calendar_id")),
    }


def action_row(action: dict[str, Any]) -> Row:
    """A stored action as the form's row."""
    row = blank_action()
    kind = _as_text(action.get("type"))
    row["type"] = kind
    for key in ("agent", "team", "tag", "status", "saved_reply_id", "url"):
        row[key] = _as_text(action.get(key))
    row["hours"] = _as_text(action.get("hours"))
    if kind == "note":
        row["text"] = _as_text(action.get("text"))
    if kind == "notify":
        row["notify_text"] = _as_text(action.get("text"))
        row["agent_ids"] = [_as_text(i) for i in action.get("agent_ids") or []]
        row["assignee"] = bool(action.get("assignee"))
    return row


def _rows_of(form: FormData, prefix: str) -> list[tuple[int, dict[str, list[str]]]]:
    """The rows of one list in the form, in the order of their index."""
    rows: dict[int, dict[str, list[str]]] = {}
    for key in form:
        found = _ROW_KEY.match(key)
        if found is None or found[1] != prefix:
            continue
        values = [v for v in form.getlist(key) if isinstance(v, str)]
        if any(len(v) > VALUE_MAX for v in values):
            raise InvalidInput(
                f"a value is at most {VALUE_MAX} characters", field=f"{prefix}-{found[2]}"
            )
        rows.setdefault(int(found[2]), {})[found[3]] = values
        if len(rows) > ROWS_READ:
            raise InvalidInput(f"{prefix} has at most {ROWS_READ} rows", field=prefix)
    return sorted(rows.items())


def _first(values: dict[str, list[str]], key: str) -> str:
    found = values.get(key) or [""]
    return found[0]


def form_rows(form: FormData) -> tuple[list[Row], list[Row]]:
    """The condition rows and action rows the admin filled in (blank ones left out)."""
    conditions = []
    for _, values in _rows_of(form, "conditions"):
        row = blank_condition()
        for key in ("field", "op", "value", "calendar_id"):
            row[key] = _first(values, key)
        if row["field"].strip():
            conditions.append(row)
    actions = []
    for _, values in _rows_of(form, "actions"):
        row = blank_action()
        row["type"] = _first(values, "type")
        for key in ACTION_INPUTS:
            row[key] = _first(values, key)
        row["agent_ids"] = [v for v in values.get("agent_ids", []) if v]
        row["assignee"] = _first(values, "assignee") in ("true", "on", "1")
        if row["type"].strip():
            actions.append(row)
    return conditions, actions


def _number(text: str) -> int | str:
    """A whole number where the text is one (an id), else the text (the domain says what
    it should have been)."""
    text = text.strip()
    return int(text) if text.isdigit() and len(text) <= 10 else text


def _flag(text: str) -> bool | str:
    folded = text.strip().casefold()
    if folded in ("true", "yes"):
        return True
    if folded in ("false", "no"):
        return False
    return text


def condition_of(row: Row) -> dict[str, Any]:
    """A condition row as the domain's condition."""
    fld, value = row["field"].strip(), row["value"]
    out: dict[str, Any] = {"field": fld, "op": row["op"].strip() or "is"}
    kind = VALUE_KINDS.get(fld, "text")
    if kind in ("hours", "bool"):
        out["value"] = _flag(value)
    elif kind in ("mailbox", "team"):
        out["value"] = _number(value)
    elif kind in ("status", "agent", "tag"):
        out["value"] = value.strip()
    else:
        out["value"] = value
    if kind == "hours" and row["calendar_id"].strip():
        out["calendar_id"] = _number(row["calendar_id"])
    return out


def action_of(row: Row) -> dict[str, Any]:
    """An action row as the domain's action."""
    kind = row["type"].strip()
    out: dict[str, Any] = {"type": kind}
    if kind == "assign":
        out["agent"] = row["agent"].strip()
    elif kind == "assign_team":
        out["team"] = _number(row["team"])
    elif kind in ("tag", "untag"):
        out["tag"] = row["tag"]
    elif kind == "status":
        out["status"] = row["status"].strip()
    elif kind == "snooze":
        hours = row["hours"].strip()
        try:
            number = float(hours)
        except ValueError:
            out["hours"] = hours
        else:
            out["hours"] = int(number) if number.is_integer() else number
    elif kind == "note":
        out["text"] = row["text"]
    elif kind == "reply":
        out["saved_reply_id"] = _number(row["saved_reply_id"])
    elif kind == "notify":
        out["agent_ids"] = [_number(i) for i in row["agent_ids"]]
        out["assignee"] = bool(row["assignee"])
        out["text"] = row["notify_text"]
    elif kind == "webhook" and row["url"].strip():
        out["url"] = row["url"].strip()
    return out


def _form_values(rule: Rule | None) -> dict[str, Any]:
    if rule is None:
        return {
            "name": "",
            "trigger": "conversation.created",
            "trigger_amount": "",
            "match": "all",
            "conditions": [],
            "actions": [],
            "stop": False,
            "enabled": True,
        }
    return {
        "name": rule.name,
        "trigger": rule.trigger,
        "trigger_amount": rule.trigger_amount or "",
        "match": rule.match,
        "conditions": [condition_row(c) for c in rule.conditions or []],
        "actions": [action_row(a) for a in rule.actions or []],
        "stop": rule.stop,
        "enabled": rule.enabled,
    }


def _choices(session: Session) -> dict[str, Any]:
    """What the selects offer: mailboxes, agents, teams, saved replies, calendars, statuses,
    and the tags in use (for completion: a new tag is typed)."""
    tags = session.exec(
        select(ConversationTag.tag)
        .distinct()
        .order_by(col(ConversationTag.tag))
        .limit(TAGS_OFFERED)
    )
    return {
        "mailboxes": [(str(m.id), m.name) for m in all_mailboxes(session)],
        "agents": list(session.exec(select(Agent).order_by(col(Agent.name), col(Agent.id)))),
        "teams": [(str(t.id), t.name) for t in session.exec(select(Team).order_by(col(Team.name)))],
        "saved_replies": [(str(r.id), r.name) for r in list_saved_replies(session)],
        "calendars": [
            (str(c.id), c.name)
            for c in session.exec(select(BusinessCalendar).order_by(col(BusinessCalendar.name)))
        ],
        "statuses": [s.value for s in ConversationStatus],
        "tags": list(tags),
    }


def _with_blank(rows: Iterable[Row], blank: Row) -> list[Row]:
    return [*rows, blank]


def _rule_page(
    request: Request,
    session: Session,
    admin: Agent,
    rule: Rule | None,
    form: dict[str, Any],
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    conditions = _with_blank(form["conditions"], blank_condition())
    actions = _with_blank(form["actions"], blank_action())
    return render(
        request,
        "admin/rule.html",
        admin,
        section="rules",
        rule=rule,
        form=form,
        condition_rows=conditions,
        action_rows=actions,
        next_index=max(len(conditions), len(actions)),
        triggers=definitions.TRIGGER_LABELS,
        time_triggers=definitions.TIME_TRIGGERS,
        fields=definitions.FIELDS,
        field_labels=FIELD_LABELS,
        op_labels=OP_LABELS,
        all_ops=ALL_OPS,
        value_kinds=VALUE_KINDS,
        action_labels=ACTION_LABELS,
        choices=_choices(session),
        error=error,
        status_code=status_code,
    )


_ROW_ERROR = re.compile(r"^(conditions|actions)\[(\d+)\]$")


def _place_error(form: dict[str, Any], exc: ImapdeskError) -> str:
    """The error beside the row it is about (conditions[n] and actions[n] count the rows
    that were not blank, as `form` holds them); the page's message."""
    message = as_sentence(exc.message)
    field = exc.details.get("field")
    found = _ROW_ERROR.match(field if isinstance(field, str) else "")
    if found is not None:
        rows = form[found[1]]
        n = int(found[2])
        if n < len(rows):
            rows[n]["error"] = message
            what = "condition" if found[1] == "conditions" else "action"
            return f"The {what} in row {n + 1} needs a change: {message}"
    return message


async def posted_form(request: Request) -> FormData:
    """The whole posted form (the rows' fields have names made up on the page); the same
    parse FastAPI made for the declared fields."""
    return await request.form()


PostedForm = Annotated[FormData, Depends(posted_form)]


def _submit(
    request: Request,
    session: Session,
    admin: Agent,
    rule: Rule | None,
    posted: FormData,
    fields: dict[str, Any],
) -> Response:
    form = {**fields, "conditions": [], "actions": []}
    try:
        form["conditions"], form["actions"] = form_rows(posted)
        amount = str(fields["trigger_amount"]).strip()
        values = {
            "name": fields["name"],
            "trigger": fields["trigger"],
            "trigger_amount": int(amount) if amount.isdigit() and len(amount) <= 6 else None,
            "match": fields["match"],
            "conditions": [condition_of(r) for r in form["conditions"]],
            "actions": [action_of(r) for r in form["actions"]],
            "stop": fields["stop"],
            "enabled": fields["enabled"],
        }
        with session.begin_nested():
            if rule is None:
                saved = definitions.create_rule(session, values)
            else:
                assert rule.id is not None
                saved = definitions.update_rule(session, rule.id, values)
    except ImapdeskError as exc:
        message = _place_error(form, exc)
        return _rule_page(
            request, session, admin, rule, form, error=message, status_code=exc.status_code
        )
    flash(request, f"Saved the rule {saved.name}.")
    return redirect(request, "admin_rules")


@router.get("/rules", name="admin_rules")
def rules_page(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    return render(
        request,
        "admin/rules.html",
        admin,
        section="rules",
        rules=definitions.list_rules(session),
        triggers=definitions.TRIGGER_LABELS,
    )


@router.get("/rules/new", name="admin_rule_new")
def rule_new(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    return _rule_page(request, session, admin, None, _form_values(None))


@router.post("/rules", name="admin_rule_add")
def rule_add(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    posted: PostedForm,
    csrf_token: Csrf = "",
    name: Annotated[str, Form(max_length=200)] = "",
    trigger: Annotated[str, Form(max_length=60)] = "",
    trigger_amount: Annotated[str, Form(max_length=12)] = "",
    match: Annotated[str, Form(max_length=3)] = "all",
    stop: Annotated[bool, Form()] = False,
    enabled: Annotated[bool, Form()] = False,
) -> Response:
    check_csrf(request, csrf_token)
    fields = {
        "name": name,
        "trigger": trigger,
        "trigger_amount": trigger_amount,
        "match": match,
        "stop": stop,
        "enabled": enabled,
    }
    return _submit(request, session, admin, None, posted, fields)


@router.get("/rules/{rule_id}", name="admin_rule")
def rule_page(request: Request, session: SessionDep, admin: WebAdmin, rule_id: RowId) -> Response:
    rule = definitions.get_rule(session, rule_id)
    return _rule_page(request, session, admin, rule, _form_values(rule))


@router.post("/rules/{rule_id}", name="admin_rule_save")
def rule_save(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    rule_id: RowId,
    posted: PostedForm,
    csrf_token: Csrf = "",
    name: Annotated[str, Form(max_length=200)] = "",
    trigger: Annotated[str, Form(max_length=60)] = "",
    trigger_amount: Annotated[str, Form(max_length=12)] = "",
    match: Annotated[str, Form(max_length=3)] = "all",
    stop: Annotated[bool, Form()] = False,
    enabled: Annotated[bool, Form()] = False,
) -> Response:
    check_csrf(request, csrf_token)
    rule = definitions.get_rule(session, rule_id)
    fields = {
        "name": name,
        "trigger": trigger,
        "trigger_amount": trigger_amount,
        "match": match,
        "stop": stop,
        "enabled": enabled,
    }
    return _submit(request, session, admin, rule, posted, fields)


@router.post("/rules/{rule_id}/move", name="admin_rule_move")
def rule_move(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    rule_id: RowId,
    csrf_token: Csrf = "",
    direction: Annotated[str, Form(max_length=4)] = "up",
) -> Response:
    check_csrf(request, csrf_token)
    definitions.move_rule(session, rule_id, -1 if direction == "up" else 1)
    return redirect(request, "admin_rules")


@router.post("/rules/{rule_id}/delete", name="admin_rule_delete")
def rule_delete(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    rule_id: RowId,
    csrf_token: Csrf = "",
) -> Response:
    check_csrf(request, csrf_token)
    definitions.delete_rule(session, rule_id)
    flash(request, "Deleted the rule.")
    return redirect(request, "admin_rules")


@router.get("/rules/{rule_id}/dry-run", name="admin_rule_dry_run")
def rule_dry_run(
    request: Request, session: SessionDep, admin: WebAdmin, rule_id: RowId
) -> Response:
    rule = definitions.get_rule(session, rule_id)
    rows = dry_run(session, rule)
    return render(
        request,
        "admin/rule_dry_run.html",
        admin,
        section="rules",
        rule=rule,
        rows=rows,
        matched=sum(1 for r in rows if r.matched),
    )
