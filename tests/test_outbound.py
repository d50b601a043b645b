"""Outbound mail end to end: a customer mail queues an acknowledgement, the sender
delivers it to a live SMTP server (aiosmtpd on a free loopback port) or a
maildir, and the outbox row records what happened.

The SMTP sink answers with a reply line each test chooses (250, 451, 550), at
DATA or at RCPT, and records every delivery attempt with the answer it gave.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email
import errno
import os
import sqlite3
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.header import Header
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from mailticket.app import App
from mailticket.clock import FrozenClock
from mailticket.domain import Direction, Envelope, OutboxState
from mailticket.errors import TemporaryError
from mailticket.outbox.sender import FlushResult
from mailticket.outbox.transport import MaildirTransport, Transport, make_transport
from mailticket.settings import Settings, load
from mailticket.store.db import Database, make_engine
from mailticket.store.models import Event, Message, OutboxRow
from tests.conftest import as_json, free_port, mail, run_cli

CUSTOMER = "alice@customer.example"
ACCEPT = "250 OK"
TEMPFAIL = "451 4.3.0 try later"
PERMFAIL = "550 5.1.1 no such user"
NO_ANSWER = "(hung up)"


# -- the SMTP sink ------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    reply: str  # what the sink answered to the DATA


@dataclass
class Sink:
    """An aiosmtpd handler: answers DATA (and RCPT) with a reply the test switches."""

    port: int = 0
    reply: str = ACCEPT
    rcpt_reply: str = ACCEPT
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # per address, over rcpt_reply
    deliveries: list[Delivery] = field(default_factory=list)
    rcpt_attempts: list[str] = field(default_factory=list)
    drop_after_rcpt: bool = False  # answer RCPT, then hang up (the client's DATA meets a closed line)
    drop_after_data: bool = False  # take the whole body, then hang up without answering it
    on_rcpt: Callable[[], None] | None = None  # runs before RCPT is answered

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        self.rcpt_attempts.append(address)
        reply = self.rcpt_replies.get(address, self.rcpt_reply)
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        if self.on_rcpt is not None:
            self.on_rcpt()
        if self.drop_after_rcpt:
            asyncio.get_running_loop().call_soon(server.transport.close)  # after the reply is written
        return reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        if self.drop_after_data:
            self.deliveries.append(Delivery(envelope.mail_from, list(envelope.rcpt_tos), content, NO_ANSWER))
            server.transport.abort()
            return NO_ANSWER
        self.deliveries.append(Delivery(envelope.mail_from, list(envelope.rcpt_tos), content, self.reply))
        return self.reply

    @property
    def accepted(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.reply.startswith("250")]


@pytest.fixture
def sink() -> Iterator[Sink]:
    handler = Sink(port=free_port())
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


def smtp_settings(write_config: Callable[..., Path], port: int, **outbound: Any) -> Settings:
    settings = load(write_config(transport=f"smtp://127.0.0.1:{port}"))
    assert settings.outbound.smtp is not None and settings.outbound.smtp.port == port
    if outbound:
        settings = dataclasses.replace(settings, outbound=dataclasses.replace(settings.outbound, **outbound))
    return settings


@pytest.fixture
def smtp_app(sink: Sink, write_config: Callable[..., Path], make_app: Callable[..., App]) -> App:
    return make_app(settings_override=smtp_settings(write_config, sink.port))


# -- helpers --------------------------------------------------------------------


def receive(app: App, **kwargs: Any) -> tuple[int, str]:
    """Feed one customer mail through inbox and pipeline; (ticket number, its Message-ID)."""
    message_id = kwargs.pop("message_id", None) or f"{uuid.uuid4().hex}@customer.example"
    accepted = app.inbox.accept(mail(message_id=message_id, **kwargs), Envelope("pipe"))
    [outcome] = app.pipeline.process([accepted.raw_id])
    assert outcome.decision == "new_ticket", outcome
    assert outcome.ticket_number is not None
    return outcome.ticket_number, message_id


def outbox(app: App) -> list[OutboxRow]:
    with app.db.transaction() as s:
        return list(s.execute(select(OutboxRow).order_by(OutboxRow.id)).scalars())


def only_row(app: App) -> OutboxRow:
    rows = outbox(app)
    assert len(rows) == 1, [(r.id, r.kind, r.state) for r in rows]
    return rows[0]


def parse(content: bytes) -> EmailMessage:
    msg = email.message_from_bytes(content, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def header_block(content: bytes) -> bytes:
    head, sep, _ = content.partition(b"\r\n\r\n")
    assert sep, "no CRLF CRLF between header and body"
    return head


def due_later(row: OutboxRow, clock: FrozenClock) -> dt.timedelta:
    """How far in the future the row's next attempt is (asserting that it is)."""
    wait = row.next_attempt_at - clock.now()
    assert wait > dt.timedelta(0), (row.next_attempt_at, clock.now())
    return wait


# -- 1. the acknowledgement as the server receives it ----------------------------


