"""Plain typed values passed between the stages of the pipeline."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field


class TicketStatus(enum.StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    SOLVED = "solved"
    CLOSED = "closed"


class RawState(enum.StrEnum):
    NEW = "new"
    DONE = "done"
    QUARANTINED = "quarantined"


class Direction(enum.StrEnum):
    IN = "in"
    OUT = "out"


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    SYSTEM = "system"


class VerdictKind(enum.StrEnum):
    HUMAN = "human"
    AUTO_REPLY = "auto_reply"
    OUT_OF_OFFICE = "out_of_office"
    BOUNCE = "bounce"
    LIST = "list"
    BULK = "bulk"
    OWN_LOOP = "own_loop"
    SPAM = "spam"


class OutboxState(enum.StrEnum):
    QUEUED = "queued"  # waiting for its next attempt
    SENDING = "sending"  # claimed, with the transport, not handed over yet: certainly not delivered
    DELIVERING = "delivering"  # the hand-over began (DATA, rename into new/): it may have been delivered
    SENT = "sent"
    FAILED = "failed"  # permanent failure or retries exhausted; last_error says why
    UNCERTAIN = "uncertain"  # interrupted after the hand-over began: not re-sent automatically


@dataclass(frozen=True)
class Address:
    name: str
    email: str  # lower-cased addr-spec, "" when unparsable

    def formatted(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True)
class Attachment:
    filename: str  # already a safe name: no path, no control characters
    original_filename: str  # as the sender wrote it (decoded), for display only
    content_type: str
    content: bytes
    inline: bool = False
    content_id: str = ""


@dataclass(frozen=True)
class ParsedMail:
    """What the pipeline knows of one inbound message, decoded and bounded."""

    message_id: str  # without angle brackets; "" when the message has none
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    from_: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    date: dt.datetime | None
    text: str  # the plain text of the body (made from HTML when there is none)
    html: str  # the HTML body as received, never rendered by us
    attachments: tuple[Attachment, ...]
    headers: tuple[tuple[str, str], ...]  # every header, decoded, in order
    content_type: str  # top-level content type
    text_from_html: bool = False  # True when the message had no text/plain body
    report_types: tuple[str, ...] = ()  # report-type of multipart/report parts
    from_header: str = ""  # the From header as received (decoded for display, one line)
    from_problem: str = ""  # why From did not parse strictly ("" when it did, or when there is none)
    defects: tuple[str, ...] = field(default=())  # what we worked around

    def header(self, name: str) -> str | None:
        """First value of a header, or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    reason: str  # the header or part that decided it, e.g. "Auto-Submitted: auto-replied"

    @property
    def is_human(self) -> bool:
        return self.kind is VerdictKind.HUMAN


@dataclass(frozen=True)
class Envelope:
    """What the transport said about a message, beside its bytes."""

    source: str  # "smtp", "lmtp", "imap", "pipe", "import"
    mail_from: str = ""
    recipients: tuple[str, ...] = ()
    peer: str = ""
