"""The read model: every query the CLI shows, as JSON-ready dicts, from columns (never from prose)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

from sqlalchemy import select

from mailticket.app import App
from mailticket.clock import FrozenClock
from mailticket.domain import RawState
from mailticket.schedule import heartbeat
from mailticket.settings import AgentSettings, QueueSettings
from mailticket.store import readmodel
from mailticket.store.models import (
    AddressSuppression,
    AgentState,
    Event,
    OutboxRow,
    RawMessage,
    ServeInstance,
    Ticket,
)
from tests.conftest import ingest, mail

SUMMARY_KEYS = {"number", "subject", "status", "priority", "queue", "requester", "assignee", "needs_review",
                "created_at", "updated_at", "linked_to", "tags", "first_response_at", "solved_at", "closed_at",
                "language"}


def _ticket(app: App, raw: bytes) -> int:
    number, _decision = ingest(app, raw)
    assert number is not None
    return number


def _set(app: App, number: int, **values: Any) -> None:
    with app.db.transaction() as session:
        row = session.get(Ticket, number)
        assert row is not None
        for name, value in values.items():
            setattr(row, name, value)


def _outbox(session: Any, now: dt.datetime, kind: str, to: str, caused_by: int | None = None,
            ticket: int | None = None, state: str = "queued") -> OutboxRow:
    row = OutboxRow(ticket_number=ticket, kind=kind, to_addr=to, subject=f"{kind} mail",
                    message_id=f"{kind}.{uuid.uuid4().hex}@tickets.example.com", content=b"x",
                    state=state, attempts=0, next_attempt_at=now, created_at=now, caused_by=caused_by)
    session.add(row)
    session.flush()
    return row


def _raw_id(app: App, message_id: str) -> int:
    with app.db.transaction() as session:
        return int(session.execute(
            select(RawMessage.id).where(RawMessage.message_id == message_id).order_by(RawMessage.id)
        ).scalars().first() or 0)


def test_tickets_filters_by_status_queue_and_assignee(app: App) -> None:
    a = _ticket(app, mail(subject="one", sender="a@customer.example"))
    b = _ticket(app, mail(subject="two", sender="b@customer.example"))
    c = _ticket(app, mail(subject="three", sender="c@customer.example"))
    _set(app, a, status="open", queue="billing", assignee="agent@example.com", tags=["vip", "billing"])
    _set(app, b, status="pending", queue="billing", assignee=None)
    _set(app, c, status="open", queue="support", assignee="other@example.com")

    with app.db.transaction() as session:
        every = readmodel.tickets(session)
        assert [t["number"] for t in every] == [a, b, c]
        assert all(set(t) == SUMMARY_KEYS for t in every)
        assert every[0]["tags"] == ["vip", "billing"]
        assert every[1]["tags"] == []

        assert [t["number"] for t in readmodel.tickets(session, status="open")] == [a, c]
        assert [t["number"] for t in readmodel.tickets(session, queue="billing")] == [a, b]
        assert [t["number"] for t in readmodel.tickets(session, assignee="AGENT@Example.com")] == [a]
        assert [t["number"] for t in readmodel.tickets(session, assignee="none")] == [b]
        assert [t["number"] for t in readmodel.tickets(session, status="open", queue="billing",
                                                       assignee="agent@example.com")] == [a]
        assert readmodel.tickets(session, status="closed") == []
        json.dumps(every)  # JSON-ready as it is


def test_ticket_shows_participants_and_messages_and_none_for_unknown(app: App) -> None:
    number = _ticket(app, mail(subject="Printer on fire", message_id="show-1@customer.example"))
    with app.db.transaction() as session:
        data = readmodel.ticket(session, number)
        assert readmodel.ticket(session, number + 1000) is None
    assert data is not None
    assert set(data) == SUMMARY_KEYS | {"participants", "messages", "csat"}
    assert data["subject"] == "Printer on fire"
    assert any(p["email"] == "alice@customer.example" for p in data["participants"])
    [message] = [m for m in data["messages"] if m["message_id"] == "show-1@customer.example"]
    assert message["from"] == "alice@customer.example"
    assert message["direction"] == "in"
    assert set(message) == {"message_id", "direction", "from", "from_name", "from_header", "to", "cc", "subject",
                            "date", "author_role", "internal", "verified", "verdict", "verdict_reason",
                            "visible_text", "quote_only", "attachments"}
    assert (message["author_role"], message["internal"], message["verified"]) == ("customer", False, None)
    json.dumps(data)


def test_explain_builds_rules_and_mails_from_columns(app: App, clock: FrozenClock) -> None:
    mid = "explain-1@customer.example"
    number = _ticket(app, mail(message_id=mid))
    other = _ticket(app, mail(message_id="unrelated@customer.example", sender="bob@customer.example"))
    raw_id = _raw_id(app, mid)
    other_raw = _raw_id(app, "unrelated@customer.example")
    now = clock.now()
    actions = [{"action": "SetQueue", "queue": "billing"}, {"action": "AddTag", "tag": "vip"}]
    with app.db.transaction() as session:
        ack = _outbox(session, now, "ack_new", "alice@customer.example", caused_by=raw_id, ticket=number)
        notify = _outbox(session, now, "notify_agent", "agent@example.com", ticket=number)
        old = _outbox(session, now, "old_ack", "alice@customer.example", ticket=number, state="sent")
        stranger = _outbox(session, now, "ack_new", "bob@customer.example", caused_by=other_raw, ticket=other)
        session.add_all([
            Event(ticket_number=number, raw_id=raw_id, message_id=mid, kind="rule", rule="billing words",
                  detail="billing words: queue billing, tag vip", created_at=now,
                  data={"description": "billing words in the subject", "actions": actions}),
            Event(ticket_number=number, raw_id=raw_id, message_id=mid, kind="queued", rule="acknowledge",
                  outbox_id=ack.id, detail=f"queued ack_new as <{ack.message_id}>", created_at=now,
                  data={"kind": "ack_new", "to": "alice@customer.example"}),
            Event(ticket_number=number, raw_id=raw_id, message_id=mid, kind="queued", rule="notify agents",
                  outbox_id=notify.id, detail="queued notify_agent", created_at=now,
                  data={"kind": "notify_agent", "to": "agent@example.com"}),
            # Before schema 0006: prose only, rule and data NULL; the migration backfilled outbox_id.
            Event(ticket_number=number, raw_id=raw_id, message_id="", kind="queued",
                  detail=f"queued old_ack to alice@customer.example as <{old.message_id}>", created_at=now,
                  outbox_id=old.id),
            # Before schema 0006, naming nothing by column: still a step, and no mail from its prose.
            Event(ticket_number=number, raw_id=None, message_id=mid, kind="threaded",
                  detail=f"new ticket; queued as <{stranger.message_id}>", created_at=now),
            Event(ticket_number=number, raw_id=None, message_id=mid, kind="rule", detail="old rule line",
                  created_at=now),
        ])
        report = readmodel.explain(session, f"<{mid}>")
        stranger_id = stranger.id
        ids = {"ack": ack.id, "notify": notify.id, "old": old.id}

    assert report is not None
    json.dumps(report)
    assert report["message_id"] == mid
    assert report["ticket"] == number
    assert report["direction"] == "in"
    assert report["received"]["raw_id"] == raw_id
    assert set(report) == {"message_id", "direction", "received", "ticket", "from", "subject", "verdict",
                           "verdict_reason", "same_message_id", "steps", "rules", "mails", "outbox"}

    steps = report["steps"]
    assert all(set(s) == {"at", "kind", "detail", "rule", "outbox_id", "data"} for s in steps)
    [rule_step] = [s for s in steps if s["rule"] == "billing words"]
    assert rule_step["data"]["actions"] == actions
    [legacy] = [s for s in steps if s["kind"] == "threaded"]
    assert legacy["rule"] is None and legacy["outbox_id"] is None and legacy["data"] is None
    assert any(s["outbox_id"] == ids["old"] and s["rule"] is None for s in steps)

    assert {"rule": "billing words", "detail": "billing words: queue billing, tag vip",
            "actions": actions} in report["rules"]
    assert {"rule": None, "detail": "old rule line", "actions": []} in report["rules"]

    mails = {m["id"]: m for m in report["mails"]}
    assert stranger_id not in mails  # named in prose only, caused by another message
    assert mails[ids["ack"]] == {"id": ids["ack"], "kind": "ack_new", "to": "alice@customer.example",
                                 "state": "queued", "message_id": mails[ids["ack"]]["message_id"],
                                 "last_error": None, "rule": "acknowledge"}
    assert mails[ids["notify"]]["rule"] == "notify agents"  # by outbox_id alone (no caused_by)
    assert mails[ids["old"]]["rule"] is None  # backfilled outbox_id, no rule column
    assert mails[ids["old"]]["state"] == "sent"
    assert [m["id"] for m in report["mails"]] == sorted(mails)


def test_explain_unknown_and_outbound(app: App, clock: FrozenClock) -> None:
    with app.db.transaction() as session:
        assert readmodel.explain(session, "<nobody@nowhere.example>") is None
        row = _outbox(session, clock.now(), "reply", "carol@customer.example")
        report = readmodel.explain(session, row.message_id)
    assert report is not None
    assert report["direction"] == "out"
    assert report["received"] is None
    assert report["outbox"]["to"] == "carol@customer.example"
    assert report["steps"] == [] and report["rules"] == [] and report["mails"] == []


def test_agents_away_queues_and_open_tickets(app: App, clock: FrozenClock) -> None:
    settings = dataclasses.replace(
        app.settings,
        agents=(AgentSettings("ann@example.com", "Ann", aliases=("ann.b@example.com",), skills=("de", "billing")),
                AgentSettings("ben@example.com", "Ben")),
        queues=(QueueSettings("billing", "round_robin", agents=("ann@example.com", "ben@example.com")),
                QueueSettings("support", "round_robin", agents=("ann@example.com",)),
                QueueSettings("sales")),
    )
    numbers = [_ticket(app, mail(subject=f"t{i}", sender=f"c{i}@customer.example")) for i in range(4)]
    _set(app, numbers[0], assignee="ann@example.com", status="open")
    _set(app, numbers[1], assignee="Ann@Example.com", status="pending")
    _set(app, numbers[2], assignee="ann@example.com", status="solved")
    _set(app, numbers[3], assignee="ben@example.com", status="closed")
    with app.db.transaction() as session:
        session.add(AgentState(address="ann@example.com", away=True, updated_at=clock.now()))
        result = readmodel.agents(session, settings)
    json.dumps(result)
    assert result == [
        {"address": "ann@example.com", "name": "Ann", "aliases": ["ann.b@example.com"],
         "queues": ["billing", "support"], "skills": ["de", "billing"], "away": True, "open_tickets": 2},
        {"address": "ben@example.com", "name": "Ben", "aliases": [], "queues": ["billing"], "skills": [],
         "away": False, "open_tickets": 0},
    ]


def test_status_report_keys_and_instances(app: App, clock: FrozenClock) -> None:
    ingest(app, mail())
    now = clock.now()
    with app.db.transaction() as session:
        session.add_all([
            ServeInstance(id="a", host="h", pid=1, started_at=now - dt.timedelta(hours=1),
                          last_seen=now - dt.timedelta(seconds=3)),
            ServeInstance(id="b", host="h", pid=2, started_at=now - dt.timedelta(hours=2),
                          last_seen=now - dt.timedelta(minutes=5)),
        ])
    with app.db.transaction() as session:
        report = readmodel.status_report(session, app.settings, now)
        via_heartbeat = heartbeat.instances(session, now)
    json.dumps(report)
    assert set(report) == {"config", "smtp", "mailboxes", "inbox", "outbox", "outbox_uncertain", "instances",
                           "sweep"}
    assert report["config"] == app.settings.source
    assert [m["address"] for m in report["mailboxes"]] == ["support@example.com", "help@example.com"]
    assert all(set(m) == {"address", "queue", "imap"} for m in report["mailboxes"])
    assert report["inbox"].get(RawState.DONE, 0) == 1
    assert report["outbox_uncertain"] == 0
    assert [(i["id"], i["running"]) for i in report["instances"]] == [("b", False), ("a", True)]
    assert via_heartbeat == report["instances"]
    assert heartbeat.STALE_AFTER == readmodel.STALE_AFTER


def test_outbox_quarantine_and_suppressions(app: App, clock: FrozenClock) -> None:
    mid = "outbox-1@customer.example"
    ingest(app, mail(message_id=mid))
    raw_id = _raw_id(app, mid)
    now = clock.now()
    with app.db.transaction() as session:
        mine = _outbox(session, now, "ack_new", "dora@customer.example", caused_by=raw_id, state="failed")
        mine_id = mine.id
        session.add_all([
            AddressSuppression(address="gone@customer.example", reason="550 no such user", status="5.1.1",
                               created_at=now - dt.timedelta(days=2), until=now + dt.timedelta(days=28)),
            AddressSuppression(address="back@customer.example", reason="550", status="5.1.1",
                               created_at=now - dt.timedelta(days=40), until=now - dt.timedelta(days=10)),
        ])
        raw = session.get(RawMessage, raw_id)
        assert raw is not None
        raw.state = RawState.QUARANTINED
        raw.error = "RuntimeError: boom\ntraceback"
    with app.db.transaction() as session:
        rows = readmodel.outbox_rows(session)
        failed = readmodel.outbox_rows(session, "failed")
        stuck = readmodel.quarantined(session)
        suppressed = readmodel.suppressions(session, now)
    json.dumps([rows, stuck, suppressed])
    assert [r["id"] for r in failed] == [mine_id]
    [row] = [r for r in rows if r["id"] == mine_id]
    assert row["caused_by"] == raw_id
    assert set(row) == {"id", "ticket", "kind", "to", "subject", "state", "attempts", "message_id", "last_error",
                        "next_attempt_at", "sent_at", "caused_by"}
    assert [(q["id"], q["message_id"]) for q in stuck] == [(raw_id, mid)]
    assert stuck[0]["error"].startswith("RuntimeError")
    assert [(s["address"], s["active"]) for s in suppressed] == [("back@customer.example", False),
                                                                 ("gone@customer.example", True)]
    assert set(suppressed[0]) == {"address", "status", "reason", "since", "until", "active", "message_id"}
