"""A ticket's SLA clocks and timed mail, computed from what its row says (pure: no database, no now).

Three targets, each a clock with a start and a length of business time from the first policy that
matches the ticket's priority and queue:

- ``first_response``: from the ticket's creation until an agent's first public reply;
- ``next_response``: from a customer's reply (after the first response) until an agent answers it;
- ``resolution``: from the creation until the ticket is solved.

While the ticket is pending or solved the clocks stand still: the pause's business time is added
back to every target that was running when it began (``pauses`` holds the finished ones, ``paused_at``
the current one). A solved or closed ticket runs no clock. What each running target plans — the
reminder at ``remind_at`` of its length, an escalation per level ``after`` the breach — is a
``Planned`` notice; with ``notify_in_business_hours`` a notice outside the open hours waits for the
next open minute (the close itself counts as open: a target that runs out at 17:00 escalates at 17:00).

Lifecycle steps (``[lifecycle]``) count calendar time: a pending ticket's customer reminder and
auto-close, a solved ticket's close, and the satisfaction survey when it is solved.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailticket.settings import Duration, LifecycleSettings, SlaPolicy, SlaSettings
from mailticket.sla.business import Calendar, calendar_of

TARGETS = ("first_response", "next_response", "resolution")
STOPPED = ("solved", "closed")  # no clock runs
PAUSED = ("pending", "solved", "closed")  # a pause is open while the ticket is in one of these
_SECOND = dt.timedelta(seconds=1)

Pause = tuple[dt.datetime, dt.datetime]


@dataclass(frozen=True)
class TicketClock:
    """What the clocks are computed from: the ticket row's own values."""

    created_at: dt.datetime
    status: str
    priority: str
    queue: str
    first_response_at: dt.datetime | None = None
    next_response_since: dt.datetime | None = None
    next_response_at: dt.datetime | None = None  # the agent's answer to what waited since then
    solved_at: dt.datetime | None = None
    paused_at: dt.datetime | None = None
    pauses: tuple[Pause, ...] = ()
    imported: bool = False  # history brought in by `mailticket import`: no SLA target runs


@dataclass(frozen=True)
class Target:
    name: str
    start: dt.datetime
    length: Duration
    deadline: dt.datetime  # start + length of business time, the finished pauses added back
    paused_for: dt.timedelta  # business time added back for finished pauses
    met_at: dt.datetime | None = None  # the first response, the answer, the solve
    running: bool = True  # neither met nor stopped
    stands_since: dt.datetime | None = None  # the pause in progress began then (None: not paused)

    @property
    def due(self) -> dt.datetime | None:
        """The due time while the clock runs; None while it stands (pending) or once met or stopped."""
        return self.deadline if self.running and self.stands_since is None else None

    def breached(self, now: dt.datetime) -> bool:
        """Running and past its deadline (a pause that began after the breach does not undo it)."""
        return self.running and self.deadline <= (self.stands_since or now)

    @property
    def met_in_time(self) -> bool | None:
        """Met by the deadline (True), late (False); None while not met."""
        return None if self.met_at is None else self.met_at <= self.deadline


@dataclass(frozen=True)
class Planned:
    """One timed mail a running clock asks for: sent at ``at`` (``due`` held to business hours)."""

    target: str
    kind: str  # sla_reminder, sla_escalation, pending_reminder, pending_closed, solved_closed, csat_survey
    level: int  # the escalation level (1...), 0 otherwise
    cycle: dt.datetime  # the clock's start: with the target, kind and level, the ledger's key
    due: dt.datetime  # when the clock asks for it
    at: dt.datetime  # when it may be sent
    to: tuple[str, ...] = ()  # escalation addresses; () = the assignee (or the queue's agents), or the customer

    @property
    def key(self) -> tuple[str, str, int, dt.datetime]:
        return (self.target, self.kind, self.level, self.cycle)


@dataclass(frozen=True)
class Clocks:
    policy: SlaPolicy | None
    targets: dict[str, Target] = field(default_factory=dict)
    paused: bool = False
    planned: tuple[Planned, ...] = ()
    imported: bool = False
    status: str = ""

    def due(self, name: str) -> dt.datetime | None:
        target = self.targets.get(name)
        return target.due if target is not None else None

    def breached(self, now: dt.datetime) -> list[str]:
        return [name for name, target in self.targets.items() if target.breached(now)]


