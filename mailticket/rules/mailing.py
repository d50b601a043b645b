"""Who a rule's ``QueueMail`` goes to, and the mail each recipient gets (the engine's one mail writer).

Audiences (``actions.AUDIENCES``): the requester (acknowledgements, through the
automatic-mail gate); the customer side of an agent's reply (To the requester, Cc
the other participants, never an agent or a support address); the agents to notify
(the assignee, else the queue's agents, else every agent; never one who is away),
each with a reply address signed for them and this ticket; and the agent who wrote
the mail at hand, at their configured address (never the mail's From).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailticket.domain import Address, Attachment, Direction, OutboxState, Role
from mailticket.marks import ReplyTokenSigner
from mailticket.outbox.queue import OutboxWriter
from mailticket.outbox.render import AttachmentLine, SlaLine
from mailticket.rules.actions import QueueMail
from mailticket.rules.facts import Facts
from mailticket.rules.limits import AutoMailGate
from mailticket.settings import AgentSettings, Settings
from mailticket.store import agents as agent_store
from mailticket.store import clocks as clock_store
from mailticket.store.models import AttachmentRow, Blob, Message, OutboxRow, Participant, Ticket

Record = Callable[..., None]


@dataclass(frozen=True)
class Sent:
    row: OutboxRow
    to: str


class Mailer:
    def __init__(self, settings: Settings, outbox: OutboxWriter, tokens: ReplyTokenSigner) -> None:
        self._settings = settings
        self._outbox = outbox
        self._tokens = tokens
        self._gate = AutoMailGate(settings.limits)

    def send(self, session: Session, rule: str, mail: QueueMail, ticket: Ticket, message: Message, facts: Facts,
             raw_id: int | None, record: Record, now: dt.datetime) -> None:
        try:
            if mail.audience == "requester":
                self._requester(session, rule, mail, ticket, message, raw_id, record, now)
            elif mail.audience == "customer":
                self._customer(session, rule, ticket, message, facts, raw_id, record, now)
            elif mail.audience == "agents":
                self._agents(session, rule, ticket, message, facts, raw_id, record, now)
            elif mail.audience == "sender_agent":
                self._sender_agent(session, rule, mail, ticket, message, facts, raw_id, record, now)
            else:  # a rule asked for an audience nobody wrote: a bug, recorded rather than raised
                record("suppressed", f"{mail.kind}: unknown audience {mail.audience!r}", rule=rule)
        except ValueError as exc:  # an address we cannot write a header for
            record("suppressed", f"{mail.kind}: {exc}", rule=rule, data={"what": mail.kind, "reason": str(exc)})

    # -- audiences ---------------------------------------------------------------

    def _requester(self, session: Session, rule: str, mail: QueueMail, ticket: Ticket, message: Message,
                   raw_id: int | None, record: Record, now: dt.datetime) -> None:
        self.to_customer(session, rule, mail.kind, ticket, record, now, answering=message, caused_by=raw_id)

    def _customer(self, session: Session, rule: str, ticket: Ticket, message: Message, facts: Facts,
                  raw_id: int | None, record: Record, now: dt.datetime) -> None:
        text = session.get(Message, facts.held) if facts.held is not None else message
        if text is None or text.ticket_number != ticket.number:
            record("suppressed", "agent_reply: the held reply is gone", rule=rule)
            return
        self.relay(session, rule, ticket, text, raw_id, record, now, answering_for=message)

    def relay(self, session: Session, rule: str, ticket: Ticket, text: Message, raw_id: int | None,
              record: Record, now: dt.datetime, answering_for: Message | None = None) -> None:
        """An agent's reply (or the held one a later mail releases) to the requester, Cc the other
        participants; the ticket's first response when it is the first."""
        message = answering_for or text
        agent = self._settings.agent_for(text.from_addr) or self._settings.agent_for(message.from_addr)
        if agent is None or not ticket.requester:
            record("suppressed", "agent_reply: no agent or no requester address", rule=rule)
            return
        support = self._settings.support_addresses
        cc = [Address(p.name, p.email) for p in session.execute(
            select(Participant).where(Participant.ticket_number == ticket.number).order_by(Participant.id)
        ).scalars() if p.email != ticket.requester and p.email not in support and not self._settings.is_agent(p.email)
            and p.role != "agent"]
        answering = self.last_customer_message(session, ticket)
        row = self._outbox.relay_reply(session, ticket=ticket, text=text, agent=Address(agent.name, agent.address),
                                       recipient=Address(ticket.requester_name, ticket.requester), cc=cc,
                                       answering=answering, attachments=_attachments(session, text)[0],
                                       caused_by=raw_id, now=now)
        if row.state != OutboxState.FAILED:
            clock_store.agent_answered(ticket, now)
            if text is not message:
                record("released", f"the held reply (message {text.id}) is sent", rule=rule,
                       data={"held": text.id})
        self._queued(session, rule, "agent_reply", row, record)

    def _agents(self, session: Session, rule: str, ticket: Ticket, message: Message, facts: Facts,
                raw_id: int | None, record: Record, now: dt.datetime) -> None:
        agents, why = self.to_notify(session, ticket)
        if not agents:
            record("suppressed", f"agent_notify: {why}", rule=rule, data={"what": "agent_notify", "reason": why})
            return
        files, lines = _attachments(session, message, self._settings.attach_max_bytes)
        note = facts.identity_problem if facts.verified is False else ""
        session.flush()
        for agent in agents:
            token = self._tokens.make(ticket.number, agent.address, now)
            reply_to = self._tokens.address(self._outbox.mailbox_of(ticket).email, token)
            row = self._outbox.notify_agent(session, ticket=ticket, about=message,
                                            agent=Address(agent.name, agent.address), language=agent.language,
                                            reply_to=reply_to, attachments=files, lines=lines, note=note,
                                            is_new=facts.created, caused_by=raw_id, now=now)
            self._queued(session, rule, "agent_notify", row, record, why)

    def _sender_agent(self, session: Session, rule: str, mail: QueueMail, ticket: Ticket, message: Message,
                      facts: Facts, raw_id: int | None, record: Record, now: dt.datetime) -> None:
        agent = self._settings.agent_for(facts.sender.email)
        if agent is None:
            return
        if mail.kind == "identity_refused":  # anyone can forge an agent's From: bound what it costs the agent
            refusal = self._gate.refusal(session, kind="identity_refused", ticket_number=ticket.number,
                                         recipient=agent.address, now=now)
            if refusal is not None:
                record("suppressed", f"identity_refused: {refusal}", rule=rule)
                return
        session.flush()  # the held message's id, for the collision mail's reply address
        sent = session.get(Message, facts.collision_with) if facts.collision_with is not None else None
        reply_to = None
        if mail.kind == "collision":
            token = self._tokens.make(ticket.number, agent.address, now, held=message.id)
            reply_to = self._tokens.address(self._outbox.mailbox_of(ticket).email, token)
        reason = facts.identity_problem
        if mail.kind == "command_error":
            if self._settings.command_receipt == "never":
                record("suppressed", "command_error: [commands] receipt = \"never\"", rule=rule)
                return
            reason = "\n".join(facts.command_errors)
        elif mail.kind == "command_receipt":
            reason = "; ".join(a.describe() for a in facts.command_actions)
        row = self._outbox.to_agent(session, kind=mail.kind, ticket=ticket, about=message,
                                    agent=Address(agent.name, agent.address), language=agent.language,
                                    reason=reason, sent=sent, reply_to=reply_to, caused_by=raw_id, now=now)
        self._queued(session, rule, mail.kind, row, record)

    # -- timed mail (the due sweep) ----------------------------------------------------

    @staticmethod
    def last_customer_message(session: Session, ticket: Ticket) -> Message | None:
        """The customer's latest public message on the ticket (what a reply answers, what a notice quotes)."""
        return session.execute(
            select(Message).where(Message.ticket_number == ticket.number, Message.direction == Direction.IN,
                                  Message.author_role == Role.CUSTOMER, Message.internal.is_(False))
            .order_by(Message.id.desc()).limit(1)
        ).scalar()

    def to_customer(self, session: Session, rule: str, kind: str, ticket: Ticket, record: Record, now: dt.datetime,
                    *, answering: Message | None = None, caused_by: int | None = None, **parts: Any
                    ) -> OutboxRow | None:
        """A templated mail to the requester (the acknowledgement, a lifecycle notice, the survey) through the
        automatic-mail gate; None when refused (the refusal is recorded). ``answering`` defaults to the
        customer's latest public message."""
        recipient = Address(ticket.requester_name, ticket.requester)
        refusal = self._gate.refusal(session, kind=kind, ticket_number=ticket.number, recipient=recipient.email,
                                     now=now)
        if refusal is None and not recipient.email:
            refusal = "the requester's address is unknown"
        if refusal is not None:
            record("suppressed", f"{kind}: {refusal}", rule=rule, data={"what": kind, "reason": refusal})
            return None
        try:
            row = self._outbox.ticket_mail(session, kind=kind, ticket=ticket, recipient=recipient,
                                           answering=answering or self.last_customer_message(session, ticket),
                                           caused_by=caused_by, now=now, **parts)
        except ValueError as exc:
            record("suppressed", f"{kind}: {exc}", rule=rule, data={"what": kind, "reason": str(exc)})
            return None
        self._queued(session, rule, kind, row, record)
        return row

    def sla_notice(self, session: Session, rule: str, kind: str, ticket: Ticket, to: Sequence[str], sla: SlaLine,
                   record: Record, now: dt.datetime) -> list[str]:
        """A reminder (``to`` empty: the assignee, else the queue's agents) or an escalation (to the policy's
        addresses); the addresses mailed. An agent gets a reply address signed for them and this ticket."""
        if to:
            recipients: list[tuple[str, AgentSettings | None]] = [(a, self._settings.agent_for(a)) for a in to]
        else:
            agents, why = self.to_notify(session, ticket)
            if not agents:
                record("suppressed", f"{kind}: {why}", rule=rule, data={"what": kind, "reason": why})
                return []
            recipients = [(a.address, a) for a in agents]
        last = self.last_customer_message(session, ticket)
        queue = self._settings.queue_for(ticket.queue)
        mailed: list[str] = []
        for address, agent in recipients:
            reply_to = None
            if agent is not None:
                reply_to = self._tokens.address(self._outbox.mailbox_of(ticket).email,
                                                self._tokens.make(ticket.number, agent.address, now))
            language = agent.language if agent is not None else queue.language if queue is not None else "en"
            try:
                row = self._outbox.sla_notice(session, kind=kind, ticket=ticket,
                                              recipient=Address(agent.name if agent else "", address),
                                              language=language, sla=sla, last=last, reply_to=reply_to, now=now)
            except ValueError as exc:
                record("suppressed", f"{kind}: {exc}", rule=rule, data={"what": kind, "reason": str(exc)})
                continue
            self._queued(session, rule, kind, row, record)
            mailed.append(address)
        return mailed

    def to_notify(self, session: Session, ticket: Ticket) -> tuple[list[AgentSettings], str]:
        """(the agents a ticket's news goes to, why them)."""
        away = agent_store.away_agents(session)
        if ticket.assignee:
            agent = self._settings.agent_for(ticket.assignee)
            if agent is not None:
                if agent.address in away:
                    return [], f"the assignee {agent.address} is away"
                return [agent], f"the assignee {agent.address}"
        queue = self._settings.queue_for(ticket.queue)
        if queue is not None and queue.agents:
            chosen = [a for a in self._settings.agents if a.address in queue.agents and a.address not in away]
            return chosen, f"the agents of queue {queue.name}" if chosen else f"every agent of {queue.name} is away"
        chosen = [a for a in self._settings.agents if a.address not in away]
        if not self._settings.agents:
            return [], "no [[agents]] are configured"
        return chosen, "every agent (the queue names none)" if chosen else "every agent is away"

    def _queued(self, session: Session, rule: str, kind: str, row: OutboxRow, record: Record,
                why: str = "") -> None:
        session.flush()  # the row's id, for the event
        data = {"kind": kind, "to": row.to_addr}
        if row.state == OutboxState.FAILED:  # the templates failed: the ticket stands, the mail does not go
            record("queue_failed", f"{kind} to {row.to_addr} not sent (outbox <{row.message_id}> failed): "
                   f"{row.last_error}", rule=rule, outbox_id=row.id, data=data)
            return
        record("queued", f"{kind} to {row.to_addr} as <{row.message_id}>: rule {rule}" + (f" ({why})" if why else ""),
               rule=rule, outbox_id=row.id, data=data)


def _attachments(session: Session, message: Message, budget: int | None = None
                 ) -> tuple[list[Attachment], list[AttachmentLine]]:
    """A message's attachments, with their content, up to ``budget`` bytes in all (the rest only named)."""
    files: list[Attachment] = []
    lines: list[AttachmentLine] = []
    used = 0
    for row in session.execute(
        select(AttachmentRow).where(AttachmentRow.message_row_id == message.id).order_by(AttachmentRow.id)
    ).scalars():
        fits = budget is None or used + row.size <= budget
        lines.append(AttachmentLine(row.filename, row.size, fits))
        if not fits:
            continue
        blob = session.get(Blob, row.sha256)
        if blob is None:
            continue
        used += row.size
        files.append(Attachment(row.filename, row.original_filename, row.content_type, blob.content, row.inline,
                                row.content_id))
    return files, lines
