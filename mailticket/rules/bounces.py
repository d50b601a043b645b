"""What a delivery report changes: an event per failed recipient; a permanent failure suppresses
automatic mail to that address for a while (a temporary one is only recorded)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from mailticket.domain import BounceReport
from mailticket.store import repo
from mailticket.store.models import AddressSuppression


def record_bounce(session: Session, report: BounceReport, ticket_number: int, message_id: str,
                  now: dt.datetime, suppress_days: float) -> None:
    original = f" for <{report.original_message_id}>" if report.original_message_id else ""
    if not report.recipients:
        repo.add_event(session, now, "bounce", f"delivery report{original}: {report.describe()}",
                       ticket_number=ticket_number, message_id=message_id)
        return
    for recipient in report.recipients[:50]:
        kind = "permanent" if recipient.permanent else ("failed" if recipient.failed else "temporary")
        detail = (f"{recipient.address}: {kind} ({recipient.status or recipient.action or 'no status'})"
                  f"{original}: {recipient.diagnostic or 'no diagnostic'}")
        repo.add_event(session, now, "bounce", detail[:2000], ticket_number=ticket_number, message_id=message_id)
        if not recipient.permanent or suppress_days <= 0 or not recipient.address:
            continue
        until = now + dt.timedelta(days=suppress_days)
        reason = f"{recipient.status or 'failed'} {recipient.diagnostic}".strip()[:1000]
        row = session.get(AddressSuppression, recipient.address)
        if row is None:
            session.add(AddressSuppression(address=recipient.address, reason=reason, status=recipient.status,
                                           source_message_id=message_id[:1000], created_at=now, until=until))
        else:
            row.reason, row.status, row.source_message_id, row.until = reason, recipient.status, message_id, until
        repo.add_event(session, now, "suppressed_address",
                       f"{recipient.address}: no automatic mail until {until:%Y-%m-%d %H:%M} UTC",
                       ticket_number=ticket_number, message_id=message_id)
