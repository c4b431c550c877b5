"""The figures of the reports, read from the domain event log and the SLA clock's record.

What is counted (for a range of days in the viewing agent's timezone, each figure in the
bucket, day, ISO week from Monday or month, of the moment it tells of):
- created: `conversation.created` events, i.e. conversations that arrived while imapdesk was
  following the mailbox (a first sync or a rebuild takes old mail in without events, so old
  mail never counts as new work);
- closed: every change of status to closed (a conversation closed, reopened and closed again
  counts twice);
- customer messages: `message.received` events of inbound mail;
- replies: replies and first messages sent to customers by agents, from imapdesk (counted when
  the mail server took them, `reply.sent` of the delivery) or from a mail client (seen in Sent);
  forwards and the automatic replies of rules (their `automatic` mark) are not replies;
- first-response time: from the conversation's `conversation.created` to its first reply as
  above (never a rule's automatic acknowledgement), in the bucket of the reply; a conversation
  an agent started has no first response to wait for and is left out;
- resolution time: from `conversation.created` to the conversation's first close, in the
  bucket of that close;
- SLA attainment: the SLA clock's record (`ConversationSla`, imapdesk/domain/sla/clock.py) of
  each conversation's first-response and resolution targets (only conversations whose policy
  set that target): met or missed when attained, in the bucket of the attainment; a target
  breached and still not attained counts as missed in the bucket of its due time. A reopened
  conversation has a new resolution target (the clock keeps the latest). The clock keeps no
  record of next-response targets once a reply ends them, so those are not reported.
Times are elapsed (wall-clock) seconds, not business hours: the SLA attainment is what counts
business hours, on each policy's calendar.

Breakdowns: by mailbox; by tag (the conversation's tags now: a conversation with two tags
counts in both, one without in "(no tag)"); by team (the conversation's teams, as for SLA
policies: its mailbox's default team and its assignee's teams, else "(no team)"); by agent:
the agent who did it for replies, first responses, closes and resolutions (a reply from a mail
client or a close by the worker or a mail client is "(nobody)"'s), and the conversation's
assignee now for created, customer messages and SLA attainment. Conversations merged into
another are left out (the one they joined counts).

Who sees what: every agent may open the reports, over the mailboxes they may see
(imapdesk/domain/accounts/access.py): what an agent cannot see does not exist in their
figures either.

Percentiles (the median is the 50th) interpolate linearly between the two nearest ranks, as
PostgreSQL's `percentile_cont` does; they are computed in Python on both databases, over the
durations of the range (one number per conversation answered or resolved in it). The range is
at most `MAX_DAYS` days; the events are read once, in streamed batches (what the figures need
of a payload is taken out by the database), and summed into counters per conversation and
bucket; what is kept besides is each conversation's creation, replies and closes in the range
(for its times) and one duration per conversation answered or resolved. A conversation created
before the range and answered or closed in it has its earlier events read too (by
conversation, on the index `ix_event_conversation_created`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, cast

from sqlalchemy import Table, and_, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from imapdesk.domain.accounts import access
from imapdesk.domain.accounts.profile import zone_of
from imapdesk.domain.events import EventKind
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import (
    Agent,
    Conversation,
    ConversationSla,
    ConversationTag,
    Event,
    Mailbox,
    Team,
    TeamMailbox,
    TeamMember,
    as_utc,
)

BUCKETS = ("day", "week", "month")
BREAKDOWNS = ("none", "agent", "team", "mailbox", "tag")
MAX_DAYS = 366
DEFAULT_DAYS = 30
# conversation ids per IN (...) list; rows per streamed batch
CHUNK = 500
STREAM = 2000

NOBODY = "(nobody)"
NO_TEAM = "(no team)"
NO_TAG = "(no tag)"

_CREATED = str(EventKind.conversation_created)
_RECEIVED = str(EventKind.message_received)
_STATUS = str(EventKind.status_changed)
_REPLY_KINDS = (str(EventKind.reply_sent), str(EventKind.agent_replied))
_VOLUME_KINDS = (_CREATED, _RECEIVED, _STATUS, *_REPLY_KINDS)
_TIMING_KINDS = (_CREATED, _STATUS, *_REPLY_KINDS)

# the figures of one bucket and group, in the order of the CSV's columns
FIELDS = (
    "created",
    "closed",
    "customer_messages",
    "replies",
    "first_response_count",
    "first_response_median_seconds",
    "first_response_p90_seconds",
    "resolution_count",
    "resolution_median_seconds",
    "resolution_p90_seconds",
    "sla_first_response_met",
    "sla_first_response_missed",
    "sla_first_response_percent",
    "sla_resolution_met",
    "sla_resolution_missed",
    "sla_resolution_percent",
)


# --- the question ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportQuery:
    start: date  # the first day, in `zone`
    end: date  # the last day (included)
    bucket: str
    breakdown: str
    zone: tzinfo
    # the mailboxes reported on: the ones the agent may see, or the one chosen of them
    mailbox_ids: tuple[int, ...]
    mailbox: str | None = None  # the chosen mailbox's name; None: all the agent may see

    @property
    def since(self) -> datetime:
        return _local_midnight(self.start, self.zone)

    @property
    def until(self) -> datetime:
        return _local_midnight(self.end + timedelta(days=1), self.zone)

    @property
    def zone_name(self) -> str:
        return str(getattr(self.zone, "key", None) or self.zone.tzname(None) or "UTC")


def _local_midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _day(value: str | date | None, field_name: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise InvalidInput(f"{field_name} must be a date, YYYY-MM-DD", field=field_name) from exc


def make_query(
    session: Session,
    agent: Agent,
    *,
    start: str | date | None = None,
    end: str | date | None = None,
    bucket: str = "day",
    breakdown: str = "none",
    mailbox: str | None = None,
    today: date | None = None,
) -> ReportQuery:
    """The question checked (InvalidInput naming the field): the range defaults to the last
    `DEFAULT_DAYS` days up to today in the agent's timezone; a mailbox the agent may not see
    is named as unknown, as if it did not exist."""
    zone = zone_of(agent)
    end_day = _day(end, "end") or today or datetime.now(zone).date()
    start_day = _day(start, "start") or end_day - timedelta(days=DEFAULT_DAYS - 1)
    if start_day > end_day:
        raise InvalidInput("start must not be after end", field="start")
    if (end_day - start_day).days + 1 > MAX_DAYS:
        raise InvalidInput(f"a report covers at most {MAX_DAYS} days", field="end")
    if bucket not in BUCKETS:
        raise InvalidInput(f"bucket must be one of {', '.join(BUCKETS)}", field="bucket")
    if breakdown not in BREAKDOWNS:
        raise InvalidInput(f"breakdown must be one of {', '.join(BREAKDOWNS)}", field="breakdown")
    name = (mailbox or "").strip() or None
    if name is not None:
        box = session.exec(select(Mailbox).where(col(Mailbox.name) == name)).first()
        if box is None or box.id is None or not access.can_see_mailbox(session, agent, box.id):
            raise InvalidInput(f"no mailbox named {name!r}", field="mailbox")
        ids: tuple[int, ...] = (box.id,)
    else:
        ids = tuple(access.visible_mailbox_ids(session, agent))
    return ReportQuery(
        start=start_day,
        end=end_day,
        bucket=bucket,
        breakdown=breakdown,
        zone=zone,
        mailbox_ids=ids,
        mailbox=name,
    )


def bucket_of(day: date, bucket: str) -> date:
    """The first day of the bucket a day is in (weeks start on Monday)."""
    if bucket == "week":
        return day - timedelta(days=day.weekday())
    if bucket == "month":
        return day.replace(day=1)
    return day


def bucket_starts(query: ReportQuery) -> list[date]:
    found: list[date] = []
    day = bucket_of(query.start, query.bucket)
    while day <= query.end:
        found.append(day)
        if query.bucket == "month":
            day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
        else:
            day += timedelta(days=7 if query.bucket == "week" else 1)
    return found


# --- the answer -----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile, interpolated linearly between the nearest ranks (None: no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _seconds(value: float | None) -> int | None:
    return None if value is None else round(value)


def _percent(met: int, missed: int) -> float | None:
    return round(100 * met / (met + missed), 1) if met + missed else None


@dataclass
class Figures:
    created: int = 0
    closed: int = 0
    customer_messages: int = 0
    replies: int = 0
    first_response_seconds: list[float] = field(default_factory=list)
    resolution_seconds: list[float] = field(default_factory=list)
    first_response_met: int = 0
    first_response_missed: int = 0
    resolution_met: int = 0
    resolution_missed: int = 0

    def summary(self) -> dict[str, Any]:
        """The figures by the names of `FIELDS` (times in seconds, None where nothing was)."""
        first, resolution = self.first_response_seconds, self.resolution_seconds
        return {
            "created": self.created,
            "closed": self.closed,
            "customer_messages": self.customer_messages,
            "replies": self.replies,
            "first_response_count": len(first),
            "first_response_median_seconds": _seconds(percentile(first, 50)),
            "first_response_p90_seconds": _seconds(percentile(first, 90)),
            "resolution_count": len(resolution),
            "resolution_median_seconds": _seconds(percentile(resolution, 50)),
            "resolution_p90_seconds": _seconds(percentile(resolution, 90)),
            "sla_first_response_met": self.first_response_met,
            "sla_first_response_missed": self.first_response_missed,
            "sla_first_response_percent": _percent(
                self.first_response_met, self.first_response_missed
            ),
            "sla_resolution_met": self.resolution_met,
            "sla_resolution_missed": self.resolution_missed,
            "sla_resolution_percent": _percent(self.resolution_met, self.resolution_missed),
        }


@dataclass(frozen=True)
class Group:
    key: str  # "all", "agent:3", "agent:none", "team:2", "mailbox:1", "tag:billing", ...
    label: str
    none: bool = False  # the group of what has no agent, team or tag: listed last


ALL = Group("all", "All")


@dataclass
class Report:
    query: ReportQuery
    buckets: list[date]
    groups: list[Group]
    cells: dict[tuple[str, date], Figures]
    totals: dict[str, Figures]
    overall: Figures

    def cell(self, group: Group, bucket: date) -> dict[str, Any]:
        return self.cells.get((group.key, bucket), Figures()).summary()

    def total(self, group: Group) -> dict[str, Any]:
        return self.totals.get(group.key, Figures()).summary()

    def rows(self) -> Iterator[dict[str, Any]]:
        """One row per bucket and group, then one per group for the whole range
        (bucket "all": percentiles over the range, which no sum of buckets gives)."""
        for bucket in self.buckets:
            for group in self.groups:
                yield {
                    "bucket": bucket.isoformat(),
                    "group": group.label,
                    **self.cell(group, bucket),
                }
        for group in self.groups:
            yield {"bucket": "all", "group": group.label, **self.total(group)}

    def as_json(self) -> dict[str, Any]:
        q = self.query
        return {
            "start": q.start.isoformat(),
            "end": q.end.isoformat(),
            "timezone": q.zone_name,
            "bucket": q.bucket,
            "breakdown": q.breakdown,
            "mailbox": q.mailbox,
            "buckets": [b.isoformat() for b in self.buckets],
            "groups": [{"key": g.key, "label": g.label} for g in self.groups],
            "series": [
                {"group": g.key, "bucket": b.isoformat(), **self.cell(g, b)}
                for g in self.groups
                for b in self.buckets
            ],
            "totals": [{"group": g.key, **self.total(g)} for g in self.groups],
            "overall": self.overall.summary(),
        }


# --- reading --------------------------------------------------------------------------------


# what the figures read of an event's payload, taken out by the database (no JSON parsed here)
_PAYLOAD = cast(Table, Event.__table__).c.payload  # type: ignore[attr-defined]
_PAYLOAD_FACTS = (
    _PAYLOAD["direction"].as_string(),
    _PAYLOAD[("details", "to")].as_string(),
    _PAYLOAD["kind"].as_string(),
    _PAYLOAD["action"].as_string(),
    _PAYLOAD[("details", "via")].as_string(),
    _PAYLOAD["automatic"].as_boolean(),
    _PAYLOAD[("details", "automatic")].as_boolean(),
)


def _classify(
    kind: str,
    direction: str | None,
    status_to: str | None,
    reply_kind: str | None,
    action: str | None,
    via: str | None,
    automatic: bool | None,
    details_automatic: bool | None,
) -> str | None:
    """What an event counts as, from the payload facts above. A reply to a customer by an
    agent counts once: from imapdesk when the mail server took it (the delivery's
    `reply.sent`), from a mail client when it was seen in Sent (the activity's `reply.sent`,
    `via` set); never a rule's automatic reply (`automatic`), never a forward."""
    if kind == _CREATED:
        return "created"
    if kind == _RECEIVED:
        return "customer_messages" if direction == "inbound" else None
    if kind == _STATUS:
        return "closed" if status_to == "closed" else None
    if kind not in _REPLY_KINDS or automatic or details_automatic:
        return None
    if kind == EventKind.agent_replied:
        return "replies"
    if action is not None:  # made from an Activity row (imapdesk/domain/events.py)
        return "replies" if action == "replied" and via else None
    return "replies" if (reply_kind or "reply") in ("reply", "new") else None


