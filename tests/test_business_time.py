"""Business time: open hours in a timezone, holidays, DST, and the "d" (business day) semantics."""

from __future__ import annotations

import datetime as dt
import random
import time
from zoneinfo import ZoneInfo

import pytest

from mailticket.settings import SlaSettings, parse_clock_ranges
from mailticket.sla.business import Calendar, Duration, calendar_of, parse_duration

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC


def hours(spec: str, days: range = range(5)) -> dict[int, tuple[tuple[dt.time, dt.time], ...]]:
    ranges = parse_clock_ranges(spec)
    assert ranges is not None
    return {day: ranges for day in days}


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    """A Berlin wall time, handed to the calendar in UTC as the callers do."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


def d(text: str) -> Duration:
    duration = parse_duration(text)
    assert duration is not None, text
    return duration


def office(extra: tuple[dt.date, ...] = (), region: str | None = "DE", spec: str = "09:00-17:00") -> Calendar:
    """Mon-Fri in Berlin, German public holidays: built the way the daemon builds it."""
    ranges = parse_clock_ranges(spec)
    assert ranges is not None
    sla = SlaSettings(timezone="Europe/Berlin",
                      business_hours={day: ranges if day < 5 else () for day in range(7)},
                      holidays=region, extra_holidays=extra)
    return calendar_of(sla)


# --- parse_duration ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "days", "minutes"), [
    ("30m", 0, 30), ("4h", 0, 240), ("2d", 2, 0), ("1d4h", 1, 240), ("90m", 0, 90), ("0m", 0, 0),
    ("1d2h30m", 1, 150), (" 8h ", 0, 480), ("1d 4h", 1, 240),
])
def test_parse_duration(text: str, days: int, minutes: int) -> None:
    assert parse_duration(text) == Duration(days, minutes)


@pytest.mark.parametrize("text", ["", "4", "h", "4x", "4h1d", "-4h", "4.5h", "1h1h", "4 hours", "m30"])
def test_parse_duration_rejects(text: str) -> None:
    assert parse_duration(text) is None


def test_duration_str_and_calendar() -> None:
    assert str(d("1d4h30m")) == "1d4h30m"
    assert str(d("90m")) == "1h30m"
    assert str(d("0m")) == "0m"
    assert d("2d1h").calendar == dt.timedelta(days=2, hours=1)


# --- hours, nights, weekends -------------------------------------------------------------------------

def test_friday_afternoon_four_hours_is_monday_noon() -> None:
    cal = office()
    due = cal.add(local(2026, 3, 6, 16), d("4h"))  # a Friday
    assert due == local(2026, 3, 9, 12)
    assert due.tzinfo is UTC


def test_across_a_night_and_to_the_close() -> None:
    cal = office()
    assert cal.add(local(2026, 3, 2, 16), d("2h")) == local(2026, 3, 3, 10)
    # The earliest instant: a target running out at the close is due at 17:00, not next morning.
    assert cal.add(local(2026, 3, 2, 13), d("4h")) == local(2026, 3, 2, 17)
    assert cal.add(local(2026, 3, 2, 9), d("8h")) == local(2026, 3, 2, 17)


def test_start_outside_hours_counts_from_the_next_opening() -> None:
    cal = office()
    assert cal.add(local(2026, 3, 7, 3), d("1h")) == local(2026, 3, 9, 10)  # Saturday night
    assert cal.add(local(2026, 3, 2, 6), d("30m")) == local(2026, 3, 2, 9, 30)
    assert cal.add(local(2026, 3, 2, 20), d("90m")) == local(2026, 3, 3, 10, 30)


def test_zero_is_the_start_itself() -> None:
    cal = office()
    night = local(2026, 3, 7, 2)
    assert cal.add(night, d("0m")) == night  # a breach at 02:00 is at 02:00; holding the mail is another matter


def test_between_over_nights_and_a_weekend() -> None:
    cal = office()
    assert cal.between(local(2026, 3, 6, 16), local(2026, 3, 9, 12)) == dt.timedelta(hours=4)
    assert cal.between(local(2026, 3, 2, 0), local(2026, 3, 9, 0)) == dt.timedelta(hours=40)
    assert cal.between(local(2026, 3, 7, 0), local(2026, 3, 8, 23)) == dt.timedelta(0)
    assert cal.between(local(2026, 3, 9, 12), local(2026, 3, 6, 16)) == dt.timedelta(0)  # backwards: 0
    assert cal.between(local(2026, 3, 2, 10), local(2026, 3, 2, 10)) == dt.timedelta(0)


def test_several_ranges_a_day_and_a_short_saturday() -> None:
    ranges = {day: parse_clock_ranges("09:00-12:00,13:00-17:00") or () for day in range(5)}
    ranges[5] = parse_clock_ranges("10:00-14:00") or ()
    cal = Calendar(BERLIN, ranges)
    assert cal.add(local(2026, 3, 2, 11), d("2h")) == local(2026, 3, 2, 14)  # the lunch break does not count
    assert cal.add(local(2026, 3, 2, 12, 30), d("1h")) == local(2026, 3, 2, 14)
    assert not cal.is_open(local(2026, 3, 2, 12, 30))
    assert cal.add(local(2026, 3, 6, 16), d("3h")) == local(2026, 3, 7, 12)  # Friday into Saturday
    assert cal.between(local(2026, 3, 2, 0), local(2026, 3, 9, 0)) == dt.timedelta(hours=5 * 7 + 4)


def test_is_open_boundaries() -> None:
    cal = office()
    assert cal.is_open(local(2026, 3, 2, 9))
    assert cal.is_open(local(2026, 3, 2, 16, 59))
    assert not cal.is_open(local(2026, 3, 2, 17))  # range ends are exclusive
    assert not cal.is_open(local(2026, 3, 2, 8, 59))
    assert not cal.is_open(local(2026, 3, 7, 12))  # Saturday


def test_next_open() -> None:
    cal = office()
    open_at = local(2026, 3, 2, 10, 15)
    assert cal.next_open(open_at) == open_at
    assert cal.next_open(local(2026, 3, 2, 17)) == local(2026, 3, 3, 9)
    assert cal.next_open(local(2026, 3, 6, 18)) == local(2026, 3, 9, 9)
    assert cal.next_open(local(2026, 12, 24, 18)) == local(2026, 12, 28, 9)  # over Christmas (DE: 25th, 26th)
    assert cal.next_open(local(2026, 3, 2, 2)).tzinfo is UTC


def test_inputs_in_any_zone_results_in_utc_and_naive_refused() -> None:
    cal = office()
    start = dt.datetime(2026, 3, 6, 10, tzinfo=dt.timezone(dt.timedelta(hours=-5)))  # 16:00 Berlin
    assert cal.add(start, d("4h")) == local(2026, 3, 9, 12)
    assert cal.add(start, d("4h")).tzinfo is UTC
    with pytest.raises(ValueError, match="aware"):
        cal.add(dt.datetime(2026, 3, 6, 16), d("4h"))
    with pytest.raises(ValueError, match="aware"):
        cal.between(dt.datetime(2026, 3, 6, 16), local(2026, 3, 9))


# --- holidays -----------------------------------------------------------------------------------------

def test_german_christmas_is_closed() -> None:
    cal = office()
    assert not cal.is_business_day(dt.date(2026, 12, 25))
    assert not cal.is_open(local(2026, 12, 25, 10))
    assert cal.is_business_day(dt.date(2026, 12, 24))  # not a public holiday in Germany
    assert cal.add(local(2026, 12, 24, 16), d("4h")) == local(2026, 12, 28, 12)
    assert cal.between(local(2026, 12, 23, 9), local(2026, 12, 28, 17)) == dt.timedelta(hours=24)


def test_extra_holidays_are_closed_too() -> None:
    cal = office(extra=(dt.date(2026, 12, 24),))
    assert not cal.is_open(local(2026, 12, 24, 10))
    assert cal.add(local(2026, 12, 23, 16), d("4h")) == local(2026, 12, 28, 12)
    assert cal.between(local(2026, 12, 23, 9), local(2026, 12, 28, 17)) == dt.timedelta(hours=16)


def test_subdivision_holidays() -> None:
    epiphany = dt.date(2026, 1, 6)  # a Tuesday; a holiday in Bavaria, not in all of Germany
    assert office(region="DE").is_business_day(epiphany)
    assert not office(region="DE-BY").is_business_day(epiphany)


def test_a_frozenset_of_dates_serves_as_holidays() -> None:
    cal = Calendar(BERLIN, hours("09:00-17:00"), frozenset({dt.date(2026, 3, 3)}))
    assert cal.add(local(2026, 3, 2, 16), d("2h")) == local(2026, 3, 4, 10)


# --- DST ----------------------------------------------------------------------------------------------

def test_a_week_across_the_end_of_dst_in_berlin() -> None:
    cal = office(region=None)
    # 2026-10-25 (a Sunday) clocks go back 03:00 CEST -> 02:00 CET; local hours stay 09:00-17:00.
    friday, monday = local(2026, 10, 23, 13), local(2026, 10, 26, 13)
    assert friday == dt.datetime(2026, 10, 23, 11, tzinfo=UTC)  # CEST: UTC+2
    assert monday == dt.datetime(2026, 10, 26, 12, tzinfo=UTC)  # CET: UTC+1
    assert cal.add(friday, d("8h")) == monday
    assert cal.between(friday, monday) == dt.timedelta(hours=8)
    assert cal.between(local(2026, 10, 19, 9), local(2026, 10, 30, 17)) == dt.timedelta(hours=80)
    assert cal.next_open(local(2026, 10, 24, 12)) == dt.datetime(2026, 10, 26, 8, tzinfo=UTC)
    assert cal.add(local(2026, 10, 23, 10), d("1d")) == dt.datetime(2026, 10, 26, 9, tzinfo=UTC)  # 10:00 CET


def test_dst_in_a_24x7_calendar() -> None:
    cal = Calendar(BERLIN)
    start, end = local(2026, 10, 25, 0), local(2026, 10, 26, 0)
    assert cal.between(start, end) == dt.timedelta(hours=25)  # the long day is 25 business hours
    assert cal.add(start, d("25h")) == end
    # A business day in 24x7 is the same wall time the next day: 25 real hours across the change.
    assert cal.add(local(2026, 10, 24, 12), d("1d")) == local(2026, 10, 25, 12)
    assert local(2026, 10, 25, 12) - local(2026, 10, 24, 12) == dt.timedelta(hours=25)
    spring = local(2026, 3, 29, 0)
    assert cal.between(spring, local(2026, 3, 30, 0)) == dt.timedelta(hours=23)


# --- 24x7 -----------------------------------------------------------------------------------------------

def test_no_business_hours_is_24x7() -> None:
    cal = calendar_of(SlaSettings(timezone="UTC"))
    start = dt.datetime(2026, 3, 7, 2, 30, tzinfo=UTC)  # a Saturday night
    assert cal.is_open(start)
    assert cal.next_open(start) == start
    assert cal.add(start, d("4h")) == start + dt.timedelta(hours=4)
    assert cal.add(start, d("2d")) == start + dt.timedelta(days=2)
    assert cal.between(start, start + dt.timedelta(days=10, minutes=7)) == dt.timedelta(days=10, minutes=7)


def test_24x7_with_holidays_closes_the_holidays_only() -> None:
    cal = calendar_of(SlaSettings(timezone="Europe/Berlin", holidays="DE"))
    assert cal.between(local(2026, 12, 24, 0), local(2026, 12, 28, 0)) == dt.timedelta(days=2)  # 24th and 27th
    assert cal.add(local(2026, 12, 24, 23), d("2h")) == local(2026, 12, 27, 1)


# --- "d": the same time on the next business day -------------------------------------------------------

def test_a_day_is_the_same_time_on_the_next_business_day() -> None:
    cal = office()
    assert cal.add(local(2026, 3, 2, 10), d("1d")) == local(2026, 3, 3, 10)
    assert cal.add(local(2026, 3, 6, 10), d("1d")) == local(2026, 3, 9, 10)  # Friday -> Monday
    assert cal.add(local(2026, 3, 2, 10), d("2d")) == local(2026, 3, 4, 10)
    assert cal.add(local(2026, 3, 2, 10), d("1d4h")) == local(2026, 3, 3, 14)
    assert cal.add(local(2026, 3, 2, 15), d("1d4h")) == local(2026, 3, 4, 11)
    assert cal.add(local(2026, 12, 23, 10), d("2d")) == local(2026, 12, 28, 10)  # over Christmas


def test_a_day_from_outside_hours_ends_at_a_close() -> None:
    cal = office()
    # Before Monday's opening: Monday is the first business day, so one day is all of Monday.
    assert cal.add(local(2026, 3, 2, 7), d("1d")) == local(2026, 3, 2, 17)
    assert cal.add(local(2026, 3, 7, 11), d("1d")) == local(2026, 3, 9, 17)  # from Saturday
    assert cal.add(local(2026, 3, 2, 17), d("1d")) == local(2026, 3, 3, 17)  # from Monday's close
    assert cal.add(local(2026, 3, 2, 9), d("1d")) == local(2026, 3, 2, 17)


def test_a_day_is_kept_inside_a_shorter_day() -> None:
    ranges = {day: parse_clock_ranges("09:00-12:00,13:00-17:00") or () for day in range(5)}
    ranges[5] = parse_clock_ranges("10:00-14:00") or ()
    cal = Calendar(BERLIN, ranges)
    assert cal.add(local(2026, 3, 6, 15), d("1d")) == local(2026, 3, 7, 14)  # after Saturday's close: its close
    assert cal.add(local(2026, 3, 6, 11), d("1d")) == local(2026, 3, 7, 11)
    # In the lunch break: counted from 13:00, due at the same position on Tuesday (12:00 == 13:00 in business time).
    assert cal.add(local(2026, 3, 2, 12, 30), d("1d")) == local(2026, 3, 3, 12)


# --- long spans and properties --------------------------------------------------------------------------

def test_a_year_is_fast() -> None:
    cal = office()
    began = time.perf_counter()
    year = cal.between(local(2026, 1, 1), local(2027, 1, 1))
    # 261 weekdays in 2026, of which 7 are German public holidays: 254 days of 8 hours.
    assert year == dt.timedelta(hours=254 * 8)
    assert cal.add(local(2026, 1, 1), d(f"{254 * 8}h")) == local(2026, 12, 31, 17)
    assert cal.add(local(2026, 1, 1), d("254d")) == local(2026, 12, 31, 17)
    assert cal.between(local(2020, 1, 1), local(2030, 1, 1)) > dt.timedelta(hours=20000)
    assert time.perf_counter() - began < 2.0


def test_never_open_is_an_error_not_a_hang() -> None:
    cal = Calendar(BERLIN, {})
    with pytest.raises(ValueError, match="not open"):
        cal.next_open(local(2026, 3, 2, 10))


def _random_instant(rng: random.Random) -> dt.datetime:
    """Anywhere in 2026, to the minute, often on a boundary (09:00, 17:00, midnight)."""
    day = dt.date(2026, 1, 1) + dt.timedelta(days=rng.randrange(365))
    hour, minute = rng.choice([(9, 0), (17, 0), (0, 0), (12, 0), (13, 0)]) if rng.random() < 0.3 else (
        rng.randrange(24), rng.randrange(60))
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=BERLIN).astimezone(UTC)


@pytest.mark.parametrize("calendar", ["office", "lunch", "24x7"])
def test_between_undoes_add(calendar: str) -> None:
    cal = {
        "office": office(extra=(dt.date(2026, 12, 24),)),
        "lunch": office(spec="09:00-12:00,13:00-17:00"),
        "24x7": Calendar(BERLIN, holidays=frozenset({dt.date(2026, 10, 25)})),
    }[calendar]
    rng = random.Random(14)
    for _ in range(400):
        a = _random_instant(rng)
        duration = Duration(0, rng.choice([0, 1, 30, 60, 240, 480, 479, 481, rng.randrange(1, 20000)]))
        due = cal.add(a, duration)
        assert due >= a
        assert cal.between(a, due) == dt.timedelta(minutes=duration.minutes), (a, duration)
        if duration.minutes:  # the earliest such instant: a minute less is not enough
            assert cal.between(a, due - dt.timedelta(minutes=1)) < dt.timedelta(minutes=duration.minutes)
            assert cal.is_open(due - dt.timedelta(minutes=1))
        b = _random_instant(rng)
        c = max(a, b) + dt.timedelta(minutes=rng.randrange(10000))
        assert cal.between(min(a, b), c) == cal.between(min(a, b), max(a, b)) + cal.between(max(a, b), c)


@pytest.mark.parametrize("spec, length", [("09:00-17:00", 8), ("09:00-12:00,13:00-17:00", 7)])
def test_a_business_day_is_a_days_length_when_the_days_are_alike(spec: str, length: int) -> None:
    cal = office(spec=spec)
    rng = random.Random(1014)
    for _ in range(300):
        a = _random_instant(rng)
        days = rng.randrange(1, 30)
        due = cal.add(a, Duration(days))
        assert cal.between(a, due) == dt.timedelta(hours=days * length), (a, days)
        assert cal.add(a, Duration(days, 90)) == cal.add(due, Duration(0, 90))
        assert cal.is_business_day(due.astimezone(BERLIN).date())  # the close of a business day at the latest


def test_add_is_monotone() -> None:
    cal = office()
    rng = random.Random(7)
    for _ in range(200):
        a = _random_instant(rng)
        small, big = sorted(rng.randrange(0, 5000) for _ in range(2))
        assert cal.add(a, Duration(0, small)) <= cal.add(a, Duration(0, big))
        later = a + dt.timedelta(minutes=rng.randrange(0, 5000))
        assert cal.add(a, Duration(0, small)) <= cal.add(later, Duration(0, small))
