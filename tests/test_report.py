"""`mailticket report`: every figure checked against numbers worked out by hand from a made-up desk.

The desk is open Mon-Fri 09:00-17:00 UTC ([sla] business_hours), so calendar and business minutes
differ. The tickets and events are written with the ORM (no mail goes through the pipeline): each
figure below says how it was computed. November 2026: Mon 2 is in ISO week 45, Mon 16 in 47,
Sun 29 in 48, Mon 30 and Tue 1 Dec in 49. The report's "now" is the real clock (December 2026 or
later): the due times in the past are before it, the ones in 2100 after it.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailticket import cli
from mailticket.app import App
from mailticket.settings import load
from mailticket.sla.clocks import Timekeeper
from mailticket.store.models import Event, Ticket
from mailticket.store.report import report

SLA = """
[sla]
timezone = "UTC"
business_hours = { mon-fri = "09:00-17:00" }
"""

FUTURE = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=dt.UTC)


def ticket(created: dt.datetime, queue: str = "support", status: str = "open", **values: Any) -> Ticket:
    mailbox = "help@example.com" if queue == "help" else "support@example.com"
    return Ticket(subject=f"made {created:%Y-%m-%d %H:%M}", status=status, queue=queue, mailbox=mailbox,
                  requester="alice@customer.example", created_at=created, updated_at=created, **values)


def event(number: int, kind: str, when: dt.datetime, **data: Any) -> Event:
    return Event(ticket_number=number, kind=kind, detail=f"{kind} (test)", created_at=when, data=data)


def sla_event(number: int, target: str, met: bool, when: dt.datetime) -> Event:
    return event(number, "sla", when, target=target, due=when.isoformat(), at=when.isoformat(), met=met,
                 policy="test")


def status_event(number: int, before: str, after: str, when: dt.datetime) -> Event:
    return event(number, "status", when, **{"from": before, "to": after, "by": "test"})


def build_desk(app: App) -> dict[str, int]:
    """Seven tickets (T1..T5 created in November, T6 in October, T7 on 1 December) and their events."""
    with app.db.transaction() as s:
        rows = {
            # T1: Mon 16:00 -> first response Tue 10:00 = 18h = 1080 min calendar; business Mon 16-17 + Tue 9-10
            # = 120 min. Solved Wed 12:00 = 44h = 2640 min; business Mon 60 + Tue 480 + Wed 9-12 180 = 720 min.
            # Its resolution_due is in the past, but it is solved: no open breach.
            "T1": ticket(at(2, 16), status="solved", first_response_at=at(3, 10), solved_at=at(4, 12),
                         resolution_due=at(3, 12), csat_rating=5),
            # T2: Tue 10:00 -> 10:30 = 30 min, all business. Solved, then reopened: open, solved_at cleared.
            # Its next_response and resolution clocks run and are past due: two open breaches.
            "T2": ticket(at(3, 10), status="open", first_response_at=at(3, 10, 30),
                         next_response_due=at(20, 9), resolution_due=at(5, 10), csat_rating=2),
            # T3 (help): Fri 15:00 -> Mon 09:30 = 66.5h = 3990 min; business Fri 15-17 + Mon 9-9:30 = 150 min.
            # Pending: paused, so no resolution due; its next_response is due in 2100 (not breached).
            "T3": ticket(at(6, 15), queue="help", status="pending", first_response_at=at(9, 9, 30),
                         next_response_due=FUTURE),
            # T4: Mon 16 Nov 09:00, never answered, first_response due 13:00 that day: an open breach.
            "T4": ticket(at(16, 9), status="new", first_response_due=at(16, 13)),
            # T5: Sun 12:00 -> Mon 09:00 = 21h = 1260 min calendar, 0 business (closed Sunday, opens 09:00).
            # Solved Mon 11:00 = 23h = 1380 min; business 120 min. Then closed on 1 Dec (out of the backlog).
            "T5": ticket(at(29, 12), status="closed", first_response_at=at(30, 9), solved_at=at(30, 11),
                         closed_at=at(1, 8, month=12), csat_rating=4),
            # T6 (help), October: answered 10:00 -> 11:00 = 60 min, all business; closed, then reopened.
            "T6": ticket(at(20, 10, month=10), queue="help", status="open", first_response_at=at(20, 11, month=10),
                         csat_rating=1),
            # T7: created at the first instant of 1 December: outside --until 2026-11-30, inside --since 12-01.
            "T7": ticket(at(1, 0, month=12), status="closed", closed_at=at(1, 1, month=12)),
        }
        s.add_all(rows.values())
        s.flush()
        n = {name: row.number for name, row in rows.items()}
        s.add_all([
            sla_event(n["T1"], "first_response", False, at(3, 10)),
            sla_event(n["T1"], "resolution", True, at(4, 12)),
            sla_event(n["T2"], "first_response", True, at(3, 10, 30)),
            status_event(n["T2"], "open", "solved", at(4, 9)),
            status_event(n["T2"], "solved", "open", at(4, 15)),
            sla_event(n["T3"], "first_response", False, at(9, 9, 30)),
            sla_event(n["T3"], "next_response", True, at(10, 9)),
            status_event(n["T3"], "open", "pending", at(10, 9)),  # not a reopen, and not solved
            sla_event(n["T5"], "first_response", True, at(30, 9)),
            sla_event(n["T5"], "resolution", True, at(30, 11)),
            status_event(n["T5"], "open", "solved", at(30, 11)),
            status_event(n["T5"], "solved", "closed", at(1, 8, month=12)),
            sla_event(n["T6"], "first_response", False, at(20, 11, month=10)),
            status_event(n["T6"], "open", "closed", at(21, 9, month=10)),
            status_event(n["T6"], "closed", "open", at(22, 9, month=10)),
            event(n["T1"], "sla", at(3, 10)),  # an sla event without the expected data: ignored
        ])
    return n


@pytest.fixture
def desk(write_config: Callable[..., Path], make_app: Callable[..., App]) -> Path:
    config = write_config(extra=SLA)
    build_desk(make_app(settings_override=load(config)))
    return config


def run(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["-c", str(config), "report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> Any:
    code, out, err = run(config, *args, "--json", capsys=capsys)
    assert code == 0, err
    return json.loads(out)


def test_november_figures_match_the_hand_computed_ones(desk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    got = as_json(desk, "--since", "2026-11-01", "--until", "2026-11-30", capsys=capsys)
    assert got == {
        "period": {"since": "2026-11-01", "until": "2026-11-30", "queue": None},
        # T1, T2, T3 in W45; none in W46; T4 in W47; T5 (Sunday 29th) in W48.
        "weekly": [{"week": "2026-W45", "created": 3}, {"week": "2026-W46", "created": 0},
                   {"week": "2026-W47", "created": 1}, {"week": "2026-W48", "created": 1}],
        # T1 1080/120, T2 30/30, T3 3990/150, T5 1260/0 (calendar/business minutes).
        # Calendar sorted 30, 1080, 1260, 3990: median (1080+1260)/2 = 1170; p90 at position 0.9*3 = 2.7:
        # 1260 + 0.7*(3990-1260) = 3171. Business sorted 0, 30, 120, 150: median 75; p90 120 + 0.7*30 = 141.
        "first_response": {"count": 4, "median_minutes": 1170.0, "p90_minutes": 3171.0,
                           "median_business_minutes": 75.0, "p90_business_minutes": 141.0},
        # T1 2640/720, T5 1380/120 (T2's solve was undone by the reopen). Median (1380+2640)/2 = 2010;
        # p90 1380 + 0.9*1260 = 2514. Business: median (120+720)/2 = 420; p90 120 + 0.9*600 = 660.
        "resolution": {"count": 2, "median_minutes": 2010.0, "p90_minutes": 2514.0,
                       "median_business_minutes": 420.0, "p90_business_minutes": 660.0},
        "sla": {
            # met T2, T5; missed T1, T3 (T6's miss is October's); running past due: T4.
            "first_response": {"met": 2, "missed": 2, "compliance": 0.5, "breached_open": 1},
            # met T3; T2's runs past due (T3's is due in 2100).
            "next_response": {"met": 1, "missed": 0, "compliance": 1.0, "breached_open": 1},
            # met T1, T5; T2's runs past due (T1's due is past too, but T1 is solved).
            "resolution": {"met": 2, "missed": 0, "compliance": 1.0, "breached_open": 1},
            "breaches": 5,  # (2 + 1) + (0 + 1) + (0 + 1)
        },
        # Now, whatever the creation date: T1 solved, T2 open, T3 pending, T4 new, T6 open (T5, T7 closed).
        "backlog": {"by_status": {"new": 1, "open": 2, "pending": 1, "solved": 1},
                    "by_queue": {"help": 2, "support": 3}},
        # Ever solved: T1, T2 (solved on the 4th), T5; reopened: T2. 1/3 = 0.3333.
        "reopen_rate": {"solved": 3, "reopened": 1, "rate": 0.3333},
        # T1 5, T2 2, T5 4: 11/3 = 3.67 (T6's 1 is October's).
        "csat": {"count": 3, "average": 3.67, "distribution": {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1}},
    }


def test_queue_filters_the_scope_and_the_backlog(desk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    got = as_json(desk, "--queue", "help", capsys=capsys)
    assert got == {
        "period": {"since": None, "until": None, "queue": "help"},
        "weekly": [{"week": "2026-W43", "created": 1}, {"week": "2026-W44", "created": 0},
                   {"week": "2026-W45", "created": 1}],  # T6, then T3
        # T6 60/60, T3 3990/150. Median (60+3990)/2 = 2025; p90 60 + 0.9*3930 = 3597.
        # Business: median (60+150)/2 = 105; p90 60 + 0.9*90 = 141.
        "first_response": {"count": 2, "median_minutes": 2025.0, "p90_minutes": 3597.0,
                           "median_business_minutes": 105.0, "p90_business_minutes": 141.0},
        "resolution": {"count": 0, "median_minutes": None, "p90_minutes": None,
                       "median_business_minutes": None, "p90_business_minutes": None},
        "sla": {
            "first_response": {"met": 0, "missed": 2, "compliance": 0.0, "breached_open": 0},  # T3, T6
            "next_response": {"met": 1, "missed": 0, "compliance": 1.0, "breached_open": 0},  # T3
            "resolution": {"met": 0, "missed": 0, "compliance": None, "breached_open": 0},
            "breaches": 2,
        },
        "backlog": {"by_status": {"open": 1, "pending": 1}, "by_queue": {"help": 2}},
        # T6 was closed (and so counts as solved), then reopened.
        "reopen_rate": {"solved": 1, "reopened": 1, "rate": 1.0},
        "csat": {"count": 1, "average": 1.0, "distribution": {"1": 1, "2": 0, "3": 0, "4": 0, "5": 0}},
    }


def test_since_and_until_are_whole_utc_days(desk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def created(*args: str) -> list[tuple[str, int]]:
        return [(w["week"], w["created"]) for w in as_json(desk, *args, capsys=capsys)["weekly"]]

    everything = created()
    assert everything[0] == ("2026-W43", 1) and everything[-1] == ("2026-W49", 1)
    assert sum(n for _, n in everything) == 7
    until = created("--until", "2026-11-30")  # T7, created at 00:00 on the 1st, is out
    assert until[-1] == ("2026-W48", 1) and sum(n for _, n in until) == 6
    assert created("--since", "2026-12-01") == [("2026-W49", 1)]
    assert created("--since", "2026-12-01", "--until", "2026-12-01") == [("2026-W49", 1)]
    assert created("--since", "2026-11-03", "--until", "2026-11-03") == [("2026-W45", 1)]  # T2 only
    assert created("--since", "2026-11-30", "--until", "2026-11-30") == []
    one_day = as_json(desk, "--since", "2026-12-01", "--until", "2026-12-01", capsys=capsys)
    assert one_day["first_response"]["count"] == 0
    assert one_day["reopen_rate"] == {"solved": 1, "reopened": 0, "rate": 0.0}  # closed counts as solved
    nothing = as_json(desk, "--since", "2030-01-01", capsys=capsys)
    assert nothing["weekly"] == [] and nothing["reopen_rate"] == {"solved": 0, "reopened": 0, "rate": None}
    assert one_day["csat"] == {"count": 0, "average": None, "distribution": dict.fromkeys("12345", 0)}
    assert one_day["backlog"]["by_status"] == {"new": 1, "open": 2, "pending": 1, "solved": 1}  # still "now"


@pytest.mark.parametrize("args", [("--since", "2026-13-01"), ("--until", "2026/11/30"), ("--since", "20261101"),
                                  ("--until", "2026-02-30"), ("--since", "2026-W49-1"), ("--since", "")])
def test_a_bad_day_is_a_one_line_usage_error(desk: Path, capsys: pytest.CaptureFixture[str],
                                             args: tuple[str, str]) -> None:
    code, out, err = run(desk, *args, "--json", capsys=capsys)
    assert code == 64
    assert out == ""
    assert err == f"report: {args[0]} {args[1]}: not a day (give YYYY-MM-DD)\n"


def test_since_after_until_is_a_usage_error(desk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(desk, "--since", "2026-11-30", "--until", "2026-11-01", capsys=capsys)
    assert code == 64 and err == "report: --since 2026-11-30 is after --until 2026-11-01\n"


def test_an_unknown_queue_names_the_queues(desk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(desk, "--queue", "nope", capsys=capsys)
    assert code == 64 and out == ""
    assert err == "report: --queue nope: unknown queue (support, help)\n"


def test_the_text_summary(desk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(desk, "--since", "2026-11-01", "--until", "2026-11-30", capsys=capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "tickets created 2026-11-01 .. 2026-11-30 (UTC days), all queues: 5"
    # 1170 min = 19h 30m, 75 min = 1h 15m, 3171 min = 2d 4h 51m, 141 min = 2h 21m
    assert lines[1] == "first response:  4 tickets; median 19h 30m (business 1h 15m), p90 2d 4h 51m (business 2h 21m)"
    assert lines[2].startswith("resolution:      2 tickets; median 1d 9h 30m (business 7h 00m)")
    assert "first response  2    2       50.0%       1" in out
    assert "breaches: 5" in out
    assert "backlog now (not closed): new 1, open 2, pending 1, solved 1; by queue: help 2, support 3" in out
    assert "reopened: 1 of 3 solved (33.3%)" in out
    assert "satisfaction: 3 ratings, average 3.67; 1: 0  2: 1  3: 0  4: 1  5: 1" in out


def test_plot_writes_one_png(desk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "report.png"
    got = as_json(desk, "--plot", str(target), capsys=capsys)
    assert got["first_response"]["count"] == 5
    data = target.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    empty = tmp_path / "empty.png"  # no tickets at all in scope: the panels say so, the file is still made
    code, out, err = run(desk, "--since", "2030-01-01", "--plot", str(empty), capsys=capsys)
    assert code == 0, err
    assert empty.read_bytes().startswith(b"\x89PNG") and f"plot: {empty}" in out


def test_plot_without_matplotlib_is_one_line_and_69(desk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    target = tmp_path / "report.png"
    code, out, err = run(desk, "--plot", str(target), capsys=capsys)
    assert code == 69
    assert out == ""
    assert err == "report --plot needs matplotlib: pip install 'mailticket[report]'\n"
    assert not target.exists()


def test_without_sla_business_minutes_are_calendar_minutes(make_app: Callable[..., App]) -> None:
    app = make_app()  # no [sla]: the calendar is 24x7
    with app.db.transaction() as s:
        # Mon 16:00 -> Tue 10:00 = 1080 min in both; a single value is its own median and p90.
        s.add(ticket(at(2, 16), first_response_at=at(3, 10)))
    keeper = Timekeeper(app.settings.sla, app.settings.lifecycle, csat=app.settings.csat_enabled)
    with app.db.transaction() as s:
        got = report(s, keeper, at(1, 0, month=12))
    assert got["first_response"] == {"count": 1, "median_minutes": 1080.0, "p90_minutes": 1080.0,
                                     "median_business_minutes": 1080.0, "p90_business_minutes": 1080.0}
    assert got["weekly"] == [{"week": "2026-W45", "created": 1}]
    assert got["sla"]["breaches"] == 0
    assert got["period"] == {"since": None, "until": None, "queue": None}
