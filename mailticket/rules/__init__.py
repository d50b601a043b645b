"""Reactions to a stored message, decided as data, then carried out.

``decide`` is pure: it looks at the facts of one message and returns
actions, each with the reason it was taken. ``Rules.apply`` carries them out
inside the message's transaction and records every decision as an event,
including mail that was deliberately not sent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from mailticket.domain import Address, OutboxState, ParsedMail, TicketStatus, Verdict
from mailticket.ingest.threads import SubjectTag
from mailticket.outbox.queue import OutboxWriter
from mailticket.outbox.render import mail_context
from mailticket.rules.limits import AutoMailGate
from mailticket.settings import Settings
from mailticket.store import repo
from mailticket.store.models import Message, Ticket


@dataclass(frozen=True)
class Facts:
    created: bool
    verdict: Verdict
    is_agent: bool
    sender: str
    status: TicketStatus
    acknowledge_new: bool
    sender_is_support: bool
    imported: bool = False  # came in by `mailticket import`: history, not a new request


@dataclass(frozen=True)
class SetStatus:
    status: TicketStatus
    reason: str


@dataclass(frozen=True)
class QueueMail:
    kind: str
    reason: str


@dataclass(frozen=True)
class Suppress:
    kind: str
    reason: str


Action = SetStatus | QueueMail | Suppress


def decide(facts: Facts) -> list[Action]:
    actions: list[Action] = []
    machine = not facts.verdict.is_human
    if not facts.created:
        if machine:
            actions.append(Suppress("status", f"{facts.verdict.kind} mail does not change the ticket's status"))
        elif not facts.is_agent and facts.status in (TicketStatus.PENDING, TicketStatus.SOLVED):
            actions.append(SetStatus(TicketStatus.OPEN, f"customer replied to a {facts.status} ticket"))
        return actions
    if machine:
        actions.append(Suppress("ack_new", f"{facts.verdict.kind} ({facts.verdict.reason}): never answer a machine"))
    elif facts.is_agent:
        actions.append(Suppress("ack_new", f"{facts.sender} is an agent"))
    elif facts.sender_is_support or not facts.sender:
        actions.append(Suppress("ack_new", f"sender {facts.sender or '(none)'} is not a customer address"))
    elif facts.imported:
        actions.append(Suppress("ack_new", "imported by `mailticket import`: old mail is not acknowledged"))
    elif not facts.acknowledge_new:
        actions.append(Suppress("ack_new", "acknowledgements are off (mail.acknowledge_new = false)"))
    else:
        actions.append(QueueMail("ack_new", "new ticket from a human customer"))
    return actions


class Rules:
    def __init__(self, settings: Settings, outbox: OutboxWriter) -> None:
        self._settings = settings
        self._outbox = outbox
        self._tag = SubjectTag(settings.subject_tag_prefix)
        self._gate = AutoMailGate(settings.limits)

    def apply(self, session: Session, *, ticket: Ticket, message: Message, mail: ParsedMail, sender: Address,
              verdict: Verdict, created: bool, is_agent: bool, now: dt.datetime, source: str) -> list[Action]:
        facts = Facts(
            created=created,
            verdict=verdict,
            is_agent=is_agent,
            sender=sender.email,
            status=TicketStatus(ticket.status),
            acknowledge_new=self._settings.acknowledge_new,
            sender_is_support=self._settings.mailbox_for(sender.email) is not None if sender.email else False,
            imported=source == "import",
        )
        if verdict.is_human:
            ticket.updated_at = now
        actions = decide(facts)
        for action in actions:
            self._carry_out(session, action, ticket, message, sender, now)
        return actions

    def _carry_out(self, session: Session, action: Action, ticket: Ticket, message: Message,
                   sender: Address, now: dt.datetime) -> None:
        mid = message.message_id
        if isinstance(action, SetStatus):
            repo.add_event(session, now, "status", f"{ticket.status} -> {action.status}: {action.reason}",
                           ticket_number=ticket.number, message_id=mid)
            ticket.status = action.status
            ticket.solved_at = None
        elif isinstance(action, Suppress):
            repo.add_event(session, now, "suppressed", f"{action.kind}: {action.reason}",
                           ticket_number=ticket.number, message_id=mid)
        else:
            self._queue(session, action, ticket, message, sender, now)

    def _queue(self, session: Session, action: QueueMail, ticket: Ticket, message: Message,
               sender: Address, now: dt.datetime) -> None:
        refusal = self._gate.refusal(session, kind=action.kind, ticket_number=ticket.number, recipient=sender.email,
                                     now=now)
        if refusal is not None:
            repo.add_event(session, now, "suppressed", f"{action.kind}: {refusal}",
                           ticket_number=ticket.number, message_id=message.message_id)
            return
        mailbox = self._settings.mailbox_for(ticket.mailbox) or self._settings.mailboxes[0]
        tag = self._tag.format(ticket.number)
        from_address = Address(mailbox.name, mailbox.address)
        context = mail_context(ticket_number=ticket.number, ticket_subject=ticket.subject, tag=tag,
                               status=ticket.status, customer=sender, mailbox=from_address)
        try:
            row = self._outbox.queue(
                session, kind=action.kind, ticket=ticket, sender=from_address,
                recipient=sender, subject=f"{tag} {ticket.subject}", context=context, answering=message, now=now,
            )
        except ValueError as exc:  # an address we cannot write a header for
            repo.add_event(session, now, "suppressed", f"{action.kind}: {exc}",
                           ticket_number=ticket.number, message_id=message.message_id)
            return
        if row.state == OutboxState.FAILED:  # the templates failed: the ticket stands, the mail does not go
            detail = f"{action.kind} to {sender.email} not sent (outbox <{row.message_id}> failed): {row.last_error}"
            repo.add_event(session, now, "queue_failed", detail, ticket_number=ticket.number,
                           message_id=message.message_id)
            return
        detail = f"{action.kind} to {sender.email} as <{row.message_id}>: {action.reason}"
        repo.add_event(session, now, "queued", detail, ticket_number=ticket.number, message_id=message.message_id)
