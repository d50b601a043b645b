"""Commands by mail, end to end: a verified agent's command lines steer the ticket with the reply, all or
nothing; the customer never sees them; an unverified mail's commands never run."""

from __future__ import annotations

import email
from collections.abc import Callable
from email.utils import parseaddr
from typing import Any

import pytest
from sqlalchemy import select

from mailticket.store.models import Event, Participant, RawMessage, Ticket
from tests.test_agents_by_mail import (
    AGENTS,
    ANN,
    BEN,
    SUPPORT,
    World,
    agent_reply,
    notifications,
    one,
    open_ticket,
    to,
    wait_for,
    world,
)
from tests.test_outbound import sink
from tests.test_smtp import Running, serve_smtp

__all__ = ["serve_smtp", "sink", "world"]  # fixtures, used by name

ALICE = "alice@customer.example"


@pytest.fixture
def live(world: Callable[..., World], serve_smtp: Callable[..., Running]) -> Callable[..., World]:
    """A world whose mail comes in over the live SMTP listener (the pipeline drained after each mail)."""

    def build(*args: Any) -> World:
        w = world(*args)
        srv = serve_smtp(app=w.app)

        def deliver(raw: bytes, *recipients: str, mail_from: str = "") -> tuple[int | None, str]:
            before = srv.count(RawMessage)
            sender = mail_from or parseaddr(email.message_from_bytes(raw)["From"] or "")[1]
            with srv.client() as client:
                assert client.sendmail(sender, list(recipients) or [SUPPORT], raw) == {}
            wait_for(lambda: srv.count(RawMessage) == before + 1)
            [outcome] = srv.app.pipeline.drain()
            assert outcome.decision != "quarantined", outcome.error
            return outcome.ticket_number, outcome.decision

        w.deliver = deliver  # type: ignore[method-assign]
        return w

    return build


def commands(w: World, number: int) -> list[str]:
    with w.app.db.transaction() as s:
        return list(s.execute(select(Event.detail).where(Event.ticket_number == number, Event.kind == "command")
                              .order_by(Event.id)).scalars())


def test_status_pending_above_a_quoted_notification_and_the_customer_never_sees_the_line(
    live: Callable[..., World]
) -> None:
    w = live()
    number, _mid, got = open_ticket(w, "Printer on fire", f"Alice <{ALICE}>")
    note = notifications(got)[ANN]
    raw, rcpt = agent_reply(note, f"Ann Agent <{ANN}>", "#status pending\n#priority high\n\nHi Alice,\n\n"
                            "please try turning it off and on again.", shape="gmail")
    assert w.deliver(raw, rcpt) == (number, "joined")
    relayed = one(w.sent(), ALICE)
    assert "please try turning it off" in relayed.text
    assert "#status" not in relayed.text and "#priority" not in relayed.text
    ticket = w.ticket(number)
    assert (ticket.status, ticket.priority) == ("pending", "high")
    assert commands(w, number) == [f"#status pending (by {ANN})", f"#priority high (by {ANN})"]
    stored = w.show(number)["messages"][-1]
    assert stored["author_role"] == "agent" and "#status" not in stored["visible_text"]


def test_a_commands_only_mail_relays_nothing(live: Callable[..., World]) -> None:
    w = live()
    number, _mid, got = open_ticket(w, "Printer on fire", f"Alice <{ALICE}>")
    raw, rcpt = agent_reply(notifications(got)[ANN], f"Ann Agent <{ANN}>", "#assign me\n#tag +printer -none",
                            shape="thunderbird")
    assert w.deliver(raw, rcpt) == (number, "joined")
    assert to(w.sent(), ALICE) == []  # nothing relayed (and with receipt = "errors", nothing to Ann either)
    ticket = w.ticket(number)
    assert ticket.assignee == ANN and ticket.tags == ["printer"]
    assert ticket.status == "new"  # nothing was said to the customer: not a first response
    assert w.show(number)["first_response_at"] is None


def test_internal_keeps_the_text_for_agents(live: Callable[..., World]) -> None:
    w = live()
    number, _mid, got = open_ticket(w, "Printer on fire", f"Alice <{ALICE}>")
    raw, rcpt = agent_reply(notifications(got)[BEN], f"Ben Agent <{BEN}>", "#internal\nShe called, it is the fuser.",
                            shape="outlook")
    w.deliver(raw, rcpt)
    assert to(w.sent(), ALICE) == []
    note = w.show(number)["messages"][-1]
    assert note["internal"] is True and note["verified"] is True
    assert note["visible_text"] == "She called, it is the fuser."


def test_assign_by_name_and_me(live: Callable[..., World]) -> None:
    w = live()
    number, _mid, got = open_ticket(w, "Printer on fire", f"Alice <{ALICE}>")
    raw, rcpt = agent_reply(notifications(got)[ANN], f"Ann Agent <{ANN}>", "#assign ben agent\n\nBen will call you.")
    w.deliver(raw, rcpt)
    assert w.ticket(number).assignee == BEN
    assert "Ben will call you." in one(w.sent(), ALICE).text
    raw, rcpt = agent_reply(notifications(got)[ANN], f"Ann Agent <{ANN}>", "#ASSIGN ME", message_id="me@example.com")
    w.deliver(raw, rcpt)
    assert w.ticket(number).assignee == ANN


