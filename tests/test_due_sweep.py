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
from sqlalchemy import func, select, text

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


def sla_events(app: App) -> list[tuple[str, bool]]:
    with app.db.transaction() as s:
        rows = s.execute(select(Event.data).where(Event.kind == "sla").order_by(Event.id)).scalars().all()
    return [(d["target"], d["met"]) for d in rows if d]


def test_outcomes_count_what_was_met_while_pending_and_once_per_ticket(
        make_app: Callable[..., App], sla_settings: Settings, monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app)
    monday._now = at(7, 10)
    app.set_fields(number, Changes(status="pending"), by="test")
    monday._now = at(7, 11)
    app.reply_as(number, AGENT, "Answered while pending.", internal=False, by="test")
    app.set_fields(number, Changes(status="solved"), by="test")
    assert sla_events(app) == [("first_response", True), ("resolution", True)]
    app.set_fields(number, Changes(status="open"), by="test")
    app.set_fields(number, Changes(status="solved"), by="test")
    assert sla_events(app) == [("first_response", True), ("resolution", True)]  # resolution: the first solve


def test_no_outcome_is_made_up_when_the_policy_stops_applying(
        make_app: Callable[..., App], sla_settings: Settings, monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app)
    monday._now = at(7, 14)  # first response breached at 13:00
    app.set_fields(number, Changes(priority="low"), by="test")
    assert sla_events(app) == []
    app.set_fields(number, Changes(priority="high"), by="test")
    app.set_fields(number, Changes(status="closed"), by="test")  # closed unanswered after the deadline
    assert sla_events(app) == [("first_response", False)]


def test_a_reply_that_reopens_a_solved_ticket_starts_next_response_anew(
        make_app: Callable[..., App], sla_settings: Settings, monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app)
    monday._now = at(7, 10)
    app.reply_as(number, AGENT, "Try turning it off.", internal=False, by="test")
    monday._now = at(7, 11)
    ingest(app, mail(subject=f"Re: [#{number}] Printer on fire", body="Did not help.\n"))
    app.set_fields(number, Changes(status="solved"), by="test")  # solved without answering that
    monday._now = at(10, 10)
    ingest(app, mail(subject=f"Re: [#{number}] Printer on fire", body="New problem: it is smoking.\n"))
    row = ticket_row(app, number)
    assert (row.status, row.next_response_since, row.next_response_due) == ("open", at(10, 10), at(11, 10))
    done = app.sweep.run().done
    assert "sla_reminder" not in done  # nothing of the old cycle fires late
    assert sweep_at(app, monday, at(10, 16)) == {"sla_reminder": 1}  # the new cycle's reminder, 6h after 10:00


def test_solving_a_solved_ticket_again_changes_nothing(make_app: Callable[..., App], sla_settings: Settings,
                                                      monday: FrozenClock) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app)
    app.set_fields(number, Changes(status="solved"), by="test")
    monday._now = at(7, 12)
    with app.db.transaction() as s:
        ticket = s.get_one(Ticket, number)
        from mailticket.store import clocks as clock_store

        clock_store.set_status(ticket, "solved", monday.now())
        assert ticket.solved_at == at(7, 9)
    assert sweep_at(app, monday, at(7, 12)) == {"csat_survey": 1}
    assert sweep_at(app, monday, at(7, 13)) == {}


