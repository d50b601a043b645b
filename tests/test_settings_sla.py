"""[sla] in the configuration: the issue's example parses, and every mistake is one line naming its key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mailticket.errors import ConfigError
from mailticket.settings import Duration, Escalation, SlaPolicy, load
from mailticket.sla.business import calendar_of

EXAMPLE = """
[sla]
timezone = "Europe/Berlin"
business_hours = { mon-fri = "09:00-17:00" }
holidays = "DE"
extra_holidays = ["2026-12-24"]
notify_in_business_hours = true

[[sla.policies]]
name = "high"
match.priority = "high"
first_response = "4h"
next_response = "8h"
resolution = "2d"
remind_at = 0.75
escalate = [ { after = "0m", to = ["lead@example.com"] }, { after = "4h", to = ["manager@example.com"] } ]
"""

NINE_TO_FIVE = ((dt.time(9), dt.time(17)),)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    prefix = f"{path}: "
    assert all(p.startswith(prefix) for p in info.value.problems)
    return [p[len(prefix):] for p in info.value.problems]


def policy(body: str, name: str = "high") -> str:
    """[sla] with one policy whose keys are ``body`` (a valid target unless body gives its own)."""
    return f'[sla]\n[[sla.policies]]\nname = "{name}"\n{body}\n'


def test_the_example_parses(tmp_path: Path) -> None:
    sla = load(write(tmp_path, EXAMPLE), env={}).sla
    assert sla is not None
    assert sla.timezone == "Europe/Berlin"
    assert sla.business_hours == {0: NINE_TO_FIVE, 1: NINE_TO_FIVE, 2: NINE_TO_FIVE, 3: NINE_TO_FIVE,
                                  4: NINE_TO_FIVE, 5: (), 6: ()}
    assert sla.holidays == "DE"
    assert sla.extra_holidays == (dt.date(2026, 12, 24),)
    assert sla.notify_in_business_hours is True
    assert sla.policies == (SlaPolicy(
        name="high", match_priority=("high",), match_queue=(),
        first_response=Duration(0, 240), next_response=Duration(0, 480), resolution=Duration(2, 0),
        remind_at=0.75,
        escalate=(Escalation(Duration(0, 0), ("lead@example.com",)),
                  Escalation(Duration(0, 240), ("manager@example.com",))),
    ),)
    assert sla.policy_for("high", "support") is sla.policies[0]
    assert sla.policy_for("normal", "support") is None
    cal = calendar_of(sla)
    wednesday = dt.datetime(2026, 12, 23, 15, tzinfo=dt.UTC)  # 16:00 in Berlin; the 24th and 25th are closed
    assert cal.add(wednesday, Duration(0, 240)) == dt.datetime(2026, 12, 28, 11, tzinfo=dt.UTC)  # Mon 12:00 CET


def test_no_sla_table_is_none_and_the_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, ""), env={}).sla is None
    sla = load(write(tmp_path, "[sla]\n"), env={}).sla
    assert sla is not None
    assert (sla.timezone, sla.business_hours, sla.holidays, sla.extra_holidays, sla.notify_in_business_hours,
            sla.policies) == ("UTC", None, None, (), True, ())


def test_day_ranges_single_days_and_several_ranges(tmp_path: Path) -> None:
    text = ('[sla]\nholidays = "de-by"\nextra_holidays = [2026-12-31]\nbusiness_hours = '
            '{ mon-thu = "09:00-12:00,13:00-17:00", fri = "09:00-15:00", sat = "10:00-14:00", sun = "22:00-24:00" }\n')
    sla = load(write(tmp_path, text), env={}).sla
    assert sla is not None and sla.business_hours is not None
    assert sla.business_hours[0] == ((dt.time(9), dt.time(12)), (dt.time(13), dt.time(17)))
    assert sla.business_hours[4] == ((dt.time(9), dt.time(15)),)
    assert sla.business_hours[5] == ((dt.time(10), dt.time(14)),)
    assert sla.business_hours[6] == ((dt.time(22), dt.time(0)),)  # up to midnight
    assert sla.holidays == "DE-BY"  # the holidays package's spelling
    assert sla.extra_holidays == (dt.date(2026, 12, 31),)


def test_matching_by_queue_and_several_priorities_first_wins(tmp_path: Path) -> None:
    text = ('[[queues]]\nname = "billing"\n[sla]\n'
            '[[sla.policies]]\nname = "billing-urgent"\nmatch.queue = "billing"\n'
            'match.priority = ["high", "urgent"]\nfirst_response = "1h"\n'
            '[[sla.policies]]\nname = "default"\nresolution = "5d"\n')
    sla = load(write(tmp_path, text), env={}).sla
    assert sla is not None
    assert sla.policy_for("urgent", "billing") is sla.policies[0]
    assert sla.policy_for("normal", "billing") is sla.policies[1]
    assert sla.policy_for("urgent", "support") is sla.policies[1]


@pytest.mark.parametrize(("text", "line"), [
    ('[sla]\ntimezone = "Europe/Berln"\n',
     'sla.timezone: unknown timezone "Europe/Berln" (an IANA name such as "Europe/Berlin" or "UTC")'),
    ('[sla]\nnotify_in_business_hour = true\n',
     "sla.notify_in_business_hour: unknown key (known: business_hours, extra_holidays, holidays, "
     "notify_in_business_hours, policies, timezone)"),
    ('[sla]\nholidays = "XX"\n',
     'sla.holidays: unknown country "XX" for the holidays package (an ISO 3166 code such as "DE", "US", "FR")'),
    ('[sla]\nextra_holidays = ["2026-12-32"]\n',
     "sla.extra_holidays: '2026-12-32' is not a date (ISO, e.g. \"2026-12-24\")"),
    ('[sla]\nbusiness_hours = { mon-fry = "09:00-17:00" }\n',
     'sla.business_hours.mon-fry: not a day or day range (mon..sun, e.g. "mon-fri" or "sat")'),
    ('[sla]\nbusiness_hours = { fri-mon = "09:00-17:00" }\n',
     'sla.business_hours.fri-mon: not a day or day range (mon..sun, e.g. "mon-fri" or "sat")'),
    ('[sla]\nbusiness_hours = { mon-fri = "9-17" }\n',
     "sla.business_hours.mon-fri: '9-17' is not a time range (e.g. \"09:00-17:00\", or \"09:00-12:00,13:00-17:00\")"),
    ('[sla]\nbusiness_hours = { sat = "17:00-09:00" }\n',
     "sla.business_hours.sat: '17:00-09:00' is not a time range (e.g. \"09:00-17:00\", "
     'or "09:00-12:00,13:00-17:00")'),
    ('[sla]\nbusiness_hours = { sat = "09:00-13:00,12:00-17:00" }\n',
     "sla.business_hours.sat: '09:00-13:00,12:00-17:00' is not a time range (e.g. \"09:00-17:00\", "
     'or "09:00-12:00,13:00-17:00")'),
    ('[sla]\nbusiness_hours = { sat = "09:60-13:00" }\n',
     "sla.business_hours.sat: '09:60-13:00' is not a time range (e.g. \"09:00-17:00\", "
     'or "09:00-12:00,13:00-17:00")'),
    ('[sla]\nbusiness_hours = { mon-fri = "09:00-17:00", fri = "09:00-15:00" }\n',
     "sla.business_hours.fri: fri is already given by mon-fri"),
    ('[sla]\nbusiness_hours = {}\n', "sla.business_hours: empty (omit business_hours for 24x7)"),
])
def test_sla_table_problems(tmp_path: Path, text: str, line: str) -> None:
    assert problems(tmp_path, text) == [line]


def test_unknown_subdivision_names_the_known_ones(tmp_path: Path) -> None:
    [line] = problems(tmp_path, '[sla]\nholidays = "DE-ZZ"\n')
    assert line.startswith('sla.holidays: unknown subdivision "ZZ" of DE (known: BB, BE, BW, BY,')


@pytest.mark.parametrize(("body", "line"), [
    ('first_response = "4x"',
     'sla.policies[0] "high": first_response: \'4x\' is not a duration (e.g. "30m", "4h", "2d", "1d4h")'),
    ('first_response = "4h"\nresolution = "2 days"',
     'sla.policies[0] "high": resolution: \'2 days\' is not a duration (e.g. "30m", "4h", "2d", "1d4h")'),
    ('next_response = "0m"', 'sla.policies[0] "high": next_response: must be longer than 0'),
    ('first_response = 4', "sla.policies[0] \"high\": first_response: must be str, not 4"),
    ('first_response = "4h"\nremind_at = 1.5',
     'sla.policies[0] "high": remind_at: 1.5 must be a share between 0 and 1 (e.g. 0.75)'),
    ('first_response = "4h"\nremind_at = 0',
     'sla.policies[0] "high": remind_at: 0 must be a share between 0 and 1 (e.g. 0.75)'),
    ('first_response = "4h"\nreminder = 0.5',
     'sla.policies[0] "high": reminder: unknown key (known: escalate, first_response, match, name, '
     "next_response, remind_at, resolution)"),
    ('first_response = "4h"\nmatch.prio = "high"',
     'sla.policies[0] "high": match.prio: unknown key (known: priority, queue)'),
    ('first_response = "4h"\nmatch.priority = "hihg"',
     'sla.policies[0] "high": match.priority: unknown priority "hihg" (one of low, normal, high, urgent)'),
    ('first_response = "4h"\nmatch.queue = "sales"',
     'sla.policies[0] "high": match.queue: unknown queue "sales" (queues: support)'),
    ('remind_at = 0.5',
     'sla.policies[0] "high": has no target: give first_response, next_response or resolution'),
    ('first_response = "4h"\nescalate = [ { after = "0m", to = ["lead@example.com", "manager"] } ]',
     "sla.policies[0] \"high\": escalate[0].to: 'manager' is not an email address"),
    ('first_response = "4h"\nescalate = [ { after = "0m", to = "lead@example.com" },\n'
     '            { after = "4hours", to = "x@y" } ]',
     'sla.policies[0] "high": escalate[1].after: \'4hours\' is not a duration (e.g. "30m", "4h", "2d", "1d4h")'),
    ('first_response = "4h"\nescalate = [ { after = "0m" } ]', 'sla.policies[0] "high": escalate[0].to: required'),
    ('first_response = "4h"\nescalate = [ { after = "0m", to = "a@b", cc = "c@d" } ]',
     'sla.policies[0] "high": escalate[0].cc: unknown key (known: after, to)'),
    ('first_response = "4h"\nescalate = "lead@example.com"',
     'sla.policies[0] "high": escalate: must be a list of { after = "4h", to = ["lead@example.com"] }'),
])
def test_policy_problems_name_the_policy_and_the_key(tmp_path: Path, body: str, line: str) -> None:
    assert problems(tmp_path, policy(body)) == [line]


def test_duplicate_and_missing_policy_names(tmp_path: Path) -> None:
    text = ('[sla]\n[[sla.policies]]\nname = "high"\nfirst_response = "4h"\n'
            '[[sla.policies]]\nname = "high"\nfirst_response = "1h"\n')
    assert problems(tmp_path, text) == ['sla.policies: name "high" appears twice']
    assert problems(tmp_path, '[sla]\n[[sla.policies]]\nfirst_response = "4h"\n') == [
        "sla.policies[0]: name: required"]


def test_all_problems_at_once(tmp_path: Path) -> None:
    text = ('[sla]\ntimezone = "Mars/Olympus"\nbusiness_hours = { weekdays = "09:00-17:00" }\n'
            '[[sla.policies]]\nname = "a"\nfirst_response = "soon"\n'
            '[[sla.policies]]\nname = "b"\nresolution = "2d"\nremind_at = 2\n')
    lines = problems(tmp_path, text)
    assert [line.split(":")[0] for line in lines] == [
        "sla.timezone", "sla.business_hours.weekdays", 'sla.policies[0] "a"', 'sla.policies[1] "b"']