def test_sink_receives_acknowledgement_with_threading_and_auto_reply_headers(
    smtp_app: App, sink: Sink, clock: FrozenClock
) -> None:
    number, customer_mid = receive(smtp_app)
    assert sink.deliveries == []  # queued, not sent, until the sender flushes

    result = smtp_app.sender.flush()

    assert result == FlushResult(sent=1)
    [delivery] = sink.deliveries
    assert delivery.reply == ACCEPT
    assert delivery.mail_from == "support@example.com"
    assert delivery.rcpt_tos == [CUSTOMER]

    row = only_row(smtp_app)
    assert row.kind == "ack_new"
    assert row.state == OutboxState.SENT
    assert row.attempts == 1
    assert row.sent_at == clock.now()
    assert row.last_error is None
    # What went over the wire is exactly what the outbox committed.
    assert delivery.content.rstrip(b"\r\n") == row.content.rstrip(b"\r\n")

    msg = parse(delivery.content)
    [to] = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Alice Customer", CUSTOMER)
    [sender] = msg["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Example Support", "support@example.com")
    assert msg["Subject"] == f"[#{number}] Printer on fire"
    assert msg["Date"] is not None and msg["Date"].datetime == clock.now()

    assert row.message_id.startswith("mt.") and row.message_id.endswith("@tickets.example.com")
    assert msg["Message-ID"] == f"<{row.message_id}>"
    assert msg["In-Reply-To"] == f"<{customer_mid}>"
    assert f"<{customer_mid}>" in str(msg["References"]).split()
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["X-Mailticket-Loop"] == smtp_app.settings.loop_token == "tickets.example.com"
    for name in ("To", "Subject", "Message-ID", "In-Reply-To", "Auto-Submitted", "X-Mailticket-Loop"):
        assert len(msg.get_all(name) or []) == 1, name

    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    text, html = (p.get_content() for p in parts)
    assert isinstance(text, str) and isinstance(html, str)
    assert f"[#{number}]" in text and "Alice Customer" in text
    assert f"[#{number}]" in html and "<html>" in html

    # The outbound Message row on the ticket carries the same Message-ID, so replies thread.
    with smtp_app.db.transaction() as s:
        outbound = s.execute(
            select(Message).where(Message.ticket_number == number, Message.direction == Direction.OUT)
        ).scalars().all()
        assert [m.message_id for m in outbound] == [row.message_id]
        assert outbound[0].to_addrs == [CUSTOMER]
        assert outbound[0].in_reply_to == [customer_mid]


def test_acknowledgement_coming_back_is_recognised_as_our_own(smtp_app: App, sink: Sink) -> None:
    """The loop header and Message-ID let an ack that returns to us be filed, never answered."""
    number, _ = receive(smtp_app)
    smtp_app.sender.flush()
    [delivery] = sink.accepted

    accepted = smtp_app.inbox.accept(delivery.content, Envelope("pipe", recipients=("support@example.com",)))
    [outcome] = smtp_app.pipeline.process([accepted.raw_id])

    assert outcome.verdict == "own_loop"
    assert outcome.ticket_number == number
    assert len(outbox(smtp_app)) == 1  # no acknowledgement of the acknowledgement
    assert smtp_app.sender.flush() == FlushResult()
    assert len(sink.deliveries) == 1


# -- 2. non-ASCII headers -------------------------------------------------------------

NAME = "Jürgen Müller-Øster"
SUBJECT = "Drucker brennt – Grüße aus Köln, 東京 " + "und noch viel mehr Text " * 4


@pytest.mark.parametrize("inbound", ["rfc2047", "raw-utf8"])
def test_non_ascii_name_and_subject_are_rfc2047_encoded(smtp_app: App, sink: Sink, inbound: str) -> None:
    if inbound == "rfc2047":
        subject = Header(SUBJECT, "utf-8").encode()
        sender = f"{Header(NAME, 'utf-8').encode()} <juergen@customer.example>"
    else:  # 8-bit headers as an SMTPUTF8 client sends them
        subject, sender = SUBJECT, f"{NAME} <juergen@customer.example>"
    number, _ = receive(smtp_app, subject=subject, sender=sender)

    assert smtp_app.sender.flush() == FlushResult(sent=1)
    [delivery] = sink.accepted

    head = header_block(delivery.content)
    assert head.isascii(), [line for line in head.split(b"\r\n") if not line.isascii()]
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    unfolded = head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")
    [subject_line] = [line for line in unfolded.split(b"\r\n") if line.lower().startswith(b"subject:")]
    [to_line] = [line for line in unfolded.split(b"\r\n") if line.lower().startswith(b"to:")]
    assert b"=?utf-8?" in subject_line.lower()
    assert b"=?utf-8?" in to_line.lower()
    assert b"<juergen@customer.example>" in to_line

    expected_subject = f"[#{number}] {' '.join(SUBJECT.split())}"
    msg = parse(delivery.content)
    assert msg["Subject"] == expected_subject
    [to] = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == (NAME, "juergen@customer.example")
    text = msg.get_body(preferencelist=("plain",))
    assert text is not None and NAME in text.get_content()
    assert only_row(smtp_app).subject == expected_subject


# -- 3. temporary failure, backoff, retry ----------------------------------------------


