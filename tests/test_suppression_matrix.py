"""Never answer a machine: one message per machine marker, each marker alone on an otherwise ordinary customer
message, through the real pipeline.

For every marker the stored inbound message carries the expected verdict and a reason naming the header (or
part) that decided it, no acknowledgement is queued, and the decision log says the acknowledgement was
suppressed. A human control (and ``Auto-Submitted: no``, RFC 3834) gets exactly one acknowledgement. Finally our
own acknowledgement, fed back in unchanged, is recognised as our own loop and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from mailticket.app import App
from mailticket.clock import FrozenClock
from mailticket.domain import Direction, Envelope, RawState, TicketStatus
from mailticket.ingest.classify import LOOP_HEADER, OWN_MESSAGE_ID_PREFIX
from mailticket.ingest.pipeline import Outcome
from mailticket.settings import Settings
from mailticket.store.models import Event, Message, OutboxRow, Ticket
from tests.conftest import count, mail

CUSTOMER = "alice@customer.example"


# -- building the messages ------------------------------------------------------


def report(report_type: str, parts: list[tuple[str, str]], subject: str = "Printer on fire") -> bytes:
    """A multipart/report (RFC 6522) from the ordinary customer sender, built by hand: ``parts`` are
    (content type, body) pairs; only the report is a machine marker."""
    boundary = f"=_report_{uuid.uuid4().hex}"
    lines = [
        "From: Alice Customer <alice@customer.example>",
        "To: support@example.com",
        f"Subject: {subject}",
        "Date: Mon, 02 Nov 2026 10:00:00 +0000",
        f"Message-ID: <{uuid.uuid4().hex}@customer.example>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={report_type}; boundary="{boundary}"',
        "",
        "This is a MIME-formatted message.",
    ]
    for content_type, body in parts:
        lines += [f"--{boundary}", f"Content-Type: {content_type}", "", body.rstrip("\n").replace("\n", "\r\n")]
    lines += [f"--{boundary}--", ""]
    return "\r\n".join(lines).encode("utf-8")


ORIGINAL_HEADERS = (
    "From: Example Support <support@example.com>\n"
    "To: bob@customer.example\n"
    "Subject: [#7] Printer on fire\n"
    "Message-ID: <original-1@example.com>\n"
)

DSN = report("delivery-status", [
    ("text/plain; charset=us-ascii",
     "This is the mail system at host mx.customer.example.\n\n"
     "Your message could not be delivered to one or more recipients.\n"),
    ("message/delivery-status",
     "Reporting-MTA: dns; mx.customer.example\n"
     "\n"
     "Final-Recipient: rfc822; bob@customer.example\n"
     "Action: failed\n"
     "Status: 5.1.1\n"),
    ("text/rfc822-headers", ORIGINAL_HEADERS),
])

READ_RECEIPT = report("disposition-notification", [
    ("text/plain; charset=us-ascii", "Your message was displayed on Mon, 02 Nov 2026 10:00:00 +0000.\n"),
    ("message/disposition-notification",
     "Reporting-UA: mail.customer.example; Webmail 1.0\n"
     "Final-Recipient: rfc822; alice@customer.example\n"
     "Original-Message-ID: <original-1@example.com>\n"
     "Disposition: manual-action/MDN-sent-manually; displayed\n"),
])

ABUSE_REPORT = report("feedback-report", [
    ("text/plain; charset=us-ascii", "This is an email abuse report for an email message received.\n"),
    ("message/feedback-report",
     "Feedback-Type: abuse\n"
     "User-Agent: SomeGenerator/1.0\n"
     "Version: 1\n"
     "Original-Mail-From: <support@example.com>\n"
     "Reported-Domain: example.com\n"),
    ("text/rfc822-headers", ORIGINAL_HEADERS),
])


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Settings], bytes]  # some markers depend on the settings (our loop token, our domain)
    verdict: str
    reason: tuple[str, ...]  # fragments the stored verdict_reason must contain, case-insensitive


def marked(**headers: str) -> Callable[[Settings], bytes]:
    return lambda settings: mail(headers=headers)


def fixed(raw: bytes) -> Callable[[Settings], bytes]:
    return lambda settings: raw


MACHINE_CASES = [
    Case("auto-submitted-auto-replied", marked(**{"Auto-Submitted": "auto-replied"}), "auto_reply",
         ("Auto-Submitted", "auto-replied")),
    Case("auto-submitted-auto-generated", marked(**{"Auto-Submitted": "auto-generated"}), "auto_reply",
         ("Auto-Submitted", "auto-generated")),
    Case("precedence-bulk", marked(Precedence="bulk"), "bulk", ("Precedence", "bulk")),
    Case("precedence-junk", marked(Precedence="junk"), "bulk", ("Precedence", "junk")),
    Case("precedence-list", marked(Precedence="list"), "list", ("Precedence", "list")),
    Case("precedence-auto_reply", marked(Precedence="auto_reply"), "auto_reply", ("Precedence", "auto_reply")),
    Case("list-id", marked(**{"List-Id": "<support.lists.example.com>"}), "list", ("List-Id",)),
    Case("list-unsubscribe", marked(**{"List-Unsubscribe": "<mailto:unsub@lists.example.com>"}), "bulk",
         ("List-Unsubscribe",)),
    Case("x-autoreply", marked(**{"X-Autoreply": "yes"}), "auto_reply", ("X-Autoreply",)),
    Case("x-autorespond", marked(**{"X-Autorespond": "yes"}), "auto_reply", ("X-Autorespond",)),
    Case("x-autoreply-from", marked(**{"X-AutoReply-From": CUSTOMER}), "auto_reply", ("X-AutoReply-From",)),
    Case("x-mail-autoreply", marked(**{"X-Mail-Autoreply": "yes"}), "auto_reply", ("X-Mail-Autoreply",)),
    Case("x-autogenerated", marked(**{"X-Autogenerated": "Reply"}), "auto_reply", ("X-Autogenerated",)),
    Case("x-auto-response-suppress", marked(**{"X-Auto-Response-Suppress": "All"}), "auto_reply",
         ("X-Auto-Response-Suppress",)),
    Case("x-loop", marked(**{"X-Loop": "helpdesk@other.example"}), "auto_reply", ("X-Loop",)),
    # The Microsoft rule needs both a marker header and an auto-reply subject; the classifier records the
    # subject (and "Microsoft auto-reply") as the reason, not the X-MS-Exchange-* header name.
    Case("ms-exchange-out-of-office",
         lambda settings: mail(subject="Automatic reply: Printer on fire",
                               headers={"X-MS-Exchange-Inbox-Rules-Loop": CUSTOMER}),
         "out_of_office", ("Subject", "Microsoft")),
    Case("own-loop-header", lambda settings: mail(headers={LOOP_HEADER: settings.loop_token}), "own_loop",
         (LOOP_HEADER,)),
    Case("own-message-id",
         lambda settings: mail(message_id=f"{OWN_MESSAGE_ID_PREFIX}something@{settings.message_id_domain}"),
         "own_loop", ("Message-ID",)),
    Case("return-path-null", marked(**{"Return-Path": "<>"}), "auto_reply", ("Return-Path",)),
    Case("mailer-daemon", lambda settings: mail(sender="Mail Delivery System <MAILER-DAEMON@mx.customer.example>"),
         "bounce", ("From", "mailer-daemon")),
    Case("postmaster", lambda settings: mail(sender="postmaster@customer.example"), "bounce",
         ("From", "postmaster")),
    Case("dsn-delivery-status", fixed(DSN), "bounce", ("Content-Type", "multipart/report", "delivery-status")),
    Case("mdn-read-receipt", fixed(READ_RECEIPT), "auto_reply",
         ("Content-Type", "multipart/report", "disposition-notification")),
    Case("arf-feedback-report", fixed(ABUSE_REPORT), "bounce",
         ("Content-Type", "multipart/report", "feedback-report")),
    Case("x-spam-flag", marked(**{"X-Spam-Flag": "YES"}), "spam", ("X-Spam-Flag",)),
]

HUMAN_CASES = [
    Case("human-control", marked(), "human", ("no machine marker",)),
    Case("auto-submitted-no", marked(**{"Auto-Submitted": "no"}), "human", ("Auto-Submitted",)),
]


# -- helpers --------------------------------------------------------------------


def ingest(app: App, raw: bytes) -> Outcome:
    accepted = app.inbox.accept(raw, Envelope("pipe"))
    assert not accepted.duplicate
    [outcome] = app.pipeline.process([accepted.raw_id])
    assert outcome.state == RawState.DONE, outcome.error
    return outcome


def inbound(app: App, raw_id: int) -> Message:
    with app.db.transaction() as s:
        message = s.execute(
            select(Message).where(Message.raw_id == raw_id, Message.direction == Direction.IN)
        ).scalar_one()
        s.expunge(message)
        return message


def outbox(app: App) -> list[tuple[int | None, str, str]]:
    with app.db.transaction() as s:
        rows = s.execute(select(OutboxRow.ticket_number, OutboxRow.kind, OutboxRow.to_addr).order_by(OutboxRow.id))
        return [(number, kind, to_addr) for number, kind, to_addr in rows]


def events(app: App, ticket_number: int, kind: str) -> list[str]:
    with app.db.transaction() as s:
        return list(s.execute(
            select(Event.detail).where(Event.ticket_number == ticket_number, Event.kind == kind).order_by(Event.id)
        ).scalars())


def assert_reason(reason: str, fragments: tuple[str, ...]) -> None:
    for fragment in fragments:
        assert fragment.lower() in reason.lower(), f"{fragment!r} not in verdict_reason {reason!r}"


# -- the matrix -----------------------------------------------------------------


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in MACHINE_CASES])
def test_machine_mail_gets_no_acknowledgement(app: App, case: Case) -> None:
    outcome = ingest(app, case.build(app.settings))
    assert outcome.decision == "new_ticket"
    assert outcome.ticket_number is not None

    message = inbound(app, outcome.raw_id)
    assert message.ticket_number == outcome.ticket_number
    assert message.verdict == case.verdict, message.verdict_reason
    assert_reason(message.verdict_reason, case.reason)

    assert outbox(app) == []
    assert events(app, outcome.ticket_number, "queued") == []
    suppressed = events(app, outcome.ticket_number, "suppressed")
    assert any("ack_new" in detail for detail in suppressed), suppressed


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in HUMAN_CASES])
def test_human_mail_gets_one_acknowledgement(app: App, case: Case) -> None:
    outcome = ingest(app, case.build(app.settings))
    assert outcome.decision == "new_ticket"
    assert outcome.ticket_number is not None

    message = inbound(app, outcome.raw_id)
    assert message.verdict == case.verdict, message.verdict_reason
    assert_reason(message.verdict_reason, case.reason)

    assert outbox(app) == [(outcome.ticket_number, "ack_new", CUSTOMER)]
    assert events(app, outcome.ticket_number, "suppressed") == []


def test_matrix_covers_every_machine_verdict() -> None:
    assert {c.verdict for c in MACHINE_CASES} == {
        "auto_reply", "out_of_office", "bounce", "list", "bulk", "own_loop", "spam"}
    assert len({c.id for c in [*MACHINE_CASES, *HUMAN_CASES]}) == len(MACHINE_CASES) + len(HUMAN_CASES)


# -- our own acknowledgement coming back ------------------------------------------


def test_our_acknowledgement_fed_back_is_own_loop_and_changes_nothing(app: App, clock: FrozenClock) -> None:
    first = ingest(app, mail(message_id="loop-1@customer.example"))
    number = first.ticket_number
    assert first.decision == "new_ticket" and number is not None
    with app.db.transaction() as s:
        [ack] = s.execute(select(OutboxRow)).scalars()
        assert ack.kind == "ack_new"
        ack_bytes, ack_id = ack.content, ack.message_id
        # PENDING: a customer reply would reopen it, so a status change would show.
        ticket = s.get_one(Ticket, number)
        ticket.status = TicketStatus.PENDING
        updated_at = ticket.updated_at
    clock.advance(hours=1)

    # The customer's system returns our acknowledgement unchanged.
    back = ingest(app, ack_bytes)

    message = inbound(app, back.raw_id)
    assert message.message_id == ack_id
    assert message.verdict == "own_loop"
    assert_reason(message.verdict_reason, (LOOP_HEADER,))
    # It carries In-Reply-To: <loop-1@customer.example>, so it threads to the ticket it acknowledged.
    assert (back.decision, back.ticket_number) == ("joined", number)
    assert count(app, Ticket) == 1
    assert count(app, OutboxRow) == 1
    with app.db.transaction() as s:
        ticket = s.get_one(Ticket, number)
        assert ticket.status == TicketStatus.PENDING
        assert ticket.updated_at == updated_at
    assert any(detail.startswith("status:") for detail in events(app, number, "suppressed"))