class Timekeeper:
    """The policies, the calendar and the lifecycle of one configuration: computes a ticket's clocks."""

    def __init__(self, sla: SlaSettings | None, lifecycle: LifecycleSettings | None = None, *, csat: bool = True,
                 calendar: Calendar | None = None) -> None:
        self.sla = sla
        self.lifecycle = lifecycle or LifecycleSettings()
        self.csat = csat
        self.calendar = calendar or (calendar_of(sla) if sla is not None else Calendar())
        # What the plans were made with: a ticket planned under another key is planned anew (store.clocks)
        self.plan_key = hashlib.sha256(repr((sla, self.lifecycle, csat)).encode("utf-8")).hexdigest()[:16]

    def policy_for(self, priority: str, queue: str) -> SlaPolicy | None:
        return self.sla.policy_for(priority, queue) if self.sla is not None else None

    def clocks(self, ticket: TicketClock) -> Clocks:
        """The targets and every planned notice, sent or not (the caller's ledger says which were)."""
        paused = ticket.status in PAUSED
        policy = None if ticket.imported else self.policy_for(ticket.priority, ticket.queue)
        targets: dict[str, Target] = {}
        planned: list[Planned] = []
        if policy is not None:
            for name, start, met in self._starts(ticket):
                length: Duration | None = getattr(policy, name)
                if length is None:
                    continue
                target = self._target(name, start, length, met, ticket, paused)
                targets[name] = target
                if target.running and target.due is not None:
                    planned.extend(self._notices(policy, target, ticket))
        planned.extend(self._lifecycle(ticket))
        return Clocks(policy, targets, paused, tuple(sorted(planned, key=lambda p: (p.at, p.level))),
                      ticket.imported, ticket.status)

    # -- targets -----------------------------------------------------------------

    @staticmethod
    def _starts(ticket: TicketClock) -> list[tuple[str, dt.datetime, dt.datetime | None]]:
        """(target, start, met_at): the clocks this ticket has (met_at None while it runs)."""
        starts: list[tuple[str, dt.datetime, dt.datetime | None]] = [
            ("first_response", ticket.created_at, ticket.first_response_at)]
        if ticket.first_response_at is not None and ticket.next_response_since is not None:
            starts.append(("next_response", ticket.next_response_since, ticket.next_response_at))
        starts.append(("resolution", ticket.created_at,
                       ticket.solved_at if ticket.status in STOPPED else None))
        return starts

    def _target(self, name: str, start: dt.datetime, length: Duration, met: dt.datetime | None,
                ticket: TicketClock, paused: bool) -> Target:
        deadline, added = self.extend(start, length, ticket.pauses)
        running = met is None and ticket.status not in STOPPED
        stands = (ticket.paused_at or ticket.created_at) if paused and running else None
        return Target(name, start, length, deadline, added, met, running, stands)

    def extend(self, start: dt.datetime, length: Duration | dt.timedelta, pauses: Sequence[Pause]
               ) -> tuple[dt.datetime, dt.timedelta]:
        """``start`` + ``length`` of business time, each finished pause that began before the running due
        time added back; (due, the business time added)."""
        calendar = self.calendar
        due = calendar.add(start, length) if isinstance(length, Duration) else calendar.add_time(start, length)
        added = dt.timedelta(0)
        for begin, end in sorted(pauses):
            if end <= start or begin >= due:
                continue
            begin = max(begin, start)
            left = calendar.between(begin, due)
            stood = calendar.between(begin, end)
            due = calendar.add_time(end, left)
            added += stood
        return due, added

    # -- notices -----------------------------------------------------------------

    def _notices(self, policy: SlaPolicy, target: Target, ticket: TicketClock) -> list[Planned]:
        assert target.due is not None
        result: list[Planned] = []
        if policy.remind_at is not None:
            span = self.calendar.between(target.start, self.calendar.add(target.start, target.length))
            at, _ = self.extend(target.start, span * policy.remind_at, ticket.pauses)
            at = min(at, target.due)
            result.append(Planned(target.name, "sla_reminder", 0, target.start, at, self.hold(at)))
        for level, step in enumerate(policy.escalate, start=1):
            # business time after the breach; a pending spell after the breach stops this count too
            at = target.deadline if step.after.is_zero else self.extend(target.deadline, step.after, ticket.pauses)[0]
            result.append(Planned(target.name, "sla_escalation", level, target.start, at, self.hold(at), step.to))
        return result

    def send_at(self, planned: Planned, now: dt.datetime) -> dt.datetime:
        """When a planned notice may go: its time; one overdue (a sweep that ran late) waits, with
        ``notify_in_business_hours``, for the desk to open — reminders and escalations never go at 02:00."""
        if planned.at > now or not planned.kind.startswith("sla_"):
            return planned.at
        return self.hold(now)

    def hold(self, at: dt.datetime) -> dt.datetime:
        """With ``notify_in_business_hours``: ``at`` when the desk is open then (or closes at that very
        instant), else its next open minute."""
        if self.sla is None or not self.sla.notify_in_business_hours:
            return at
        if self.calendar.is_open(at) or self.calendar.is_open(at - _SECOND):
            return at
        return self.calendar.next_open(at)

    def _lifecycle(self, ticket: TicketClock) -> list[Planned]:
        life = self.lifecycle
        result: list[Planned] = []
        since = ticket.paused_at
        remind, close = life.pending_reminder_after, life.pending_close_after
        if ticket.status == "pending" and since is not None:
            if remind is not None and (close is None or remind.calendar < close.calendar):
                at = since + remind.calendar
                result.append(Planned("pending", "pending_reminder", 0, since, at, at))
            if close is not None:
                at = since + close.calendar
                result.append(Planned("pending", "pending_closed", 0, since, at, at))
        if ticket.status == "solved" and ticket.solved_at is not None:
            solved = ticket.solved_at
            if self.csat:
                result.append(Planned("solved", "csat_survey", 0, solved, solved, solved))
            if life.solved_close_after is not None:
                at = solved + life.solved_close_after.calendar
                result.append(Planned("solved", "solved_closed", 0, solved, at, at))
        return result

    # -- explaining ----------------------------------------------------------------

    def explain(self, clocks: Clocks, now: dt.datetime) -> list[str]:
        """One line per target: why its due time is what it is."""
        if clocks.policy is None:
            if clocks.imported:
                return ["imported by `mailticket import`: history runs no SLA clock"]
            if self.sla is None:
                return ["no [sla] configured: no clock runs"]
            return ["no [[sla.policies]] entry matches this ticket's priority and queue: no clock runs"]
        policy = clocks.policy
        match = ", ".join(f"{k} {'/'.join(v)}" for k, v in (("priority", policy.match_priority),
                                                           ("queue", policy.match_queue)) if v) or "every ticket"
        lines = [f"policy {policy.name} (matches {match}); business time: {self.describe_calendar()}"]
        for name, target in clocks.targets.items():
            head = f"{name} {target.length} from {_stamp(target.start)}"
            extra = f", +{_span(target.paused_for)} paused" if target.paused_for else ""
            deadline = _stamp(target.deadline)
            if target.met_at is not None:
                how = "met" if target.met_in_time else "met LATE"
                lines.append(f"{head}{extra}: due {deadline}, {how} at {_stamp(target.met_at)}")
            elif not target.running:
                lines.append(f"{head}{extra}: due {deadline}; stopped (the ticket is {clocks.status})")
            elif target.stands_since is not None:
                state = "breached before the pause" if target.breached(now) else "the time left resumes on reopen"
                lines.append(f"{head}{extra}: due {deadline} before the pause; paused since "
                             f"{_stamp(target.stands_since)} (pending): {state}")
            else:
                lines.append(f"{head}{extra}: {'BREACHED, was due' if target.breached(now) else 'due'} {deadline}")
        return lines

    def describe_calendar(self) -> str:
        sla = self.sla
        if sla is None or sla.business_hours is None:
            hours = "24x7"
        else:
            days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
            hours = "; ".join(f"{days[d]} " + ",".join(f"{a:%H:%M}-{b:%H:%M}".replace("-00:00", "-24:00")
                                                      for a, b in r)
                              for d, r in sorted(sla.business_hours.items()) if r) or "never open"
        tz = sla.timezone if sla is not None else "UTC"
        holidays = f", holidays {sla.holidays}" if sla is not None and sla.holidays else ""
        extra = f", {len(sla.extra_holidays)} extra holidays" if sla is not None and sla.extra_holidays else ""
        return f"{hours} ({tz}{holidays}{extra})"


def _stamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes or not hours else "")
