"""An agent's command lines, checked against this install and this ticket: actions, or every error.

``rules.commands`` reads the lines (syntax); here each is resolved — an agent by address,
alias, name, ``me`` or ``none``, a queue by name, a merge target that exists and is open —
into the typed actions the engine carries out. One error and no action applies: the agent
is told which line was wrong and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from mailticket.domain import TicketStatus
from mailticket.rules.actions import (
    Action,
    AddTags,
    Assign,
    ChangeCc,
    Internal,
    Merge,
    RemoveTags,
    SetAway,
    SetPriority,
    SetQueue,
    SetStatus,
    Unassign,
)
from mailticket.rules.commands import Command, Parsed
from mailticket.settings import AgentSettings, Settings
from mailticket.store.models import Ticket


@dataclass(frozen=True)
class Checked:
    actions: tuple[Action, ...]
    errors: tuple[str, ...]  # 'line 2 "#assign zed": no agent "zed" (agents: ...)'
    lines: tuple[str, ...]  # every command line as written


def check(session: Session, settings: Settings, parsed: Parsed, ticket: Ticket, agent: AgentSettings) -> Checked:
    errors = [f'line {e.number}: {e.reason}' for e in parsed.errors]
    actions: list[Action] = []
    for command in parsed.commands:
        outcome = _resolve(session, settings, command, ticket, agent)
        if isinstance(outcome, str):
            errors.append(f'line {command.number}: "{command.line.strip()}": {outcome}')
        else:
            actions.extend(outcome)
    lines = tuple(c.line.strip() for c in parsed.commands) + tuple(e.line.strip() for e in parsed.errors)
    return Checked(() if errors else tuple(actions), tuple(errors), lines)


def _resolve(session: Session, settings: Settings, command: Command, ticket: Ticket,
             agent: AgentSettings) -> list[Action] | str:
    verb, args = command.verb, command.args
    by = f"#{verb} by {agent.address}"
    if verb == "status":
        return [SetStatus(TicketStatus(args[0]), by)]
    if verb == "priority":
        return [SetPriority(args[0])]
    if verb == "assign":
        return _assign(settings, args[0], agent)
    if verb == "queue":
        if args[0] not in settings.queue_names:
            return f'no queue "{args[0]}" (queues: {", ".join(settings.queue_names)})'
        return [SetQueue(args[0])]
    if verb == "tag":
        add = tuple(a[1:] for a in args if a.startswith("+"))
        remove = tuple(a[1:] for a in args if a.startswith("-"))
        return [*([AddTags(add)] if add else []), *([RemoveTags(remove)] if remove else [])]
    if verb == "cc":
        add = tuple(a[1:] for a in args if a.startswith("+"))
        remove = tuple(a[1:] for a in args if a.startswith("-"))
        for address in add:
            if address in settings.support_addresses or settings.mailbox_for(address) is not None:
                return f"{address} is one of our own support addresses"
            if settings.is_agent(address):
                return f"{address} is an agent: agents see the ticket without being in Cc"
        return [ChangeCc(add, remove)]
    if verb == "internal":
        return [Internal("#internal")]
    if verb == "merge":
        number = int(args[0])
        target = session.get(Ticket, number)
        if number == ticket.number:
            return "a ticket cannot be merged into itself"
        if target is None:
            return f"there is no ticket #{number}"
        if target.status == TicketStatus.CLOSED or target.merged_into is not None:
            return f"ticket #{number} is closed: reopen it first, or merge into another"
        return [Merge(number)]
    if verb == "away":
        return [SetAway(agent.address, args[0] == "on")]
    return f'"#{verb}" cannot be used by mail'


def _assign(settings: Settings, who: str, agent: AgentSettings) -> list[Action] | str:
    if who == "me":
        return [Assign(agent.address)]
    if who == "none":
        return [Unassign()]
    found = settings.agent_for(who)
    if found is None:
        named = [a for a in settings.agents if a.name.lower() == who.lower()]
        if len(named) == 1:
            found = named[0]
        elif len(named) > 1:
            return f'"{who}" names {len(named)} agents: use an address'
    if found is None:
        known = ", ".join(f"{a.name} <{a.address}>" for a in settings.agents)
        return f'no agent "{who}" (agents: {known})'
    return [Assign(found.address)]
