"""Write a ticket's clocks: status changes with their pauses, who answered, and the due-time columns.

Every place that changes a ticket's status goes through ``set_status`` (solved_at, closed_at and the
pause bookkeeping live only here); ``customer_wrote`` and ``agent_answered`` move the response clocks;
``refresh`` recomputes the due times (``mailticket.sla.clocks``) and ``wake_at``, the next instant the
due sweep must look at the ticket, from what the notices ledger says was already done. It is called at
the end of every transaction that changed a ticket, so the columns never lag behind the row.

The ledger also holds each target's outcome (kind ``outcome``, once per clock cycle): when a target
stops — met, or stopped unmet after its deadline — an ``sla`` event says whether it was met in time
(``mailticket report`` counts these). A resolution counts once per ticket: its first solve.

A ticket planned under another configuration (``Timekeeper.plan_key``: a new schema, a changed
``[sla]``, ``[lifecycle]`` or ``[csat]``) is planned anew: what the new plan puts in the past is not
done late as a flood of mail — those reminders, escalations and surveys are recorded as skipped, and
a close that fell due is done without a notice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.domain import TicketStatus
from mailticket.sla.clocks import PAUSED, Clocks, Pause, TicketClock, Timekeeper
from mailticket.store import repo
from mailticket.store.models import Notice, Ticket

LedgerKey = tuple[str, str, int, dt.datetime]
OUTCOME = "outcome"
CLOSING = ("pending_closed", "solved_closed")


def set_status(ticket: Ticket, status: str, now: dt.datetime) -> None:
    """The new status, with solved_at/closed_at, and the pause it opens or ends; nothing when unchanged."""
    before = ticket.status
    if status == before:
        return
    ticket.status = status
    ticket.solved_at = now if status == TicketStatus.SOLVED else (
        ticket.solved_at if status == TicketStatus.CLOSED else None)
    ticket.closed_at = now if status == TicketStatus.CLOSED else None
    if ticket.paused_at is not None:
        # the pause ends (or one paused status follows another: each spell is its own, for its timers)
        ticket.pauses = [*(ticket.pauses or []), [ticket.paused_at.isoformat(), now.isoformat()]]
        ticket.paused_at = None
    if status in PAUSED:
        ticket.paused_at = now


def customer_wrote(ticket: Ticket, now: dt.datetime, *, restart: bool = False) -> None:
    """A customer's public mail after the first response starts the next_response clock, unless an
    earlier mail already waits; ``restart`` (the mail reopened a pending or solved ticket) starts it anew."""
    if ticket.first_response_at is None:
        return
    if restart or ticket.next_response_since is None or ticket.next_response_at is not None:
        ticket.next_response_since, ticket.next_response_at = now, None


def agent_answered(ticket: Ticket, now: dt.datetime) -> None:
    """An agent's public reply went out: the first response, and the answer to what waited."""
    ticket.first_response_at = ticket.first_response_at or now
    if ticket.next_response_since is not None and ticket.next_response_at is None:
        ticket.next_response_at = now


def waiting_since(ticket: Ticket) -> dt.datetime | None:
    """Since when a customer's mail waits for an answer (None: nothing waits)."""
    return ticket.next_response_since if ticket.next_response_at is None else None


def state_of(ticket: Ticket) -> TicketClock:
    return TicketClock(
        created_at=ticket.created_at, status=ticket.status, priority=ticket.priority, queue=ticket.queue,
        first_response_at=ticket.first_response_at, next_response_since=ticket.next_response_since,
        next_response_at=ticket.next_response_at, solved_at=ticket.solved_at, paused_at=ticket.paused_at,
        pauses=pauses_of(ticket), imported=bool(ticket.imported),
    )


def pauses_of(ticket: Ticket) -> tuple[Pause, ...]:
    return tuple((dt.datetime.fromisoformat(a), dt.datetime.fromisoformat(b)) for a, b in ticket.pauses or [])


def ledger(session: Session, ticket_number: int) -> set[LedgerKey]:
    """What the notices ledger says was done for this ticket."""
    rows = session.execute(select(Notice.target, Notice.kind, Notice.level, Notice.cycle)
                           .where(Notice.ticket_number == ticket_number))
    return {(t, k, lv, c) for t, k, lv, c in rows}


