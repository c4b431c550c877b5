"""The reports page and its CSV: the figures of imapdesk/domain/reports/ for any agent, over
the mailboxes they may see. The charts (frontend/static/reports.js, drawn with the vendored
uPlot) read the figures from a JSON `<script type="application/json">` element: no inline
script, as the pages' Content-Security-Policy wants; the tables below them hold the same
figures for readers without JavaScript."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlmodel import Session, col, select

from imapdesk.api.deps import SessionDep
from imapdesk.api.web.auth import WebAgent
from imapdesk.api.web.flash import pop_flash
from imapdesk.api.web.templating import templates
from imapdesk.domain import reports
from imapdesk.domain.accounts import access
from imapdesk.domain.reports.figures import FIELDS
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import Agent, Mailbox

router = APIRouter(include_in_schema=False)

Param = Annotated[str | None, Query(max_length=100)]

BUCKET_LABELS = {"day": "Day", "week": "Week", "month": "Month"}
BREAKDOWN_LABELS = {
    "none": "Nothing",
    "agent": "Agent",
    "team": "Team",
    "mailbox": "Mailbox",
    "tag": "Tag",
}
# a cell a spreadsheet would take for a formula (a tag or a name may start so)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def duration(seconds: int | None) -> str:
    """`1 h 05 min`, `3 d 4 h`, `45 min`, `20 s`; an empty value is an en dash."""
    if seconds is None:
        return "\u2013"
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _query(
    session: Session,
    agent: Agent,
    start: str | None,
    end: str | None,
    bucket: str | None,
    breakdown: str | None,
    mailbox: str | None,
) -> reports.ReportQuery:
    return reports.make_query(
        session,
        agent,
        start=start,
        end=end,
        bucket=bucket or "day",
        breakdown=breakdown or "none",
        mailbox=mailbox,
    )


def _mailbox_names(session: Session, agent: Agent) -> list[str]:
    ids = access.visible_mailbox_ids(session, agent)
    if not ids:
        return []
    return list(
        session.exec(
            select(Mailbox.name).where(col(Mailbox.id).in_(ids)).order_by(col(Mailbox.name))
        )
    )


@router.get("/reports", name="reports")
def reports_page(
    request: Request,
    session: SessionDep,
    agent: WebAgent,
    start: Param = None,
    end: Param = None,
    bucket: Param = None,
    breakdown: Param = None,
    mailbox: Param = None,
) -> Response:
    given = {
        "start": start or "",
        "end": end or "",
        "bucket": bucket or "day",
        "breakdown": breakdown or "none",
        "mailbox": mailbox or "",
    }
    context: dict[str, Any] = {
        "agent": agent,
        "flash": pop_flash(request),
        "mailboxes": _mailbox_names(session, agent),
        "bucket_labels": BUCKET_LABELS,
        "breakdown_labels": BREAKDOWN_LABELS,
        "duration": duration,
        "given": given,
        "error": None,
        "report": None,
    }
    try:
        query = _query(session, agent, start, end, bucket, breakdown, mailbox)
    except InvalidInput as exc:
        context["error"] = {"message": exc.message, "field": exc.details.get("field")}
        return templates.TemplateResponse(request, "reports/page.html", context, status_code=422)
    report = reports.build_report(session, query)
    given.update(start=query.start.isoformat(), end=query.end.isoformat())
    context.update(
        report=report,
        data=report.as_json(),
        csv_query={k: v for k, v in given.items() if v},
    )
    return templates.TemplateResponse(request, "reports/page.html", context)


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


@router.get("/reports.csv", name="reports_csv")
def reports_csv(
    session: SessionDep,
    agent: WebAgent,
    start: Param = None,
    end: Param = None,
    bucket: Param = None,
    breakdown: Param = None,
    mailbox: Param = None,
) -> Response:
    """One row per bucket and group, then one per group for the whole range (bucket `all`)."""
    query = _query(session, agent, start, end, bucket, breakdown, mailbox)
    report = reports.build_report(session, query)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["bucket", "group", *FIELDS])
    for row in report.rows():
        writer.writerow(
            [_cell(row["bucket"]), _cell(row["group"]), *(_cell(row[k]) for k in FIELDS)]
        )
    name = f"imapdesk-report-{query.start}-{query.end}-{query.bucket}-{query.breakdown}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )
