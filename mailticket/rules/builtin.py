"""Today's reactions to a stored message, one small named rule each (group "reaction").

Pure: every rule looks at ``Facts`` and returns actions; the engine carries them out.
``builtin_rules`` gives them in the order they run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailticket.domain import TicketStatus
from mailticket.rules.actions import (
    Action,
    Assign,
    Discard,
    Internal,
    KeepStatus,
    NoAcknowledgement,
    QueueMail,
    RecordRating,
    SetPriority,
    SetStatus,
)
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
class CsatRating:
    name: str = field(default="csat_rating", init=False)
    description: str = field(default="a customer's answer to the satisfaction survey records the rating; it does "
                                      "not reopen the ticket, is not acknowledged and notifies nobody", init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if facts.csat_rating is None or facts.created or facts.machine or facts.sender_is_agent:
            return []
        return [RecordRating(facts.csat_rating, facts.csat_comment),
                KeepStatus("a satisfaction rating does not reopen the ticket"),
                NoAcknowledgement("a satisfaction rating is not acknowledged")]


@dataclass(frozen=True)
class AcknowledgeNew:
    name: str = field(default="acknowledge_new", init=False)
    description: str = field(default="a new ticket from a human is acknowledged ([mail] acknowledge_new)",
                             init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if facts.created and not facts.machine and facts.acknowledge_new and facts.csat_rating is None:
            return [QueueMail("ack_new", "requester")]
        return []


@dataclass(frozen=True)
class ReopenOnCustomerReply:
    name: str = field(default="reopen_on_reply", init=False)
    description: str = field(default="a customer's reply reopens a pending, solved or recently closed ticket",
                             init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if facts.created or facts.machine or facts.sender_is_agent or facts.csat_rating is not None:
            return []  # a satisfaction rating is no request: rule csat_rating
        if facts.status in (TicketStatus.PENDING, TicketStatus.SOLVED, TicketStatus.CLOSED):
            return [SetStatus(TicketStatus.OPEN, f"customer replied to a {facts.status} ticket")]
        return []


def _answers_ticket(facts: Facts) -> bool:
    """An agent's own (human) mail on an existing ticket."""
    return not facts.created and facts.sender_is_agent and not facts.machine


