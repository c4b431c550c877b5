"""SLA policies: targets in business minutes (first response, next response, resolution) for
the conversations of a mailbox, a team or a tag, each counted on a calendar.

Which policy a conversation has (`policy_for`): the most specific that is enabled and matches,
tag before team before mailbox; among several of one kind, the oldest (lowest id). A
conversation's teams are its assignee's teams and its mailbox's default team
(`TeamMember`, `TeamMailbox`). A conversation no policy matches has no due times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from imapdesk.kernel.errors import Conflict, InvalidInput, NotFound
from imapdesk.kernel.models import (
    BusinessCalendar,
    Conversation,
    ConversationTag,
    Mailbox,
    SlaPolicy,
    Team,
    TeamMailbox,
    TeamMember,
    utcnow,
)

SCOPES = ("tag", "team", "mailbox")  # most specific first: the precedence
TARGETS = ("first_response", "next_response", "resolution")
MAX_MINUTES = 365 * 24 * 60
_UNSET: Any = object()


@dataclass(frozen=True)
class PolicyInput:
    """What an admin gives; a field left at its default is unchanged on a change."""

    name: Any = _UNSET
    scope: Any = _UNSET
    mailbox_id: Any = _UNSET
    team_id: Any = _UNSET
    tag: Any = _UNSET
    calendar_id: Any = _UNSET
    first_response_minutes: Any = _UNSET
    next_response_minutes: Any = _UNSET
    resolution_minutes: Any = _UNSET
    warning_minutes: Any = _UNSET
    pause_when_pending: Any = _UNSET
    enabled: Any = _UNSET

    def given(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not _UNSET
        }


def get(session: Session, policy_id: int) -> SlaPolicy:
    row = session.get(SlaPolicy, policy_id)
    if row is None:
        raise NotFound("no such SLA policy", policy_id=policy_id)
    return row


def list_policies(session: Session) -> list[SlaPolicy]:
    return list(session.exec(select(SlaPolicy).order_by(col(SlaPolicy.name))))


def _minutes(value: Any, field: str, *, allow_none: bool = True) -> int | None:
    if value is None or value == "":
        if allow_none:
            return None
        raise InvalidInput(f"{field} is needed", field=field)
    try:
        minutes = int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{field} must be a whole number of minutes", field=field) from exc
    if not 0 < minutes <= MAX_MINUTES and not (field == "warning_minutes" and minutes == 0):
        raise InvalidInput(f"{field} must be between 1 and {MAX_MINUTES}", field=field)
    return minutes


def _check(session: Session, row: SlaPolicy) -> None:
    name = (row.name or "").strip()
    if not name or len(name) > 200:
        raise InvalidInput("a policy needs a name (at most 200 characters)", field="name")
    row.name = name
    if row.scope not in SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}", field="scope")
    # only the scope's own target is kept
    if row.scope == "mailbox":
        row.team_id, row.tag = None, None
        if row.mailbox_id is None or session.get(Mailbox, row.mailbox_id) is None:
            raise InvalidInput("choose an existing mailbox", field="mailbox_id")
    elif row.scope == "team":
        row.mailbox_id, row.tag = None, None
        if row.team_id is None or session.get(Team, row.team_id) is None:
            raise InvalidInput("choose an existing team", field="team_id")
    else:
        row.mailbox_id, row.team_id = None, None
        tag = (row.tag or "").strip().lower()
        if not tag or len(tag) > 100:
            raise InvalidInput("a tag policy needs a tag", field="tag")
        row.tag = tag
    if row.calendar_id is not None and session.get(BusinessCalendar, row.calendar_id) is None:
        raise InvalidInput("choose an existing calendar", field="calendar_id")
    for target in TARGETS:
        key = f"{target}_minutes"
        setattr(row, key, _minutes(getattr(row, key), key))
    if not any(getattr(row, f"{t}_minutes") for t in TARGETS):
        raise InvalidInput("set at least one target", field="first_response_minutes")
    row.warning_minutes = _minutes(row.warning_minutes, "warning_minutes", allow_none=False) or 0


def _apply(session: Session, row: SlaPolicy, data: PolicyInput) -> SlaPolicy:
    for key, value in data.given().items():
        if key in ("pause_when_pending", "enabled") and not isinstance(value, bool):
            raise InvalidInput(f"{key} is true or false", field=key)
        if key in ("mailbox_id", "team_id", "calendar_id") and value is not None:
            try:
                value = int(value)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"{key} must be an id", field=key) from exc
        setattr(row, key, value)
    _check(session, row)
    row.updated_at = utcnow()
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError as exc:
        raise Conflict("an SLA policy of that name exists", field="name") from exc
    return row


def create(session: Session, data: PolicyInput) -> SlaPolicy:
    return _apply(session, SlaPolicy(name="", scope=""), data)


def update(session: Session, policy_id: int, data: PolicyInput) -> SlaPolicy:
    """Changed targets or calendar count the due times of the conversations the policy holds
    anew, and a changed `pause_when_pending` pauses or resumes its pending ones now; a new
    scope applies to a conversation at its next event (imapdesk/domain/sla/clock.py)."""
    from imapdesk.domain.sla.clock import refresh_policies

    row = get(session, policy_id)
    was_pausing = row.pause_when_pending
    row = _apply(session, row, data)
    refresh_policies(session, [policy_id], start_pauses=row.pause_when_pending and not was_pausing)
    return row


def delete(session: Session, policy_id: int) -> None:
    """Its conversations have nothing due any more (those still open get another policy at
    their next event)."""
    from imapdesk.domain.sla.clock import refresh_policies

    row = get(session, policy_id)
    refresh_policies(session, [policy_id], removed=True)
    session.delete(row)
    session.flush()


def public(row: SlaPolicy) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "scope": row.scope,
        "mailbox_id": row.mailbox_id,
        "team_id": row.team_id,
        "tag": row.tag,
        "calendar_id": row.calendar_id,
        "first_response_minutes": row.first_response_minutes,
        "next_response_minutes": row.next_response_minutes,
        "resolution_minutes": row.resolution_minutes,
        "warning_minutes": row.warning_minutes,
        "pause_when_pending": row.pause_when_pending,
        "enabled": row.enabled,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


# --- which policy a conversation has ----------------------------------------------------------


def conversation_teams(session: Session, conversation: Conversation) -> list[int]:
    """The assignee's teams, then the mailbox's default team."""
    teams: list[int] = []
    if conversation.assignee_id is not None:
        teams.extend(
            session.exec(
                select(TeamMember.team_id).where(
                    col(TeamMember.agent_id) == conversation.assignee_id
                )
            )
        )
    default = session.get(TeamMailbox, conversation.mailbox_id)
    if default is not None:
        teams.append(default.team_id)
    return list(dict.fromkeys(teams))


def policy_for(session: Session, conversation: Conversation) -> SlaPolicy | None:
    """The policy that applies: tag > team > mailbox, the oldest of a kind (module docstring)."""
    enabled = col(SlaPolicy.enabled).is_(True)
    tags: Sequence[str] = list(
        session.exec(
            select(ConversationTag.tag).where(
                col(ConversationTag.conversation_id) == conversation.id
            )
        )
    )
    if tags:
        found = session.exec(
            select(SlaPolicy)
            .where(enabled, col(SlaPolicy.scope) == "tag", col(SlaPolicy.tag).in_(tags))
            .order_by(col(SlaPolicy.id))
        ).first()
        if found is not None:
            return found
    teams = conversation_teams(session, conversation)
    if teams:
        by_team = {
            p.team_id: p
            for p in session.exec(
                select(SlaPolicy)
                .where(enabled, col(SlaPolicy.scope) == "team", col(SlaPolicy.team_id).in_(teams))
                .order_by(col(SlaPolicy.id).desc())
            )
        }
        for team in teams:
            if team in by_team:
                return by_team[team]
    return session.exec(
        select(SlaPolicy)
        .where(
            enabled,
            col(SlaPolicy.scope) == "mailbox",
            col(SlaPolicy.mailbox_id) == conversation.mailbox_id,
        )
        .order_by(col(SlaPolicy.id))
    ).first()
