"""Business time for SLA clocks: open hours in a timezone, public holidays from the ``holidays`` package.

A ``Calendar`` knows when the support desk is open: per weekday a few local time ranges in its
timezone (zoneinfo), closed all day on public holidays and ``extra_holidays``. It counts time the way
an SLA does: ``add`` moves a start forward by business time, ``between`` measures the business time
from one instant to another. Every datetime handed in must be aware (any zone; UTC is usual); every
datetime handed back is in UTC. The work walks the open intervals day by day (a year is ~365 steps),
never minute by minute.

Durations (``Duration``, from ``parse_duration("1d4h")``) have two parts, counted in this order:

- **minutes** (``m``, and ``h`` = 60 minutes) are open minutes: 4h from Friday 16:00 in a Mon-Fri
  09:00-17:00 calendar is Monday 12:00.
- **days** (``d``) are business days: *the same local time on the next business day* (a day with
  open hours that is no holiday), counted from the first open minute at or after the start. Where
  that day is shorter, the time is kept inside it: before its opening -> its opening, after its close
  -> its close, in a break -> the end of the break. In a calendar whose open days have the same
  hours, one day therefore equals that day's length (8h for 09:00-17:00), DST or not. In a 24x7
  calendar a day is the same wall time on the next calendar day (23 or 25 hours across a DST change).

``add`` returns the *earliest* instant at which the business time has run out: 8h from Monday 09:00
is Monday 17:00 (the close), not Tuesday 09:00; ``add(start, 0m)`` is ``start`` itself. Range ends
are exclusive: at 17:00 the desk is closed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import holidays as holidays_lib

from mailticket.settings import Duration, Ranges, SlaSettings, parse_duration

__all__ = ["ALWAYS", "Calendar", "Duration", "calendar_of", "parse_duration"]

MIDNIGHT = dt.time(0)
ALWAYS: Mapping[int, Ranges] = {day: ((MIDNIGHT, MIDNIGHT),) for day in range(7)}  # 00:00-24:00, every day
_ONE_DAY = dt.timedelta(days=1)
_NEVER_OPEN_DAYS = 3 * 366 + 7  # a calendar closed this many days in a row is taken as never open


def _utc(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"business time needs an aware datetime, not {at!r}")
    return at.astimezone(dt.UTC)


@dataclass(frozen=True)
class Calendar:
    """When the desk is open.

    ``hours``: weekday (0 = Monday) -> open ranges ``(start, end)`` in local time, increasing; an end of
    ``time(0)`` means midnight at the end of the day (24:00); a weekday missing or empty is closed. The
    default is 24x7 (``ALWAYS``). ``holidays``: anything that answers ``date in holidays`` — a frozenset
    of dates, or a ``holidays.HolidayBase`` (as ``calendar_of`` builds: it fills in years on demand).
    ``extra_holidays``: more closed dates. A holiday is closed all day, in the calendar's timezone.
    """

    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    hours: Mapping[int, Ranges] = field(default_factory=lambda: dict(ALWAYS))
    holidays: Container[dt.date] = frozenset()
    extra_holidays: frozenset[dt.date] = frozenset()

    def is_business_day(self, day: dt.date) -> bool:
        """``day`` (a local date) has open hours and is no holiday."""
        return bool(self.hours.get(day.weekday())) and day not in self.extra_holidays and day not in self.holidays

    def spans(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        """The open intervals of one local date, as (start, end) in UTC, increasing; [] when closed."""
        if not self.is_business_day(day):
            return []
        result: list[tuple[dt.datetime, dt.datetime]] = []
        for start, end in self.hours[day.weekday()]:
            begin = dt.datetime.combine(day, start, tzinfo=self.timezone).astimezone(dt.UTC)
            end_day = day + _ONE_DAY if end == MIDNIGHT else day
            finish = dt.datetime.combine(end_day, end, tzinfo=self.timezone).astimezone(dt.UTC)
            if finish > begin:  # a range swallowed by a DST gap has no length
                result.append((begin, finish))
        return result

    def _walk(self, at: dt.datetime) -> Iterator[tuple[dt.datetime, dt.datetime]]:
        """The open intervals that end after ``at`` (UTC), in order, without end."""
        day = at.astimezone(self.timezone).date() - _ONE_DAY
        closed = 0
        while True:
            spans = self.spans(day)
            closed = 0 if spans else closed + 1
            if closed > _NEVER_OPEN_DAYS:
                raise ValueError(f"the business calendar is not open on any day within {_NEVER_OPEN_DAYS} days")
            for start, end in spans:
                if end > at:
                    yield start, end
            day += _ONE_DAY

    def is_open(self, at: dt.datetime) -> bool:
        at = _utc(at)
        day = at.astimezone(self.timezone).date()
        return any(start <= at < end for d in (day - _ONE_DAY, day) for start, end in self.spans(d))

    def next_open(self, at: dt.datetime) -> dt.datetime:
        """The first open instant at or after ``at``: ``at`` itself (in UTC) when open."""
        at = _utc(at)
        start, _ = next(self._walk(at))
        return max(start, at)

    def add(self, start: dt.datetime, duration: Duration) -> dt.datetime:
        """The earliest instant by which ``duration`` of business time has passed since ``start``."""
        at = _utc(start)
        if duration.days:
            at = self._add_days(at, duration.days)
        if duration.minutes:
            at = self._add_time(at, dt.timedelta(minutes=duration.minutes))
        return at

    def add_time(self, start: dt.datetime, span: dt.timedelta) -> dt.datetime:
        """The earliest instant by which ``span`` of open time has passed since ``start`` (any precision)."""
        at = _utc(start)
        return self._add_time(at, span) if span > dt.timedelta(0) else at

    def between(self, a: dt.datetime, b: dt.datetime) -> dt.timedelta:
        """Business time from ``a`` to ``b``; zero when ``b`` is not after ``a``."""
        a, b = _utc(a), _utc(b)
        total = dt.timedelta(0)
        if b <= a:
            return total
        for start, end in self._walk(a):
            if start >= b:
                break
            total += min(end, b) - max(start, a)
        return total

    def _add_time(self, at: dt.datetime, left: dt.timedelta) -> dt.datetime:
        for start, end in self._walk(at):
            begin = max(start, at)
            if left <= end - begin:
                return begin + left
            left -= end - begin
        raise AssertionError("unreachable: _walk never ends")  # pragma: no cover

    def _add_days(self, at: dt.datetime, days: int) -> dt.datetime:
        first = self.next_open(at)
        local = first.astimezone(self.timezone)
        wall, day = local.time(), local.date()
        closed = 0
        while days:
            day += _ONE_DAY
            if self.is_business_day(day):
                days -= 1
                closed = 0
            else:
                closed += 1
                if closed > _NEVER_OPEN_DAYS:
                    raise ValueError(f"the business calendar is not open on any day within {_NEVER_OPEN_DAYS} days")
        spans = self.spans(day)
        target = dt.datetime.combine(day, wall, tzinfo=self.timezone).astimezone(dt.UTC)
        for start, end in spans:
            if target < end:
                return target if target > start else self._close_before(start)
        return spans[-1][1]

    def _close_before(self, at: dt.datetime) -> dt.datetime:
        """The last close at or before the opening ``at``: no business time lies between them."""
        day = at.astimezone(self.timezone).date()
        for _ in range(_NEVER_OPEN_DAYS):  # found well before: _add_days counted forward from an open day
            ends = [end for _, end in self.spans(day) if end <= at]
            if ends:
                return max(ends)
            day -= _ONE_DAY
        return at


def calendar_of(sla: SlaSettings) -> Calendar:
    """The business-time calendar of an ``[sla]`` table (checked at load, so this does not fail)."""
    public: Container[dt.date] = frozenset()
    if sla.holidays:
        country, _, subdiv = sla.holidays.partition("-")
        public = holidays_lib.country_holidays(country, subdiv=subdiv or None)
    return Calendar(
        timezone=ZoneInfo(sla.timezone),
        hours=dict(sla.business_hours) if sla.business_hours is not None else dict(ALWAYS),
        holidays=public,
        extra_holidays=frozenset(sla.extra_holidays),
    )
