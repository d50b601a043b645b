"""Queries about agents at run time: who is away, how much unsolved work each has, whose turn it is."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailticket.domain import TicketStatus
from mailticket.store.models import AgentState, QueueTurn, Ticket
from mailticket.store.repo import _insert

# "Open" work, for least_open assignment: every ticket not solved or closed yet.
UNSOLVED = (TicketStatus.NEW.value, TicketStatus.OPEN.value, TicketStatus.PENDING.value)


def away_agents(session: Session) -> set[str]:
    """The addresses of agents who set themselves away."""
    return set(session.execute(select(AgentState.address).where(AgentState.away.is_(True))).scalars())


def set_away(session: Session, address: str, away: bool, now: dt.datetime) -> None:
    """Mark an agent away (or back); creates their AgentState row on first use."""
    address = address.lower()
    statement = _insert(session, AgentState).values(address=address, away=away, updated_at=now)
    session.execute(statement.on_conflict_do_update(
        index_elements=["address"], set_={"away": away, "updated_at": now}))


def open_counts(session: Session, addresses: Iterable[str]) -> dict[str, int]:
    """address -> how many tickets assigned to it are open in the wide sense: status new, open or pending
    (not solved, not closed), in any queue. Every address asked about is in the answer, 0 if it has none."""
    wanted = sorted(set(addresses))
    counts = dict.fromkeys(wanted, 0)
    if not wanted:
        return counts
    rows = session.execute(
        select(Ticket.assignee, func.count())
        .where(Ticket.assignee.in_(wanted), Ticket.status.in_(UNSOLVED))
        .group_by(Ticket.assignee)
    ).all()
    for assignee, count in rows:
        if assignee is not None:
            counts[assignee] = int(count)
    return counts


def lock_turn(session: Session, queue: str, now: dt.datetime) -> QueueTurn:
    """The queue's turn row, created if absent, locked until the transaction ends.

    On PostgreSQL this is SELECT ... FOR UPDATE without SKIP LOCKED: a second instance
    waits here until the first commits, then reads the turn that one stored (READ
    COMMITTED re-reads the locked row). On SQLite every write transaction already holds
    the database's writer lock (BEGIN IMMEDIATE), which serializes the same way.
    """
    statement = _insert(session, QueueTurn).values(queue=queue, last_agent="", turns=0, updated_at=now)
    session.execute(statement.on_conflict_do_nothing(index_elements=["queue"]))
    return session.execute(
        select(QueueTurn)
        .where(QueueTurn.queue == queue)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def peek_turn(session: Session, queue: str) -> QueueTurn | None:
    """The queue's turn row as it stands, without creating or locking it (for previews)."""
    return session.execute(select(QueueTurn).where(QueueTurn.queue == queue)).scalar_one_or_none()
