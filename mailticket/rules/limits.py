"""The last gate before automatic mail is queued: who may get it, and how much.

Every refusal comes back as a reason, which the caller records; nothing is
dropped silently. Checked in order: no-auto-reply addresses, addresses
suppressed after a permanent delivery failure, at most one acknowledgement
per ticket, and the per-recipient rate ladder over every automatic kind.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailticket.settings import LimitSettings
from mailticket.store.models import AddressSuppression, OutboxRow

# Automatic mail to customers (and identity_refused, which anyone can make us send): the rate ladder counts these.
AUTO_KINDS = frozenset({"ack_new", "pending_reminder", "pending_closed", "solved_closed", "csat_survey",
                        "identity_refused"})
ONCE_PER_TICKET = frozenset({"ack_new"})


def _period(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class AutoMailGate:
    def __init__(self, limits: LimitSettings) -> None:
        self._limits = limits
        self._patterns = [(p, re.compile(p, re.I)) for p in limits.no_auto_reply]

    def refusal(self, session: Session, *, kind: str, ticket_number: int, recipient: str,
                now: dt.datetime) -> str | None:
        """None when the mail may be queued; else why not."""
        address = recipient.lower()
        local = address.partition("@")[0]
        for source, pattern in self._patterns:
            if pattern.fullmatch(local):
                return f"{address} is a no-auto-reply address (limits.no_auto_reply {source!r})"
        suppressed = session.get(AddressSuppression, address)
        if suppressed is not None and suppressed.until > now:
            return (f"{address} is suppressed until {suppressed.until:%Y-%m-%d %H:%M} UTC after a permanent "
                    f"delivery failure ({suppressed.reason})")
        if kind in ONCE_PER_TICKET:
            earlier = session.execute(
                select(OutboxRow.message_id).where(OutboxRow.ticket_number == ticket_number, OutboxRow.kind == kind)
            ).first()
            if earlier is not None:
                return f"ticket #{ticket_number} already got its {kind} (<{earlier[0]}>)"
        if kind in AUTO_KINDS:
            for most, seconds in self._limits.ladder:
                since = now - dt.timedelta(seconds=seconds)
                sent = session.execute(
                    select(func.count()).select_from(OutboxRow).where(
                        OutboxRow.to_addr == address, OutboxRow.kind.in_(AUTO_KINDS), OutboxRow.created_at > since
                    )
                ).scalar_one()
                if sent >= most:
                    return (f"rate limit: {address} already got {sent} automatic mails in the last {_period(seconds)} "
                            f"(limits.auto_mail_per_recipient {most}/{_period(seconds)})")
        return None