@dataclass
class _Conv:
    mailbox_id: int
    assignee_id: int | None
    tags: tuple[str, ...] = ()


# (conversation, bucket, by the actor (else the assignee), actor)
_Key = tuple[int, date, bool, int | None]


_Mark = tuple[datetime, int, str, int | None, bool]


@dataclass
class _Facts:
    convs: dict[int, _Conv] = field(default_factory=dict)
    counts: dict[tuple[_Key, str], int] = field(default_factory=lambda: defaultdict(int))
    durations: list[tuple[_Key, str, float]] = field(default_factory=list)
    sla: list[tuple[_Key, str, bool]] = field(default_factory=list)
    # per conversation, its creation, replies and closes in the range, for their times:
    # (at, event id, what, agent, customer first)
    timelines: dict[int, list[_Mark]] = field(default_factory=lambda: defaultdict(list))


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    batch: list[int] = []
    for i in ids:
        batch.append(i)
        if len(batch) == CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


class _Clock:
    def __init__(self, query: ReportQuery) -> None:
        self.query = query
        self.since, self.until = query.since, query.until
        # the bucket of each quarter hour seen: every UTC offset in use is whole quarter hours,
        # so all of a quarter hour is in one local day (and zone lookups are slow)
        self._buckets: dict[int, date] = {}

    def within(self, at: datetime | None) -> bool:
        return at is not None and self.since <= at < self.until

    def bucket(self, value: datetime) -> date:
        at = as_utc(value)
        quarter = int(at.timestamp()) // 900
        found = self._buckets.get(quarter)
        if found is None:
            local = at.astimezone(self.query.zone).date()
            found = self._buckets[quarter] = bucket_of(local, self.query.bucket)
        return found


