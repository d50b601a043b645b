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
from typing import Any

from sqlalchemy.orm import Session

from mailticket.domain import Address, Direction, OutboxState, Role, SubjectTag
from mailticket.marks import MessageIdSigner
from mailticket.outbox.compose import Composed, compose
from mailticket.outbox.render import Renderer, RenderError, mail_context
from mailticket.settings import Settings
from mailticket.store.models import Message, OutboxRow, Ticket
from mailticket.text import clean_line

log = logging.getLogger(__name__)


class OutboxWriter:
    def __init__(self, renderer: Renderer, signer: MessageIdSigner, settings: Settings) -> None:
        self._renderer = renderer
        self._signer = signer
        self._settings = settings
        self._loop_token = settings.loop_token
        self._tag = SubjectTag(settings.subject_tag_prefix)

    def ticket_mail(self, session: Session, *, kind: str, ticket: Ticket, recipient: Address,
                    answering: Message | None, caused_by: int | None, now: dt.datetime) -> OutboxRow:
        """A templated mail about a ticket, from the ticket's support mailbox: subject, tag and context
        are made here, the one place that knows them. ValueError for an address no header can carry."""
        mailbox = self._settings.mailbox_for(ticket.mailbox) or self._settings.mailboxes[0]
        sender = Address(mailbox.name, mailbox.address)
        tag = self._tag.format(ticket.number)
        context = mail_context(ticket_number=ticket.number, ticket_subject=ticket.subject, tag=tag,
                               status=ticket.status, customer=recipient, mailbox=sender)
        queue = self._settings.queue_for(ticket.queue)
        return self.queue(session, kind=kind, ticket=ticket, sender=sender, recipient=recipient,
                          subject=f"{tag} {ticket.subject}", context=context, answering=answering,
                          caused_by=caused_by, now=now, language=queue.language if queue else "en")

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
        )
        row = OutboxRow(
            ticket_number=ticket.number,
            kind=kind,
            to_addr=recipient.email,
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
                cc_addrs=[],
                subject=composed.subject,
                date=now,
                text=text,
                visible_text=text,
                html=html,
                author_role=Role.SYSTEM,
                verdict="",
                verdict_reason=f"outbound {kind}",
                created_at=now,
            )
        )
        return row

    def _failed(self, session: Session, *, kind: str, ticket: Ticket, recipient: Address, subject: str,
                error: str, now: dt.datetime, caused_by: int | None) -> OutboxRow:
        row = OutboxRow(
            ticket_number=ticket.number,
            kind=kind,
            to_addr=recipient.email,
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