def test_4xx_is_retried_after_backoff_and_delivered_once(smtp_app: App, sink: Sink, clock: FrozenClock) -> None:
    receive(smtp_app)
    sink.reply = TEMPFAIL

    assert smtp_app.sender.flush() == FlushResult(retried=1)
    row = only_row(smtp_app)
    assert row.state == OutboxState.QUEUED
    assert row.attempts == 1
    assert row.last_error is not None and "451" in row.last_error and "try later" in row.last_error
    assert row.sent_at is None
    wait = due_later(row, clock)
    base = smtp_app.settings.outbound.retry_base_seconds
    assert dt.timedelta(seconds=base * 0.8) <= wait <= dt.timedelta(seconds=base * 1.2)
    assert len(sink.deliveries) == 1 and sink.accepted == []

    # Before the backoff runs out nothing is attempted, even once the server would take it.
    sink.reply = ACCEPT
    assert smtp_app.sender.flush() == FlushResult()
    clock.advance(seconds=wait.total_seconds() - 1)
    assert smtp_app.sender.flush() == FlushResult()
    assert len(sink.deliveries) == 1
    assert only_row(smtp_app).attempts == 1

    clock.advance(seconds=2)
    assert smtp_app.sender.flush() == FlushResult(sent=1)
    row = only_row(smtp_app)
    assert row.state == OutboxState.SENT
    assert row.attempts == 2
    assert row.sent_at == clock.now()
    assert row.last_error is None
    assert len(sink.accepted) == 1
    assert parse(sink.accepted[0].content)["Message-ID"] == f"<{row.message_id}>"

    clock.advance(hours=1)
    assert smtp_app.sender.flush() == FlushResult()
    assert len(sink.deliveries) == 2 and len(sink.accepted) == 1


def test_4xx_at_rcpt_is_retried_too(smtp_app: App, sink: Sink, clock: FrozenClock) -> None:
    receive(smtp_app)
    sink.rcpt_reply = "450 4.2.1 mailbox busy"

    assert smtp_app.sender.flush() == FlushResult(retried=1)
    row = only_row(smtp_app)
    assert row.state == OutboxState.QUEUED
    assert row.last_error is not None and "450 4.2.1 mailbox busy" in row.last_error
    assert sink.rcpt_attempts == [CUSTOMER] and sink.deliveries == []

    sink.rcpt_reply = ACCEPT
    clock.advance(seconds=due_later(row, clock).total_seconds() + 1)
    assert smtp_app.sender.flush() == FlushResult(sent=1)
    assert len(sink.accepted) == 1
    assert only_row(smtp_app).state == OutboxState.SENT


# -- 4. permanent failure ---------------------------------------------------------------


@pytest.mark.parametrize("stage", ["data", "rcpt"])
def test_5xx_fails_with_server_reply_and_is_never_resent(
    smtp_app: App, sink: Sink, clock: FrozenClock, stage: str
) -> None:
    receive(smtp_app)
    if stage == "data":
        sink.reply = PERMFAIL
    else:
        sink.rcpt_reply = PERMFAIL

    assert smtp_app.sender.flush() == FlushResult(failed=1)
    row = only_row(smtp_app)
    assert row.state == OutboxState.FAILED
    assert row.attempts == 1
    assert row.sent_at is None
    assert row.last_error is not None and "550 5.1.1 no such user" in row.last_error
    deliveries, rcpts = len(sink.deliveries), len(sink.rcpt_attempts)
    assert (deliveries, rcpts) == ((1, 1) if stage == "data" else (0, 1))

    # The server would take it now; a failed row still stays put.
    sink.reply = sink.rcpt_reply = ACCEPT
    for _ in range(3):
        clock.advance(days=1)
        assert smtp_app.sender.flush() == FlushResult()
    assert (len(sink.deliveries), len(sink.rcpt_attempts)) == (deliveries, rcpts)
    assert sink.accepted == []
    row = only_row(smtp_app)
    assert row.state == OutboxState.FAILED and row.attempts == 1


def test_one_refused_recipient_does_not_hold_up_the_rest_of_the_batch(smtp_app: App, sink: Sink) -> None:
    """One connection per flush: after a 550 the transport reconnects for the next row."""
    for who in ("first", "second", "third"):
        receive(smtp_app, sender=f"Customer <{who}@customer.example>")
    sink.rcpt_replies["second@customer.example"] = PERMFAIL

    assert smtp_app.sender.flush() == FlushResult(sent=2, failed=1)
    states = {row.to_addr: (row.state, row.attempts) for row in outbox(smtp_app)}
    assert states == {
        "first@customer.example": (OutboxState.SENT, 1),
        "second@customer.example": (OutboxState.FAILED, 1),
        "third@customer.example": (OutboxState.SENT, 1),
    }
    assert [d.rcpt_tos for d in sink.accepted] == [["first@customer.example"], ["third@customer.example"]]


# -- 5. connection refused -----------------------------------------------------------------


