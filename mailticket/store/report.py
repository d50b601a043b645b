"""`mailticket report`: response and resolution times, SLA compliance, backlog, reopens and CSAT.

Everything is read from columns and from the decision log: the tickets' own times (created_at,
first_response_at, solved_at), their due-time columns (a running target past due is a breach that
is still open), the ``sla`` events (one per target that stopped running, met in time or not) and
the ``status`` events (a move from solved or closed back to new, open or pending is a reopen).

The scope is the tickets *created* on the days ``since`` .. ``until`` (inclusive, UTC) and, when
given, in one queue; only the backlog is "now": every ticket not closed (in the queue, when given),
whenever it was created. Times are minutes as floats (1 decimal); business minutes count only the
open hours of the [sla] calendar (24x7 without [sla]) and leave out the ticket's pending and solved
spells, as the SLA clocks do; calendar minutes are the plain clock time.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from mailticket.domain import TicketStatus
from mailticket.sla.clocks import TARGETS, Pause, Timekeeper
from mailticket.store.models import Event, Ticket

STOPPED = (TicketStatus.SOLVED, TicketStatus.CLOSED)  # no SLA clock runs
REOPENED_TO = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING)
RATINGS = ("1", "2", "3", "4", "5")
_DAY = dt.timedelta(days=1)


def parse_day(option: str, value: str | None) -> dt.date | None:
    """A YYYY-MM-DD day, None when not given; ValueError with one line naming the option."""
    if value is None:
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(value)
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"report: {option} {value}: not a day (give YYYY-MM-DD)") from None


def window(since: dt.date | None, until: dt.date | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """[start, end) in UTC for the inclusive days ``since`` .. ``until`` (None: open on that side)."""
    start = dt.datetime.combine(since, dt.time(0), tzinfo=dt.UTC) if since is not None else None
    end = dt.datetime.combine(until + _DAY, dt.time(0), tzinfo=dt.UTC) if until is not None else None
    return start, end


def _scope(since: dt.date | None, until: dt.date | None, queue: str | None) -> list[ColumnElement[bool]]:
    start, end = window(since, until)
    where: list[ColumnElement[bool]] = []
    if start is not None:
        where.append(Ticket.created_at >= start)
    if end is not None:
        where.append(Ticket.created_at < end)
    if queue is not None:
        where.append(Ticket.queue == queue)
    return where


def _pauses(stored: Sequence[Sequence[str]] | None) -> list[Pause]:
    return [(dt.datetime.fromisoformat(a), dt.datetime.fromisoformat(b)) for a, b in stored or []]


def _minutes(delta: dt.timedelta) -> float:
    return delta.total_seconds() / 60


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _p90(values: Sequence[float]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


Span = tuple[dt.datetime, dt.datetime, Sequence[Pause]]


def durations(spans: Sequence[Span], keeper: Timekeeper) -> dict[str, Any]:
    """count, median and p90 in calendar minutes, and in business minutes without the ticket's pauses
    (pending or solved spells, as the SLA clocks count), of each (start, end, pauses)."""
    calendar = [_minutes(end - start) for start, end, _p in spans]
    business = [_minutes(_business(keeper, start, end, pauses)) for start, end, pauses in spans]
    return {
        "count": len(spans),
        "median_minutes": _round(_median(calendar)),
        "p90_minutes": _round(_p90(calendar)),
        "median_business_minutes": _round(_median(business)),
        "p90_business_minutes": _round(_p90(business)),
    }


def _business(keeper: Timekeeper, start: dt.datetime, end: dt.datetime, pauses: Sequence[Pause]) -> dt.timedelta:
    between = keeper.calendar.between
    stood = sum((between(max(a, start), min(b, end)) for a, b in pauses if a < end and b > start), dt.timedelta(0))
    return between(start, end) - stood


def _week(at: dt.datetime) -> str:
    year, week, _ = at.astimezone(dt.UTC).isocalendar()
    return f"{year}-W{week:02d}"


def weekly(created: Sequence[dt.datetime]) -> list[dict[str, Any]]:
    """Tickets created per ISO week, from the first ticket's week to the last one's (empty weeks: 0)."""
    if not created:
        return []
    counts = Counter(_week(at) for at in created)
    first, last = min(created).astimezone(dt.UTC).date(), max(created).astimezone(dt.UTC).date()
    monday = first - dt.timedelta(days=first.weekday())
    weeks: list[dict[str, Any]] = []
    while monday <= last:
        name = _week(dt.datetime.combine(monday, dt.time(0), tzinfo=dt.UTC))
        weeks.append({"week": name, "created": counts.get(name, 0)})
        monday += dt.timedelta(days=7)
    return weeks


def first_response_hours(session: Session, *, since: dt.date | None = None, until: dt.date | None = None,
                         queue: str | None = None) -> list[float]:
    """Each answered ticket's time to its first response, in calendar hours (for the histogram)."""
    rows = session.execute(select(Ticket.created_at, Ticket.first_response_at)
                           .where(*_scope(since, until, queue), Ticket.first_response_at.is_not(None)))
    return [(answered - created).total_seconds() / 3600 for created, answered in rows if answered is not None]