def _volume(session: Session, query: ReportQuery, clock: _Clock, facts: _Facts) -> None:
    """Counts from the events of the range, and the timelines of their conversations."""
    stmt = (
        sa_select(
            col(Event.id),
            col(Event.kind),
            col(Event.created_at),
            col(Event.conversation_id),
            col(Event.agent_id),
            col(Conversation.mailbox_id),
            col(Conversation.assignee_id),
            *_PAYLOAD_FACTS,
        )
        .join(Conversation, col(Conversation.id) == col(Event.conversation_id))
        .where(
            col(Event.created_at) >= clock.since,
            col(Event.created_at) < clock.until,
            col(Event.kind).in_(_VOLUME_KINDS),
            col(Conversation.mailbox_id).in_(query.mailbox_ids),
            col(Conversation.merged_into_id).is_(None),
        )
        .execution_options(yield_per=STREAM)
    )
    # Core rows (no ORM objects): the range may hold many events
    for row in session.connection().execute(stmt):
        event_id, kind, created_at, conv_id, agent_id, mailbox_id, assignee_id = row[:7]
        what = _classify(kind, *row[7:])
        if what is None or conv_id is None:
            continue
        if conv_id not in facts.convs:
            facts.convs[conv_id] = _Conv(mailbox_id, assignee_id)
        by_actor = what in ("replies", "closed")
        key = (conv_id, clock.bucket(created_at), by_actor, agent_id if by_actor else None)
        facts.counts[(key, what)] += 1
        if what != "customer_messages":
            mark = (as_utc(created_at), event_id, what, agent_id, row[7] != "outbound")
            facts.timelines[conv_id].append(mark)


