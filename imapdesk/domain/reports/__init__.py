"""Reports (issue 14 item 6): volume, first-response and resolution times (median and 90th
percentile) and SLA attainment, over time (day, week or month in the viewing agent's
timezone) and broken down by agent, team, mailbox or tag. The queries are in `figures`; the
rules they follow are written there."""

from __future__ import annotations

from imapdesk.domain.reports.figures import (
    BREAKDOWNS,
    BUCKETS,
    MAX_DAYS,
    Figures,
    Group,
    Report,
    ReportQuery,
    build_report,
    make_query,
    percentile,
)

__all__ = [
    "BREAKDOWNS",
    "BUCKETS",
    "MAX_DAYS",
    "Figures",
    "Group",
    "Report",
    "ReportQuery",
    "build_report",
    "make_query",
    "percentile",
]