def report(session: Session, keeper: Timekeeper, now: dt.datetime, *, since: dt.date | None = None,
           until: dt.date | None = None, queue: str | None = None) -> dict[str, Any]:
    """The whole report as JSON-ready data (see the module's docstring for what each figure counts)."""
    tickets = session.execute(
        select(Ticket.number, Ticket.created_at, Ticket.first_response_at, Ticket.solved_at, Ticket.closed_at,
               Ticket.status, Ticket.csat_rating, Ticket.first_response_due, Ticket.next_response_due,
               Ticket.resolution_due, Ticket.pauses)
        .where(*_scope(since, until, queue)).order_by(Ticket.number)
    ).all()
    scoped = select(Ticket.number).where(*_scope(since, until, queue))
    events = session.execute(
        select(Event.ticket_number, Event.kind, Event.data)
        .where(Event.kind.in_(("sla", "status")), Event.ticket_number.in_(scoped))
        .order_by(Event.id)
    ).all()

    first = [(t.created_at, t.first_response_at, _pauses(t.pauses)) for t in tickets
             if t.first_response_at is not None]
    resolved = [(t.created_at, t.solved_at, _pauses(t.pauses)) for t in tickets if t.solved_at is not None]

    sla: dict[str, Any] = {name: {"met": 0, "missed": 0} for name in TARGETS}
    ever_solved: set[int] = {t.number for t in tickets if t.solved_at is not None or t.closed_at is not None}
    reopened: set[int] = set()
    for number, kind, data in events:
        if not isinstance(data, dict):
            continue  # rows from before schema 0006 have no data
        if kind == "sla" and data.get("target") in sla and isinstance(data.get("met"), bool):
            sla[data["target"]]["met" if data["met"] else "missed"] += 1
        elif kind == "status":
            if data.get("to") in STOPPED:
                ever_solved.add(number)
            if data.get("from") in STOPPED and data.get("to") in REOPENED_TO:
                reopened.add(number)
                ever_solved.add(number)
    breaches = 0
    for name in TARGETS:
        figures = sla[name]
        figures["compliance"] = _ratio(figures["met"], figures["met"] + figures["missed"])
        figures["breached_open"] = sum(
            1 for t in tickets
            if t.status not in STOPPED and (due := getattr(t, f"{name}_due")) is not None and due <= now)
        breaches += figures["missed"] + figures["breached_open"]
    sla["breaches"] = breaches

    ratings = [t.csat_rating for t in tickets if t.csat_rating is not None]
    distribution = Counter(str(r) for r in ratings)

    return {
        "period": {"since": since.isoformat() if since is not None else None,
                   "until": until.isoformat() if until is not None else None, "queue": queue},
        "weekly": weekly([t.created_at for t in tickets]),
        "first_response": durations(first, keeper),
        "resolution": durations(resolved, keeper),
        "sla": sla,
        "backlog": backlog(session, queue),
        "reopen_rate": {"solved": len(ever_solved), "reopened": len(reopened),
                        "rate": _ratio(len(reopened), len(ever_solved))},
        "csat": {"count": len(ratings),
                 "average": round(statistics.fmean(ratings), 2) if ratings else None,
                 "distribution": {r: distribution.get(r, 0) for r in RATINGS}},
    }


def backlog(session: Session, queue: str | None = None) -> dict[str, dict[str, int]]:
    """Every ticket not closed now, whenever it was created: by status and by queue."""
    query = select(Ticket.status, Ticket.queue).where(Ticket.status != TicketStatus.CLOSED)
    if queue is not None:
        query = query.where(Ticket.queue == queue)
    rows = session.execute(query).all()
    statuses = Counter(s for s, _ in rows)
    order = [str(s) for s in TicketStatus] + sorted(set(statuses) - {str(s) for s in TicketStatus})
    return {"by_status": {s: statuses[s] for s in order if statuses[s]},
            "by_queue": dict(sorted(Counter(q for _, q in rows).items()))}
