"""What an admin does to a ticket from the CLI: a reply as an agent, or a change of its fields.

Both go through the same places as mail does (the mailer for the reply, the same
events), and every change is an event naming who made it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from mailticket.domain import PRIORITIES, Direction, Role, TicketStatus
from mailticket.errors import MailticketError
from mailticket.marks import MessageIdSigner
from mailticket.rules.mailing import Mailer
from mailticket.settings import Settings
from mailticket.sla.clocks import Timekeeper
from mailticket.store import clocks as clock_store
from mailticket.store import repo
from mailticket.store.models import Message, Ticket

UNASSIGN = "none"


class AdminError(MailticketError):
    """A request an admin can correct (an unknown ticket, agent, status...): one line, exit 64."""


@dataclass(frozen=True)
class Changes:
    status: str | None = None
    priority: str | None = None
    assignee: str | None = None  # an agent's address or alias, or "none"
    queue: str | None = None


class Admin:
    def __init__(self, settings: Settings, mailer: Mailer, signer: MessageIdSigner, keeper: Timekeeper) -> None:
        self._settings = settings
        self._keeper = keeper
        self._mailer = mailer
        self._signer = signer

    def reply(self, session: Session, number: int, agent_address: str, text: str, *, internal: bool, by: str,
              now: dt.datetime) -> Message:
        """The agent's reply (sent like one by mail) or internal note, stored on the ticket."""
        ticket = self._ticket(session, number)
        agent = self._settings.agent_for(agent_address)
        if agent is None:
            raise AdminError(f"--as {agent_address}: not an agent ([[agents]]: "
                             f"{', '.join(a.address for a in self._settings.agents) or 'none configured'})")
        if not text.strip():
            raise AdminError("the reply on stdin is empty: nothing stored, nothing sent")
        message = Message(
            ticket_number=ticket.number, raw_id=None, direction=Direction.IN,
            message_id=self._signer.new(ticket.number), in_reply_to=[], references=[],
            from_addr=agent.address, from_name=agent.name, from_header=f"{agent.name} <{agent.address}>",
            to_addrs=[], cc_addrs=[], subject=ticket.subject, date=now, text=text, visible_text=text.strip(),
            html="", author_role=Role.AGENT, verdict="human", verdict_reason=f"written with `tickets reply` by {by}",
            created_at=now, internal=internal, verified=True,
        )
        session.add(message)
        session.flush()

        def record(kind: str, detail: str, *, rule: str | None = None, outbox_id: int | None = None,
                   data: dict[str, object] | None = None) -> None:
            repo.add_event(session, now, kind, detail, ticket_number=ticket.number, message_id=message.message_id,
                           rule=rule, outbox_id=outbox_id, data={**(data or {}), "by": by, "agent": agent.address})

        kind = "internal" if internal else "reply"
        record(kind, f"{'internal note' if internal else 'reply'} by {agent.address}, entered by {by}")
        if not internal:
            self._mailer.relay(session, "tickets reply", ticket, message, None, record, now)
            if ticket.status == TicketStatus.NEW:
                self._status(session, ticket, TicketStatus.OPEN.value, by, now)
        ticket.updated_at = now
        clock_store.refresh(session, ticket, self._keeper, now)
        return message

    def change(self, session: Session, number: int, changes: Changes, *, by: str, now: dt.datetime) -> list[str]:
        """Apply the changes (all checked first: one bad value changes nothing); what changed, as lines."""
        ticket = self._ticket(session, number)
        if changes.status is not None and changes.status not in {s.value for s in TicketStatus}:
            raise AdminError(f"--status {changes.status}: one of {', '.join(s.value for s in TicketStatus)}")
        if changes.priority is not None and changes.priority not in PRIORITIES:
            raise AdminError(f"--priority {changes.priority}: one of {', '.join(PRIORITIES)}")
        assignee: str | None = None
        if changes.assignee is not None and changes.assignee.lower() != UNASSIGN:
            agent = self._settings.agent_for(changes.assignee)
            if agent is None:
                raise AdminError(f"--assignee {changes.assignee}: not an agent (or `none` to unassign)")
            assignee = agent.address
        if changes.queue is not None and changes.queue not in self._settings.queue_names:
            raise AdminError(f"--queue {changes.queue}: unknown queue ({', '.join(self._settings.queue_names)})")
        done: list[str] = []
        if changes.status is not None and changes.status != ticket.status:
            done.append(self._status(session, ticket, changes.status, by, now))
        if changes.priority is not None and changes.priority != ticket.priority:
            done.append(self._event(session, ticket, "priority", f"priority {ticket.priority} -> {changes.priority}",
                                    by, now, {"from": ticket.priority, "to": changes.priority}))
            ticket.priority = changes.priority
        if changes.assignee is not None and assignee != ticket.assignee:
            done.append(self._event(session, ticket, "assigned" if assignee else "unassigned",
                                    f"assignee {ticket.assignee or 'none'} -> {assignee or 'none'}", by, now,
                                    {"agent": assignee, "strategy": "admin"}))
            ticket.assignee = assignee
        if changes.queue is not None and changes.queue != ticket.queue:
            done.append(self._event(session, ticket, "routed", f"queue {ticket.queue} -> {changes.queue}", by, now,
                                    {"queue": changes.queue}))
            ticket.queue = changes.queue
        if done:
            ticket.updated_at = now
            clock_store.refresh(session, ticket, self._keeper, now)  # priority, queue, status: new due times
        return done

    # -- helpers -----------------------------------------------------------------

    @staticmethod
    def _ticket(session: Session, number: int) -> Ticket:
        ticket = session.get(Ticket, number, with_for_update=True)  # PostgreSQL: not while the sweep has it
        if ticket is None:
            raise AdminError(f"no ticket #{number}")
        return ticket

    def _status(self, session: Session, ticket: Ticket, status: str, by: str, now: dt.datetime) -> str:
        line = self._event(session, ticket, "status", f"{ticket.status} -> {status}", by, now,
                           {"from": ticket.status, "to": status})
        clock_store.set_status(ticket, status, now)
        return line

    @staticmethod
    def _event(session: Session, ticket: Ticket, kind: str, what: str, by: str, now: dt.datetime,
               data: dict[str, object]) -> str:
        repo.add_event(session, now, kind, f"{what}: set by {by}", ticket_number=ticket.number,
                       data={**data, "by": by})
        return what
