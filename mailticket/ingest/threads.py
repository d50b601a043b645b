"""Which ticket does a message belong to?

1. Our own mail coming back (its Message-ID is ours) joins its ticket; a
   delivery report joins the ticket of the returned message, when that
   message is one of ours (closed or not).
2. In-Reply-To, then References (newest first):
   - one of *our* outbound Message-IDs (signed, see marks.py, or stored as
     sent by us) joins whoever sends it: our mail went to that person, or to
     someone who forwarded it;
   - a *customer's* Message-ID joins only when the sender is already a
     participant of that ticket (or an agent); otherwise the mail starts a new
     ticket linked to the referenced one. Message-IDs are public: anyone can
     name one.
3. The subject tag, but only when the sender is a participant of that ticket
   or an agent: a stranger quoting someone else's ticket number gets a new
   ticket.
4. Otherwise a new ticket.
A ticket closed longer than [lifecycle] reopen_days ago is never reopened by mail: the message starts
a new ticket linked to it; one closed more recently is joined and reopened.
Nobody becomes a participant here: references only decide the ticket.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.domain import Direction, ParsedMail, SubjectTag, TicketStatus
from mailticket.marks import MessageIdSigner
from mailticket.store.models import Message, Participant, Ticket


@dataclass(frozen=True)
class ThreadMatch:
    ticket_number: int | None
    reason: str
    joined_by: str = ""  # "ours", "participant", "agent", "tag", "report": why the sender may join
    linked_to: int | None = None  # a referenced ticket the sender could not join


@dataclass(frozen=True)
class _Reference:
    message_id: str
    header: str  # In-Reply-To or References


def find_thread(
    session: Session, mail: ParsedMail, sender: str, sender_is_agent: bool, tag: SubjectTag,
    signer: MessageIdSigner, returned_message_id: str = "", reopen_cutoff: dt.datetime | None = None,
) -> ThreadMatch:
    """``reopen_cutoff``: a ticket closed at or after it is joined (and reopened); one closed before it, or
    when None, gets a new ticket linked to it ([lifecycle] reopen_days)."""
    if returned_message_id:
        ours = _our_ticket(session, signer, returned_message_id)
        if ours is not None:
            return ThreadMatch(ours, f"delivery report for our <{returned_message_id}> matches #{ours}", "report")
    own = _our_ticket(session, signer, mail.message_id) if signer.looks_ours(mail.message_id) else None
    if own is not None:
        return ThreadMatch(own, f"Message-ID <{mail.message_id}> is our own mail for #{own}, come back", "report")
    linked: tuple[int, str] | None = None
    refs = [_Reference(i, "In-Reply-To") for i in mail.in_reply_to]
    refs += [_Reference(i, "References") for i in reversed(mail.references)]
    seen = {mail.message_id, ""}
    unique: list[_Reference] = []
    for ref in refs:
        if ref.message_id not in seen:
            seen.add(ref.message_id)
            unique.append(ref)
    refs = unique[:200]
    if refs:
        stored = _stored(session, [r.message_id for r in refs])
        member = _member_of(session, sender, {n for found in stored.values() for n, _ in found})
        for ref in refs:
            ours = _our_ticket(session, signer, ref.message_id, stored)
            if ours is not None:
                return _open_or_new(session, reopen_cutoff, ours, f"{ref.header} <{ref.message_id}> is our mail",
                                    "ours")
            for number, _direction in stored.get(ref.message_id, []):
                if sender_is_agent:
                    return _open_or_new(session, reopen_cutoff, number,
                                        f"{ref.header} <{ref.message_id}> from agent {sender}", "agent")
                if number in member:
                    return _open_or_new(session, reopen_cutoff, number,
                                        f"{ref.header} <{ref.message_id}> from participant {sender}", "participant")
                if linked is None:
                    linked = (number, ref.message_id)
    by_tag = _by_tag(session, mail, sender, sender_is_agent, tag, reopen_cutoff)
    if by_tag.ticket_number is not None or linked is None:
        return by_tag
    number, message_id = linked
    return ThreadMatch(None, f"<{message_id}> of #{number} is referenced, but {sender or 'the sender'} is not a "
                             f"participant of #{number}: new ticket, linked to #{number}", linked_to=number)


def _stored(session: Session, ids: list[str]) -> dict[str, list[tuple[int, str]]]:
    """Message-ID -> [(ticket, direction)] of every stored message with that ID (reused IDs give several)."""
    found: dict[str, list[tuple[int, str]]] = {}
    rows = session.execute(
        select(Message.message_id, Message.ticket_number, Message.direction).where(Message.message_id.in_(ids))
        .order_by(Message.id)
    ).all()
    for message_id, number, direction in rows:
        found.setdefault(message_id, []).append((number, direction))
    return found


def _member_of(session: Session, sender: str, numbers: set[int]) -> set[int]:
    if not sender or not numbers:
        return set()
    return set(session.execute(
        select(Participant.ticket_number).where(Participant.email == sender,
                                                Participant.ticket_number.in_(sorted(numbers)))
    ).scalars())


def _our_ticket(session: Session, signer: MessageIdSigner, message_id: str,
                stored: dict[str, list[tuple[int, str]]] | None = None) -> int | None:
    """The ticket of one of our outbound mails: a signed ID, or one stored as sent by us (older mail)."""
    if stored is None:
        stored = _stored(session, [message_id])
    outbound = [number for number, direction in stored.get(message_id, []) if direction == Direction.OUT]
    if outbound:
        return outbound[0]
    signed = signer.verify(message_id)
    if signed and session.get(Ticket, signed) is not None:
        return signed
    return None


def _by_tag(session: Session, mail: ParsedMail, sender: str, sender_is_agent: bool, tag: SubjectTag,
            reopen_cutoff: dt.datetime | None) -> ThreadMatch:
    number = tag.find(mail.subject)
    if number is None:
        return ThreadMatch(None, "no known Message-ID in In-Reply-To/References and no ticket tag")
    ticket = session.get(Ticket, number)
    if ticket is None:
        return ThreadMatch(None, f"subject tag {tag.format(number)} names no ticket")
    if sender_is_agent:
        return _open_or_new(session, reopen_cutoff, number, f"subject tag {tag.format(number)} from agent {sender}",
                            "agent")
    if number not in _member_of(session, sender, {number}):
        return ThreadMatch(
            None,
            f"subject tag {tag.format(number)} ignored: {sender or 'the sender'} is not a participant of #{number}",
        )
    return _open_or_new(session, reopen_cutoff, number,
                        f"subject tag {tag.format(number)} from participant {sender}", "tag")


def merged_target(session: Session, number: int) -> int:
    """The ticket a (chain of) `#merge` moved ``number`` into; ``number`` itself when it was not merged."""
    for _hop in range(10):
        ticket = session.get(Ticket, number)
        if ticket is None or ticket.merged_into is None:
            break
        number = ticket.merged_into
    return number


def _open_or_new(session: Session, reopen_cutoff: dt.datetime | None, number: int, why: str,
                 joined_by: str) -> ThreadMatch:
    ticket = session.get(Ticket, number)
    for _hop in range(10):  # `#merge N` moved this ticket into another: its mail goes there
        if ticket is None or ticket.merged_into is None:
            break
        why = f"{why} (#{ticket.number} was merged into #{ticket.merged_into})"
        number = ticket.merged_into
        ticket = session.get(Ticket, number)
    if ticket is not None and ticket.status == TicketStatus.CLOSED:
        recent = reopen_cutoff is not None and ticket.closed_at is not None and ticket.closed_at >= reopen_cutoff
        if not recent:
            return ThreadMatch(None, f"{why} matches #{number}, which is closed (longer than [lifecycle] "
                                     "reopen_days): new ticket, linked to it", linked_to=number)
        return ThreadMatch(number, f"{why} matches #{number}, closed recently: reopened", joined_by)
    return ThreadMatch(number, f"{why} matches #{number}", joined_by)
