"""Write outbound mail into the outbox, inside the caller's transaction.

The outbox row and the outbound Message row (so replies to it thread) are
added to the same session as the ticket change that caused them: both
commit together or not at all.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from mailticket.domain import Address, Direction, OutboxState, Role
from mailticket.marks import MessageIdSigner
from mailticket.outbox.compose import Composed, compose
from mailticket.outbox.render import Renderer
from mailticket.store.models import Message, OutboxRow, Ticket


class OutboxWriter:
    def __init__(self, renderer: Renderer, signer: MessageIdSigner, loop_token: str) -> None:
        self._renderer = renderer
        self._signer = signer
        self._loop_token = loop_token

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
    ) -> OutboxRow:
        text, html = self._renderer.render(kind, context)
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
