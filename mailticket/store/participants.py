"""Changes to who takes part in a ticket, and merging one ticket into another (an agent's commands)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailticket.domain import TicketStatus
from mailticket.store import clocks
from mailticket.store.models import Message, OutboxRow, Participant, RawMessage, Ticket


def change_cc(session: Session, ticket: int, add: Iterable[str], remove: Iterable[str]) -> None:
    existing = {p.email: p for p in session.execute(
        select(Participant).where(Participant.ticket_number == ticket)).scalars()}
    for address in add:
        if address not in existing:
            session.add(Participant(ticket_number=ticket, email=address, name="", role="cc"))
    for address in remove:
        row = existing.get(address)
        if row is not None and row.role != "requester":
            session.delete(row)


def merge(session: Session, ticket: Ticket, into: int, now: dt.datetime) -> str:
    """Move ``ticket``'s messages, participants and tags into ticket ``into``; ``ticket`` is closed and
    points there (``merged_into``), so mail for it lands in ``into``. Returns what moved, as one line."""
    target = session.get_one(Ticket, into, with_for_update=True)  # PostgreSQL: the sweep skips it meanwhile
    session.flush()
    messages = len(session.execute(select(Message.id).where(Message.ticket_number == ticket.number)).all())
    session.execute(update(Message).where(Message.ticket_number == ticket.number).values(ticket_number=into))
    session.execute(update(RawMessage).where(RawMessage.ticket_number == ticket.number).values(ticket_number=into))
    session.execute(update(OutboxRow).where(OutboxRow.ticket_number == ticket.number).values(ticket_number=into))
    have = set(session.execute(select(Participant.email).where(Participant.ticket_number == into)).scalars())
    moved = 0
    for row in session.execute(select(Participant).where(Participant.ticket_number == ticket.number)).scalars():
        if row.email in have:
            session.delete(row)
            continue
        row.ticket_number = into
        row.role = "cc" if row.role == "requester" else row.role
        moved += 1
    target.tags = list(dict.fromkeys([*target.tags, *ticket.tags]))
    target.updated_at = now
    ticket.merged_into = into
    clocks.set_status(ticket, TicketStatus.CLOSED, now)
    ticket.updated_at = now
    session.expire(ticket, ["messages", "participants"])
    # events stay where they were written: each ticket keeps its own history
    return f"{messages} messages, {moved} participants, tags {', '.join(ticket.tags) or '-'}"
