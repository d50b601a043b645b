"""Everything a rule may look at about one stored message: plain data, built once per message."""

from __future__ import annotations

from dataclasses import dataclass

from mailticket.domain import Address, Attachment, ParsedMail, TicketStatus, Verdict
from mailticket.rules.actions import Action

# The machine-readable parts of DSNs, MDNs and feedback reports (RFC 3464, 8098, 5965).
REPORT_PARTS = frozenset({"message/delivery-status", "message/global-delivery-status", "text/rfc822-headers",
                          "message/disposition-notification", "message/feedback-report"})


@dataclass(frozen=True)
class Facts:
    mail: ParsedMail
    verdict: Verdict
    sender: Address  # email "" when the sender is unknown (From did not parse strictly)
    created: bool  # this message opened a new ticket
    status: TicketStatus  # the ticket's status before this message
    sender_is_agent: bool
    sender_is_support: bool  # the sender is one of our own support addresses
    imported: bool = False  # came in by `mailticket import`: history, not a new request
    recipients: tuple[str, ...] = ()  # envelope recipients, then To and Cc; lower-cased, each once
    known_customer: bool = False  # the sender opened or took part in an earlier ticket
    mailbox: str = ""  # the support address the message came to
    queue: str = ""  # that mailbox's queue, before any routing
    acknowledge_new: bool = True  # [mail] acknowledge_new
    # Identity: an agent's mail answering a ticket is verified or not (identity_problem says why); a
    # customer's is False when a trusted Authentication-Results says dmarc=fail; None: not checked.
    verified: bool | None = None
    identity_problem: str = ""
    collision_with: int | None = None  # another public reply went out after the notification answered
    held: int | None = None  # this mail answers the collision mail of that held reply
    text: str = ""  # the visible text of the mail (without an agent's command lines)
    # A verified agent's commands, checked: the actions they ask for, or (any error) none and the errors.
    command_actions: tuple[Action, ...] = ()
    command_errors: tuple[str, ...] = ()  # one line each: which line was wrong and why
    commands_only: bool = False  # the mail was nothing but commands: nothing to relay
    command_lines: tuple[str, ...] = ()  # the command lines as written
    language: str | None = None  # what the mail says its language is (Content-Language, else a guess)
    # A satisfaction rating the intake accepted (a genuine csat address, from the ticket's requester or a
    # participant, human mail): 1..5, with the visible text of the mail as its comment ("" when empty).
    csat_rating: int | None = None
    csat_comment: str = ""

    @property
    def machine(self) -> bool:
        return not self.verdict.is_human

    @property
    def sender_domain(self) -> str:
        return self.sender.email.rpartition("@")[2]

    @property
    def attachments(self) -> list[Attachment]:
        """The real attachments: inline parts (signature logos, pasted images) and the machine-readable
        parts of a delivery or feedback report do not count."""
        return [a for a in self.mail.attachments if not a.inline and a.content_type.lower() not in REPORT_PARTS]

    @property
    def has_attachment(self) -> bool:
        return bool(self.attachments)
