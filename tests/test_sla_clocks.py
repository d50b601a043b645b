"""A ticket's clocks computed from its row (pure): due times in business hours, pauses, planned notices."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mailticket.settings import LifecycleSettings, load, parse_duration
from mailticket.sla.clocks import Planned, TicketClock, Timekeeper

UTC = dt.UTC
MON = dt.datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # a Monday
FRI_16 = dt.datetime(2026, 12, 4, 16, 0, tzinfo=UTC)

SLA = """
[sla]
timezone = "UTC"
business_hours = { mon-fri = "09:00-17:00" }
holidays = "DE"
{extra}

[[sla.policies]]
name = "high"
match.priority = "high"
first_response = "4h"
next_response = "8h"
resolution = "2d"
remind_at = 0.75
escalate = [ {{ after = "0m", to = ["lead@example.com"] }}, {{ after = "4h", to = ["manager@example.com"] }} ]

[[sla.policies]]
name = "normal"
first_response = "1d"
"""


def keeper(tmp_path: Path, extra: str = "", lifecycle: LifecycleSettings | None = None) -> Timekeeper:
    path = tmp_path / "mailticket.toml"
    path.write_text(SLA.replace("{extra}", extra).replace("{{", "{").replace("}}", "}"), encoding="utf-8")
    settings = load(path)
    return Timekeeper(settings.sla, lifecycle or settings.lifecycle, csat=True)


def ticket(created: dt.datetime, **kw: object) -> TicketClock:
    values: dict[str, object] = {"status": "open", "priority": "high", "queue": "support"}
    values.update(kw)
    return TicketClock(created_at=created, **values)  # type: ignore[arg-type]


def sla_notices(planned: tuple[Planned, ...], target: str = "first_response") -> list[tuple[str, int, dt.datetime]]:
    return [(p.kind, p.level, p.at) for p in planned if p.target == target]


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=UTC)


def test_monday_high_ticket_plans_reminder_and_two_escalation_levels(tmp_path: Path) -> None:
    clocks = keeper(tmp_path).clocks(ticket(MON))
    assert clocks.policy is not None and clocks.policy.name == "high"
    assert clocks.due("first_response") == at(7, 13)
    # Two business days: Wednesday 09:00, i.e. the earliest instant with no business time left: Tuesday 17:00.
    assert clocks.due("resolution") == at(8, 17)
    assert clocks.due("next_response") is None  # no customer reply waits
    assert sla_notices(clocks.planned) == [("sla_reminder", 0, at(7, 12)), ("sla_escalation", 1, at(7, 13)),
                                           ("sla_escalation", 2, at(7, 17))]
    escalations = [p.to for p in clocks.planned if p.kind == "sla_escalation" and p.target == "first_response"]
    assert escalations == [("lead@example.com",), ("manager@example.com",)]
    assert clocks.breached(at(7, 12, 59)) == [] and clocks.breached(at(7, 13)) == ["first_response"]


def test_friday_afternoon_four_hours_are_due_monday_noon(tmp_path: Path) -> None:
    assert keeper(tmp_path).clocks(ticket(FRI_16)).due("first_response") == at(7, 12)


def test_a_holiday_is_closed_all_day(tmp_path: Path) -> None:
    # Thursday 24 Dec 16:00: one open hour, then Christmas (Fri 25, a DE holiday) and the weekend.
    christmas_eve = at(24, 16)
    assert keeper(tmp_path).clocks(ticket(christmas_eve)).due("first_response") == at(28, 12)
    # The 24th made a holiday too: nothing is open before Monday 09:00.
    extra = keeper(tmp_path, 'extra_holidays = ["2026-12-24"]')
    assert extra.clocks(ticket(christmas_eve)).due("first_response") == at(28, 13)


def test_notices_wait_for_business_hours_but_the_close_counts(tmp_path: Path) -> None:
    k = keeper(tmp_path)
    assert k.hold(at(8, 2)) == at(8, 9)  # a 02:00 notice waits for 09:00
    assert k.hold(at(7, 17)) == at(7, 17)  # a target that runs out at the close escalates at the close
    assert k.hold(at(7, 11, 30)) == at(7, 11, 30)
    assert k.hold(at(5, 10)) == at(7, 9)  # Saturday: Monday morning
    off = keeper(tmp_path, "notify_in_business_hours = false")
    assert off.hold(at(8, 2)) == at(8, 2)


def test_pending_pauses_and_the_paused_business_time_is_added_back(tmp_path: Path) -> None:
    k = keeper(tmp_path)
    paused = k.clocks(ticket(MON, status="pending", paused_at=at(7, 10)))
    assert paused.paused and paused.due("first_response") is None and paused.due("resolution") is None
    assert [p for p in paused.planned if p.kind.startswith("sla_")] == []  # nothing fires while pending
    # Pending Monday 10:00 to Tuesday 10:00: 3h of the 4h were left, so the answer is due Tuesday 13:00.
    resumed = k.clocks(ticket(MON, pauses=((at(7, 10), at(8, 10)),)))
    assert resumed.due("first_response") == at(8, 13)
    assert resumed.targets["first_response"].paused_for == dt.timedelta(hours=8)  # Mon 10-17 and Tue 9-10
    assert sla_notices(resumed.planned)[0] == ("sla_reminder", 0, at(8, 12))
    # A pause that began after the breach does not un-breach it.
    late = k.clocks(ticket(MON, pauses=((at(7, 14), at(8, 10)),)))
    assert late.due("first_response") == at(7, 13)


def test_answers_stop_clocks_and_a_customer_reply_starts_next_response(tmp_path: Path) -> None:
    k = keeper(tmp_path)
    answered = k.clocks(ticket(MON, first_response_at=at(7, 10)))
    assert answered.due("first_response") is None and answered.targets["first_response"].met_at == at(7, 10)
    assert sla_notices(answered.planned) == []
    waiting = k.clocks(ticket(MON, first_response_at=at(7, 10), next_response_since=at(7, 15)))
    assert waiting.due("next_response") == at(8, 15)  # 8h: Mon 15-17, Tue 09-15
    assert sla_notices(waiting.planned, "next_response")[0] == ("sla_reminder", 0, at(8, 13))
    assert waiting.targets["next_response"].start == at(7, 15)  # the ledger's cycle: a new reply, a new cycle


def test_solved_stops_every_clock_and_plans_the_survey_and_the_close(tmp_path: Path) -> None:
    k = keeper(tmp_path)
    solved = k.clocks(ticket(MON, status="solved", solved_at=at(7, 11), paused_at=at(7, 11),
                             first_response_at=at(7, 10)))
    assert [solved.due(t) for t in ("first_response", "next_response", "resolution")] == [None, None, None]
    assert solved.targets["resolution"].met_at == at(7, 11)
    assert [(p.kind, p.at) for p in solved.planned] == [("csat_survey", at(7, 11)),
                                                        ("solved_closed", at(11, 11))]
    no_survey = Timekeeper(k.sla, k.lifecycle, csat=False).clocks(ticket(MON, status="solved", solved_at=at(7, 11),
                                                                         paused_at=at(7, 11)))
    assert [p.kind for p in no_survey.planned] == ["solved_closed"]


def test_pending_lifecycle_counts_calendar_time(tmp_path: Path) -> None:
    k = keeper(tmp_path)
    planned = k.clocks(ticket(MON, status="pending", paused_at=at(7, 10), first_response_at=at(7, 10))).planned
    assert [(p.kind, p.at) for p in planned] == [("pending_reminder", at(10, 10)), ("pending_closed", at(14, 10))]
    never = LifecycleSettings(pending_reminder_after=None, pending_close_after=parse_duration("2d"),
                              solved_close_after=None)
    short = keeper(tmp_path, lifecycle=never)
    assert [(p.kind, p.at) for p in short.clocks(ticket(MON, status="pending", paused_at=at(7, 10))).planned] == [
        ("pending_closed", at(9, 10))]


def test_no_policy_no_clock(tmp_path: Path) -> None:
    k = keeper(tmp_path)
    clocks = Timekeeper(None, k.lifecycle).clocks(ticket(MON))
    assert clocks.policy is None and clocks.targets == {} and clocks.planned == ()
    assert Timekeeper(None, k.lifecycle).explain(clocks, MON) == ["no [sla] configured: no clock runs"]


def test_explain_names_policy_hours_and_pause(tmp_path: Path) -> None:
    k = keeper(tmp_path)
    clocks = k.clocks(ticket(MON, pauses=((at(7, 10), at(8, 10)),)))
    lines = k.explain(clocks, at(8, 11))
    assert lines[0].startswith("policy high (matches priority high); business time: mon 09:00-17:00")
    assert "holidays DE" in lines[0]
    assert "first_response 4h from 2026-12-07 09:00 UTC, +8h paused: due 2026-12-08 13:00 UTC" in lines


@pytest.mark.parametrize("text, problem", [
    ('[lifecycle]\npending_close_after = "soon"\n', "lifecycle.pending_close_after: 'soon' is not a duration"),
    ("[csat]\nenabled = 1\n", "csat.enabled"),
    ("[csat]\nsurvey = true\n", "csat.survey: unknown key"),
])
def test_lifecycle_and_csat_settings_are_checked(tmp_path: Path, text: str, problem: str) -> None:
    from mailticket.errors import ConfigError

    path = tmp_path / "mailticket.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert problem in str(caught.value)


def test_lifecycle_defaults_and_false_for_never(tmp_path: Path) -> None:
    path = tmp_path / "mailticket.toml"
    path.write_text('[lifecycle]\nsolved_close_after = false\npending_reminder_after = "2d12h"\n', encoding="utf-8")
    settings = load(path)
    assert settings.lifecycle.solved_close_after is None
    assert settings.lifecycle.pending_reminder_after == parse_duration("2d12h")
    assert settings.lifecycle.pending_close_after == parse_duration("7d")
    assert settings.csat_enabled is True


def test_a_pending_spell_after_the_breach_holds_the_later_escalation_levels(tmp_path: Path) -> None:
    k = keeper(tmp_path)
    # Breached Monday 13:00; pending Monday 14:00 to Tuesday 10:00: of the 4h to level 2, 3h were left.
    clocks = k.clocks(ticket(MON, pauses=((at(7, 14), at(8, 10)),)))
    assert clocks.targets["first_response"].deadline == at(7, 13)
    assert sla_notices(clocks.planned)[1:] == [("sla_escalation", 1, at(7, 13)), ("sla_escalation", 2, at(8, 13))]


def test_breached_before_the_pause_stays_breached_while_pending(tmp_path: Path) -> None:
    k = keeper(tmp_path)
    late = k.clocks(ticket(MON, status="pending", paused_at=at(7, 14)))
    assert late.breached(at(8, 10)) == ["first_response"] and late.due("first_response") is None
    early = k.clocks(ticket(MON, status="pending", paused_at=at(7, 10)))
    assert early.breached(at(9, 10)) == []  # paused with 3h left: not breached however long it waits
