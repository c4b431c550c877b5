"""Automation rules: the list in order (moved up and down, deleted), a form to add or change
one (conditions and actions as JSON, described on the page), and the dry run over the last
100 conversations. The rules live in imapdesk.domain.rules."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlmodel import Session

from imapdesk.api.deps import RowId, SessionDep, WriteSessionDep
from imapdesk.api.web.admin.page import Csrf, as_sentence, redirect, render
from imapdesk.api.web.auth import WebAdmin, check_csrf
from imapdesk.api.web.flash import flash
from imapdesk.domain.rules import definitions
from imapdesk.domain.rules.engine import dry_run
from imapdesk.kernel.errors import ImapdeskError, InvalidInput
from imapdesk.kernel.models import Agent, Rule

router = APIRouter()

JsonText = Annotated[str, Form(max_length=200_000)]
_EXAMPLE_CONDITIONS = [{"field": "subject", "op": "contains", "value": "invoice"}]
_EXAMPLE_ACTIONS = [{"type": "tag", "tag": "billing"}]


def _form_values(rule: Rule | None) -> dict[str, Any]:
    if rule is None:
        return {
            "name": "",
            "trigger": "conversation.created",
            "trigger_amount": "",
            "match": "all",
            "conditions": json.dumps(_EXAMPLE_CONDITIONS, indent=2),
            "actions": json.dumps(_EXAMPLE_ACTIONS, indent=2),
            "stop": False,
            "enabled": True,
        }
    return {
        "name": rule.name,
        "trigger": rule.trigger,
        "trigger_amount": rule.trigger_amount or "",
        "match": rule.match,
        "conditions": json.dumps(rule.conditions or [], indent=2, ensure_ascii=False),
        "actions": json.dumps(rule.actions or [], indent=2, ensure_ascii=False),
        "stop": rule.stop,
        "enabled": rule.enabled,
    }


def _rule_page(
    request: Request,
    admin: Agent,
    rule: Rule | None,
    form: dict[str, Any],
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "admin/rule.html",
        admin,
        section="rules",
        rule=rule,
        form=form,
        triggers=definitions.TRIGGER_LABELS,
        fields=definitions.FIELDS,
        actions=definitions.ACTIONS,
        error=error,
        status_code=status_code,
    )


def _parsed(
    name: str,
    trigger: str,
    trigger_amount: str,
    match: str,
    conditions: str,
    actions: str,
    stop: bool,
    enabled: bool,
) -> dict[str, Any]:
    def load(text: str, field: str) -> Any:
        try:
            return json.loads(text or "[]")
        except ValueError as exc:
            raise InvalidInput(f"{field} is not valid JSON: {exc}", field=field) from exc

    amount = trigger_amount.strip()
    return {
        "name": name,
        "trigger": trigger,
        "trigger_amount": int(amount) if amount.isdigit() else None,
        "match": match,
        "conditions": load(conditions, "conditions"),
        "actions": load(actions, "actions"),
        "stop": stop,
        "enabled": enabled,
    }


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
def rule_new(request: Request, admin: WebAdmin) -> Response:
    return _rule_page(request, admin, None, _form_values(None))


def _save(
    request: Request,
    session: Session,
    admin: Agent,
    rule: Rule | None,
    values: dict[str, Any],
    form: dict[str, Any],
) -> Response:
    try:
        with session.begin_nested():
            if rule is None:
                saved = definitions.create_rule(session, values)
            else:
                assert rule.id is not None
                saved = definitions.update_rule(session, rule.id, values)
    except ImapdeskError as exc:
        return _rule_page(
            request, admin, rule, form, error=as_sentence(exc.message), status_code=exc.status_code
        )
    flash(request, f"Saved the rule {saved.name}.")
    return redirect(request, "admin_rules")


_FORM_ARGS = ("name", "trigger", "trigger_amount", "match", "conditions", "actions")


@router.post("/rules", name="admin_rule_add")
def rule_add(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    csrf_token: Csrf = "",
    name: Annotated[str, Form(max_length=200)] = "",
    trigger: Annotated[str, Form(max_length=60)] = "",
    trigger_amount: Annotated[str, Form(max_length=12)] = "",
    match: Annotated[str, Form(max_length=3)] = "all",
    conditions: JsonText = "[]",
    actions: JsonText = "[]",
    stop: Annotated[bool, Form()] = False,
    enabled: Annotated[bool, Form()] = False,
) -> Response:
    check_csrf(request, csrf_token)
    args = (name, trigger, trigger_amount, match, conditions, actions)
    form = {**dict(zip(_FORM_ARGS, args, strict=True)), "stop": stop, "enabled": enabled}
    try:
        values = _parsed(*args, stop, enabled)
    except InvalidInput as exc:
        return _rule_page(
            request, admin, None, form, error=as_sentence(exc.message), status_code=422
        )
    return _save(request, session, admin, None, values, form)


@router.get("/rules/{rule_id}", name="admin_rule")
def rule_page(request: Request, session: SessionDep, admin: WebAdmin, rule_id: RowId) -> Response:
    rule = definitions.get_rule(session, rule_id)
    return _rule_page(request, admin, rule, _form_values(rule))


@router.post("/rules/{rule_id}", name="admin_rule_save")
def rule_save(
    request: Request,
    session: WriteSessionDep,
    admin: WebAdmin,
    rule_id: RowId,
    csrf_token: Csrf = "",
    name: Annotated[str, Form(max_length=200)] = "",
    trigger: Annotated[str, Form(max_length=60)] = "",
    trigger_amount: Annotated[str, Form(max_length=12)] = "",
    match: Annotated[str, Form(max_length=3)] = "all",
    conditions: JsonText = "[]",
    actions: JsonText = "[]",
    stop: Annotated[bool, Form()] = False,
    enabled: Annotated[bool, Form()] = False,
) -> Response:
    check_csrf(request, csrf_token)
    rule = definitions.get_rule(session, rule_id)
    args = (name, trigger, trigger_amount, match, conditions, actions)
    form = {**dict(zip(_FORM_ARGS, args, strict=True)), "stop": stop, "enabled": enabled}
    try:
        values = _parsed(*args, stop, enabled)
    except InvalidInput as exc:
        return _rule_page(
            request, admin, rule, form, error=as_sentence(exc.message), status_code=422
        )
    return _save(request, session, admin, rule, values, form)


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
