"""Reports as JSON: the figures of `/reports` (imapdesk/domain/reports/), for any agent, over
the mailboxes they may see."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from imapdesk.api.deps import CurrentAgent, SessionDep
from imapdesk.domain import reports

router = APIRouter(tags=["Reports"])

Bucket = Literal["day", "week", "month"]
Breakdown = Literal["none", "agent", "team", "mailbox", "tag"]


class FiguresPublic(BaseModel):
    created: int = Field(description="Conversations that arrived (`conversation.created`).")
    closed: int = Field(description="Changes of status to closed.")
    customer_messages: int
    replies: int = Field(description="Replies agents sent (no forwards, no automatic replies).")
    first_response_count: int
    first_response_median_seconds: int | None = Field(description="Elapsed, not business time.")
    first_response_p90_seconds: int | None
    resolution_count: int
    resolution_median_seconds: int | None = Field(description="Creation to first close.")
    resolution_p90_seconds: int | None
    sla_first_response_met: int
    sla_first_response_missed: int
    sla_first_response_percent: float | None
    sla_resolution_met: int
    sla_resolution_missed: int
    sla_resolution_percent: float | None


class GroupPublic(BaseModel):
    key: str = Field(description='"all", "agent:3", "agent:none", "team:2", "tag:billing", ...')
    label: str


class SeriesPoint(FiguresPublic):
    group: str
    bucket: date = Field(description="The bucket's first day (a week starts on Monday).")


class GroupTotal(FiguresPublic):
    group: str


class ReportPublic(BaseModel):
    start: date
    end: date
    timezone: str = Field(description="The agent's timezone: the days the range counts.")
    bucket: Bucket
    breakdown: Breakdown
    mailbox: str | None
    buckets: list[date]
    groups: list[GroupPublic]
    series: list[SeriesPoint] = Field(description="Every group in every bucket.")
    totals: list[GroupTotal] = Field(description="Each group over the whole range.")
    overall: FiguresPublic = Field(
        description="Everything once (a conversation with two tags too)."
    )


@router.get(
    "/reports",
    response_model=ReportPublic,
    summary="Volume, response and resolution times, SLA attainment over time",
)
def get_report(
    session: SessionDep,
    agent: CurrentAgent,
    start: Annotated[
        date | None, Query(description="First day; default: 29 days before end.")
    ] = None,
    end: Annotated[date | None, Query(description="Last day (included); default: today.")] = None,
    bucket: Bucket = "day",
    breakdown: Breakdown = "none",
    mailbox: Annotated[
        str | None, Query(max_length=100, description="One mailbox by name; default: all yours.")
    ] = None,
) -> ReportPublic:
    """The figures for a range of at most 366 days in your timezone, per day, week or month,
    broken down by agent, team, mailbox or tag, over the mailboxes you may see. Response times
    are elapsed time; SLA attainment is the SLA clock's record (business hours)."""
    query = reports.make_query(
        session, agent, start=start, end=end, bucket=bucket, breakdown=breakdown, mailbox=mailbox
    )
    return ReportPublic.model_validate(reports.build_report(session, query).as_json())