def _measure(clock: _Clock, facts: _Facts, conv_id: int, marks: Iterable[_Mark]) -> None:
    """The first response and the resolution of a conversation, from its creation, replies
    and closes in order, if they came in the range."""
    started: datetime | None = None
    customer_first = answered = resolved = False
    for at, _, what, agent_id, first_in in marks:
        if what == "created":
            if started is None:
                started, customer_first = at, first_in
            continue
        if started is None:
            continue  # from before the event log knew of it
        if what == "replies" and not answered:
            answered = True
            if customer_first and clock.within(at):
                key = (conv_id, clock.bucket(at), True, agent_id)
                facts.durations.append((key, "first_response", (at - started).total_seconds()))
        elif what == "closed" and not resolved:
            resolved = True
            if clock.within(at):
                key = (conv_id, clock.bucket(at), True, agent_id)
                facts.durations.append((key, "resolution", (at - started).total_seconds()))
        if answered and resolved:
            return


def _timings(session: Session, clock: _Clock, facts: _Facts) -> None:
    """First-response and resolution times of the conversations answered or closed in the
    range. One created in the range has all its events in it (read already); of the others,
    the events up to the range's end are read, a chunk of conversations at a time."""
    earlier: list[int] = []
    for conv_id, marks in facts.timelines.items():
        if not any(m[2] in ("replies", "closed") for m in marks):
            continue
        if any(m[2] == "created" for m in marks):
            _measure(clock, facts, conv_id, sorted(marks))
        else:
            earlier.append(conv_id)
    for batch in _chunks(sorted(earlier)):
        stmt = (
            sa_select(
                col(Event.id),
                col(Event.kind),
                col(Event.created_at),
                col(Event.conversation_id),
                col(Event.agent_id),
                *_PAYLOAD_FACTS,
            )
            .where(
                col(Event.conversation_id).in_(batch),
                col(Event.created_at) < clock.until,
                col(Event.kind).in_(_TIMING_KINDS),
            )
            .order_by(col(Event.conversation_id), col(Event.created_at), col(Event.id))
        )
        timelines: dict[int, list[_Mark]] = defaultdict(list)
        for row in session.connection().execute(stmt):
            event_id, kind, created_at, conv_id, agent_id = row[:5]
            what = _classify(kind, *row[5:])
            if what is not None and conv_id is not None:
                mark = (as_utc(created_at), event_id, what, agent_id, row[5] != "outbound")
                timelines[conv_id].append(mark)
        for conv_id, marks in timelines.items():
            _measure(clock, facts, conv_id, marks)


