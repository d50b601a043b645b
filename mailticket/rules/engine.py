"""Run the ordered rules over one message's facts, record each hit, carry the actions out.

``decide`` is pure: the rules' actions resolved into one ``Decision`` (which
rule asked for what). ``Engine.apply`` carries a decision out inside the
message's transaction — the one place that changes the ticket, assigns, and
writes mail — and records every hit and every effect as an event with the
name of the rule behind it, including mail deliberately not sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from mailticket.domain import Role, TicketStatus
from mailticket.rules.actions import (
    Action,
    AddTags,
    Assign,
    ChangeCc,
    Discard,
    Hold,
    Internal,
    KeepStatus,
    Merge,
    NoAcknowledgement,
    QueueMail,
    RecordRating,
    RemoveTags,
    SetAway,
    SetPriority,
    SetQueue,
    SetStatus,
    Stop,
    Unassign,
    as_data,
)
from mailticket.rules.assign import Assigner
from mailticket.rules.base import Rule
from mailticket.rules.facts import Facts
from mailticket.rules.mailing import Mailer
from mailticket.rules.routing import RoutingRule
from mailticket.settings import Settings
from mailticket.sla.clocks import Timekeeper
from mailticket.store import agents as agent_store
from mailticket.store import clocks as clock_store
from mailticket.store import participants, repo
from mailticket.store.models import Message, Ticket

ACK = "ack_new"
REOPENS = (TicketStatus.PENDING, TicketStatus.SOLVED, TicketStatus.CLOSED)  # a customer's mail to these reopens


@dataclass(frozen=True)
class Hit:
    rule: str
    description: str
    actions: tuple[Action, ...]


@dataclass
class Decision:
    """What the rules asked for, resolved; each value with the name of the rule that set it."""

    hits: list[Hit] = field(default_factory=list)
    queue: tuple[str, str] | None = None  # (rule, queue)
    priority: tuple[str, str] | None = None
    tags: list[str] = field(default_factory=list)
    assignee: tuple[str, str] | None = None  # (rule, address): an explicit assignee
    auto_assign: str | None = None  # the rule that asked for the queue's strategy
    status: tuple[str, SetStatus] | None = None
    keep_status: tuple[str, KeepStatus] | None = None
    hold: tuple[str, Hold] | None = None
    no_ack: tuple[str, NoAcknowledgement] | None = None
    mails: list[tuple[str, QueueMail]] = field(default_factory=list)
    internal: tuple[str, Internal] | None = None
    discard: tuple[str, Discard] | None = None
    unassign: str | None = None  # the rule that asked
    untag: list[str] = field(default_factory=list)
    cc: list[ChangeCc] = field(default_factory=list)
    merge: tuple[str, Merge] | None = None
    away: list[SetAway] = field(default_factory=list)
    rating: tuple[str, RecordRating] | None = None  # a satisfaction rating to record

    @property
    def acknowledges(self) -> bool:
        return any(m.kind == ACK for _r, m in self.mails) and self.no_ack is None and self.hold is None


def decide(rules: Sequence[Rule], facts: Facts) -> Decision:
    """Run every rule in order (a ``Stop`` ends the later rules of its group); later values win."""
    decision = Decision()
    stopped: set[str] = set()
    for rule in rules:
        if rule.group in stopped:
            continue
        actions = rule.check(facts)
        if not actions:
            continue
        decision.hits.append(Hit(rule.name, rule.description, tuple(actions)))
        for action in actions:
            _resolve(decision, rule, action, stopped)
    return decision


def _resolve(decision: Decision, rule: Rule, action: Action, stopped: set[str]) -> None:
    name = rule.name
    if isinstance(action, SetQueue):
        decision.queue = (name, action.queue)
    elif isinstance(action, SetPriority):
        decision.priority = (name, action.priority)
    elif isinstance(action, AddTags):
        decision.tags.extend(t for t in action.tags if t not in decision.tags)
    elif isinstance(action, Assign):
        if action.agent is None:
            decision.auto_assign = decision.auto_assign or name
        else:
            decision.assignee = (name, action.agent)
    elif isinstance(action, SetStatus):
        decision.status = (name, action)
    elif isinstance(action, KeepStatus):
        decision.keep_status = decision.keep_status or (name, action)
    elif isinstance(action, Hold):
        decision.hold = decision.hold or (name, action)
    elif isinstance(action, NoAcknowledgement):
        decision.no_ack = decision.no_ack or (name, action)
    elif isinstance(action, QueueMail):
        if all(m.kind != action.kind for _r, m in decision.mails):
            decision.mails.append((name, action))
    elif isinstance(action, Internal):
        decision.internal = decision.internal or (name, action)
    elif isinstance(action, Discard):
        decision.discard = decision.discard or (name, action)
    elif isinstance(action, Unassign):
        decision.unassign, decision.assignee = name, None
    elif isinstance(action, RemoveTags):
        decision.untag.extend(action.tags)
        decision.tags = [t for t in decision.tags if t not in action.tags]
    elif isinstance(action, ChangeCc):
        decision.cc.append(action)
    elif isinstance(action, Merge):
        decision.merge = (name, action)
    elif isinstance(action, SetAway):
        decision.away.append(action)
    elif isinstance(action, RecordRating):
        decision.rating = (name, action)
    elif isinstance(action, Stop):
        stopped.add(rule.group)


class Engine:
    def __init__(self, settings: Settings, rules: Sequence[Rule], mailer: Mailer, assigner: Assigner,
                 keeper: Timekeeper) -> None:
        self._settings = settings
        self._keeper = keeper
        self.rules = list(rules)
        self._mailer = mailer
        self._assigner = assigner

    def apply(self, session: Session, *, ticket: Ticket, message: Message, facts: Facts, raw_id: int | None,
              now: dt.datetime) -> Decision:
        decision = decide(self.rules, facts)
        record = _Recorder(session, now, ticket.number, raw_id, message.message_id)
        for hit in decision.hits:
            record("rule", f"{hit.rule}: " + "; ".join(a.describe() for a in hit.actions), rule=hit.rule,
                   data={"description": hit.description, "actions": [as_data(a) for a in hit.actions]})
        if facts.verdict.is_human:
            ticket.updated_at = now
        self._route(session, decision, ticket, record, now)
        self._status(decision, ticket, record, now)
        self._rating(decision, ticket, record, now)
        self._commands(session, decision, ticket, facts, record, now)
        self._notes(session, decision, message, record)
        self._mail(session, decision, ticket, message, facts, raw_id, record, now)
        if facts.created and facts.imported:
            ticket.imported = True  # history: no SLA clock starts
        if (not facts.created and facts.verdict.is_human and message.author_role == Role.CUSTOMER
                and not message.internal and facts.csat_rating is None and not facts.imported):
            # machine mail, a rating, imported history: no clock; a mail that reopens the ticket starts one anew
            clock_store.customer_wrote(ticket, now, restart=facts.status in REOPENS)
        clock_store.refresh(session, ticket, self._keeper, now)
        return decision

    def dry_run(self, session: Session, facts: Facts) -> dict[str, Any]:
        """What ``apply`` would decide for these facts, writing nothing (`mailticket rules test`)."""
        decision = decide(self.rules, facts)
        routing: list[dict[str, Any]] = []
        stopped = False
        for rule in self.rules:
            if not isinstance(rule, RoutingRule):
                continue
            conditions = rule.evaluate(facts)
            actions = rule.check(facts) if not stopped else []
            routing.append({
                "name": rule.name, "description": rule.description, "skipped": stopped,
                "matched": facts.created and all(c.held for c in conditions),
                "conditions": [{"name": c.name, "held": c.held, "detail": c.detail} for c in conditions],
                "actions": [as_data(a) for a in actions],
                "effects": [a.describe() for a in actions],
            })
            stopped = stopped or any(isinstance(a, Stop) for a in actions)
        queue = decision.queue[1] if decision.queue else facts.queue
        tags = list(decision.tags)
        assignee: str | None
        if decision.assignee is not None:
            assignee, assignment = decision.assignee[1], f"explicit, by rule {decision.assignee[0]}"
        elif decision.auto_assign is not None and decision.hold is None:
            choice = self._assigner.preview(session, queue, tags)
            assignee, assignment = choice.agent, choice.reason
        else:
            assignee, assignment = None, "held for an admin" if decision.hold else "no rule assigns this message"
        blocked = decision.no_ack or decision.hold
        if decision.acknowledges:
            asker = next(r for r, m in decision.mails if m.kind == ACK)
            acknowledgement = f"asked by rule {asker}; the per-recipient limits are checked when it is queued"
        elif blocked is not None:
            acknowledgement = f"{blocked[1].reason} (rule {blocked[0]})"
        elif not facts.created:
            acknowledgement = "the message joins an existing ticket"
        else:
            acknowledgement = "acknowledgements are off (mail.acknowledge_new = false)"
        return {
            "routing": routing,
            "hits": [h.rule for h in decision.hits],
            "result": {
                "queue": queue,
                "priority": decision.priority[1] if decision.priority else "normal",
                "tags": tags,
                "assignee": assignee,
                "assignment": assignment,
                "hold": decision.hold is not None,
                "acknowledge": decision.acknowledges,
                "acknowledgement": acknowledgement,
                "status": str(decision.status[1].status) if decision.status else str(facts.status),
            },
        }

    # -- carrying out ----------------------------------------------------------

    def _route(self, session: Session, decision: Decision, ticket: Ticket, record: _Recorder,
               now: dt.datetime) -> None:
        changes: dict[str, object] = {}
        if decision.queue is not None and decision.queue[1] != ticket.queue:
            ticket.queue = changes["queue"] = decision.queue[1]
        if decision.priority is not None and decision.priority[1] != ticket.priority:
            ticket.priority = changes["priority"] = decision.priority[1]
        if decision.tags or decision.untag:
            tags = [t for t in dict.fromkeys([*ticket.tags, *decision.tags]) if t not in decision.untag]
            if tags != ticket.tags:
                ticket.tags = tags
                changes["tags"] = tags
        if changes:
            rules = sorted({r for r in (decision.queue and decision.queue[0],
                                        decision.priority and decision.priority[0]) if r})
            record("routed", ", ".join(f"{k} {', '.join(v) if isinstance(v, list) else v}"
                                       for k, v in changes.items()),
                   rule=rules[0] if len(rules) == 1 else None, data=dict(changes))
        if decision.hold is not None:
            rule, hold = decision.hold
            record("held", f"kept in status {ticket.status} for an admin: {hold.reason}", rule=rule,
                   data={"reason": hold.reason})
        if decision.unassign is not None and ticket.assignee is not None:
            record("unassigned", f"{ticket.assignee} unassigned by rule {decision.unassign}",
                   rule=decision.unassign, data={"agent": None, "strategy": "explicit"})
            ticket.assignee = None
        if decision.assignee is not None:
            rule, address = decision.assignee
            if address != ticket.assignee:
                ticket.assignee = address
                record("assigned", f"assigned to {address} by rule {rule}", rule=rule,
                       data={"agent": address, "strategy": "explicit"})
        elif decision.auto_assign is not None and decision.hold is None:
            session.flush()  # earlier tickets of this batch count for least_open
            choice = self._assigner.choose(session, ticket.queue, ticket.tags, now)
            if choice.strategy == "none":
                return
            ticket.assignee = choice.agent
            record("assigned" if choice.agent else "unassigned", choice.reason, rule=decision.auto_assign,
                   data={"agent": choice.agent, "strategy": choice.strategy})

    def _notes(self, session: Session, decision: Decision, message: Message, record: _Recorder) -> None:
        if decision.internal is not None:
            rule, note = decision.internal
            message.internal = True
            record("internal", f"kept as an internal note: {note.reason}", rule=rule, data={"reason": note.reason})
        if decision.discard is not None:
            rule, discard = decision.discard
            record("discarded", f"the held reply is dropped: {discard.reason}", rule=rule,
                   data={"reason": discard.reason})

    def _commands(self, session: Session, decision: Decision, ticket: Ticket, facts: Facts, record: _Recorder,
                  now: dt.datetime) -> None:
        """What only an agent's command lines ask for: Cc changes, away, a merge; and one event per command."""
        if not facts.command_actions or all(hit.rule != "agent_commands" for hit in decision.hits):
            return
        for line in facts.command_lines:
            record("command", f"{line} (by {facts.sender.email})", rule="agent_commands",
                   data={"line": line, "by": facts.sender.email})
        for change in decision.cc:
            participants.change_cc(session, ticket.number, change.add, change.remove)
            record("cc", change.describe(), rule="agent_commands", data={"add": list(change.add),
                                                                        "remove": list(change.remove)})
        for away in decision.away:
            agent_store.set_away(session, away.agent, away.away, now)
            record("agent_away" if away.away else "agent_back", away.describe(), rule="agent_commands",
                   data={"agent": away.agent, "away": away.away, "by": facts.sender.email})
        if decision.merge is not None:
            rule, merge = decision.merge
            waiting = clock_store.waiting_since(ticket)
            moved = participants.merge(session, ticket, merge.into, now)
            target = session.get_one(Ticket, merge.into)
            if waiting is not None:  # the customer's mail that waited for an answer waits on in the target
                clock_store.customer_wrote(target, waiting)
            clock_store.refresh(session, target, self._keeper, now)
            record("merged", f"merged into #{merge.into} by {facts.sender.email}: {moved}", rule=rule,
                   data={"into": merge.into, "by": facts.sender.email})
            repo.add_event(session, now, "merged", f"#{ticket.number} merged into this ticket by "
                           f"{facts.sender.email}: {moved}", ticket_number=merge.into,
                           data={"from": ticket.number, "by": facts.sender.email})

    def _status(self, decision: Decision, ticket: Ticket, record: _Recorder, now: dt.datetime) -> None:
        if decision.keep_status is not None:
            rule, keep = decision.keep_status
            record("suppressed", f"status: {keep.reason}", rule=rule, data={"what": "status", "reason": keep.reason})
        elif decision.status is not None and decision.status[1].status != ticket.status:
            rule, change = decision.status
            record("status", f"{ticket.status} -> {change.status}: {change.reason}", rule=rule,
                   data={"from": ticket.status, "to": str(change.status), "reason": change.reason})
            clock_store.set_status(ticket, change.status, now)

    def _rating(self, decision: Decision, ticket: Ticket, record: _Recorder, now: dt.datetime) -> None:
        """The customer's satisfaction rating replaces any earlier one; the message stays on the ticket."""
        if decision.rating is None:
            return
        rule, rating = decision.rating
        previous = ticket.csat_rating
        ticket.csat_rating = rating.rating
        ticket.csat_comment = rating.comment or None
        ticket.csat_at = now
        record("csat", f"satisfaction rating {rating.rating}" + (f" (was {previous})" if previous else ""),
               rule=rule, data={"rating": rating.rating, "comment": rating.comment, "previous": previous})

    def _mail(self, session: Session, decision: Decision, ticket: Ticket, message: Message, facts: Facts,
              raw_id: int | None, record: _Recorder, now: dt.datetime) -> None:
        blocked = decision.no_ack or (decision.hold and (decision.hold[0], NoAcknowledgement(
            f"held for an admin ({decision.hold[1].reason})")))
        asked = False
        for rule, mail in decision.mails:
            if mail.kind == ACK:
                asked = True
                if blocked:
                    record.refused(ACK, *blocked)
                    continue
            if mail.kind == "agent_notify" and decision.hold is not None:
                record("suppressed", "agent_notify: held for an admin", rule=decision.hold[0])
                continue
            self._mailer.send(session, rule, mail, ticket, message, facts, raw_id, record, now)
        if facts.created and not asked:
            if blocked:
                record.refused(ACK, *blocked)
            elif facts.verdict.is_human:
                reason = "acknowledgements are off (mail.acknowledge_new = false) and no routing rule asked for one"
                record("suppressed", f"{ACK}: {reason}", data={"what": ACK, "reason": reason})


class _Recorder:
    """Events about one message on one ticket."""

    def __init__(self, session: Session, now: dt.datetime, ticket: int, raw_id: int | None, message_id: str) -> None:
        self._session, self._now, self._ticket, self._raw_id, self._mid = session, now, ticket, raw_id, message_id

    def __call__(self, kind: str, detail: str, *, rule: str | None = None, outbox_id: int | None = None,
                 data: Mapping[str, object] | None = None) -> None:
        repo.add_event(self._session, self._now, kind, detail, ticket_number=self._ticket, raw_id=self._raw_id,
                       message_id=self._mid, rule=rule, outbox_id=outbox_id,
                       data=dict(data) if data is not None else None)

    def refused(self, kind: str, rule: str, why: NoAcknowledgement) -> None:
        self("suppressed", f"{kind}: {why.reason}", rule=rule, data={"what": kind, "reason": why.reason})

