"""Automation rules: list, create, read, change, delete, and a dry run over the last 100
conversations. Any agent may read the rules; only admins change them or run a dry run (it
shows conversations of every mailbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from imapdesk.api.deps import CurrentAgent, RowId, SessionDep, WriteSessionDep
from imapdesk.domain.rules import definitions
from imapdesk.domain.rules.engine import dry_run
from imapdesk.kernel.errors import Forbidden
from imapdesk.kernel.models import Agent, Rule

router = APIRouter(prefix="/rules", tags=["rules"])

_DOC = (
    "A rule: `trigger` (`conversation.created`, `conversation.customer_replied`, "
    "`conversation.agent_replied`, `note.added`, `conversation.status_changed`, "
    "`conversation.assigned`, `conversation.tagged`, `sla.warning`; time-based: "
    "`time.no_reply` with `trigger_amount` business hours, `time.pending` with "
    "`trigger_amount` days), `match` (`all` or `any`), `conditions` (`{field, op, value}`: "
    "fields `from`, `to`, `cc`, `subject`, `text` with ops `contains`, `not_contains`, `is`, "
    "`matches`, `not_matches` (a regular expression of at most 500 characters); `mailbox`, "
    "`customer_domain`, `status`, `assignee` (`none` for nobody), `team` with `is`/`is_not`; "
    "`tag` with `has`/`has_not`; `business_hours`, `attachments` with `is` true/false), "
    "`actions` (`{type, ...}`: `assign` {agent}, `assign_team` {team}, `tag`/`untag` {tag}, "
    "`status` {status}, `snooze` {hours}, `note` {text}, `reply` {saved_reply_id}, `notify` "
    "{agent_ids, assignee, text}, `webhook` {url?}), `stop` (no later rule runs), `enabled`, "
    "`position` (rules run in this order). Changes a rule makes are recorded as "
    '"rule <name>" and set off no rule.'
)


class RuleIn(BaseModel):
    name: str = Field(max_length=200)
    trigger: str = Field(max_length=60)
    trigger_amount: int | None = None
    match: str = "all"
    conditions: list[dict[str, Any]] = Field(default_factory=list, max_length=50)
    actions: list[dict[str, Any]] = Field(max_length=20)
    stop: bool = False
    enabled: bool = True
    position: int | None = None


class RulePatch(BaseModel):
    name: str | None = Field(default=None, max_length=200)
    trigger: str | None = Field(default=None, max_length=60)
    trigger_amount: int | None = None
    match: str | None = None
    conditions: list[dict[str, Any]] | None = Field(default=None, max_length=50)
    actions: list[dict[str, Any]] | None = Field(default=None, max_length=20)
    stop: bool | None = None
    enabled: bool | None = None
    position: int | None = None


class RulePublic(BaseModel):
    id: int
    name: str
    position: int
    enabled: bool
    trigger: str
    trigger_amount: int | None
    match: str
    conditions: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    stop: bool
    created_at: datetime
    updated_at: datetime


class DryRunRowPublic(BaseModel):
    conversation_id: int
    subject: str
    matched: bool
    actions: list[str]


class DryRunPublic(BaseModel):
    rule_id: int
    matched: int
    conversations: list[DryRunRowPublic]


def _public(rule: Rule) -> RulePublic:
    assert rule.id is not None
    return RulePublic(
        id=rule.id,
        name=rule.name,
        position=rule.position,
        enabled=rule.enabled,
        trigger=rule.trigger,
        trigger_amount=rule.trigger_amount,
        match=rule.match,
        conditions=list(rule.conditions or []),
        actions=list(rule.actions or []),
        stop=rule.stop,
        created_at=rule.created_at,
        updated_at=rule.updated_at,
    )


def ensure_admin(agent: Agent) -> None:
    if not agent.is_admin:
        raise Forbidden("only an admin may do this")


@router.get("", response_model=list[RulePublic], summary="List the rules, in order")
def list_rules(session: SessionDep, agent: CurrentAgent) -> list[RulePublic]:
    return [_public(r) for r in definitions.list_rules(session)]


@router.post(
    "", response_model=RulePublic, status_code=201, summary="Add a rule (admins)", description=_DOC
)
def create_rule(session: WriteSessionDep, agent: CurrentAgent, body: RuleIn) -> RulePublic:
    ensure_admin(agent)
    return _public(definitions.create_rule(session, body.model_dump()))


@router.get("/{rule_id}", response_model=RulePublic, summary="A rule")
def get_rule(session: SessionDep, agent: CurrentAgent, rule_id: RowId) -> RulePublic:
    return _public(definitions.get_rule(session, rule_id))


@router.patch(
    "/{rule_id}", response_model=RulePublic, summary="Change a rule (admins)", description=_DOC
)
def update_rule(
    session: WriteSessionDep, agent: CurrentAgent, rule_id: RowId, body: RulePatch
) -> RulePublic:
    ensure_admin(agent)
    return _public(definitions.update_rule(session, rule_id, body.model_dump(exclude_unset=True)))


@router.delete("/{rule_id}", status_code=204, summary="Delete a rule (admins)")
def delete_rule(session: WriteSessionDep, agent: CurrentAgent, rule_id: RowId) -> Response:
    ensure_admin(agent)
    definitions.delete_rule(session, rule_id)
    return Response(status_code=204)


@router.post(
    "/{rule_id}/dry-run",
    response_model=DryRunPublic,
    summary="What the rule would have done to the last 100 conversations (admins)",
    description="Nothing is written: conditions are judged on each conversation as it is now "
    "and its newest customer message; the actions are described.",
)
def dry_run_rule(session: SessionDep, agent: CurrentAgent, rule_id: RowId) -> DryRunPublic:
    ensure_admin(agent)
    rows = dry_run(session, definitions.get_rule(session, rule_id))
    return DryRunPublic(
        rule_id=rule_id,
        matched=sum(1 for r in rows if r.matched),
        conversations=[DryRunRowPublic(**vars(r)) for r in rows],
    )