def test_connection_refused_is_retried_not_failed(
    write_config: Callable[..., Path], make_app: Callable[..., App], clock: FrozenClock
) -> None:
    port = free_port()  # nothing listens there
    app = make_app(settings_override=smtp_settings(write_config, port))
    receive(app)

    assert app.sender.flush() == FlushResult(retried=1)
    row = only_row(app)
    assert row.state == OutboxState.QUEUED
    assert row.attempts == 1
    assert row.last_error is not None and f"127.0.0.1:{port}" in row.last_error
    wait = due_later(row, clock)

    clock.advance(seconds=wait.total_seconds() + 1)
    assert app.sender.flush() == FlushResult(retried=1)
    row = only_row(app)
    assert row.state == OutboxState.QUEUED
    assert row.attempts == 2
    assert row.sent_at is None
    # Exponential: the second wait is longer than the first could have been.
    assert due_later(row, clock) > dt.timedelta(seconds=app.settings.outbound.retry_base_seconds * 1.2)


# -- 6. exactly once across restarts and crashes ------------------------------------------


def test_nothing_is_sent_twice_across_a_restart(
    write_config: Callable[..., Path], make_app: Callable[..., App], sink: Sink, clock: FrozenClock
) -> None:
    settings = smtp_settings(write_config, sink.port)
    first = make_app(settings_override=settings)
    receive(first)
    assert first.sender.flush() == FlushResult(sent=1)
    first.close()

    restarted = make_app(settings_override=settings)
    assert restarted.sender.flush() == FlushResult()
    clock.advance(days=2)  # past any lease or backoff
    assert restarted.sender.flush() == FlushResult()

    assert len(sink.deliveries) == 1
    row = only_row(restarted)
    assert row.state == OutboxState.SENT and row.attempts == 1


def test_row_left_delivering_by_a_crash_becomes_uncertain_and_is_sent_only_on_retry(
    write_config: Callable[..., Path], make_app: Callable[..., App], sink: Sink, clock: FrozenClock
) -> None:
    settings = smtp_settings(write_config, sink.port)
    first = make_app(settings_override=settings)
    receive(first)
    # As if the process died after handing the mail over: 'delivering', lease expired.
    with first.db.transaction() as s:
        row = s.execute(select(OutboxRow)).scalar_one()
        row.state = OutboxState.DELIVERING
        row.attempts = 1
        row.next_attempt_at = clock.now() - dt.timedelta(seconds=1)
        row_id = row.id
    first.close()

    restarted = make_app(settings_override=settings)
    assert restarted.sender.flush() == FlushResult(uncertain=1)
    row = only_row(restarted)
    assert row.state == OutboxState.UNCERTAIN
    assert row.last_error is not None and f"retry {row_id}" in row.last_error
    assert row.sent_at is None
    assert sink.deliveries == []

    clock.advance(days=1)
    assert restarted.sender.flush() == FlushResult()
    assert sink.deliveries == []
    assert only_row(restarted).state == OutboxState.UNCERTAIN

    retried = restarted.sender.retry(row_id)
    assert retried is not None and retried.state == OutboxState.QUEUED
    assert restarted.sender.flush() == FlushResult(sent=1)
    assert restarted.sender.flush() == FlushResult()
    assert len(sink.deliveries) == 1 and len(sink.accepted) == 1
    row = only_row(restarted)
    assert row.state == OutboxState.SENT
    assert row.last_error is None
    assert parse(sink.accepted[0].content)["Message-ID"] == f"<{row.message_id}>"


class ProcessDied(BaseException):
    """Stands in for a kill between the server's 250 and the commit of 'sent'."""


class DieAfterSend:
    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def send(self, mail_from: str, recipients: list[str], content: bytes,
             on_handover: Callable[[], None]) -> None:
        self.inner.send(mail_from, recipients, content, on_handover)
        raise ProcessDied

    def close(self) -> None:
        self.inner.close()


def test_real_crash_after_handover_is_not_resent_by_the_next_process(
    write_config: Callable[..., Path], make_app: Callable[..., App], sink: Sink, clock: FrozenClock
) -> None:
    settings = smtp_settings(write_config, sink.port)
    dying = make_app(settings_override=settings,
                     transport_factory=lambda: DieAfterSend(make_transport(settings.outbound)))
    receive(dying)
    with pytest.raises(ProcessDied):
        dying.sender.flush()
    assert len(sink.accepted) == 1  # the server has it
    row = only_row(dying)
    assert row.state == OutboxState.DELIVERING
    dying.close()

    restarted = make_app(settings_override=settings)
    assert restarted.sender.flush() == FlushResult()  # lease still running: hands off
    assert only_row(restarted).state == OutboxState.DELIVERING

    clock.advance(seconds=due_later(row, clock).total_seconds() + 1)
    assert restarted.sender.flush() == FlushResult(uncertain=1)
    assert only_row(restarted).state == OutboxState.UNCERTAIN
    clock.advance(days=1)
    assert restarted.sender.flush() == FlushResult()
    assert len(sink.deliveries) == 1


class BrokenFor:
    """The real SMTP transport, handed an address it cannot encode for one recipient: it blows up
    with a UnicodeEncodeError after MAIL FROM, in the middle of an SMTP transaction."""

    def __init__(self, inner: Transport, recipient: str) -> None:
        self.inner = inner
        self.recipient = recipient

    def send(self, mail_from: str, recipients: list[str], content: bytes,
             on_handover: Callable[[], None]) -> None:
        if self.recipient in recipients:
            recipients = ["jürgen@bücher.example"]
        self.inner.send(mail_from, recipients, content, on_handover)

    def close(self) -> None:
        self.inner.close()


