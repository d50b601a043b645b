"""What a rule may ask for: typed data, carried out in one place (``engine.Engine``).

A rule never touches the database or the outbox: it returns these. Scalar
actions of several rules resolve "later wins" (a routing rule overrides the
priority read from the mail's headers); tags add up; an explicit ``Assign``
wins over ``Assign(None)`` (the queue's strategy); any ``NoAcknowledgement``
or ``Hold`` stops the acknowledgement.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mailticket.domain import TicketStatus

# Who a QueueMail goes to: the requester alone (acknowledgements); the customer side (To the requester,
# Cc the other participants); the agents to notify (the assignee, else the queue's agents, else every
# agent; never one who is away); the agent who wrote this mail (at their configured address).
AUDIENCES = ("requester", "customer", "agents", "sender_agent")


@dataclass(frozen=True)
class SetQueue:
    queue: str

    def describe(self) -> str:
        return f"queue {self.queue}"


@dataclass(frozen=True)
class SetPriority:
    priority: str  # one of domain.PRIORITIES

    def describe(self) -> str:
        return f"priority {self.priority}"


@dataclass(frozen=True)
class AddTags:
    tags: tuple[str, ...]

    def describe(self) -> str:
        return "tags " + ", ".join(self.tags)


@dataclass(frozen=True)
class Assign:
    agent: str | None  # an agent's address; None: by the queue's assignment strategy

    def describe(self) -> str:
        return f"assign {self.agent}" if self.agent else "assign by the queue's strategy"


@dataclass(frozen=True)
class QueueMail:
    kind: str  # the template kind, e.g. "ack_new"
    audience: str  # one of AUDIENCES

    def describe(self) -> str:
        return f"mail {self.kind} to the {self.audience}"


@dataclass(frozen=True)
class SetStatus:
    status: TicketStatus
    reason: str

    def describe(self) -> str:
        return f"status {self.status}: {self.reason}"


@dataclass(frozen=True)
class KeepStatus:
    reason: str

    def describe(self) -> str:
        return f"status unchanged: {self.reason}"


@dataclass(frozen=True)
class Hold:
    reason: str

    def describe(self) -> str:
        return f"hold for an admin: {self.reason}"


@dataclass(frozen=True)
class NoAcknowledgement:
    reason: str

    def describe(self) -> str:
        return f"no acknowledgement: {self.reason}"


@dataclass(frozen=True)
class Internal:
    """This mail becomes an internal note: kept on the ticket for agents, never sent to the customer."""

    reason: str

    def describe(self) -> str:
        return f"internal note: {self.reason}"


@dataclass(frozen=True)
class Discard:
    """The held reply this mail answers for is dropped (its collision mail was answered with #discard)."""

    reason: str

    def describe(self) -> str:
        return f"discard the held reply: {self.reason}"


@dataclass(frozen=True)
class Unassign:
    def describe(self) -> str:
        return "unassign"


@dataclass(frozen=True)
class RemoveTags:
    tags: tuple[str, ...]

    def describe(self) -> str:
        return "remove tags " + ", ".join(self.tags)


@dataclass(frozen=True)
class ChangeCc:
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()

    def describe(self) -> str:
        return "cc " + " ".join([*(f"+{a}" for a in self.add), *(f"-{r}" for r in self.remove)])


@dataclass(frozen=True)
class Merge:
    into: int

    def describe(self) -> str:
        return f"merge into #{self.into}"


@dataclass(frozen=True)
class SetAway:
    agent: str
    away: bool

    def describe(self) -> str:
        return f"{self.agent} {'away' if self.away else 'back'}"


@dataclass(frozen=True)
class RecordRating:
    """The customer's satisfaction rating (1..5) and comment go on the ticket; a later one replaces it."""

    rating: int
    comment: str

    def describe(self) -> str:
        return f"satisfaction rating {self.rating}" + (" with a comment" if self.comment else "")


@dataclass(frozen=True)
class Stop:
    """Later routing rules do not run (``stop = true``)."""

    def describe(self) -> str:
        return "stop: later routing rules do not run"


Action = (SetQueue | SetPriority | AddTags | Assign | QueueMail | SetStatus | KeepStatus | Hold | NoAcknowledgement
          | Internal | Discard | Unassign | RemoveTags | ChangeCc | Merge | SetAway | RecordRating | Stop)


def as_data(action: Action) -> dict[str, Any]:
    """JSON for the event log: ``{"action": "SetQueue", "queue": "billing"}``."""
    data: dict[str, Any] = {"action": type(action).__name__}
    for field in dataclasses.fields(action):
        value = getattr(action, field.name)
        data[field.name] = list(value) if isinstance(value, tuple) else str(value) if isinstance(
            value, TicketStatus) else value
    return data
