"""Write a ticket's clocks: status changes with their pauses, who answered, and the due-time columns.

Every place that changes a ticket's status goes through ``set_status`` (solved_at, closed_at and the
pause bookkeeping live only here); ``customer_wrote`` and ``agent_answered`` move the response clocks;
``refresh`` recomputes the due times (``mailticket.sla.clocks``) and ``wake_at``, the next instant the
due sweep must look at the ticket, from what the notices ledger says was already sent. It is called at
the end of every transaction that changed a ticket, so the columns never lag behind the row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.domain import TicketStatus
from mailticket.sla.clocks import PAUSED, TARGETS, Clocks, Pause, TicketClock, Timekeeper
from mailticket.store import repo
from mailticket.store.models import Notice, Ticket

LedgerKey = tuple[str, str, int, dt.datetime]


def set_status(ticket: Ticket, status: str, now: dt.datetime) -> None:
    """The new status, with solved_at/closed_at, and the pause it opens or ends."""
    before = ticket.status
    ticket.status = status
    ticket.solved_at = now if status == TicketStatus.SOLVED else (
        ticket.solved_at if status == TicketStatus.CLOSED else None)
    ticket.closed_at = now if status == TicketStatus.CLOSED else None
    if ticket.paused_at is not None and (status not in PAUSED or status != before):
        # the pause ends (or one paused status follows another: each spell is its own, for its timers)
        ticket.pauses = [*(ticket.pauses or []), [ticket.paused_at.isoformat(), now.isoformat()]]
        ticket.paused_at = None
    if status in PAUSED and ticket.paused_at is None:
        ticket.paused_at = now


def customer_wrote(ticket: Ticket, now: dt.datetime) -> None:
    """A customer's public mail: after the first response, it starts the next_response clock (once)."""
    if ticket.first_response_at is not None and ticket.next_response_since is None:
        ticket.next_response_since = now


def agent_answered(ticket: Ticket, now: dt.datetime) -> None:
    """An agent's public reply went out: the first response, and the answer to what waited."""
    ticket.first_response_at = ticket.first_response_at or now
    ticket.next_response_since = None


def state_of(ticket: Ticket) -> TicketClock:
    return TicketClock(
        created_at=ticket.created_at, status=ticket.status, priority=ticket.priority, queue=ticket.queue,
        first_response_at=ticket.first_response_at, next_response_since=ticket.next_response_since,
        solved_at=ticket.solved_at, paused_at=ticket.paused_at, pauses=pauses_of(ticket),
        imported=bool(ticket.imported),
    )


def pauses_of(ticket: Ticket) -> tuple[Pause, ...]:
    return tuple((dt.datetime.fromisoformat(a), dt.datetime.fromisoformat(b)) for a, b in ticket.pauses or [])


def ledger(session: Session, ticket_number: int) -> set[LedgerKey]:
    """What the notices ledger says was sent for this ticket."""
    rows = session.execute(select(Notice.target, Notice.kind, Notice.level, Notice.cycle)
                           .where(Notice.ticket_number == ticket_number))
    return {(t, k, lv, _aware(c)) for t, k, lv, c in rows}


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


def refresh(session: Session, ticket: Ticket, keeper: Timekeeper, now: dt.datetime,
            sent: Iterable[LedgerKey] | None = None) -> Clocks:
    """Recompute the due-time columns and ``wake_at``; record each target that stopped running as met
    (in time or late)."""
    before = {"first_response": ticket.first_response_due, "next_response": ticket.next_response_due,
              "resolution": ticket.resolution_due}
    clocks = keeper.clocks(state_of(ticket))
    ticket.sla_policy = clocks.policy.name if clocks.policy is not None else None
    ticket.first_response_due = clocks.due("first_response")
    ticket.next_response_due = clocks.due("next_response")
    ticket.resolution_due = clocks.due("resolution")
    for name in TARGETS:
        due = before[name]
        target = clocks.targets.get(name)
        if due is None or (target is not None and target.running):
            continue
        if target is not None and target.met_at is None:
            continue  # stopped without being met (closed unanswered): not counted either way
        met_at = target.met_at if target is not None and target.met_at is not None else now
        late = met_at > due
        repo.add_event(session, now, "sla", f"{name} {'missed' if late else 'met'}: due "
                       f"{due:%Y-%m-%d %H:%M} UTC, done {met_at:%Y-%m-%d %H:%M} UTC", ticket_number=ticket.number,
                       data={"target": name, "due": due.isoformat(), "at": met_at.isoformat(), "met": not late,
                             "policy": ticket.sla_policy})
    done = set(sent) if sent is not None else ledger(session, ticket.number) if ticket.number is not None else set()
    waiting = [keeper.send_at(p, now) for p in clocks.planned if p.key not in done]
    ticket.wake_at = min(waiting) if waiting else None
    return clocks