def test_unexpected_transport_error_on_one_row_does_not_strand_the_batch(
    write_config: Callable[..., Path], make_app: Callable[..., App], sink: Sink, clock: FrozenClock
) -> None:
    settings = smtp_settings(write_config, sink.port)
    app = make_app(settings_override=settings, transport_factory=lambda: BrokenFor(
        make_transport(settings.outbound), "first@customer.example"))
    for who in ("first", "second"):
        receive(app, sender=f"Customer <{who}@customer.example>")

    result = app.sender.flush()

    assert result == FlushResult(sent=1, retried=1)
    rows = {row.to_addr: row for row in outbox(app)}
    assert rows["second@customer.example"].state == OutboxState.SENT
    broken = rows["first@customer.example"]
    # It blew up before the hand-over (at RCPT TO), so it certainly did not go out: a normal retry,
    # not 'uncertain', and not left 'sending' either.
    assert broken.state == OutboxState.QUEUED
    assert broken.last_error is not None and "UnicodeEncodeError" in broken.last_error
    assert "before the hand-over" in broken.last_error
    assert [d.rcpt_tos for d in sink.accepted] == [["second@customer.example"]]
    assert app.sender.flush() == FlushResult()
    clock.advance(seconds=due_later(broken, clock).total_seconds() + 1)
    assert app.sender.flush() == FlushResult(retried=1)  # the same bug again, until max_attempts
    assert [d.rcpt_tos for d in sink.accepted] == [["second@customer.example"]]


def test_customer_with_non_ascii_address_gets_no_broken_ack_and_others_still_do(
    smtp_app: App, sink: Sink
) -> None:
    """Plain SMTP cannot carry a non-ASCII address; the ack is suppressed, with the reason."""
    accepted = smtp_app.inbox.accept(mail(sender="Jürgen <jürgen@bücher.example>"), Envelope("pipe"))
    [outcome] = smtp_app.pipeline.process([accepted.raw_id])
    assert outcome.decision == "new_ticket"
    receive(smtp_app)

    assert smtp_app.sender.flush() == FlushResult(sent=1)
    [row] = outbox(smtp_app)
    assert (row.to_addr, row.state) == (CUSTOMER, OutboxState.SENT)
    assert [d.rcpt_tos for d in sink.accepted] == [[CUSTOMER]]
    with smtp_app.db.transaction() as s:
        events = s.execute(
            select(Event).where(Event.ticket_number == outcome.ticket_number, Event.kind == "suppressed")
        ).scalars().all()
        assert any("ack_new" in e.detail and "jürgen@bücher.example" in e.detail for e in events), \
            [e.detail for e in events]


# -- 7. retries run out ----------------------------------------------------------------------


def test_gives_up_after_max_attempts(
    write_config: Callable[..., Path], make_app: Callable[..., App], sink: Sink, clock: FrozenClock
) -> None:
    app = make_app(settings_override=smtp_settings(write_config, sink.port, max_attempts=2))
    assert app.settings.outbound.max_attempts == 2
    receive(app)
    sink.reply = TEMPFAIL

    assert app.sender.flush() == FlushResult(retried=1)
    row = only_row(app)
    assert (row.state, row.attempts) == (OutboxState.QUEUED, 1)

    clock.advance(seconds=due_later(row, clock).total_seconds() + 1)
    assert app.sender.flush() == FlushResult(failed=1)
    row = only_row(app)
    assert row.state == OutboxState.FAILED
    assert row.attempts == 2
    assert row.last_error is not None
    assert "gave up" in row.last_error and "451 4.3.0 try later" in row.last_error
    assert row.sent_at is None

    sink.reply = ACCEPT
    clock.advance(days=1)
    assert app.sender.flush() == FlushResult()
    assert len(sink.deliveries) == 2 and sink.accepted == []


# -- 8. maildir transport ----------------------------------------------------------------------


def test_maildir_transport_writes_the_acknowledgement(app: App, tmp_path: Path, clock: FrozenClock) -> None:
    assert app.settings.outbound.maildir == tmp_path / "outbox"
    number, customer_mid = receive(app)

    assert app.sender.flush() == FlushResult(sent=1)
    row = only_row(app)
    assert row.state == OutboxState.SENT and row.sent_at == clock.now()

    files = list((tmp_path / "outbox" / "new").iterdir())
    assert len(files) == 1
    assert list((tmp_path / "outbox" / "tmp").iterdir()) == []
    content = files[0].read_bytes()
    assert content.replace(b"\r\n", b"\n") == row.content.replace(b"\r\n", b"\n")
    msg = parse(content)
    assert msg["Message-ID"] == f"<{row.message_id}>"
    assert msg["Subject"] == f"[#{number}] Printer on fire"
    assert msg["In-Reply-To"] == f"<{customer_mid}>"
    assert msg["To"].addresses[0].addr_spec == CUSTOMER

    clock.advance(days=1)
    assert app.sender.flush() == FlushResult()
    assert len(list((tmp_path / "outbox" / "new").iterdir())) == 1


