from __future__ import annotations

from sqlalchemy import select

from mailticket.app import App
from mailticket.domain import Envelope
from mailticket.store.models import OutboxRow, Ticket
from tests.conftest import mail


def test_new_mail_makes_ticket_and_queues_ack(app: App) -> None:
    accepted = app.inbox.accept(mail(), Envelope("pipe"))
    [outcome] = app.pipeline.process([accepted.raw_id])
    assert outcome.decision == "new_ticket"
    with app.db.transaction() as s:
        ticket = s.get_one(Ticket, outcome.ticket_number)
        assert ticket.requester == "alice@customer.example"
        assert ticket.subject == "Printer on fire"
        rows = s.execute(select(OutboxRow)).scalars().all()
        assert [r.kind for r in rows] == ["ack_new"]
