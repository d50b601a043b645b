"""SQLAlchemy 2 typed models. Times are timezone-aware UTC everywhere."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores UTC; always returns aware datetimes (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use the clock")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _without_nul(value: str | None) -> str | None:
    return value.replace("\x00", "") if value is not None and "\x00" in value else value


class CleanText(TypeDecorator[str]):
    """Text without NUL: PostgreSQL refuses NUL in text, and it means nothing in mail text.

    Every text column uses it (or CleanString), on every database, so a stored value
    is the same everywhere (the raw bytes keep whatever the sender sent).
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return _without_nul(value)


class CleanString(TypeDecorator[str]):
    """A bounded string without NUL, for values we make ourselves (states, kinds, names from config)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return _without_nul(value)


class CleanList(TypeDecorator[list[str]]):
    """A JSON list of strings, NUL removed from each."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> list[str] | None:
        if value is None:
            return None
        return [v.replace("\x00", "") if isinstance(v, str) else v for v in value]


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: UTCDateTime, list[str]: CleanList}


class Ticket(Base):
    __tablename__ = "tickets"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(CleanText)
    status: Mapped[str] = mapped_column(CleanString(16), index=True)
    priority: Mapped[str] = mapped_column(CleanString(16), default="normal")
    queue: Mapped[str] = mapped_column(CleanString(100))
    mailbox: Mapped[str] = mapped_column(CleanString(320))
    requester: Mapped[str] = mapped_column(CleanText, index=True)  # "" when the sender is unknown
    requester_name: Mapped[str] = mapped_column(CleanText, default="")
    assignee: Mapped[str | None] = mapped_column(CleanString(320))
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    first_response_at: Mapped[dt.datetime | None]
    solved_at: Mapped[dt.datetime | None]
    closed_at: Mapped[dt.datetime | None]
    linked_to: Mapped[int | None] = mapped_column(Integer)  # a ticket this one referenced but could not join
    tags: Mapped[list[str]] = mapped_column(default=list)
    language: Mapped[str | None] = mapped_column(CleanString(8))  # the customer's, when their mail said so
    merged_into: Mapped[int | None] = mapped_column(Integer)  # `#merge N`: mail for this ticket goes to N
    # SLA clocks (mailticket.sla.clocks computes them; store.clocks writes them). The due times are what the
    # policy gives with the pauses added back; None when the target is met, stopped, paused or not set.
    sla_policy: Mapped[str | None] = mapped_column(CleanString(100))
    imported: Mapped[bool] = mapped_column(Boolean, default=False)  # opened by `mailticket import`: no SLA clock
    sla_plan: Mapped[str | None] = mapped_column(CleanString(16))  # Timekeeper.plan_key its plan was made with
    first_response_due: Mapped[dt.datetime | None]
    next_response_due: Mapped[dt.datetime | None]
    resolution_due: Mapped[dt.datetime | None]
    next_response_since: Mapped[dt.datetime | None]  # the customer's reply that waits for an answer
    next_response_at: Mapped[dt.datetime | None]  # the agent's answer to it (None: it still waits)
    paused_at: Mapped[dt.datetime | None]  # pending or solved since: the clocks stand still
    pauses: Mapped[list[list[str]]] = mapped_column(JSON, default=list)  # past pauses, [[start, end] ISO UTC]
    # The next instant the due sweep must look at this ticket (a reminder, an escalation, a lifecycle
    # step); None when nothing is planned. Indexed: the sweep reads only the rows that are due.
    wake_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    csat_rating: Mapped[int | None] = mapped_column(Integer)  # 1..5, the latest satisfaction rating
    csat_comment: Mapped[str | None] = mapped_column(CleanText)
    csat_at: Mapped[dt.datetime | None]

    messages: Mapped[list[Message]] = relationship(back_populates="ticket", order_by="Message.id")
    participants: Mapped[list[Participant]] = relationship(back_populates="ticket", order_by="Participant.id")