def test_a_crash_strands_only_the_mail_being_sent(
    write_config: Callable[..., Path], make_app: Callable[..., App], sink: Sink, clock: FrozenClock
) -> None:
    """Rows are claimed one at a time: the others of the same flush stay queued and go out later."""
    settings = smtp_settings(write_config, sink.port)
    dying = make_app(settings_override=settings,
                     transport_factory=lambda: DieAfterSend(make_transport(settings.outbound)))
    for _ in range(3):
        receive(dying)
    with pytest.raises(ProcessDied):
        dying.sender.flush()
    assert [r.state for r in outbox(dying)] == [OutboxState.DELIVERING, OutboxState.QUEUED, OutboxState.QUEUED]
    dying.close()

    restarted = make_app(settings_override=settings)
    assert restarted.sender.flush() == FlushResult(sent=2)
    clock.advance(days=1)
    assert restarted.sender.flush() == FlushResult(uncertain=1)
    assert [r.state for r in outbox(restarted)] == [OutboxState.UNCERTAIN, OutboxState.SENT, OutboxState.SENT]
    assert len(sink.accepted) == 3  # each mail reached the server exactly once


# -- 9. no acknowledgement stranded: only what may have gone out is 'uncertain' ---------------------


@dataclass
class Disk:
    """One disk under both the maildir and the database. It fills up while a mail is written
    (``fills_on_write``); while it is ``full``, file writes and database commits fail."""

    fills_on_write: bool = False
    full: bool = False

    def write(self, fd: int, data: memoryview) -> int:
        """``os.write`` on this disk: the filling write gets half of its data out, then ENOSPC."""
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if self.fills_on_write:
            self.full = True
            return os.write(fd, data[: len(data) // 2 or 1])
        return os.write(fd, data)

    def free(self) -> None:
        self.fills_on_write = self.full = False


class DatabaseOnDisk(Database):
    """The real database; while the disk is full every commit fails as SQLite's does."""

    def __init__(self, url: str, disk: Disk) -> None:
        super().__init__(make_engine(url))
        self.disk = disk

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with super().transaction() as session:
            yield session
            if self.disk.full:
                raise OperationalError("COMMIT", None, sqlite3.OperationalError("database or disk is full"))


def maildir_files(folder: Path) -> dict[str, list[Path]]:
    return {sub: sorted((folder / sub).iterdir()) if (folder / sub).is_dir() else [] for sub in ("tmp", "new")}


def leave_row(app: App, state: OutboxState, clock: FrozenClock) -> int:
    """The only outbox row as a killed process leaves it: ``state``, attempt 1, lease run out."""
    with app.db.transaction() as s:
        row = s.execute(select(OutboxRow)).scalar_one()
        row.state = state
        row.attempts = 1
        row.next_attempt_at = clock.now() - dt.timedelta(seconds=1)
        return row.id


def test_maildir_enospc_while_the_database_is_full_too_is_retried_once_space_returns(
    settings: Settings, make_app: Callable[..., App], tmp_path: Path, clock: FrozenClock
) -> None:
    """The disk fills while the maildir file is written: the write fails (ENOSPC), and so does the
    commit of that outcome. The row must not end 'uncertain': it was certainly not delivered."""
    disk = Disk()
    folder = tmp_path / "outbox"
    assert settings.outbound.maildir == folder
    app = make_app(database=DatabaseOnDisk(settings.database_url, disk),
                   transport_factory=lambda: MaildirTransport(folder, write=disk.write))
    receive(app)

    disk.fills_on_write = True
    assert app.sender.flush() == FlushResult(unrecorded=1)  # logged; the flush stops, nothing crashes
    assert disk.full
    with pytest.raises(TemporaryError, match="database or disk is full"):
        app.sender.flush()  # the daemon's next ticks fail temporarily while the disk is full
    assert maildir_files(folder) == {"tmp": [], "new": []}  # the half-written file was removed

    disk.free()
    row = only_row(app)
    assert (row.state, row.attempts) == (OutboxState.SENDING, 1)  # what the failed commit left
    assert app.sender.flush() == FlushResult()  # its lease is still running
    clock.advance(seconds=due_later(row, clock).total_seconds() + 1)

    assert app.sender.flush() == FlushResult(retried=1)
    row = only_row(app)
    assert (row.state, row.attempts) == (OutboxState.QUEUED, 1)  # not 'uncertain'
    assert row.last_error is not None and "not delivered" in row.last_error
    wait = due_later(row, clock)  # with backoff
    assert app.sender.flush() == FlushResult()

    clock.advance(seconds=wait.total_seconds() + 1)
    assert app.sender.flush() == FlushResult(sent=1)
    row = only_row(app)
    assert (row.state, row.attempts, row.last_error) == (OutboxState.SENT, 2, None)
    files = maildir_files(folder)
    assert files["tmp"] == [] and len(files["new"]) == 1
    assert files["new"][0].read_bytes() == row.content

    clock.advance(days=1)
    assert app.sender.flush() == FlushResult()
    assert len(maildir_files(folder)["new"]) == 1


def test_maildir_enospc_alone_is_a_plain_retry(
    make_app: Callable[..., App], tmp_path: Path, clock: FrozenClock
) -> None:
    disk = Disk()
    folder = tmp_path / "outbox"
    app = make_app(transport_factory=lambda: MaildirTransport(folder, write=disk.write))
    receive(app)
    disk.full = True  # only the maildir's disk: the database commits

    assert app.sender.flush() == FlushResult(retried=1)
    row = only_row(app)
    assert row.state == OutboxState.QUEUED
    assert row.last_error is not None and os.strerror(errno.ENOSPC) in row.last_error
    assert maildir_files(folder)["new"] == []

    disk.free()
    clock.advance(seconds=due_later(row, clock).total_seconds() + 1)
    assert app.sender.flush() == FlushResult(sent=1)
    assert len(maildir_files(folder)["new"]) == 1


def test_maildir_fsyncs_the_file_before_the_hand_over_and_new_after_it(
    make_app: Callable[..., App], tmp_path: Path
) -> None:
    folder = tmp_path / "outbox"
    synced: list[tuple[int, bool, str]] = []  # (inode, is a folder, the row's state at that moment)
    holder: list[App] = []

    def fsync(fd: int) -> None:
        os.fsync(fd)
        info = os.fstat(fd)
        synced.append((info.st_ino, stat.S_ISDIR(info.st_mode), only_row(holder[0]).state))

    app = make_app(transport_factory=lambda: MaildirTransport(folder, fsync=fsync))
    holder.append(app)
    receive(app)

    assert app.sender.flush() == FlushResult(sent=1)
    [delivered] = maildir_files(folder)["new"]
    file_inode, new_inode = delivered.stat().st_ino, (folder / "new").stat().st_ino
    assert (file_inode, False, OutboxState.SENDING) in synced  # written and durable, not handed over
    assert synced[-1] == (new_inode, True, OutboxState.DELIVERING)  # renamed, then new/ made durable
    assert synced.index((file_inode, False, OutboxState.SENDING)) < len(synced) - 1
    assert only_row(app).state == OutboxState.SENT
    assert maildir_files(folder)["tmp"] == []


def test_kill_before_data_leaves_sending_which_is_queued_again_and_sent_once(
    write_config: Callable[..., Path], make_app: Callable[..., App], sink: Sink, clock: FrozenClock
) -> None:
    settings = smtp_settings(write_config, sink.port)
    first = make_app(settings_override=settings)
    receive(first)
    leave_row(first, OutboxState.SENDING, clock)  # killed while connecting, at MAIL or RCPT
    first.close()

    restarted = make_app(settings_override=settings)
    assert restarted.sender.flush() == FlushResult(retried=1)
    row = only_row(restarted)
    assert (row.state, row.attempts) == (OutboxState.QUEUED, 1)
    assert row.last_error is not None and "not delivered" in row.last_error
    assert sink.deliveries == []
    clock.advance(seconds=due_later(row, clock).total_seconds() + 1)

    assert restarted.sender.flush() == FlushResult(sent=1)
    row = only_row(restarted)
    assert (row.state, row.attempts) == (OutboxState.SENT, 2)
    clock.advance(days=1)
    assert restarted.sender.flush() == FlushResult()
    assert len(sink.deliveries) == len(sink.accepted) == 1


def test_sink_hanging_up_after_rcpt_before_data_is_retried_not_uncertain(
    smtp_app: App, sink: Sink, clock: FrozenClock
) -> None:
    receive(smtp_app)
    sink.drop_after_rcpt = True

    assert smtp_app.sender.flush() == FlushResult(retried=1)
    row = only_row(smtp_app)
    assert row.state == OutboxState.QUEUED
    assert sink.rcpt_attempts == [CUSTOMER] and sink.deliveries == []

    sink.drop_after_rcpt = False
    clock.advance(seconds=due_later(row, clock).total_seconds() + 1)
    assert smtp_app.sender.flush() == FlushResult(sent=1)
    assert len(sink.deliveries) == len(sink.accepted) == 1


def test_4xx_at_rcpt_never_reaches_the_hand_over(smtp_app: App, sink: Sink, clock: FrozenClock) -> None:
    receive(smtp_app)
    sink.rcpt_reply = "452 4.2.2 mailbox full"
    states: list[str] = []
    sink.on_rcpt = lambda: states.append(only_row(smtp_app).state)

    assert smtp_app.sender.flush() == FlushResult(retried=1)
    assert states == [OutboxState.SENDING]
    row = only_row(smtp_app)
    assert row.state == OutboxState.QUEUED and row.last_error is not None and "452 4.2.2" in row.last_error

    sink.rcpt_reply = ACCEPT
    sink.on_rcpt = None
    clock.advance(seconds=due_later(row, clock).total_seconds() + 1)
    assert smtp_app.sender.flush() == FlushResult(sent=1)
    assert len(sink.accepted) == 1


def test_sink_hanging_up_after_the_body_is_uncertain(smtp_app: App, sink: Sink, clock: FrozenClock) -> None:
    """The server has the whole mail but never answered: it may have been delivered."""
    receive(smtp_app)
    sink.drop_after_data = True

    assert smtp_app.sender.flush() == FlushResult(uncertain=1)
    row = only_row(smtp_app)
    assert row.state == OutboxState.UNCERTAIN
    assert row.last_error is not None and "before the server's answer" in row.last_error
    assert f"retry {row.id}" in row.last_error
    assert len(sink.deliveries) == 1

    sink.drop_after_data = False
    clock.advance(days=1)
    assert smtp_app.sender.flush() == FlushResult()
    assert len(sink.deliveries) == 1


def test_database_full_at_the_hand_over_abandons_the_smtp_delivery(
    write_config: Callable[..., Path], make_app: Callable[..., App], sink: Sink, clock: FrozenClock
) -> None:
    """If 'delivering' cannot be committed, the body is never sent: the row stays retryable."""
    settings = smtp_settings(write_config, sink.port)
    disk = Disk()
    app = make_app(settings_override=settings, database=DatabaseOnDisk(settings.database_url, disk))
    receive(app)

    def fill() -> None:
        disk.full = True

    sink.on_rcpt = fill  # the disk fills between the claim and the hand-over
    assert app.sender.flush() == FlushResult(unrecorded=1)
    assert sink.rcpt_attempts == [CUSTOMER] and sink.deliveries == []  # hung up at the 354

    disk.free()
    sink.on_rcpt = None
    row = only_row(app)
    assert row.state == OutboxState.SENDING
    clock.advance(seconds=due_later(row, clock).total_seconds() + 1)
    assert app.sender.flush() == FlushResult(retried=1)
    clock.advance(seconds=due_later(only_row(app), clock).total_seconds() + 1)
    assert app.sender.flush() == FlushResult(sent=1)
    assert len(sink.deliveries) == len(sink.accepted) == 1


class OutlivesItsLease:
    """The real transport, slow to connect: meanwhile another instance finds the lease run out."""

    def __init__(self, inner: Transport, other: App, clock: FrozenClock, lease: dt.timedelta) -> None:
        self.inner, self.other, self.clock, self.lease = inner, other, clock, lease

    def send(self, mail_from: str, recipients: list[str], content: bytes,
             on_handover: Callable[[], None]) -> None:
        self.clock.advance(seconds=self.lease.total_seconds() + 1)
        assert self.other.sender.flush() == FlushResult(retried=1)  # 'sending' past its lease: queued
        self.inner.send(mail_from, recipients, content, on_handover)

    def close(self) -> None:
        self.inner.close()


def test_an_attempt_that_outlived_its_lease_does_not_deliver(
    write_config: Callable[..., Path], make_app: Callable[..., App], sink: Sink, clock: FrozenClock
) -> None:
    settings = smtp_settings(write_config, sink.port)
    other = make_app(settings_override=settings)
    slow = make_app(settings_override=settings, transport_factory=lambda: OutlivesItsLease(
        make_transport(settings.outbound), other, clock, other.sender.lease))
    receive(slow)

    assert slow.sender.flush() == FlushResult(retried=1)  # the hand-over was refused: not ours any more
    assert sink.deliveries == []
    row = only_row(slow)
    assert row.state == OutboxState.QUEUED and row.attempts == 1
    assert row.last_error is not None and "lease ran out" in row.last_error

    clock.advance(seconds=due_later(row, clock).total_seconds() + 1)
    assert other.sender.flush() == FlushResult(sent=1)
    assert len(sink.deliveries) == len(sink.accepted) == 1


def test_outbox_retry_uncertain_from_the_cli_and_status_shows_the_count(
    write_config: Callable[..., Path], make_app: Callable[..., App], sink: Sink, clock: FrozenClock
) -> None:
    config = write_config(transport=f"smtp://127.0.0.1:{sink.port}")
    app = make_app(settings_override=load(config))
    receive(app)
    row_id = leave_row(app, OutboxState.DELIVERING, clock)
    assert app.sender.flush() == FlushResult(uncertain=1)

    status = as_json(run_cli(config, "status", "--json"))
    assert isinstance(status, dict)
    assert status["outbox"] == {"uncertain": 1} and status["outbox_uncertain"] == 1
    table = run_cli(config, "status")
    assert table.returncode == 0, table.stderr.decode()
    assert b"1 uncertain: check, then `mailticket outbox retry --uncertain`" in table.stdout

    assert run_cli(config, "outbox", "retry").returncode == 2  # ID or --uncertain
    assert run_cli(config, "outbox", "retry", str(row_id), "--uncertain").returncode == 2
    assert as_json(run_cli(config, "outbox", "retry", "--uncertain", "--json")) == {"queued": [row_id]}
    assert as_json(run_cli(config, "outbox", "retry", "--uncertain", "--json")) == {"queued": []}
    assert sink.deliveries == []

    # The CLI queued it for the real clock's now; the frozen one catches up.
    row = only_row(app)
    assert row.state == OutboxState.QUEUED
    clock.advance(seconds=max(0.0, (row.next_attempt_at - clock.now()).total_seconds()))
    assert app.sender.flush() == FlushResult(sent=1)
    assert len(sink.accepted) == 1

    status = as_json(run_cli(config, "status", "--json"))
    assert isinstance(status, dict) and status["outbox_uncertain"] == 0
    assert b"retry --uncertain" not in run_cli(config, "status").stdout
    again = run_cli(config, "outbox", "retry", str(row_id))
    assert again.returncode == 1 and b"is sent" in again.stderr
