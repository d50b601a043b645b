"""Today's reactions to a stored message, one small named rule each (group "reaction").

Pure: every rule looks at ``Facts`` and returns actions; the engine carries them out.
``builtin_rules`` gives them in the order they run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailticket.domain import TicketStatus
from mailticket.rules.actions import Action, Assign, KeepStatus, NoAcknowledgement, QueueMail, SetPriority, SetStatus
from mailticket.rules.base import Rule
from mailticket.rules.facts import Facts

REACTION = "reaction"


@dataclass(frozen=True)
class MachineMail:
    name: str = field(default="machine_mail", init=False)
    description: str = field(default="never answer a machine; its mail does not change the ticket's status",
                             init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if not facts.machine:
            return []
        verdict = facts.verdict
        if facts.created:
            return [NoAcknowledgement(f"{verdict.kind} ({verdict.reason}): never answer a machine")]
        return [KeepStatus(f"{verdict.kind} mail does not change the ticket's status")]


@dataclass(frozen=True)
class AgentMail:
    name: str = field(default="agent_mail", init=False)
    description: str = field(default="a ticket an agent opened is not acknowledged", init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if facts.created and facts.sender_is_agent and not facts.machine:
            return [NoAcknowledgement(f"{facts.sender.email} is an agent")]
        return []


@dataclass(frozen=True)
class NotACustomer:
    name: str = field(default="not_a_customer", init=False)
    description: str = field(default="mail from our own support addresses, or from no address, is not acknowledged",
                             init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if not facts.created or facts.machine or facts.sender_is_agent:
            return []
        if facts.sender_is_support or not facts.sender.email:
            return [NoAcknowledgement(f"sender {facts.sender.email or '(none)'} is not a customer address")]
        return []


@dataclass(frozen=True)
class ImportedHistory:
    name: str = field(default="imported_history", init=False)
    description: str = field(default="mail brought in by `mailticket import` is history: not acknowledged",
                             init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if facts.created and facts.imported:
            return [NoAcknowledgement("imported by `mailticket import`: old mail is not acknowledged")]
        return []


_X_PRIORITY = re.compile(r"\s*([1-5])(?!\d)")
_WORDS: tuple[tuple[str, dict[str, str]], ...] = (
    ("Importance", {"high": "high", "low": "low"}),
    ("Priority", {"urgent": "high", "non-urgent": "low"}),
    ("X-MSMail-Priority", {"high": "high", "low": "low"}),
)


def header_priority(facts: Facts) -> str | None:
    """"high", "low" or None, from the first of X-Priority, Importance, Priority, X-MSMail-Priority that says so."""
    value = facts.mail.header("X-Priority")
    if value is not None:
        match = _X_PRIORITY.match(value[:100])
        if match is not None:
            level = match.group(1)
            if level in "12":
                return "high"
            if level in "45":
                return "low"
    for header, words in _WORDS:
        value = facts.mail.header(header)
        if value is None:
            continue
        word = value[:100].strip().lower()
        if word in words:
            return words[word]
    return None


@dataclass(frozen=True)
class PriorityFromHeaders:
    name: str = field(default="priority_from_headers", init=False)
    description: str = field(
        default="a new ticket's priority from X-Priority, Importance, Priority or X-MSMail-Priority", init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if not facts.created or facts.machine:
            return []
        priority = header_priority(facts)
        return [SetPriority(priority)] if priority is not None else []


@dataclass(frozen=True)
class QueueAssignment:
    name: str = field(default="queue_assignment", init=False)
    description: str = field(default="a customer's new ticket is assigned by its queue's strategy", init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if facts.created and not facts.machine and not facts.sender_is_agent:
            return [Assign(None)]
        return []


@dataclass(frozen=True)
class AcknowledgeNew:
    name: str = field(default="acknowledge_new", init=False)
    description: str = field(default="a new ticket from a human is acknowledged ([mail] acknowledge_new)",
                             init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if facts.created and not facts.machine and facts.acknowledge_new:
            return [QueueMail("ack_new", "requester")]
        return []


@dataclass(frozen=True)
class ReopenOnCustomerReply:
    name: str = field(default="reopen_on_reply", init=False)
    description: str = field(default="a customer's reply reopens a pending or solved ticket", init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if facts.created or facts.machine or facts.sender_is_agent:
            return []
        if facts.status in (TicketStatus.PENDING, TicketStatus.SOLVED):
            return [SetStatus(TicketStatus.OPEN, f"customer replied to a {facts.status} ticket")]
        return []


def builtin_rules(priority_from_headers: bool, routing: Sequence[Rule] = ()) -> list[Rule]:
    """The reactions in the order they run; ``routing`` goes after the priority read from the headers."""
    rules: list[Rule] = [MachineMail(), AgentMail(), NotACustomer(), ImportedHistory()]
    if priority_from_headers:
        rules.append(PriorityFromHeaders())
    rules.extend(routing)
    rules.extend([QueueAssignment(), AcknowledgeNew(), ReopenOnCustomerReply()])
    return rules
