"""The due sweep: the tickets whose ``wake_at`` has come, and the timed mail their clocks ask for.

Each run claims due tickets in batches, oldest ``wake_at`` first: on PostgreSQL with ``FOR UPDATE
SKIP LOCKED``, so instances sweeping at once take different tickets; on SQLite the writer lock
serializes sweeps. For each ticket the planned notices (``mailticket.sla.clocks``) whose time has
come and that the ledger does not hold are done, each in the ticket's transaction: its ledger row
(the unique key refuses a second one), its mail in the outbox, its event. Then the ticket's due
times and ``wake_at`` are recomputed. A crash before the commit leaves all of it undone, to be done
by the next run; after the commit the ledger says it was done. So a restart neither loses nor
repeats a reminder, and a sweep that runs late does every missed step once.

What each kind does: ``sla_reminder`` mails the assignee (else the queue's agents);
``sla_escalation`` mails the level's addresses; ``pending_reminder`` mails the customer (skipped
when the close is due at the same run); ``pending_closed`` and ``solved_closed`` close the ticket
and tell the customer; ``csat_survey`` sends the survey.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from mailticket.clock import Clock
from mailticket.domain import TicketStatus
from mailticket.errors import TemporaryError
from mailticket.outbox.render import RatingLink, SlaLine
from mailticket.rules.mailing import Mailer
from mailticket.sla.clocks import Clocks, Planned, Timekeeper
from mailticket.store import clocks as clock_store
from mailticket.store import repo
from mailticket.store.db import Database
from mailticket.store.models import Notice, SweepState, Ticket

log = logging.getLogger(__name__)

BATCH = 100  # tickets claimed per transaction
TICKETS_PER_RUN = 5000  # then the run returns; the next tick goes on
RETRY_AFTER = dt.timedelta(minutes=15)  # a ticket whose step failed is looked at again this much later
RULE = "due_sweep"
CLOSING = ("pending_closed", "solved_closed")
PLAN_KEY = "plan_key"  # sweep_state: the configuration every open ticket was last planned with

SurveyLinks = Callable[[Ticket], Sequence[RatingLink]]


@dataclass
class SweepResult:
    tickets: int = 0  # tickets looked at
    done: dict[str, int] = field(default_factory=dict)  # notices done, by kind
    skipped: int = 0  # planned steps recorded as not needed (a reminder overtaken by the close)
    failed: int = 0  # tickets whose step raised: retried RETRY_AFTER later
    replanned: int = 0  # open tickets planned anew under a changed configuration

    @property
    def queued(self) -> bool:
        return bool(self.done)

    def as_dict(self) -> dict[str, Any]:
        return {"tickets": self.tickets, "done": dict(sorted(self.done.items())), "skipped": self.skipped,
                "failed": self.failed, "replanned": self.replanned}


class DueSweep:
    def __init__(self, db: Database, keeper: Timekeeper, mailer: Mailer, clock: Clock,
                 survey_links: SurveyLinks) -> None:
        self._db = db
        self._keeper = keeper
        self._mailer = mailer
        self._clock = clock
        self._survey_links = survey_links

    def run(self, limit: int = TICKETS_PER_RUN, batch: int = BATCH,
            should_stop: Callable[[], bool] | None = None) -> SweepResult:
        result = SweepResult()
        result.replanned = self.replan(limit, batch, should_stop)
        while result.tickets < limit and not (should_stop is not None and should_stop()):
            now = self._clock.now()
            size = min(batch, limit - result.tickets)
            with self._db.transaction() as session:
                tickets = due_tickets(session, now, size)
                for ticket in tickets:
                    self._one(session, ticket, now, result)
            result.tickets += len(tickets)
            if len(tickets) < size:
                break
        return result

    def replan(self, limit: int = TICKETS_PER_RUN, batch: int = BATCH,
               should_stop: Callable[[], bool] | None = None) -> int:
        """Plan every open ticket anew once the configuration (or the schema) changed: tickets from
        before schema 0009 have no plan, and a changed [sla] moves every due time. One row read when
        nothing changed; else up to ``limit`` tickets per run, until none is left (then the new key is
        recorded)."""
        key = self._keeper.plan_key
        with self._db.transaction() as session:
            state = session.get(SweepState, PLAN_KEY)
            if state is not None and state.value == key:
                return 0
        done = 0
        while done < limit and not (should_stop is not None and should_stop()):
            now = self._clock.now()
            with self._db.transaction() as session:
                tickets = list(session.execute(
                    select(Ticket).where(Ticket.status != TicketStatus.CLOSED,
                                         or_(Ticket.sla_plan.is_(None), Ticket.sla_plan != key))
                    .order_by(Ticket.number).limit(min(batch, limit - done)).with_for_update(skip_locked=True)
                ).scalars())
                for ticket in tickets:
                    try:
                        with session.begin_nested():
                            clock_store.refresh(session, ticket, self._keeper, now)
                    except (OperationalError, TemporaryError):
                        raise
                    except Exception:
                        log.exception("due sweep: ticket #%d could not be planned anew; it keeps its old plan",
                                      ticket.number)
                        session.expire(ticket)
                        ticket.sla_plan = key  # never again in this pass: the next change of it plans it
                if not tickets:
                    try:
                        with session.begin_nested():
                            session.merge(SweepState(name=PLAN_KEY, value=key, updated_at=now))
                            session.flush()
                    except IntegrityError:
                        pass  # another instance finished the same pass at the same moment and recorded it
                    log.info("due sweep: every open ticket is planned under the current configuration (%s)", key)
                    break
            done += len(tickets)
        return done

    # -- one ticket ------------------------------------------------------------------

    def _one(self, session: Session, ticket: Ticket, now: dt.datetime, result: SweepResult) -> None:
        number = ticket.number
        failed = False
        try:
            with session.begin_nested():
                sent = clock_store.ledger(session, number)
                if ticket.sla_plan != self._keeper.plan_key:
                    clocks = clock_store.refresh(session, ticket, self._keeper, now, sent)  # plan anew first
                else:
                    clocks = self._keeper.clocks(clock_store.state_of(ticket))
                due = [p for p in clocks.planned if self._keeper.send_at(p, now) <= now and p.key not in sent]
                closing = any(p.kind in CLOSING for p in due)
                for planned in due:
                    overtaken = planned.kind == "pending_reminder" and closing
                    outcome = self._step(session, ticket, planned, clocks, now, skip=overtaken)
                    if outcome is None:
                        failed = True
                        continue
                    sent.add(planned.key)
                    if outcome == "skipped":
                        result.skipped += 1
                    elif outcome == "done":
                        result.done[planned.kind] = result.done.get(planned.kind, 0) + 1
                    if planned.kind in CLOSING and outcome == "done":
                        break  # the ticket is closed: what else was planned no longer holds
                clock_store.refresh(session, ticket, self._keeper, now, sent)
        except (OperationalError, TemporaryError):
            raise  # the database itself failed: the batch is retried as a whole
        except Exception:
            log.exception("due sweep: ticket #%d failed; retried in %s", number, RETRY_AFTER)
            failed = True
            session.expire(ticket)
        if failed:
            result.failed += 1
        retry = now + RETRY_AFTER
        if ticket.wake_at is not None and ticket.wake_at <= now:  # a failed step; never spin on one ticket
            if not failed:
                log.error("due sweep: ticket #%d is due again at once (%s); looked at again in %s", number,
                          ticket.wake_at.isoformat(), RETRY_AFTER)
            ticket.wake_at = retry
        elif failed and (ticket.wake_at is None or ticket.wake_at > retry):
            ticket.wake_at = retry

    def _step(self, session: Session, ticket: Ticket, planned: Planned, clocks: Clocks, now: dt.datetime,
              skip: bool) -> str | None:
        """One planned step in its own savepoint: "done", "skipped", "taken" (another sweep did it), or
        None when it failed (logged; rolled back, so the next run tries it again)."""
        try:
            with session.begin_nested():
                notice = self._claim(session, ticket, planned, now)
                if notice is None:
                    return "taken"
                if skip:
                    self._record(session, ticket, now)("skipped", f"{planned.kind}: the close is due as well",
                                                       data={"kind": planned.kind, "target": planned.target})
                    return "skipped"
                notice.recipients = self._do(session, ticket, planned, clocks, now)
                return "done"
        except (OperationalError, TemporaryError):
            raise
        except Exception:
            log.exception("due sweep: ticket #%d: %s (%s, level %d) failed; retried in %s", ticket.number,
                          planned.kind, planned.target, planned.level, RETRY_AFTER)
            return None

    @staticmethod
    def _claim(session: Session, ticket: Ticket, planned: Planned, now: dt.datetime) -> Notice | None:
        """The ledger row, or None when one exists already (a racing sweep wrote it first)."""
        notice = Notice(ticket_number=ticket.number, target=planned.target, kind=planned.kind, level=planned.level,
                        cycle=planned.cycle, due_at=planned.due, created_at=now, recipients=[])
        try:
            with session.begin_nested():
                session.add(notice)
                session.flush()
        except IntegrityError:
            return None
        return notice

    def _record(self, session: Session, ticket: Ticket, now: dt.datetime) -> Callable[..., None]:
        def record(kind: str, detail: str, *, rule: str | None = RULE, outbox_id: int | None = None,
                   data: dict[str, object] | None = None) -> None:
            repo.add_event(session, now, kind, detail, ticket_number=ticket.number, rule=rule, outbox_id=outbox_id,
                           data=data)
        return record

    def _do(self, session: Session, ticket: Ticket, planned: Planned, clocks: Clocks, now: dt.datetime
            ) -> list[str]:
        """Carry one planned step out; the addresses mailed."""
        record = self._record(session, ticket, now)
        kind = planned.kind
        if kind in ("sla_reminder", "sla_escalation"):
            line = self._sla_line(planned, clocks, now)
            what = "reminder" if kind == "sla_reminder" else f"escalation level {planned.level}"
            record(kind, f"{planned.target} {what}: due {line.due}" + (f", over by {line.over}" if line.over else
                                                                       f", {line.left} left"),
                   data={"target": planned.target, "level": planned.level, "due": line.due, "over": line.over,
                         "policy": line.policy})
            return self._mailer.sla_notice(session, RULE, kind, ticket, planned.to, line, record, now)
        if kind in CLOSING:
            before = ticket.status
            reason = ("no answer from the customer for " + _days(now - planned.cycle) if kind == "pending_closed"
                      else "solved " + _days(now - planned.cycle) + " ago")
            record("status", f"{before} -> closed: {reason}", data={"from": before, "to": "closed", "reason": reason})
            clock_store.set_status(ticket, TicketStatus.CLOSED, now)
            ticket.updated_at = now
        parts: dict[str, Any] = {}
        if kind == "pending_reminder":
            close = self._keeper.lifecycle.pending_close_after
            parts = {"close_at": (planned.cycle + close.calendar).strftime("%Y-%m-%d") if close else "",
                     "waited_days": (now - planned.cycle).days}
        elif kind == "csat_survey":
            parts = {"ratings": list(self._survey_links(ticket))}
        row = self._mailer.to_customer(session, RULE, kind, ticket, record, now, **parts)
        return [row.to_addr] if row is not None else []

    def _sla_line(self, planned: Planned, clocks: Clocks, now: dt.datetime) -> SlaLine:
        due = clocks.targets[planned.target].deadline
        calendar = self._keeper.calendar
        local = due.astimezone(calendar.timezone)
        return SlaLine(
            target=planned.target, policy=clocks.policy.name if clocks.policy else "",
            due=due.strftime("%Y-%m-%d %H:%M UTC"),
            due_local=local.strftime("%Y-%m-%d %H:%M %Z") if str(calendar.timezone) != "UTC" else "",
            over=_span(now - due) if now >= due else "",
            left=_span(calendar.between(now, due)) if now < due else "",
            level=planned.level,
        )


def due_tickets(session: Session, now: dt.datetime, limit: int) -> list[Ticket]:
    """Up to ``limit`` tickets whose wake_at has come, claimed (PostgreSQL: rows another sweep holds are
    skipped). The index on wake_at makes this cost what the due rows cost, not the table."""
    query = (select(Ticket).where(Ticket.wake_at.is_not(None), Ticket.wake_at <= now)
             .order_by(Ticket.wake_at, Ticket.number).limit(limit).with_for_update(skip_locked=True))
    return list(session.execute(query).scalars())


def _span(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours:
        parts.append(f"{hours}h")
    if minutes or not parts:
        parts.append(f"{minutes}m")
    return " ".join(parts)


def _days(delta: dt.timedelta) -> str:
    days = delta.days
    return f"{days} day{'s' if days != 1 else ''}" if days else _span(delta)
