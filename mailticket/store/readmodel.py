"""The read side: every query a command shows, as plain JSON-ready dicts and lists.

Each function takes an open Session (and the settings or `now` where it needs them) and
returns dicts of str, int, bool, None, lists and ISO 8601 time strings: nothing that holds
the session. The CLI prints them as a table or as --json.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mailticket.domain import OutboxState, RawState, TicketStatus
from mailticket.settings import Settings
from mailticket.sla.clocks import Timekeeper
from mailticket.store import clocks as clock_store
from mailticket.store import repo
from mailticket.store.models import (
    AddressSuppression,
    AgentState,
    Event,
    Message,
    OutboxRow,
    RawMessage,
    ServeInstance,
    SourceStatus,
    Ticket,
)

HEARTBEAT_INTERVAL = dt.timedelta(seconds=5)  # how often each `serve` beats
STALE_AFTER = 3 * HEARTBEAT_INTERVAL  # three missed beats: the instance is stale

OPEN_STATUSES = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING)
UNASSIGNED = "none"  # tickets(assignee="none"): the tickets nobody is assigned


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- tickets --------------------------------------------------------------------

def ticket_summary(t: Ticket) -> dict[str, Any]:
    return {
        "number": t.number, "subject": t.subject, "status": t.status, "priority": t.priority,
        "queue": t.queue, "requester": t.requester, "assignee": t.assignee,
        "needs_review": t.needs_review, "created_at": t.created_at.isoformat(),
        "updated_at": t.updated_at.isoformat(), "linked_to": t.linked_to,
        "tags": list(t.tags or []), "first_response_at": _iso(t.first_response_at),
        "solved_at": _iso(t.solved_at), "closed_at": _iso(t.closed_at), "language": t.language,
    }


def message_dict(m: Message, full: bool = False) -> dict[str, Any]:
    """One message; ``full`` adds ``text``, the whole text as received (quotes and all)."""
    data: dict[str, Any] = {
        "message_id": m.message_id, "direction": m.direction, "from": m.from_addr, "from_name": m.from_name,
        "from_header": m.from_header,
        "to": list(m.to_addrs), "cc": list(m.cc_addrs), "subject": m.subject,
        "date": _iso(m.date), "author_role": m.author_role, "internal": bool(m.internal), "verified": m.verified,
        "verdict": m.verdict, "verdict_reason": m.verdict_reason, "visible_text": m.visible_text,
        "quote_only": bool(m.quote_only),
        "attachments": [{"filename": a.filename, "content_type": a.content_type, "size": a.size,
                         "sha256": a.sha256} for a in m.attachments],
    }
    if full:
        data["text"] = m.text
    return data


def tickets(session: Session, *, status: str | None = None, queue: str | None = None,
            assignee: str | None = None) -> list[dict[str, Any]]:
    """Tickets by number; ``assignee="none"`` means unassigned. Addresses compare lower-cased."""
    query = select(Ticket).order_by(Ticket.number)
    if status:
        query = query.where(Ticket.status == status)
    if queue:
        query = query.where(Ticket.queue == queue)
    if assignee:
        wanted = assignee.strip().lower()
        if wanted == UNASSIGNED:
            query = query.where(Ticket.assignee.is_(None))
        else:
            query = query.where(func.lower(Ticket.assignee) == wanted)
    return [ticket_summary(t) for t in session.execute(query).scalars()]


def ticket(session: Session, number: int, full: bool = False) -> dict[str, Any] | None:
    """One ticket with its participants and messages (oldest first), or None."""
    row = session.get(Ticket, number)
    if row is None:
        return None
    data = ticket_summary(row)
    data["participants"] = [{"email": p.email, "name": p.name, "role": p.role} for p in row.participants]
    data["messages"] = [message_dict(m, full) for m in row.messages]
    data["csat"] = {"rating": row.csat_rating, "comment": row.csat_comment, "at": _iso(row.csat_at)}
    return data


def ticket_sla(session: Session, number: int, keeper: Timekeeper, now: dt.datetime) -> dict[str, Any] | None:
    """The ticket's SLA clocks as the sweep sees them (the due-time columns), what is breached now, and
    why each due time is what it is (policy, business hours, pauses); None for an unknown ticket."""
    row = session.get(Ticket, number)
    if row is None:
        return None
    dues = {"first_response": row.first_response_due, "next_response": row.next_response_due,
            "resolution": row.resolution_due}
    clocks = keeper.clocks(clock_store.state_of(row))
    return {
        "policy": row.sla_policy,
        **{f"{name}_due": _iso(due) for name, due in dues.items()},
        "paused": row.status == TicketStatus.PENDING and row.paused_at is not None,
        "breached": clocks.breached(now),  # running past the deadline (also when it broke before a pause)
        "next_check": _iso(row.wake_at),
        "why": keeper.explain(clocks, now),
    }


# -- outbox, quarantine, suppressions ---------------------------------------------

def outbox_rows(session: Session, state: str | None = None) -> list[dict[str, Any]]:
    query = select(OutboxRow).order_by(OutboxRow.id)
    if state:
        query = query.where(OutboxRow.state == state)
    return [{
        "id": r.id, "ticket": r.ticket_number, "kind": r.kind, "to": r.to_addr, "subject": r.subject,
        "state": r.state, "attempts": r.attempts, "message_id": r.message_id, "last_error": r.last_error,
        "next_attempt_at": r.next_attempt_at.isoformat(), "sent_at": _iso(r.sent_at),
        "caused_by": r.caused_by,
    } for r in session.execute(query).scalars()]


def quarantined(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        select(RawMessage).where(RawMessage.state == RawState.QUARANTINED).order_by(RawMessage.id)
    ).scalars()
    return [{
        "id": r.id, "message_id": r.message_id, "source": r.source, "attempts": r.attempts,
        "received_at": r.received_at.isoformat(), "error": r.error or "",
    } for r in rows]


def suppressions(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    rows = session.execute(select(AddressSuppression).order_by(AddressSuppression.address)).scalars()
    return [{
        "address": r.address, "status": r.status, "reason": r.reason, "since": r.created_at.isoformat(),
        "until": r.until.isoformat(), "active": r.until > now, "message_id": r.source_message_id,
    } for r in rows]


# -- status -----------------------------------------------------------------------

def instances(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    """Every instance that beat recently or not so recently, oldest first, each running or stale."""
    rows = session.execute(select(ServeInstance).order_by(ServeInstance.started_at, ServeInstance.id)).scalars()
    return [{
        "id": row.id, "host": row.host, "pid": row.pid, "started_at": row.started_at.isoformat(),
        "last_seen": row.last_seen.isoformat(), "running": now - row.last_seen <= STALE_AFTER,
    } for row in rows]


def status_report(session: Session, settings: Settings, now: dt.datetime) -> dict[str, Any]:
    """`mailticket status`: serve's heartbeats, each source's state, what waits in inbox and outbox."""
    rows = {row.name: row for row in session.execute(select(SourceStatus)).scalars()}
    mailboxes: list[dict[str, Any]] = []
    for mailbox in settings.mailboxes:
        entry: dict[str, Any] = {"address": mailbox.address, "queue": mailbox.queue, "imap": None}
        imap = mailbox.imap
        if imap is not None:
            row = rows.get(f"imap:{mailbox.address}")
            cursor = repo.imap_cursor(session, imap.account, imap.folder)
            entry["imap"] = {
                "account": imap.account,
                "folder": imap.folder,
                "after": imap.after,
                "state": row.state if row else "never polled",
                "detail": row.detail if row else "",
                "instance": row.instance if row else None,
                "last_success_at": _iso(row.last_success_at) if row else None,
                "last_error": row.last_error if row else None,
                "last_error_at": _iso(row.last_error_at) if row else None,
                "next_retry_at": _iso(row.next_retry_at) if row else None,
                "updated_at": _iso(row.updated_at) if row else None,
                "uidvalidity": cursor[0] if cursor else None,
                "last_uid": cursor[1] if cursor else None,
            }
        mailboxes.append(entry)
    inbox = repo.count_by_state(session)
    outbox = repo.count_by_state(session, OutboxRow)
    return {
        "config": settings.source,
        "smtp": {"listen": [str(listener) for listener in settings.smtp.listen]},
        "mailboxes": mailboxes,
        "inbox": inbox,
        "outbox": outbox,
        # Mail that may or may not have gone out: an admin checks, then `outbox retry --uncertain`.
        "outbox_uncertain": outbox.get(OutboxState.UNCERTAIN, 0),
        # Each `serve` that beat: running, or stale (its beats stopped without a clean stop).
        "instances": instances(session, now),
        "sweep": sweep_status(session, now),
    }


def sweep_status(session: Session, now: dt.datetime) -> dict[str, Any]:
    """What the due sweep has before it (two index reads on wake_at): how many tickets are due now, since
    when the oldest has waited (long ago: no sweep runs — start `serve`, or `tick` from cron), the next."""
    due, oldest = session.execute(select(func.count(), func.min(Ticket.wake_at)).where(Ticket.wake_at <= now)).one()
    upcoming = session.execute(select(func.min(Ticket.wake_at)).where(Ticket.wake_at > now)).scalar()
    return {"due": int(due), "oldest_due_at": _iso(oldest), "next_at": _iso(upcoming)}


# -- agents -----------------------------------------------------------------------

def agents(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Each [[agents]] entry, in config order: its queues, whether away, how many open tickets it holds."""
    away = {a.lower(): bool(v) for a, v in session.execute(select(AgentState.address, AgentState.away)).all()}
    assignee = func.lower(Ticket.assignee)
    counts = {a: int(n) for a, n in session.execute(
        select(assignee, func.count()).where(Ticket.assignee.is_not(None), Ticket.status.in_(OPEN_STATUSES))
        .group_by(assignee)
    ).all()}
    result: list[dict[str, Any]] = []
    for agent in settings.agents:
        address = agent.address.lower()
        result.append({
            "address": agent.address,
            "name": agent.name,
            "aliases": list(agent.aliases),
            "queues": [q.name for q in settings.queues if address in {a.lower() for a in q.agents}],
            "skills": list(agent.skills),
            "away": away.get(address, False),
            "open_tickets": counts.get(address, 0),
        })
    return result