class Participant(Base):
    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("ticket_number", "email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_number: Mapped[int] = mapped_column(ForeignKey("tickets.number", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(CleanText, index=True)
    name: Mapped[str] = mapped_column(CleanText, default="")
    role: Mapped[str] = mapped_column(CleanString(16))  # requester, cc, agent

    ticket: Mapped[Ticket] = relationship(back_populates="participants")


class RawMessage(Base):
    """The bytes exactly as a source handed them in: the durable intake."""

    __tablename__ = "raw_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(CleanString(1000), unique=True)
    message_id: Mapped[str] = mapped_column(CleanText, default="")
    sha256: Mapped[str] = mapped_column(CleanString(64))
    size: Mapped[int] = mapped_column(BigInteger)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    source: Mapped[str] = mapped_column(CleanString(16))
    mail_from: Mapped[str] = mapped_column(CleanText, default="")
    recipients: Mapped[list[str]] = mapped_column(default=list)
    peer: Mapped[str] = mapped_column(CleanText, default="")
    state: Mapped[str] = mapped_column(CleanString(16))
    error: Mapped[str | None] = mapped_column(CleanText)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    ticket_number: Mapped[int | None] = mapped_column(ForeignKey("tickets.number"))
    received_at: Mapped[dt.datetime]
    processed_at: Mapped[dt.datetime | None]

    __table_args__ = (
        Index("ix_raw_messages_state_id", "state", "id"),
        Index("ix_raw_messages_message_id", "message_id"),
    )


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_number: Mapped[int] = mapped_column(ForeignKey("tickets.number", ondelete="CASCADE"), index=True)
    raw_id: Mapped[int | None] = mapped_column(ForeignKey("raw_messages.id"))
    direction: Mapped[str] = mapped_column(CleanString(3))
    message_id: Mapped[str] = mapped_column(CleanText, index=True)
    in_reply_to: Mapped[list[str]] = mapped_column(default=list)
    references: Mapped[list[str]] = mapped_column(default=list)
    from_addr: Mapped[str] = mapped_column(CleanText)  # "" when the From header did not parse strictly
    from_name: Mapped[str] = mapped_column(CleanText, default="")
    from_header: Mapped[str] = mapped_column(CleanText, default="")  # the From header as received, for display
    to_addrs: Mapped[list[str]] = mapped_column(default=list)
    cc_addrs: Mapped[list[str]] = mapped_column(default=list)
    subject: Mapped[str] = mapped_column(CleanText)
    date: Mapped[dt.datetime | None]
    text: Mapped[str] = mapped_column(CleanText)
    visible_text: Mapped[str] = mapped_column(CleanText)
    html: Mapped[str] = mapped_column(CleanText, default="")
    author_role: Mapped[str] = mapped_column(CleanString(16))
    verdict: Mapped[str] = mapped_column(CleanString(16))
    verdict_reason: Mapped[str] = mapped_column(CleanText)
    created_at: Mapped[dt.datetime]
    internal: Mapped[bool] = mapped_column(Boolean, default=False)  # a note for agents, never sent to the customer
    # Whether the author was who they claim (an agent's token and checks; a customer's DMARC); None: not checked.
    verified: Mapped[bool | None] = mapped_column(Boolean)
    quote_only: Mapped[bool] = mapped_column(Boolean, default=False)  # nothing but a quote: visible_text is ""

    ticket: Mapped[Ticket] = relationship(back_populates="messages")
    attachments: Mapped[list[AttachmentRow]] = relationship(order_by="AttachmentRow.id")


class Blob(Base):
    """Attachment content, stored once per sha256."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[bytes] = mapped_column(LargeBinary)


class AttachmentRow(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_row_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(CleanString(255))
    original_filename: Mapped[str] = mapped_column(CleanText, default="")
    content_type: Mapped[str] = mapped_column(CleanString(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    content_id: Mapped[str] = mapped_column(CleanText, default="")


class OutboxRow(Base):
    """One outbound mail, rendered, written in the transaction that caused it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_number: Mapped[int | None] = mapped_column(ForeignKey("tickets.number"), index=True)
    kind: Mapped[str] = mapped_column(CleanString(32))
    to_addr: Mapped[str] = mapped_column(CleanText, index=True)
    cc_addrs: Mapped[list[str]] = mapped_column(default=list)  # also envelope recipients (an agent's reply's Cc)
    subject: Mapped[str] = mapped_column(CleanText)
    message_id: Mapped[str] = mapped_column(CleanString(1000), unique=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(CleanString(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime]
    last_error: Mapped[str | None] = mapped_column(CleanText)
    created_at: Mapped[dt.datetime]
    sent_at: Mapped[dt.datetime | None]
    # The inbound message whose processing wrote this mail (None for mail an admin or a timer caused).
    caused_by: Mapped[int | None] = mapped_column(ForeignKey("raw_messages.id"), index=True)

    __table_args__ = (
        Index("ix_outbox_state_next", "state", "next_attempt_at"),
        Index("ix_outbox_to_addr_created_at", "to_addr", "created_at"),
    )


class Event(Base):
    """The decision log: what was decided about a message or ticket, why, and by which rule.

    ``detail`` is the one line a person reads; ``data`` the same decision as JSON for queries
    (None on rows written before schema 0006). ``rule`` names the rule that hit, ``outbox_id``
    the mail the decision wrote.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_number: Mapped[int | None] = mapped_column(ForeignKey("tickets.number"), index=True)
    raw_id: Mapped[int | None] = mapped_column(ForeignKey("raw_messages.id"), index=True)
    message_id: Mapped[str] = mapped_column(CleanText, default="")
    kind: Mapped[str] = mapped_column(CleanString(32))
    detail: Mapped[str] = mapped_column(CleanText)
    created_at: Mapped[dt.datetime]
    rule: Mapped[str | None] = mapped_column(CleanString(100))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"), index=True)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Notice(Base):
    """The ledger of timed mail: each (ticket, target, kind, level) of one clock cycle is sent at most once.

    ``target`` is the clock (first_response, next_response, resolution, pending, solved), ``cycle`` the
    instant that clock started (a next_response clock restarts with each customer reply, a pending one
    with each pending spell), ``level`` the escalation level (0 for reminders and lifecycle mail). The
    unique key makes a second sweep that races the first fail its insert instead of sending twice.
    """

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_number: Mapped[int] = mapped_column(ForeignKey("tickets.number", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(CleanString(32))
    kind: Mapped[str] = mapped_column(CleanString(32))
    level: Mapped[int] = mapped_column(Integer, default=0)
    cycle: Mapped[dt.datetime]
    due_at: Mapped[dt.datetime]  # when it was planned
    created_at: Mapped[dt.datetime]  # when the sweep sent it
    recipients: Mapped[list[str]] = mapped_column(default=list)

    __table_args__ = (UniqueConstraint("ticket_number", "target", "kind", "level", "cycle",
                                       name="uq_notices_once"),)


class SweepState(Base):
    """Small named values of the due sweep: ``plan_key``, the configuration every open ticket was last
    planned with (a new one has the sweep plan them all anew, once)."""

    __tablename__ = "sweep_state"

    name: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    value: Mapped[str] = mapped_column(CleanText)
    updated_at: Mapped[dt.datetime]


class ImapFolderState(Base):
    """Where polling of one IMAP folder stands: its UIDVALIDITY and the last UID fully handled."""

    __tablename__ = "imap_folders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(CleanString(500))  # user@host:port
    folder: Mapped[str] = mapped_column(CleanString(1000))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime]

    __table_args__ = (UniqueConstraint("account", "folder", name="uq_imap_folders_account_folder"),)


class SourceStatus(Base):
    """The health of one mail source (an IMAP mailbox), for `mailticket status`."""

    __tablename__ = "source_status"

    name: Mapped[str] = mapped_column(CleanString(500), primary_key=True)
    kind: Mapped[str] = mapped_column(CleanString(16))
    state: Mapped[str] = mapped_column(CleanString(32))
    detail: Mapped[str] = mapped_column(CleanText, default="")
    instance: Mapped[str] = mapped_column(CleanString(200), default="")
    last_success_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(CleanText)
    last_error_at: Mapped[dt.datetime | None]
    next_retry_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime]


class AddressSuppression(Base):
    """An address that gets no automatic mail until ``until`` (a permanent delivery failure)."""

    __tablename__ = "address_suppressions"

    address: Mapped[str] = mapped_column(CleanText, primary_key=True)
    reason: Mapped[str] = mapped_column(CleanText)
    status: Mapped[str] = mapped_column(CleanString(16), default="")
    source_message_id: Mapped[str] = mapped_column(CleanText, default="")
    created_at: Mapped[dt.datetime]
    until: Mapped[dt.datetime]


class ServeInstance(Base):
    """One running `mailticket serve`: its heartbeat, for `mailticket status` (removed on a clean stop)."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(CleanString(200), primary_key=True)
    host: Mapped[str] = mapped_column(CleanString(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime]
    last_seen: Mapped[dt.datetime]


class AgentState(Base):
    """What an agent set about themselves at run time (config names the agents): away or not."""

    __tablename__ = "agent_state"

    address: Mapped[str] = mapped_column(CleanString(320), primary_key=True)
    away: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[dt.datetime]


class QueueTurn(Base):
    """Where round-robin assignment stands in one queue: the agent who got the last ticket.

    Assignment locks this row (FOR UPDATE on PostgreSQL), so two instances never give
    two tickets the same turn.
    """

    __tablename__ = "queue_turns"

    queue: Mapped[str] = mapped_column(CleanString(100), primary_key=True)
    last_agent: Mapped[str] = mapped_column(CleanString(320), default="")
    turns: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime]
