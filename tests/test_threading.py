"""A reply joins its ticket; duplicates are no-ops; strangers don't get into others' tickets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from mailticket.app import App
from mailticket.domain import Envelope, TicketStatus
from mailticket.settings import load
from mailticket.store.models import Message, OutboxRow, RawMessage, Ticket
from tests.conftest import count, ingest, mail


def test_reply_by_in_reply_to_joins_ticket(app: App) -> None:
    number, decision = ingest(app, mail(message_id="first@customer.example"))
    assert decision == "new_ticket"
    reply = mail(subject="Re: Printer on fire", message_id="second@customer.example",
                 headers={"In-Reply-To": "<first@customer.example>"})
    joined, decision = ingest(app, reply)
    assert (joined, decision) == (number, "joined")
    assert count(app, Ticket) == 1
    assert count(app, OutboxRow) == 1  # no second acknowledgement for a reply


def test_reply_to_our_acknowledgement_joins_ticket(app: App) -> None:
    number, _ = ingest(app, mail(message_id="a1@customer.example"))
    with app.db.transaction() as s:
        ack_id = s.execute(select(OutboxRow.message_id)).scalar_one()
    reply = mail(subject="Re: whatever the client wrote", sender="Someone Else <else@other.example>",
                 headers={"References": f"<unrelated@x.example> <{ack_id}>"})
    assert ingest(app, reply) == (number, "joined")


def test_reply_by_subject_tag_from_requester_joins(app: App) -> None:
    number, _ = ingest(app, mail())
    for prefix in ("Re:", "RE:", "AW:", "SV:", "Antw:", "Fwd:"):
        joined, decision = ingest(app, mail(subject=f"{prefix} [#{number}] Printer on fire"))
        assert (joined, decision) == (number, "joined"), prefix
    with app.db.transaction() as s:
        assert s.get_one(Ticket, number).subject == "Printer on fire"


def test_subject_tag_from_stranger_makes_new_ticket(app: App) -> None:
    number, _ = ingest(app, mail())
    other, decision = ingest(app, mail(subject=f"Re: [#{number}] Printer on fire",
                                       sender="Mallory <mallory@evil.example>"))
    assert decision == "new_ticket"
    assert other != number
    with app.db.transaction() as s:
        original = s.get_one(Ticket, number)
        assert [m.from_addr for m in original.messages if m.direction == "in"] == ["alice@customer.example"]


def test_subject_tag_from_cc_participant_and_agent_join(make_app: Callable[..., App],
                                                        write_config: Callable[..., Path]) -> None:
    app = make_app(settings_override=load(write_config(agents=("agent@example.com",))))
    number, _ = ingest(app, mail(to="support@example.com", headers={"Cc": "Bob <bob@customer.example>"}))
    assert ingest(app, mail(subject=f"[#{number}] more", sender="bob@customer.example")) == (number, "joined")
    assert ingest(app, mail(subject=f"[#{number}] note", sender="agent@example.com")) == (number, "joined")


def test_same_message_twice_is_one_ticket(app: App) -> None:
    raw = mail(message_id="dup@customer.example")
    assert ingest(app, raw)[1] == "new_ticket"
    assert ingest(app, raw) == (None, "duplicate")
    # The same mail through another source, and delivered to a second support address: the path it
    # took adds trace headers (and IMAP gives CRLF where the pipe gave LF), the mail itself is the same.
    redelivered = (b"Return-Path: <alice@customer.example>\r\nDelivered-To: help@example.com\r\n"
                   b"X-Original-To: help@example.com\r\nReceived: from mx2.example.com by imap.example.com;"
                   b" Tue, 1 Dec 2026 10:00:00 +0000\r\nAuthentication-Results: mx2.example.com; dkim=pass\r\n"
                   + raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert ingest(app, redelivered, "imap") == (None, "duplicate")
    assert count(app, Ticket) == 1
    assert count(app, RawMessage) == 1
    assert count(app, OutboxRow) == 1


def test_message_without_message_id_dedupes_on_content(app: App) -> None:
    raw = b"From: c@customer.example\r\nTo: support@example.com\r\nSubject: no id\r\n\r\nbody\r\n"
    first = app.inbox.accept(raw, Envelope("pipe"))
    second = app.inbox.accept(raw, Envelope("pipe"))
    third = app.inbox.accept(raw + b"changed\r\n", Envelope("pipe"))
    assert not first.duplicate and second.duplicate and second.raw_id == first.raw_id
    assert not third.duplicate


def test_customer_reply_reopens_solved_but_not_closed(app: App) -> None:
    number, _ = ingest(app, mail(message_id="s1@customer.example"))
    with app.db.transaction() as s:
        s.get_one(Ticket, number).status = TicketStatus.SOLVED
    reply = mail(subject="Re: still broken", headers={"In-Reply-To": "<s1@customer.example>"})
    assert ingest(app, reply) == (number, "joined")
    with app.db.transaction() as s:
        assert s.get_one(Ticket, number).status == TicketStatus.OPEN
        s.get_one(Ticket, number).status = TicketStatus.CLOSED
    late = mail(subject=f"Re: [#{number}] again", headers={"In-Reply-To": "<s1@customer.example>"})
    new_number, decision = ingest(app, late)
    assert decision == "new_ticket" and new_number != number


def test_auto_reply_to_ticket_is_stored_but_changes_nothing(app: App) -> None:
    number, _ = ingest(app, mail(message_id="o1@customer.example"))
    with app.db.transaction() as s:
        s.get_one(Ticket, number).status = TicketStatus.PENDING
    ooo = mail(subject="Automatic reply: Printer on fire", headers={
        "In-Reply-To": "<o1@customer.example>", "Auto-Submitted": "auto-replied"})
    assert ingest(app, ooo) == (number, "joined")
    with app.db.transaction() as s:
        ticket = s.get_one(Ticket, number)
        assert ticket.status == TicketStatus.PENDING
        verdicts = [m.verdict for m in ticket.messages if m.direction == "in"]
        assert verdicts == ["human", "out_of_office"]
    assert count(app, OutboxRow) == 1


def test_machine_mail_gets_no_acknowledgement(app: App) -> None:
    cases = {
        "Auto-Submitted": ("auto-generated", "auto_reply"),
        "Precedence": ("bulk", "bulk"),
        "List-Id": ("<users.lists.example.org>", "list"),
        "X-Autoreply": ("yes", "auto_reply"),
    }
    for header, (value, _verdict) in cases.items():
        ingest(app, mail(subject=f"mail with {header}", headers={header: value}))
    ingest(app, mail(sender="MAILER-DAEMON@mx.example", subject="Undelivered Mail Returned to Sender"))
    ingest(app, mail(subject="human", headers={"Auto-Submitted": "no"}))
    with app.db.transaction() as s:
        rows = s.execute(select(Message.subject, Message.verdict, Message.verdict_reason)
                         .where(Message.direction == "in")).all()
        acks = s.execute(select(OutboxRow.subject)).scalars().all()
    by_subject = {subject: (verdict, reason) for subject, verdict, reason in rows}
    for header, (value, verdict) in cases.items():
        assert by_subject[f"mail with {header}"] == (verdict, f"{header}: {value}")
    assert by_subject["Undelivered Mail Returned to Sender"][0] == "bounce"
    assert by_subject["human"][0] == "human"  # RFC 3834: Auto-Submitted: no is a human
    assert len(acks) == 1 and acks[0].endswith("human")


def test_our_own_acknowledgement_coming_back_is_own_loop(app: App) -> None:
    ingest(app, mail())
    with app.db.transaction() as s:
        content = s.execute(select(OutboxRow.content)).scalar_one()
    number, decision = ingest(app, content)
    assert decision == "joined"  # its In-Reply-To names the customer's message
    with app.db.transaction() as s:
        assert s.get_one(Ticket, number).status == "new"
        verdict = s.execute(select(Message.verdict).where(Message.direction == "in")
                            .order_by(Message.id.desc())).scalars().first()
    assert verdict == "own_loop"
    assert count(app, OutboxRow) == 1