@dataclass(frozen=True)
class SenderNotVerified:
    name: str = field(default="sender_not_verified", init=False)
    description: str = field(default="a customer mail whose domain says it is forged (dmarc=fail) changes nothing "
                                     "and gets no acknowledgement", init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if facts.sender_is_agent or facts.verified is not False:
            return []
        return [NoAcknowledgement(facts.identity_problem), KeepStatus(facts.identity_problem)]


@dataclass(frozen=True)
class UnverifiedAgentMail:
    name: str = field(default="unverified_agent_mail", init=False)
    description: str = field(default="an agent's mail that did not earn its identity is a note: relayed nowhere, "
                                      "executed never; the agent is told why", init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if not _answers_ticket(facts) or facts.verified is not False:
            return []
        return [Internal(f"unverified: {facts.identity_problem}"),
                KeepStatus("an unverified agent mail changes nothing"),
                QueueMail("identity_refused", "sender_agent")]


@dataclass(frozen=True)
class AgentCollision:
    name: str = field(default="collision", init=False)
    description: str = field(default="an agent's reply to a notification that another reply overtook is held; "
                                      "the agent gets what went out and a reply address to send it anyway",
                             init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if not _answers_ticket(facts) or not facts.verified or facts.collision_with is None or facts.held:
            return []
        return [Internal("held: another reply went out after the notification it answers"),
                KeepStatus("a held reply changes nothing until it is sent"),
                QueueMail("collision", "sender_agent")]


@dataclass(frozen=True)
class HeldReply:
    name: str = field(default="held_reply", init=False)
    description: str = field(default="an answer to a collision mail sends the held reply as it stands "
                                      "(only #discard drops it)", init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if not _answers_ticket(facts) or not facts.verified or facts.held is None:
            return []
        if facts.text.strip().lower() == "#discard":
            return [Internal("the answer to a collision mail"), Discard("the agent answered #discard"),
                    KeepStatus("a discarded reply changes nothing")]
        actions: list[Action] = [Internal("the answer to a collision mail: the held reply is sent"),
                                 QueueMail("agent_reply", "customer")]
        if facts.status == TicketStatus.NEW:
            actions.append(SetStatus(TicketStatus.OPEN, "an agent answered"))
        return actions


@dataclass(frozen=True)
class RelayAgentReply:
    name: str = field(default="relay_agent_reply", init=False)
    description: str = field(default="a verified agent's reply goes to the customer from the support address",
                             init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if not _answers_ticket(facts) or facts.verified is not True or facts.collision_with is not None:
            return []
        if facts.held is not None or facts.command_errors or facts.commands_only:
            return []
        if any(isinstance(a, Internal) for a in facts.command_actions):
            return []  # `#internal`: a note for agents
        actions: list[Action] = [QueueMail("agent_reply", "customer")]
        if facts.status == TicketStatus.NEW:
            actions.append(SetStatus(TicketStatus.OPEN, "an agent answered"))
        return actions


@dataclass(frozen=True)
class AgentCommands:
    name: str = field(default="agent_commands", init=False)
    description: str = field(default="a verified agent's command lines (#status, #assign, #merge, ...) apply "
                                      "with the reply, all or nothing", init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if not _answers_ticket(facts) or facts.verified is not True or facts.held is not None:
            return []
        if facts.collision_with is not None:
            return []  # the reply is held: its commands wait with it (the agent resends, or sends it anyway)
        if facts.command_errors:
            return [Internal("its commands were refused: nothing applied, nothing sent"),
                    KeepStatus("a refused command changes nothing"), QueueMail("command_error", "sender_agent")]
        return list(facts.command_actions)


@dataclass(frozen=True)
class CommandReceipt:
    name: str = field(default="command_receipt", init=False)
    description: str = field(default="the agent gets a one-line receipt of what their commands changed "
                                      "([commands] receipt = \"always\")", init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if not _answers_ticket(facts) or facts.verified is not True or facts.command_errors:
            return []
        return [QueueMail("command_receipt", "sender_agent")] if facts.command_actions else []


@dataclass(frozen=True)
class NotifyAgents:
    name: str = field(default="notify_agents", init=False)
    description: str = field(default="a customer's new ticket or reply notifies the assignee, else the queue's "
                                      "agents", init=False)
    group: str = field(default=REACTION, init=False)

    def check(self, facts: Facts) -> list[Action]:
        if facts.machine or facts.sender_is_agent or facts.sender_is_support:
            return []
        if facts.imported or facts.csat_rating is not None:
            return []  # a rating is on the ticket, for reports: nothing for an agent to answer
        return [QueueMail("agent_notify", "agents")]


def builtin_rules(priority_from_headers: bool, routing: Sequence[Rule] = (), agents: bool = True,
                  receipts: bool = False) -> list[Rule]:
    """The reactions in the order they run; ``routing`` goes after the priority read from the headers."""
    rules: list[Rule] = [MachineMail(), AgentMail(), NotACustomer(), ImportedHistory()]
    if priority_from_headers:
        rules.append(PriorityFromHeaders())
    rules.extend(routing)
    rules.extend([QueueAssignment(), SenderNotVerified(), CsatRating(), AcknowledgeNew(), ReopenOnCustomerReply(),
                  UnverifiedAgentMail(), AgentCollision(), HeldReply(), RelayAgentReply(), AgentCommands()])
    if receipts:  # [commands] receipt = "always"
        rules.append(CommandReceipt())
    if agents:  # an install without [[agents]] acknowledges and stores; nobody to notify
        rules.append(NotifyAgents())
    return rules