# -- explain ----------------------------------------------------------------------

def _step(e: Event) -> dict[str, Any]:
    return {"at": e.created_at.isoformat(), "kind": e.kind, "detail": e.detail, "rule": e.rule,
            "outbox_id": e.outbox_id, "data": e.data}


def _caused_mails(session: Session, raw_ids: Iterable[int], events: Iterable[Event]) -> list[dict[str, Any]]:
    """The outbox rows these raw messages caused (caused_by) or these events name (outbox_id)."""
    rule_of: dict[int, str | None] = {}
    for e in events:
        if e.outbox_id is not None and rule_of.get(e.outbox_id) is None:
            rule_of[e.outbox_id] = e.rule
    conditions = []
    raw_list = sorted(set(raw_ids))
    if raw_list:
        conditions.append(OutboxRow.caused_by.in_(raw_list))
    if rule_of:
        conditions.append(OutboxRow.id.in_(sorted(rule_of)))
    if not conditions:
        return []
    rows = session.execute(select(OutboxRow).where(or_(*conditions)).order_by(OutboxRow.id)).scalars()
    return [{"id": r.id, "kind": r.kind, "to": r.to_addr, "state": r.state, "message_id": r.message_id,
             "last_error": r.last_error, "rule": rule_of.get(r.id)} for r in rows]


