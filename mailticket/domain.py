"""Plain typed values passed between the stages of the pipeline."""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass, field


class TicketStatus(enum.StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    SOLVED = "solved"
    CLOSED = "closed"


PRIORITIES = ("low", "normal", "high", "urgent")  # a ticket's priority, lowest first


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


_REPLY_PREFIX = re.compile(
    r"^\s*((re|fwd?|aw|wg|sv|vs|antw|antwort|tr|rv|rif|odp|vl|ynt|res|enc)\s*(\[\d+\]|\(\d+\))?\s*[:：]\s*)+",
    re.I,
)


@dataclass(frozen=True)
class SubjectTag:
    """The ticket tag in subjects: ``[#42]`` or, with a prefix, ``[Support #42]``."""

    prefix: str = ""

    @property
    def pattern(self) -> re.Pattern[str]:
        prefix = re.escape(self.prefix) + r"\s*" if self.prefix else ""
        return re.compile(r"\[" + prefix + r"#(\d{1,12})\]", re.I)

    def format(self, number: int) -> str:
        return f"[{self.prefix} #{number}]" if self.prefix else f"[#{number}]"

    def find(self, subject: str) -> int | None:
        match = self.pattern.search(subject)
        return int(match.group(1)) if match else None

    def strip(self, subject: str) -> str:
        """The subject without reply prefixes and without our tag."""
        previous = None
        while previous != subject:
            previous = subject
            subject = _REPLY_PREFIX.sub("", subject)
            subject = self.pattern.sub("", subject).strip()
        return re.sub(r"\s+", " ", subject).strip()


@dataclass(frozen=True)
class FailedRecipient:
    address: str  # lower-cased
    action: str  # "failed", "delayed", ... ("" when the report does not say)
    status: str  # RFC 3463 "5.1.1", or "" when unknown
    diagnostic: str  # the remote server's words, bounded

    @property
    def failed(self) -> bool:
        """The mail was not delivered and will not be (RFC 3464 ``Action: failed``, or a 5.x.x status)."""
        return self.action == "failed" or self.status.startswith("5")

    @property
    def permanent(self) -> bool:
        """The address itself is bad: a 5.x.x status (``failed`` with 4.x.x is e.g. a retry timeout)."""
        if self.status:
            return self.status.startswith("5")
        return self.action == "failed"


@dataclass(frozen=True)
class BounceReport:
    recipients: tuple[FailedRecipient, ...]
    original_message_id: str  # without angle brackets; "" when the report does not quote it
    standard: bool  # an RFC 3464 message/delivery-status part was found

    @property
    def permanent(self) -> bool:
        return any(r.permanent for r in self.recipients)

    @property
    def transient(self) -> bool:
        """Only delays and temporary trouble: the mail may still arrive (a warning, not a bounce)."""
        return bool(self.recipients) and not any(r.failed for r in self.recipients)

    def describe(self) -> str:
        if not self.recipients:
            return "no failed recipient named"
        parts = [f"{r.address} {r.status or r.action or '?'}" for r in self.recipients[:5]]
        more = f" (+{len(self.recipients) - 5} more)" if len(self.recipients) > 5 else ""
        return ", ".join(parts) + more
