"""The due sweep on a real database with a frozen clock: reminders, escalations, pauses, auto-close,
surveys — each sent once, across restarts, late sweeps and two sweeps racing."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable
from email import message_from_bytes
from email.message import Message as EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailticket.app import App
from mailticket.clock import FrozenClock
from mailticket.domain import Envelope
from mailticket.rules.admin import Changes
from mailticket.settings import Settings, load
from mailticket.store.models import Event, Notice, OutboxRow, RawMessage, Ticket
from tests.conftest import as_json, ingest, mail, run_cli

AGENT = "agent@example.com"
LEAD, MANAGER = "lead@example.com", "manager@example.com"
CUSTOMER = "alice@customer.example"
UTC = dt.UTC

SLA = """
[sla]
timezone = "UTC"
business_hours = { mon-fri = "09:00-17:00" }
notify_in_business_hours = true

[[sla.policies]]
name = "high"
match.priority = "high"
first_response = "4h"
next_response = "8h"
resolution = "5d"
remind_at = 0.75
escalate = [ { after = "0m", to = ["lead@example.com"] }, { after = "4h", to = ["manager@example.com"] } ]
"""


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=UTC)  # 7 December 2026 is a Monday


@pytest.fixture
def sla_settings(write_config: Callable[..., Path]) -> Settings:
    return load(write_config(SLA, agents=(AGENT,)))


@pytest.fixture
def monday(clock: FrozenClock) -> FrozenClock:
    clock._now = at(7, 9)
    return clock


def new_ticket(app: App, priority: str = "high") -> int:
    number, decision = ingest(app, mail())
    assert decision == "new_ticket" and number is not None
    if priority != "normal":
        app.set_fields(number, Changes(priority=priority), by="test")
    return number


def timed(app: App, *kinds: str) -> list[tuple[str, str]]:
    """(kind, to) of the outbox rows of these kinds, in order."""
    wanted = kinds or ("sla_reminder", "sla_escalation", "pending_reminder", "pending_closed", "solved_closed",
                       "csat_survey")
    with app.db.transaction() as s:
        rows = s.execute(select(OutboxRow.kind, OutboxRow.to_addr, OutboxRow.state)
                         .where(OutboxRow.kind.in_(wanted)).order_by(OutboxRow.id)).all()
    assert all(state == "queued" for _k, _t, state in rows), rows  # rendered: no template failed
    return [(k, t) for k, t, _s in rows]


def ticket_row(app: App, number: int) -> Ticket:
    with app.db.transaction() as s:
        row = s.get_one(Ticket, number)
        s.expunge(row)
        return row


def sweep_at(app: App, clock: FrozenClock, when: dt.datetime) -> dict[str, int]:
    clock._now = when
    return app.sweep.run().done


REMINDED = [("sla_reminder", AGENT)]
LEVEL_1 = [("sla_escalation", LEAD)]
LEVEL_2 = [("sla_escalation", MANAGER)]


def test_reminder_then_two_escalation_levels_each_once_across_a_restart(
        make_app: Callable[..., App], sla_settings: Settings, monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app)
    row = ticket_row(app, number)
    assert (row.sla_policy, row.first_response_due, row.wake_at) == ("high", at(7, 13), at(7, 12))
    assert sweep_at(app, monday, at(7, 11, 59)) == {}
    assert sweep_at(app, monday, at(7, 12)) == {"sla_reminder": 1}
    assert sweep_at(app, monday, at(7, 12, 30)) == {}  # the ledger holds it: not again
    assert timed(app) == REMINDED
    assert sweep_at(app, monday, at(7, 13)) == {"sla_escalation": 1}
    assert timed(app) == REMINDED + LEVEL_1
    app.close()  # a restart: the next instance knows only what the database says
    again = make_app(sla_settings)
    assert sweep_at(again, monday, at(7, 16, 59)) == {}
    assert sweep_at(again, monday, at(7, 17)) == {"sla_escalation": 1}
    assert sweep_at(again, monday, at(8, 10)) == {}
    assert timed(again) == REMINDED + LEVEL_1 + LEVEL_2
    # First response is done with; next is the resolution reminder: 75% of 5 business days = 30h, Thursday 15:00.
    assert ticket_row(again, number).wake_at == at(10, 15)
    with again.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Notice)).scalar_one() == 3


def test_a_late_sweep_does_every_missed_step_once(make_app: Callable[..., App], sla_settings: Settings,
                                                  monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    new_ticket(app)
    assert sweep_at(app, monday, at(7, 16, 30)) == {"sla_reminder": 1, "sla_escalation": 1}
    assert sweep_at(app, monday, at(7, 17, 0)) == {"sla_escalation": 1}
    assert sweep_at(app, monday, at(7, 17, 0)) == {}
    assert timed(app) == REMINDED + LEVEL_1 + LEVEL_2


def test_an_overdue_notice_waits_for_business_hours(make_app: Callable[..., App], sla_settings: Settings,
                                                    monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app)
    assert sweep_at(app, monday, at(7, 13)) == {"sla_reminder": 1, "sla_escalation": 1}
    # The daemon was down from 16:00; at 02:00 the level-2 notice (due 17:00) is overdue: it waits.
    assert sweep_at(app, monday, at(8, 2)) == {}
    assert ticket_row(app, number).wake_at == at(8, 9)
    assert sweep_at(app, monday, at(8, 8, 59)) == {}
    assert sweep_at(app, monday, at(8, 9)) == {"sla_escalation": 1}
    assert timed(app) == REMINDED + LEVEL_1 + LEVEL_2


def test_an_agent_reply_stops_the_clock_and_a_customer_reply_restarts_next_response(
        make_app: Callable[..., App], sla_settings: Settings, monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app)
    monday._now = at(7, 10)
    app.reply_as(number, AGENT, "We are on it.", internal=False, by="test")
    row = ticket_row(app, number)
    assert (row.first_response_at, row.first_response_due, row.next_response_due) == (at(7, 10), None, None)
    assert sweep_at(app, monday, at(8, 12)) == {}  # no reminder, no escalation: it was answered in time
    assert timed(app) == []
    monday._now = at(8, 15)
    ingest(app, mail(subject=f"Re: [#{number}] Printer on fire", body="Still burning.\n"))
    assert ticket_row(app, number).next_response_due == at(9, 15)  # 8 business hours: Tue 15-17, Wed 09-15
    monday._now = at(8, 16)
    ingest(app, mail(subject=f"Re: [#{number}] Printer on fire", body="Hello?\n"))
    assert ticket_row(app, number).next_response_due == at(9, 15)  # the first unanswered reply counts
    assert sweep_at(app, monday, at(9, 13)) == {"sla_reminder": 1}
    monday._now = at(9, 14)
    app.reply_as(number, AGENT, "Fire brigade called.", internal=False, by="test")
    assert ticket_row(app, number).next_response_due is None
    monday._now = at(9, 16)
    ingest(app, mail(subject=f"Re: [#{number}] Printer on fire", body="Thanks, one more thing.\n"))
    assert ticket_row(app, number).next_response_due == at(10, 16)  # a new cycle
    assert sweep_at(app, monday, at(10, 14)) == {"sla_reminder": 1}  # the new cycle reminds again
    with app.db.transaction() as s:
        met = [e.data for e in s.execute(select(Event).where(Event.kind == "sla").order_by(Event.id)).scalars()]
    assert [(d["target"], d["met"]) for d in met if d] == [("first_response", True), ("next_response", True)]


def test_machine_mail_never_touches_a_clock(make_app: Callable[..., App], sla_settings: Settings,
                                            monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app)
    monday._now = at(7, 10)
    app.reply_as(number, AGENT, "We are on it.", internal=False, by="test")
    monday._now = at(7, 11)
    ingest(app, mail(subject=f"Re: [#{number}] Printer on fire", body="I am out of office.\n",
                     headers={"Auto-Submitted": "auto-replied"}))
    assert ticket_row(app, number).next_response_due is None


def test_pending_pauses_and_reopen_resumes(make_app: Callable[..., App], sla_settings: Settings,
                                           monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app)
    monday._now = at(7, 10)
    app.set_fields(number, Changes(status="pending"), by="test")
    row = ticket_row(app, number)
    assert (row.first_response_due, row.paused_at) == (None, at(7, 10))
    assert sweep_at(app, monday, at(8, 9)) == {}  # paused: no reminder at 12:00, no escalation
    monday._now = at(8, 10)
    ingest(app, mail(subject=f"Re: [#{number}] Printer on fire", body="Here is the answer.\n"))
    row = ticket_row(app, number)
    assert row.status == "open" and row.paused_at is None
    assert row.first_response_due == at(8, 13)  # 3h were left when it paused
    assert sweep_at(app, monday, at(8, 12)) == {"sla_reminder": 1}


def test_priority_and_queue_changes_recompute_due_times(make_app: Callable[..., App], sla_settings: Settings,
                                                        monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app, priority="normal")
    assert ticket_row(app, number).sla_policy is None and ticket_row(app, number).first_response_due is None
    monday._now = at(7, 11)
    app.set_fields(number, Changes(priority="high"), by="test")
    row = ticket_row(app, number)
    assert (row.sla_policy, row.first_response_due) == ("high", at(7, 13))  # counted from the creation
    app.set_fields(number, Changes(priority="low"), by="test")
    assert ticket_row(app, number).first_response_due is None and ticket_row(app, number).wake_at is None


def survey_addresses(app: App) -> list[str]:
    with app.db.transaction() as s:
        content = s.execute(select(OutboxRow.content).where(OutboxRow.kind == "csat_survey")).scalar_one()
    parsed = message_from_bytes(content)
    text = ""
    for part in parsed.walk():
        if isinstance(part, EmailMessage) and part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            text += payload.decode("utf-8") if isinstance(payload, bytes) else ""
    return sorted(set(re.findall(r"support\+csat\.[0-9a-z]+\.[1-5]@example\.com", text)))


def test_pending_reminder_then_auto_close_with_notice(make_app: Callable[..., App], sla_settings: Settings,
                                                      monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app)
    monday._now = at(7, 10)
    app.reply_as(number, AGENT, "Which model is it?", internal=False, by="test")
    app.set_fields(number, Changes(status="pending"), by="test")
    assert sweep_at(app, monday, at(10, 9, 59)) == {}
    assert sweep_at(app, monday, at(10, 10)) == {"pending_reminder": 1}
    assert sweep_at(app, monday, at(13, 10)) == {}
    assert sweep_at(app, monday, at(14, 10)) == {"pending_closed": 1}
    row = ticket_row(app, number)
    assert (row.status, row.closed_at, row.wake_at) == ("closed", at(14, 10), None)
    assert timed(app) == [("pending_reminder", CUSTOMER), ("pending_closed", CUSTOMER)]


def test_a_late_sweep_closes_without_the_overtaken_reminder(make_app: Callable[..., App], sla_settings: Settings,
                                                            monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app, priority="normal")
    app.set_fields(number, Changes(status="pending"), by="test")
    swept = app.sweep
    monday._now = at(20, 9)
    result = swept.run()
    assert (result.done, result.skipped) == ({"pending_closed": 1}, 1)
    assert timed(app) == [("pending_closed", CUSTOMER)]


def test_solved_gets_a_survey_whose_rating_is_recorded_then_closes(
        make_app: Callable[..., App], sla_settings: Settings, monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app)
    monday._now = at(7, 10)
    app.reply_as(number, AGENT, "Replaced the printer.", internal=False, by="test")
    app.set_fields(number, Changes(status="solved"), by="test")
    assert sweep_at(app, monday, at(7, 10)) == {"csat_survey": 1}
    assert sweep_at(app, monday, at(7, 11)) == {}
    addresses = survey_addresses(app)
    assert len(addresses) == 5
    four = next(a for a in addresses if a.endswith(".4@example.com"))
    monday._now = at(7, 12)
    ingest(app, mail(subject="Rating", to=four, body="Quick and friendly, thanks!\n"))
    row = ticket_row(app, number)
    assert (row.status, row.csat_rating, row.csat_comment) == ("solved", 4, "Quick and friendly, thanks!")
    # A forged token is a normal follow-up: the solved ticket reopens.
    forged = re.sub(r"csat\.([0-9a-z]+)\.", lambda m: f"csat.{m.group(1)[:-1]}{'0' if m.group(1)[-1] != '0' else '1'}.",
                    four)
    ingest(app, mail(subject=f"Re: [#{number}] Printer on fire", to=forged, body="Actually it broke again.\n"))
    row = ticket_row(app, number)
    assert (row.status, row.csat_rating) == ("open", 4)
    app.set_fields(number, Changes(status="solved"), by="test")
    assert sweep_at(app, monday, at(7, 13)) == {"csat_survey": 1}  # a new solve, a new survey
    assert sweep_at(app, monday, at(11, 11, 59)) == {}  # solved again Monday 12:00: closed 4 days later
    assert sweep_at(app, monday, at(11, 12)) == {"solved_closed": 1}
    assert ticket_row(app, number).status == "closed"


def test_tick_runs_each_job_once_and_says_what_it_did(make_app: Callable[..., App], sla_settings: Settings,
                                                      monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    accepted = app.inbox.accept(mail(), Envelope("pipe"))
    report = app.tick()
    assert report["inbox"] == {"processed": 1, "quarantined": 0}
    assert report["outbox"]["sent"] == 2 and report["ok"] is True  # the acknowledgement, the agent's notification
    with app.db.transaction() as s:
        number = s.execute(select(Ticket.number).join(RawMessage, RawMessage.ticket_number == Ticket.number)
                           .where(RawMessage.id == accepted.raw_id)).scalar_one()
    app.set_fields(number, Changes(priority="high"), by="test")
    monday._now = at(7, 12)
    report = app.tick()
    assert report["sweep"]["done"] == {"sla_reminder": 1} and report["outbox"]["sent"] == 1


def test_two_sweeps_racing_send_each_reminder_once(make_app: Callable[..., App], sla_settings: Settings,
                                                   monday: FrozenClock) -> None:
    """Two instances (their own engines and connections) sweep 60 due tickets at the same time."""
    first = make_app(sla_settings)
    numbers = [new_ticket(first) for _ in range(60)]
    second = make_app(sla_settings)
    monday._now = at(7, 12)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(app: App) -> None:
        try:
            barrier.wait()
            results.append(app.sweep.run(batch=7).done)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,)) for a in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sum(r.get("sla_reminder", 0) for r in results) == len(numbers)
    with first.db.transaction() as s:
        per_ticket = s.execute(select(OutboxRow.ticket_number, func.count()).where(OutboxRow.kind == "sla_reminder")
                               .group_by(OutboxRow.ticket_number)).all()
    assert sorted(n for n, _c in per_ticket) == numbers and {c for _n, c in per_ticket} == {1}


def test_tick_and_tickets_show_on_the_command_line(write_config: Callable[..., Path],
                                                   make_app: Callable[..., App]) -> None:
    """`tick --json` and `tickets show --json` as an admin runs them (real clock: the ticket made at the
    frozen clock's time, long ago, is overdue; a 24x7 calendar, so the time of day does not matter)."""
    config = write_config(SLA.replace('business_hours = { mon-fri = "09:00-17:00" }\n', ""), agents=(AGENT,))
    app = make_app(load(config))
    number = new_ticket(app)
    app.close()
    shown = as_json(run_cli(config, "tickets", "show", str(number), "--json"))
    assert isinstance(shown, dict)
    sla = shown["sla"]
    assert sla["policy"] == "high" and sla["paused"] is False
    assert sla["first_response_due"] == dt.datetime(2026, 1, 1, 13, 0, tzinfo=UTC).isoformat()
    assert sla["breached"] == ["first_response", "resolution"]
    assert any("policy high" in line for line in sla["why"])
    assert shown["csat"] == {"rating": None, "comment": None, "at": None}
    ticked = as_json(run_cli(config, "tick", "--json"))
    assert isinstance(ticked, dict)
    assert ticked["sweep"]["done"] == {"sla_escalation": 4, "sla_reminder": 2}  # both targets, each level once
    assert ticked["ok"] is True and ticked["outbox"]["sent"] >= 6
    again = as_json(run_cli(config, "tick", "--json"))
    assert isinstance(again, dict) and again["sweep"]["done"] == {}
    text = run_cli(config, "tick")
    assert text.returncode == 0 and b"due sweep:" in text.stdout


def test_imported_history_runs_no_clock(make_app: Callable[..., App], sla_settings: Settings,
                                        monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    accepted = app.inbox.accept(mail(), Envelope("import"))
    [outcome] = app.pipeline.process([accepted.raw_id])
    assert outcome.ticket_number is not None
    app.set_fields(outcome.ticket_number, Changes(priority="high"), by="test")
    row = ticket_row(app, outcome.ticket_number)
    assert (row.imported, row.sla_policy, row.first_response_due, row.wake_at) == (True, None, None, None)
    assert sweep_at(app, monday, at(9, 9)) == {}