def test_merge_moves_the_ticket_and_later_mail_lands_in_the_target(live: Callable[..., World]) -> None:
    w = live()
    first, _m1, _got1 = open_ticket(w, "Printer on fire", f"Alice <{ALICE}>")
    second, mid2, got2 = open_ticket(w, "Printer still on fire", f"Alice <{ALICE}>",
                                     headers={"Cc": "Carol <carol@customer.example>"})
    w.update(first, tags=["printer"])
    raw, rcpt = agent_reply(notifications(got2)[ANN], f"Ann Agent <{ANN}>", f"#merge {first}")
    assert w.deliver(raw, rcpt) == (second, "joined")
    merged, target = w.ticket(second), w.ticket(first)
    assert merged.status == "closed" and merged.merged_into == first
    with w.app.db.transaction() as s:
        people = set(s.execute(select(Participant.email).where(Participant.ticket_number == first)).scalars())
    assert {ALICE, "carol@customer.example"} <= people
    assert any(m["message_id"] == mid2 for m in w.show(first)["messages"])  # the messages moved
    assert target.tags == ["printer"]
    # The customer answers the merged ticket's acknowledgement: it lands in the target.
    ack = one(got2, ALICE)
    reply = (f"From: Alice <{ALICE}>\r\nTo: {SUPPORT}\r\nSubject: Re: {ack['Subject']}\r\n"
             f"In-Reply-To: <{ack.message_id}>\r\nMessage-ID: <after-merge@customer.example>\r\n\r\nAny news?\r\n")
    assert w.deliver(reply.encode()) == (first, "joined")


def test_a_bad_command_applies_nothing_and_the_agent_is_told_which_line(live: Callable[..., World]) -> None:
    w = live()
    number, _mid, got = open_ticket(w, "Printer on fire", f"Alice <{ALICE}>")
    raw, rcpt = agent_reply(notifications(got)[ANN], f"Ann Agent <{ANN}>",
                            "#status solved\n#asign ben\n\nAll fixed, Alice!")
    w.deliver(raw, rcpt)
    sent = w.sent()
    assert to(sent, ALICE) == []  # nothing relayed
    told = one(sent, ANN)
    assert "#asign" in told.text and "did you mean #assign" in told.text
    assert "All fixed, Alice!" in told.text  # the mail's text, so nothing is lost
    ticket = w.ticket(number)
    assert ticket.status == "new" and ticket.assignee is None  # the good line was not applied either
    raw, rcpt = agent_reply(notifications(got)[ANN], f"Ann Agent <{ANN}>", "#merge 999", message_id="m@example.com")
    w.deliver(raw, rcpt)
    assert "no ticket #999" in one(w.sent(), ANN).text


def test_an_unverified_mail_never_executes_its_commands(live: Callable[..., World]) -> None:
    w = live()
    number, _mid, _got = open_ticket(w, "Printer on fire", f"Alice <{ALICE}>")
    forged = (f"From: Ann Agent <{ANN}>\r\nTo: {SUPPORT}\r\nSubject: Re: [#{number}] Printer on fire\r\n"
              f"Message-ID: <forged@evil.example>\r\n\r\n#status closed\r\n#assign me\r\n\r\nClosing.\r\n")
    w.deliver(forged.encode())
    sent = w.sent()
    assert to(sent, ALICE) == []
    refusal = one(sent, ANN)
    assert "#status closed" in refusal.text and "not executed" in refusal.text
    ticket = w.ticket(number)
    assert ticket.status == "new" and ticket.assignee is None
    assert commands(w, number) == []


def test_receipt_always_sends_one_line(live: Callable[..., World]) -> None:
    w = live(AGENTS + '\n[commands]\nreceipt = "always"\n')
    number, _mid, got = open_ticket(w, "Printer on fire", f"Alice <{ALICE}>")
    raw, rcpt = agent_reply(notifications(got)[ANN], f"Ann Agent <{ANN}>", "#priority urgent\n#away on")
    w.deliver(raw, rcpt)
    receipt = one(w.sent(), ANN)
    assert "priority urgent" in receipt.text and "away" in receipt.text
    with w.app.db.transaction() as s:
        assert s.get_one(Ticket, number).priority == "urgent"
    assert w.app.settings.command_receipt == "always"


def test_a_held_reply_keeps_its_commands_until_it_is_sent(live: Callable[..., World]) -> None:
    """Two agents answer the same notification: the second reply is held, and so are its commands."""
    w = live()
    number, _mid, got = open_ticket(w, "Printer on fire", f"Alice <{ALICE}>")
    notes = notifications(got)
    first, rcpt = agent_reply(notes[ANN], f"Ann Agent <{ANN}>", "Hi Alice, on it.")
    w.clock.advance(minutes=5)  # Ann answers five minutes after the notification
    w.deliver(first, rcpt)
    w.sent()
    second, rcpt = agent_reply(notes[BEN], f"Ben Agent <{BEN}>", "#status solved\n\nHi Alice, done.")
    w.deliver(second, rcpt)
    sent = w.sent()
    assert to(sent, ALICE) == [] and one(sent, BEN)  # held, and Ben gets the collision mail
    assert w.ticket(number).status == "open"  # Ann's answer opened it; Ben's held #status did not apply
    assert commands(w, number) == []