def test_a_failing_step_does_not_hold_back_the_others(make_app: Callable[..., App], sla_settings: Settings,
                                                      monday: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(sla_settings)
    number = new_ticket(app)
    real = app.mailer.sla_notice

    def broken(*args: object, **kwargs: object) -> list[str]:
        if args[2] == "sla_escalation":
            raise RuntimeError("injected: the escalation template blew up")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(app.mailer, "sla_notice", broken)
    monday._now = at(7, 13)
    result = app.sweep.run()
    assert (result.done, result.failed) == ({"sla_reminder": 1}, 1)
    assert timed(app) == REMINDED
    assert ticket_row(app, number).wake_at == at(7, 13, 15)  # the failed step is tried again later
    monkeypatch.setattr(app.mailer, "sla_notice", real)
    assert sweep_at(app, monday, at(7, 13, 15)) == {"sla_escalation": 1}
    assert timed(app) == REMINDED + LEVEL_1


def test_a_changed_configuration_plans_anew_without_a_flood(
        make_app: Callable[..., App], write_config: Callable[..., Path], monday: FrozenClock) -> None:
    app = make_app(load(write_config(SLA, agents=(AGENT,))))
    numbers = [new_ticket(app) for _ in range(3)]
    pending = new_ticket(app, priority="normal")
    app.set_fields(pending, Changes(status="pending"), by="test")
    app.close()
    # A week later the admin adds a policy for every ticket and shortens the pending close: the new plan
    # puts reminders, escalations and the close in the past. Nothing is sent late; the close is done quietly.
    changed = SLA.replace('remind_at = 0.75', 'remind_at = 0.5') + (
        '\n[lifecycle]\npending_close_after = "2d"\n')
    again = make_app(load(write_config(changed, agents=(AGENT,))))
    monday._now = at(14, 10)
    result = again.sweep.run()
    assert result.done == {} and result.failed == 0
    assert timed(again) == []
    assert ticket_row(again, pending).status == "closed"
    for number in numbers:
        row = ticket_row(again, number)
        assert row.wake_at is not None and row.wake_at > at(14, 10)  # the resolution's escalations still come
        with again.db.transaction() as s:
            skipped = s.execute(select(Event.detail).where(Event.ticket_number == number,
                                                           Event.kind == "skipped")).scalars().all()
        assert len(skipped) == 1 and "sla_escalation level 2 (first_response)" in skipped[0]
    # What the new plan puts after the change still comes: the resolution's level 2, Monday 13:00.
    assert sweep_at(again, monday, at(14, 13)) == {"sla_escalation": 3}
    assert timed(again) == LEVEL_2 * 3


def test_tickets_from_before_the_upgrade_are_planned_once_without_a_flood(
        write_config: Callable[..., Path], make_app: Callable[..., App], clock: FrozenClock) -> None:
    """Schema 0008 with an old open high-priority ticket and a pending one; after the upgrade the sweep
    plans them: the long-overdue steps are recorded as skipped, the pending one's timers start at the
    upgrade."""
    settings = load(write_config(SLA, agents=(AGENT,)))
    from mailticket.store.db import Database

    db = Database.from_url(settings.database_url)
    db.upgrade("0008")
    month_ago = dt.datetime.now(UTC) - dt.timedelta(days=30)
    with db.engine.begin() as connection:
        for status in ("open", "pending"):
            connection.execute(  # only the 0008 columns
                text("INSERT INTO tickets (subject, status, priority, queue, mailbox, requester, requester_name, "
                     "needs_review, created_at, updated_at, tags) VALUES ('Old', :status, 'high', 'support', "
                     "'support@example.com', :requester, '', :no, :at, :at, '[]')"),
                {"status": status, "requester": CUSTOMER, "no": False,
                 "at": month_ago.replace(tzinfo=None) if db.is_sqlite else month_ago})
    db.dispose()
    clock._now = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    app = make_app(settings)  # upgrades to 0009
    pending = ticket_row(app, 2)
    assert pending.paused_at is not None and pending.paused_at > month_ago  # the pause starts at the upgrade
    result = app.sweep.run()
    assert result.done == {} and timed(app) == []
    with app.db.transaction() as s:
        skipped = s.execute(select(Event.detail).where(Event.ticket_number == 1, Event.kind == "skipped")
                            ).scalars().all()
    assert len(skipped) == 1 and "not sent late" in skipped[0]
    assert ticket_row(app, 2).status == "pending"
    assert ticket_row(app, 2).wake_at == pending.paused_at + dt.timedelta(days=3)  # its reminder, 3 days on


def test_a_reply_racing_the_auto_close_sees_the_ticket_as_the_sweep_left_it(
        make_app: Callable[..., App], sla_settings: Settings, monday: FrozenClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: the sweep holds the ticket (FOR UPDATE) while it closes it; a customer's reply arriving
    meanwhile waits for the row and then reads it fresh — closed, so the reply reopens it — instead of
    writing its stale "pending" view over the close (status open with closed_at set)."""
    if not sla_settings.database_url.startswith("postgresql"):
        pytest.skip("runs in the suite's PostgreSQL pass (SQLite has one writer at a time)")
    intake = make_app(sla_settings)
    number = new_ticket(intake, priority="normal")
    intake.set_fields(number, Changes(status="pending"), by="test")
    sweeper = make_app(sla_settings)
    monday._now = at(14, 10)  # the close is due
    closing, go = threading.Event(), threading.Event()
    real_do = sweeper.sweep._do

    def held_do(*args: object, **kwargs: object) -> list[str]:
        result = real_do(*args, **kwargs)  # type: ignore[arg-type]
        closing.set()
        assert go.wait(60)
        return result

    monkeypatch.setattr(sweeper.sweep, "_do", held_do)
    swept: list[dict[str, int]] = []
    sweep = threading.Thread(target=lambda: swept.append(sweeper.sweep.run().done))
    sweep.start()
    reply = None
    try:
        assert closing.wait(60)
        reply = threading.Thread(target=ingest, args=(intake, mail(subject=f"Re: [#{number}] Printer on fire",
                                                                    body="Here is my answer.\n")))
        reply.start()
        deadline = dt.datetime.now(UTC) + dt.timedelta(seconds=60)
        with intake.db.engine.connect() as watch:  # until the reply waits for the sweep's row lock
            while not watch.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar():
                assert dt.datetime.now(UTC) < deadline, "the reply never waited for the ticket's lock"
                watch.rollback()
    finally:
        go.set()
        sweep.join(60)
        if reply is not None:
            reply.join(60)
    assert swept == [{"pending_closed": 1}]
    row = ticket_row(intake, number)
    assert (row.status, row.closed_at) == ("open", None)  # reopened by the reply, consistently


def test_status_says_what_the_sweep_has_before_it(make_app: Callable[..., App], sla_settings: Settings,
                                                  monday: FrozenClock) -> None:
    from mailticket.store import readmodel

    app = make_app(sla_settings)
    new_ticket(app)
    new_ticket(app)
    monday._now = at(7, 12, 30)
    with app.db.transaction() as s:
        report = readmodel.status_report(s, app.settings, monday.now())["sweep"]
    assert report == {"due": 2, "oldest_due_at": at(7, 12).isoformat(), "next_at": None}
    app.sweep.run()
    with app.db.transaction() as s:
        report = readmodel.status_report(s, app.settings, monday.now())["sweep"]
    assert report == {"due": 0, "oldest_due_at": None, "next_at": at(7, 13).isoformat()}


def test_report_business_time_leaves_out_the_pending_spell(make_app: Callable[..., App], sla_settings: Settings,
                                                           monday: FrozenClock) -> None:
    """End to end: what the clocks record is what `report` counts (hand-computed: Monday 09:00 to 14:00
    is 300 calendar minutes; pending 10:00-12:00 leaves 180 business minutes)."""
    from mailticket.store.report import report

    app = make_app(sla_settings)
    number = new_ticket(app)
    monday._now = at(7, 9, 30)
    app.reply_as(number, AGENT, "Looking.", internal=False, by="test")
    monday._now = at(7, 10)
    app.set_fields(number, Changes(status="pending"), by="test")
    monday._now = at(7, 12)
    app.set_fields(number, Changes(status="open"), by="test")
    monday._now = at(7, 14)
    app.set_fields(number, Changes(status="solved"), by="test")
    with app.db.transaction() as s:
        figures = report(s, app.keeper, monday.now())
    assert figures["resolution"]["median_minutes"] == 300.0
    assert figures["resolution"]["median_business_minutes"] == 180.0
    assert figures["first_response"]["median_minutes"] == 30.0
    assert figures["sla"]["first_response"] == {"met": 1, "missed": 0, "compliance": 1.0, "breached_open": 0}
    assert figures["sla"]["resolution"]["met"] == 1