def _decided_in(at: Any, due: Any, breached: Any, since: datetime, until: datetime) -> Any:
    """A target decided in [since, until): attained then, or breached and still not attained
    with its due time then."""
    return and_(
        col(due).is_not(None),
        or_(
            and_(col(at) >= since, col(at) < until),
            and_(col(at).is_(None), col(breached).is_(True), col(due) >= since, col(due) < until),
        ),
    )


def _attainment(session: Session, query: ReportQuery, clock: _Clock, facts: _Facts) -> None:
    """The SLA clock's record of the targets decided in the range."""
    s, u = clock.since, clock.until
    sla = ConversationSla
    first = _decided_in(
        sla.first_response_at, sla.first_response_due, sla.first_response_breached, s, u
    )
    resolution = _decided_in(sla.resolved_at, sla.resolution_due, sla.resolution_breached, s, u)
    stmt = (
        sa_select(
            col(sla.conversation_id),
            col(sla.first_response_due),
            col(sla.first_response_at),
            col(sla.first_response_met),
            col(sla.first_response_breached),
            col(sla.resolution_due),
            col(sla.resolved_at),
            col(sla.resolution_met),
            col(sla.resolution_breached),
            col(Conversation.mailbox_id),
            col(Conversation.assignee_id),
        )
        .join(Conversation, col(Conversation.id) == col(sla.conversation_id))
        .where(
            col(Conversation.mailbox_id).in_(query.mailbox_ids),
            col(Conversation.merged_into_id).is_(None),
            or_(first, resolution),
        )
        .execution_options(yield_per=STREAM)
    )
    for row in session.connection().execute(stmt):
        conv_id, fr_due, fr_at, fr_met, fr_breached = row[:5]
        res_due, res_at, res_met, res_breached, mailbox_id, assignee_id = row[5:]
        facts.convs.setdefault(conv_id, _Conv(mailbox_id, assignee_id))
        for target, due, at, met, breached in (
            ("first_response", fr_due, fr_at, fr_met, fr_breached),
            ("resolution", res_due, res_at, res_met, res_breached),
        ):
            due, at = as_utc(due), as_utc(at)
            if due is None:
                continue
            if at is not None:
                if met is not None and clock.within(at):
                    facts.sla.append(((conv_id, clock.bucket(at), False, None), target, met))
            elif breached and clock.within(due):
                facts.sla.append(((conv_id, clock.bucket(due), False, None), target, False))


