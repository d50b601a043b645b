"""`mailticket explain MESSAGE-ID`: the decision path of one message, from the event log."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select

from mailticket.app import App
from mailticket.store.models import Event, Message, OutboxRow, RawMessage


def explain(app: App, message_id: str) -> dict[str, Any] | None:
    """Everything recorded about the message with this Message-ID (angle brackets optional), or None."""
    wanted = message_id.strip().strip("<>").strip()
    with app.db.transaction() as session:
        raws = session.execute(
            select(RawMessage).where(RawMessage.message_id == wanted).order_by(RawMessage.id)
        ).scalars().all()
        raw = raws[0] if raws else None
        message = session.execute(
            select(Message).where(Message.message_id == wanted).order_by(Message.id)
        ).scalars().first()
        outbound = session.execute(select(OutboxRow).where(OutboxRow.message_id == wanted)).scalars().first()
        if raw is None and message is None and outbound is None:
            return None
        conditions = [Event.message_id == wanted]
        if raw is not None:
            conditions.append(Event.raw_id == raw.id)
        events = session.execute(select(Event).where(or_(*conditions)).order_by(Event.id)).scalars().all()
        queued = session.execute(
            select(OutboxRow).where(OutboxRow.message_id.in_(
                [e.detail.split("<", 1)[1].split(">", 1)[0] for e in events if e.kind == "queued" and "<" in e.detail]
            ))
        ).scalars().all()
        return {
            "message_id": wanted,
            "direction": message.direction if message else ("out" if outbound else "in"),
            "received": None if raw is None else {
                "raw_id": raw.id, "source": raw.source, "state": raw.state, "received_at": raw.received_at.isoformat(),
                "mail_from": raw.mail_from, "recipients": raw.recipients, "error": raw.error,
            },
            "ticket": message.ticket_number if message else (outbound.ticket_number if outbound else None),
            "from": message.from_addr if message else None,
            "subject": message.subject if message else (outbound.subject if outbound else None),
            "verdict": message.verdict if message else None,
            "verdict_reason": message.verdict_reason if message else None,
            "same_message_id": [{"raw_id": r.id, "ticket": r.ticket_number} for r in raws[1:]],
            "steps": [{"at": e.created_at.isoformat(), "kind": e.kind, "detail": e.detail} for e in events],
            "mails": [{"id": r.id, "kind": r.kind, "to": r.to_addr, "state": r.state, "message_id": r.message_id,
                       "last_error": r.last_error} for r in queued],
            "outbox": None if outbound is None else {
                "id": outbound.id, "kind": outbound.kind, "to": outbound.to_addr, "state": outbound.state,
                "attempts": outbound.attempts, "last_error": outbound.last_error,
            },
        }
