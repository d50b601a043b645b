"""Write outbound mail into the outbox, inside the caller's transaction.

The outbox row and the outbound Message row (so replies to it thread) are
added to the same session as the ticket change that caused them: both
commit together or not at all.

A template that fails to render at run time (an override file changed after
start-up, a value a template cannot handle) never costs the ticket: the mail
becomes an outbox row in state ``failed`` with the one-line error, no content
and no outbound Message row, the sender never takes it (it only takes
``queued`` rows), and an error line is logged.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from mailticket.domain import Address, Attachment, Direction, OutboxState, Role, SubjectTag
from mailticket.marks import MessageIdSigner
from mailticket.outbox.compose import Composed, compose
from mailticket.outbox.render import AttachmentLine, Renderer, RenderError, SlaLine, mail_context
from mailticket.settings import Settings
from mailticket.store.models import Message, OutboxRow, Ticket
from mailticket.text import clean_line

log = logging.getLogger(__name__)


def _date(message: Message) -> str:
    when = message.date or message.created_at
    return when.strftime("%Y-%m-%d %H:%M UTC") if when is not None else ""


class OutboxWriter:
    def __init__(self, renderer: Renderer, signer: MessageIdSigner, settings: Settings) -> None:
        self._renderer = renderer
        self._signer = signer
        self._settings = settings
        self._loop_token = settings.loop_token
        self._tag = SubjectTag(settings.subject_tag_prefix)

    def mailbox_of(self, ticket: Ticket) -> Address:
        mailbox = self._settings.mailbox_for(ticket.mailbox) or self._settings.mailboxes[0]
        return Address(mailbox.name, mailbox.address)

    def customer_language(self, ticket: Ticket) -> str:
        """The ticket's customer's language: their own when their mail said so, else the queue's, else en."""
        if ticket.language:
            return ticket.language
        queue = self._settings.queue_for(ticket.queue)
        return queue.language if queue else "en"

    def _context(self, ticket: Ticket, customer: Address, **parts: Any) -> dict[str, Any]:
        return mail_context(ticket_number=ticket.number, ticket_subject=ticket.subject,
                            tag=self._tag.format(ticket.number), status=ticket.status, customer=customer,
                            mailbox=self.mailbox_of(ticket), priority=ticket.priority, queue=ticket.queue,
                            requester=Address(ticket.requester_name, ticket.requester), linked_to=ticket.linked_to,
                            **parts)

    def subject_of(self, ticket: Ticket) -> str:
        """The subject of our mail about a ticket: its tag, then its subject."""
        return f"{self._tag.format(ticket.number)} {ticket.subject}"

    def ticket_mail(self, session: Session, *, kind: str, ticket: Ticket, recipient: Address,
                    answering: Message | None, caused_by: int | None, now: dt.datetime, **parts: Any) -> OutboxRow:
        """A templated mail to the customer about a ticket (the acknowledgement, lifecycle notices, the
        survey), from its support mailbox: subject, tag and context are made here, the one place that knows
        them; ``parts`` are further ``mail_context`` values. ValueError for an address no header can carry."""
        context = self._context(ticket, recipient, **parts)
        return self.queue(session, kind=kind, ticket=ticket, sender=self.mailbox_of(ticket), recipient=recipient,
                          subject=self.subject_of(ticket), context=context, answering=answering,
                          caused_by=caused_by, now=now, language=self.customer_language(ticket))

    def notify_agent(self, session: Session, *, ticket: Ticket, about: Message, agent: Address, language: str,
                     reply_to: str, attachments: Sequence[Attachment], lines: Sequence[AttachmentLine],
                     note: str, is_new: bool, caused_by: int | None, now: dt.datetime) -> OutboxRow:
        """A notification: From "Customer via Mailbox", Reply-To the agent's signed reply address."""
        mailbox = self.mailbox_of(ticket)
        customer = Address(about.from_name, about.from_addr)
        who = about.from_name or about.from_addr or "(sender unknown)"
        context = self._context(ticket, customer, agent=agent, message_from=customer, message_text=about.visible_text,
                                verified=about.verified, note=note,
                                is_new_ticket=is_new, date=_date(about), attachments=lines,
                                language=language)
        return self.queue(session, kind="agent_notify", ticket=ticket, sender=Address(f"{who} via {mailbox.name}",
                          mailbox.email), recipient=agent, subject=self.subject_of(ticket), context=context,
                          answering=about, caused_by=caused_by, now=now, language=language,
                          reply_to=Address(mailbox.name, reply_to), attachments=attachments,
                          auto_submitted="auto-generated", internal=True)

    def relay_reply(self, session: Session, *, ticket: Ticket, text: Message, agent: Address, recipient: Address,
                    cc: Sequence[Address], answering: Message | None, attachments: Sequence[Attachment],
                    caused_by: int | None, now: dt.datetime) -> OutboxRow:
        """An agent's reply to the customer: From "<agent display>" <support@>, no Auto-Submitted."""
        mailbox_settings = self._settings.mailbox_for(ticket.mailbox) or self._settings.mailboxes[0]
        display = mailbox_settings.agent_display.format(agent=agent.name or agent.email, mailbox=mailbox_settings.name)
        language = self.customer_language(ticket)
        context = self._context(ticket, recipient, agent=agent, message_from=agent, message_text=text.visible_text,
                                verified=True, date=_date(text), language=language)
        return self.queue(session, kind="agent_reply", ticket=ticket, sender=Address(display, mailbox_settings.address),
                          recipient=recipient, subject=self.subject_of(ticket), context=context, answering=answering,
                          caused_by=caused_by, now=now, language=language, cc=cc, attachments=attachments,
                          auto_submitted="", author_role=Role.AGENT)

    def sla_notice(self, session: Session, *, kind: str, ticket: Ticket, recipient: Address, language: str,
                   sla: SlaLine, last: Message | None, reply_to: str | None, now: dt.datetime) -> OutboxRow:
        """sla_reminder and sla_escalation: to an agent or a lead, about a ticket's target, with the
        customer's last visible text; Reply-To the agent's signed reply address when there is one."""
        mailbox = self.mailbox_of(ticket)
        customer = Address(ticket.requester_name, ticket.requester)
        author = Address(last.from_name, last.from_addr) if last is not None else Address("", "")
        context = self._context(ticket, customer, agent=recipient, message_from=author,
                                message_text=last.visible_text if last is not None else "",
                                date=_date(last) if last is not None else "", language=language, sla=sla)
        return self.queue(session, kind=kind, ticket=ticket, sender=mailbox, recipient=recipient,
                          subject=self.subject_of(ticket), context=context, answering=last, now=now, language=language,
                          reply_to=Address(mailbox.name, reply_to) if reply_to else None,
                          auto_submitted="auto-generated", internal=True)

    def to_agent(self, session: Session, *, kind: str, ticket: Ticket, about: Message, agent: Address,
                 language: str, reason: str = "", sent: Message | None = None, reply_to: str | None = None,
                 caused_by: int | None, now: dt.datetime) -> OutboxRow:
        """identity_refused and collision: to the agent's configured address, about their own mail."""
        mailbox = self.mailbox_of(ticket)
        customer = Address(ticket.requester_name, ticket.requester)
        context = self._context(
            ticket, customer, agent=agent, message_from=Address(about.from_name, about.from_addr),
            message_text=about.visible_text, verified=about.verified, date=_date(about), language=language,
            reason=reason, sent_from_name=(sent.from_name or sent.from_addr) if sent else "",
            sent_text=sent.visible_text if sent else "", sent_date=_date(sent) if sent else "",
            held_text=about.visible_text if kind == "collision" else "")
        return self.queue(session, kind=kind, ticket=ticket, sender=mailbox, recipient=agent,
                          subject=self.subject_of(ticket), context=context, answering=about, caused_by=caused_by,
                          now=now, language=language, reply_to=Address(mailbox.name, reply_to) if reply_to else None,
                          auto_submitted="auto-generated", internal=True)

    def queue(
        self,
        session: Session,
        *,
        kind: str,
        ticket: Ticket,
        sender: Address,
        recipient: Address,
        subject: str,
        context: dict[str, Any],
        answering: Message | None,
        now: dt.datetime,
        caused_by: int | None = None,
        language: str = "en",
        cc: Sequence[Address] = (),
        reply_to: Address | None = None,
        attachments: Sequence[Attachment] = (),
        auto_submitted: str = "auto-replied",
        internal: bool = False,
        author_role: Role = Role.SYSTEM,
    ) -> OutboxRow:
        """The queued row; a row in state 'failed' (``last_error`` says why) when the templates fail."""
        try:
            text, html = self._renderer.render(kind, context, language)
        except RenderError as exc:
            return self._failed(session, kind=kind, ticket=ticket, recipient=recipient, subject=subject,
                                error=str(exc), now=now, caused_by=caused_by)
        composed: Composed = compose(
            sender=sender,
            recipient=recipient,
            subject=subject,
            text=text,
            html=html,
            message_id=self._signer.new(ticket.number),
            loop_token=self._loop_token,
            now=now,
            in_reply_to=answering.message_id if answering is not None else "",
            references=tuple(answering.references) if answering is not None else (),
            reply_to=reply_to,
            cc=cc,
            attachments=attachments,
            auto_submitted=auto_submitted,
        )
        row = OutboxRow(
            ticket_number=ticket.number,
            kind=kind,
            to_addr=recipient.email,
            cc_addrs=[a.email for a in cc],
            subject=composed.subject,
            message_id=composed.message_id,
            content=composed.content,
            state=OutboxState.QUEUED,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            caused_by=caused_by,
        )
        session.add(row)
        session.add(
            Message(
                ticket_number=ticket.number,
                direction=Direction.OUT,
                message_id=composed.message_id,
                in_reply_to=[answering.message_id] if answering is not None and answering.message_id else [],
                references=[],
                from_addr=sender.email,
                from_name=sender.name,
                to_addrs=[recipient.email],
                cc_addrs=[a.email for a in cc],
                subject=composed.subject,
                date=now,
                text=text,
                visible_text=text,
                html=html,
                author_role=author_role,
                verdict="",
                verdict_reason=f"outbound {kind}",
                created_at=now,
                internal=internal,
            )
        )
        return row

    def _failed(self, session: Session, *, kind: str, ticket: Ticket, recipient: Address, subject: str,
                error: str, now: dt.datetime, caused_by: int | None) -> OutboxRow:
        row = OutboxRow(
            ticket_number=ticket.number,
            kind=kind,
            to_addr=recipient.email,
            cc_addrs=[],
            subject=clean_line(subject)[:900],
            message_id=self._signer.new(ticket.number),
            content=b"",  # nothing was rendered: never sendable, not even by `outbox retry`
            state=OutboxState.FAILED,
            attempts=0,
            next_attempt_at=now,
            last_error=error,
            created_at=now,
            caused_by=caused_by,
        )
        session.add(row)
        log.error("ticket #%d: %s to %s not sent, rendering failed: %s", ticket.number, kind, recipient.email,
                  error)
        return row
