"""Which ticket does a message belong to?

1. In-Reply-To, then References (newest first), against every Message-ID we
   stored or sent.
2. The subject tag, but only when the sender is a participant of that ticket
   or an agent: a stranger quoting someone else's ticket number gets a new
   ticket.
3. Otherwise a new ticket.
A closed ticket is never reopened by mail: the message starts a new ticket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.domain import ParsedMail, TicketStatus
from mailticket.store.models import Message, Participant, Ticket

_REPLY_PREFIX = re.compile(
    r"^\s*((re|fwd?|aw|wg|sv|vs|antw|antwort|tr|rv|rif|odp|vl|ynt|res|enc)\s*(\[\d+\]|\(\d+\))?\s*[:：]\s*)+",
    re.I,
)


@dataclass(frozen=True)
class SubjectTag:
    """The ticket tag in subjects: ``[#42]`` or, with a prefix, ``[Support #42]``."""

    prefix: str = ""

    @property
    def pattern(self) -> re.Pattern[str]:
        prefix = re.escape(self.prefix) + r"\s*" if self.prefix else ""
        return re.compile(r"\[" + prefix + r"#(\d{1,12})\]", re.I)

    def format(self, number: int) -> str:
        return f"[{self.prefix} #{number}]" if self.prefix else f"[#{number}]"

    def find(self, subject: str) -> int | None:
        match = self.pattern.search(subject)
        return int(match.group(1)) if match else None

    def strip(self, subject: str) -> str:
        """The subject without reply prefixes and without our tag."""
        previous = None
        while previous != subject:
            previous = subject
            subject = _REPLY_PREFIX.sub("", subject)
            subject = self.pattern.sub("", subject).strip()
        return re.sub(r"\s+", " ", subject).strip()


@dataclass(frozen=True)
class ThreadMatch:
    ticket_number: int | None
    reason: str


def find_thread(
    session: Session, mail: ParsedMail, sender: str, sender_is_agent: bool, tag: SubjectTag,
    returned_message_id: str = "",
) -> ThreadMatch:
    if returned_message_id:
        # A delivery report about one of our mails belongs to that mail's ticket, closed or not.
        number = session.execute(
            select(Message.ticket_number).where(Message.message_id == returned_message_id)
        ).scalar()
        if number is not None:
            return ThreadMatch(number, f"delivery report for <{returned_message_id}> matches #{number}")
    ids = list(dict.fromkeys([*mail.in_reply_to, *reversed(mail.references)]))
    ids = [i for i in ids if i and i != mail.message_id]
    if ids:
        rows = session.execute(
            select(Message.message_id, Message.ticket_number).where(Message.message_id.in_(ids[:200]))
        ).all()
        found = dict(rows)
        for candidate in ids:
            if candidate in found:
                header = "In-Reply-To" if candidate in mail.in_reply_to else "References"
                return _open_or_new(session, found[candidate], f"{header} <{candidate}>")
    number = tag.find(mail.subject)
    if number is None:
        return ThreadMatch(None, "no known Message-ID in In-Reply-To/References and no ticket tag")
    ticket = session.get(Ticket, number)
    if ticket is None:
        return ThreadMatch(None, f"subject tag {tag.format(number)} names no ticket")
    if sender_is_agent:
        return _open_or_new(session, number, f"subject tag {tag.format(number)} from agent {sender}")
    participant = session.execute(
        select(Participant.id).where(Participant.ticket_number == number, Participant.email == sender)
    ).first()
    if participant is None:
        return ThreadMatch(
            None,
            f"subject tag {tag.format(number)} ignored: {sender or 'the sender'} is not a participant of #{number}",
        )
    return _open_or_new(session, number, f"subject tag {tag.format(number)} from participant {sender}")


def _open_or_new(session: Session, number: int, why: str) -> ThreadMatch:
    ticket = session.get(Ticket, number)
    if ticket is not None and ticket.status == TicketStatus.CLOSED:
        return ThreadMatch(None, f"{why} matches #{number}, which is closed: new ticket")
    return ThreadMatch(number, f"{why} matches #{number}")