def explain(session: Session, message_id: str) -> dict[str, Any] | None:
    """Everything recorded about the message with this Message-ID (angle brackets optional), or None.

    Built from columns: the events of the message (by Message-ID or by raw id), the rules that
    hit it (events of kind "rule"), and the mails it caused (outbox.caused_by, events.outbox_id).
    """
    wanted = message_id.strip().strip("<>").strip()
    raws = session.execute(
        select(RawMessage).where(RawMessage.message_id == wanted).order_by(RawMessage.id)
    ).scalars().all()
    raw = raws[0] if raws else None
    message = session.execute(
        select(Message).where(Message.message_id == wanted).order_by(Message.id)
    ).scalars().first()
    outbound = session.execute(select(OutboxRow).where(OutboxRow.message_id == wanted)).scalars().first()
    if raw is None and message is None and outbound is None:
        return None
    raw_ids = [r.id for r in raws]
    conditions = [Event.message_id == wanted]
    if raw_ids:
        conditions.append(Event.raw_id.in_(raw_ids))
    events = session.execute(select(Event).where(or_(*conditions)).order_by(Event.id)).scalars().all()
    return {
        "message_id": wanted,
        "direction": message.direction if message else ("out" if outbound else "in"),
        "received": None if raw is None else {
            "raw_id": raw.id, "source": raw.source, "state": raw.state, "received_at": raw.received_at.isoformat(),
            "mail_from": raw.mail_from, "recipients": list(raw.recipients), "error": raw.error,
        },
        "ticket": message.ticket_number if message else (outbound.ticket_number if outbound else None),
        "from": message.from_addr if message else None,
        "subject": message.subject if message else (outbound.subject if outbound else None),
        "verdict": message.verdict if message else None,
        "verdict_reason": message.verdict_reason if message else None,
        "same_message_id": [{"raw_id": r.id, "ticket": r.ticket_number} for r in raws[1:]],
        "steps": [_step(e) for e in events],
        "rules": [{"rule": e.rule, "detail": e.detail, "actions": (e.data or {}).get("actions", [])}
                  for e in events if e.kind == "rule"],
        "mails": _caused_mails(session, raw_ids, events),
        "outbox": None if outbound is None else {
            "id": outbound.id, "kind": outbound.kind, "to": outbound.to_addr, "state": outbound.state,
            "attempts": outbound.attempts, "last_error": outbound.last_error,
        },
    }