def note(session: Session, ticket: Ticket, key: LedgerKey, due: dt.datetime, now: dt.datetime,
         recipients: Iterable[str] = ()) -> Notice:
    target, kind, level, cycle = key
    row = Notice(ticket_number=ticket.number, target=target, kind=kind, level=level, cycle=cycle, due_at=due,
                 created_at=now, recipients=list(recipients))
    session.add(row)
    return row


def refresh(session: Session, ticket: Ticket, keeper: Timekeeper, now: dt.datetime,
            sent: set[LedgerKey] | None = None) -> Clocks:
    """Recompute the due-time columns and ``wake_at``; record each target that stopped; plan anew a
    ticket planned under another configuration."""
    done = sent if sent is not None else ledger(session, ticket.number)
    clocks = keeper.clocks(state_of(ticket))
    if ticket.sla_plan != keeper.plan_key:
        clocks = _replan(session, ticket, keeper, clocks, done, now)
        ticket.sla_plan = keeper.plan_key
    ticket.sla_policy = clocks.policy.name if clocks.policy is not None else None
    ticket.first_response_due = clocks.due("first_response")
    ticket.next_response_due = clocks.due("next_response")
    ticket.resolution_due = clocks.due("resolution")
    _outcomes(session, ticket, clocks, done, now)
    waiting = [keeper.send_at(p, now) for p in clocks.planned if p.key not in done]
    ticket.wake_at = min(waiting) if waiting else None
    return clocks


def _outcomes(session: Session, ticket: Ticket, clocks: Clocks, done: set[LedgerKey], now: dt.datetime) -> None:
    for name, target in clocks.targets.items():
        key = (name, OUTCOME, 0, target.start)
        if key in done:
            continue
        if target.met_at is not None:
            met, at = bool(target.met_in_time), target.met_at
        elif not target.running and target.deadline <= now:
            met, at = False, None  # solved or closed without it, after its deadline
        else:
            continue
        note(session, ticket, key, target.deadline, now)
        done.add(key)
        how = "met" if met else "missed"
        when = f", done {at:%Y-%m-%d %H:%M} UTC" if at is not None else ", never done"
        repo.add_event(session, now, "sla", f"{name} {how}: due {target.deadline:%Y-%m-%d %H:%M} UTC{when}",
                       ticket_number=ticket.number,
                       data={"target": name, "due": target.deadline.isoformat(), "at": at.isoformat() if at else None,
                             "met": met, "policy": clocks.policy.name if clocks.policy else None})


def _replan(session: Session, ticket: Ticket, keeper: Timekeeper, clocks: Clocks, done: set[LedgerKey],
            now: dt.datetime) -> Clocks:
    """Planned under another configuration: what is already due is recorded, not sent late."""
    overdue = [p for p in clocks.planned if p.key not in done and p.at <= now]
    if not overdue:
        return clocks
    closing = next((p for p in overdue if p.kind in CLOSING), None)
    for planned in overdue:
        note(session, ticket, planned.key, planned.due, now)
        done.add(planned.key)
    skipped = ", ".join(f"{p.kind}" + (f" level {p.level}" if p.level else "") + f" ({p.target})"
                        for p in overdue if p is not closing)
    if skipped:
        repo.add_event(session, now, "skipped", f"planned anew under a changed configuration: {skipped} fell "
                       "due before it applied and are not sent late", ticket_number=ticket.number,
                       data={"skipped": [p.kind for p in overdue if p is not closing]})
    if closing is not None:
        before = ticket.status
        repo.add_event(session, now, "status", f"{before} -> closed: {closing.kind.replace('_', ' ')} fell due "
                       "before this configuration applied (closed without a notice)", ticket_number=ticket.number,
                       data={"from": before, "to": "closed", "reason": "replanned"})
        set_status(ticket, TicketStatus.CLOSED, now)
        ticket.updated_at = now
        return keeper.clocks(state_of(ticket))
    return clocks