class _Groups:
    """Which groups of the breakdown a fact counts in."""

    def __init__(self, session: Session, breakdown: str, facts: _Facts) -> None:
        self.breakdown = breakdown
        self.convs = facts.convs
        self.known: dict[str, Group] = {}
        self.agents: dict[int, str] = {}
        self.teams: dict[int, str] = {}
        self.agent_teams: dict[int, set[int]] = defaultdict(set)
        self.mailbox_team: dict[int, int] = {}
        self.mailboxes: dict[int, str] = {}
        if breakdown == "agent":
            self.agents = {a.id: a.name for a in session.exec(select(Agent)) if a.id is not None}
        elif breakdown == "team":
            self.teams = {t.id: t.name for t in session.exec(select(Team)) if t.id is not None}
            for member in session.exec(select(TeamMember)):
                self.agent_teams[member.agent_id].add(member.team_id)
            for link in session.exec(select(TeamMailbox)):
                self.mailbox_team[link.mailbox_id] = link.team_id
        elif breakdown == "mailbox":
            self.mailboxes = {
                m.id: m.name for m in session.exec(select(Mailbox)) if m.id is not None
            }
        elif breakdown == "tag":
            tags: dict[int, list[str]] = defaultdict(list)
            for batch in _chunks(sorted(self.convs)):
                for conv_id, tag in session.exec(
                    select(ConversationTag.conversation_id, ConversationTag.tag).where(
                        col(ConversationTag.conversation_id).in_(batch)
                    )
                ):
                    tags[conv_id].append(tag)
            for conv_id, conv in self.convs.items():
                conv.tags = tuple(sorted(tags.get(conv_id, ())))

    def _group(self, key: str, label: str, *, none: bool = False) -> Group:
        found = self.known.get(key)
        if found is None:
            found = self.known[key] = Group(key, label, none)
        return found

    def of(self, key: _Key) -> list[Group]:
        conv_id, _, by_actor, actor = key
        conv = self.convs[conv_id]
        if self.breakdown == "agent":
            agent = actor if by_actor else conv.assignee_id
            if agent is None or agent not in self.agents:
                return [self._group("agent:none", NOBODY, none=True)]
            return [self._group(f"agent:{agent}", self.agents[agent])]
        if self.breakdown == "team":
            ids = set(self.agent_teams.get(conv.assignee_id or 0, ()))
            if conv.mailbox_id in self.mailbox_team:
                ids.add(self.mailbox_team[conv.mailbox_id])
            found = [
                self._group(f"team:{t}", self.teams[t]) for t in sorted(ids) if t in self.teams
            ]
            return found or [self._group("team:none", NO_TEAM, none=True)]
        if self.breakdown == "mailbox":
            name = self.mailboxes.get(conv.mailbox_id, f"#{conv.mailbox_id}")
            return [self._group(f"mailbox:{conv.mailbox_id}", name)]
        if self.breakdown == "tag":
            if not conv.tags:
                return [self._group("tag:none", NO_TAG, none=True)]
            return [self._group(f"tag:{t}", t) for t in conv.tags]
        return [self._group(ALL.key, ALL.label)]

    def ordered(self) -> list[Group]:
        return sorted(self.known.values(), key=lambda g: (g.none, g.label.casefold(), g.key))


def _add(figures: Figures, what: str, amount: int = 1) -> None:
    setattr(figures, what, getattr(figures, what) + amount)


def build_report(session: Session, query: ReportQuery) -> Report:
    clock = _Clock(query)
    facts = _Facts()
    if query.mailbox_ids:
        _volume(session, query, clock, facts)
        _timings(session, clock, facts)
        _attainment(session, query, clock, facts)
    groups = _Groups(session, query.breakdown, facts)
    cells: dict[tuple[str, date], Figures] = defaultdict(Figures)
    totals: dict[str, Figures] = defaultdict(Figures)
    overall = Figures()

    def places(key: _Key) -> list[Figures]:
        found = [overall]
        for group in groups.of(key):
            found += [cells[(group.key, key[1])], totals[group.key]]
        return found

    for (key, what), amount in facts.counts.items():
        for figures in places(key):
            _add(figures, what, amount)
    for key, what, seconds in facts.durations:
        for figures in places(key):
            getattr(figures, f"{what}_seconds").append(seconds)
    for key, target, met in facts.sla:
        for figures in places(key):
            _add(figures, f"{target}_{'met' if met else 'missed'}")
    ordered = groups.ordered()
    if query.breakdown == "none" and not ordered:
        ordered = [ALL]
    return Report(
        query=query,
        buckets=bucket_starts(query),
        groups=ordered,
        cells=dict(cells),
        totals=dict(totals),
        overall=overall,
    )
