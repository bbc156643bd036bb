"""Cron expressions fire when crontab(5) would, in the configured zone, across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from singularity_ops.cron import Cron, zone_named

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, zone: ZoneInfo = BERLIN) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def test_the_default_daily_schedule_last_fired_at_three_today_or_yesterday() -> None:
    daily = Cron.parse("0 3 * * *")
    assert daily.previous(at("2025-06-04 03:00"), BERLIN) == at("2025-06-04 03:00")
    assert daily.previous(at("2025-06-04 02:59"), BERLIN) == at("2025-06-03 03:00")
    assert daily.next(at("2025-06-04 03:00"), BERLIN) == at("2025-06-05 03:00")


def test_the_default_weekly_schedule_is_sunday_at_four() -> None:
    weekly = Cron.parse("0 4 * * 0")
    assert weekly.previous(at("2025-06-04 12:00"), BERLIN) == at("2025-06-01 04:00")  # a Wednesday → last Sunday
    assert Cron.parse("0 4 * * 7").weekdays == Cron.parse("0 4 * * sun").weekdays == frozenset({0})


def test_the_zone_decides_the_wall_clock() -> None:
    now = datetime(2025, 6, 4, 1, 30, tzinfo=UTC)  # 03:30 in Berlin, 21:30 the day before in New York
    assert Cron.parse("0 3 * * *").previous(now, BERLIN) == at("2025-06-04 03:00")
    york = ZoneInfo("America/New_York")
    assert Cron.parse("0 3 * * *").previous(now, york) == at("2025-06-03 03:00", york)


def test_ranges_steps_lists_and_names() -> None:
    cron = Cron.parse("*/15 9-17 * jan,jul mon-fri")
    assert cron.minutes == frozenset({0, 15, 30, 45})
    assert cron.hours == frozenset(range(9, 18))
    assert cron.months == frozenset({1, 7})
    assert cron.weekdays == frozenset({1, 2, 3, 4, 5})
    assert Cron.parse("5/20 * * * *").minutes == frozenset({5, 25, 45})
    assert cron.previous(at("2025-07-05 12:00"), BERLIN) == at("2025-07-04 17:45")  # Saturday → Friday evening


def test_both_day_fields_restricted_match_either_as_in_vixie_cron() -> None:
    cron = Cron.parse("0 0 13 * fri")  # the 13th, and every Friday
    assert cron.matches(datetime(2025, 6, 13))  # a Friday the 13th
    assert cron.matches(datetime(2025, 6, 6))  # a Friday
    assert cron.matches(datetime(2025, 5, 13))  # a Tuesday the 13th
    assert not cron.matches(datetime(2025, 6, 5))


def test_macros() -> None:
    assert Cron.parse("@daily").previous(at("2025-06-04 12:00"), BERLIN) == at("2025-06-04 00:00")
    assert Cron.parse("@weekly").previous(at("2025-06-04 12:00"), BERLIN) == at("2025-06-01 00:00")
    assert Cron.parse("@yearly").previous(at("2025-06-04 12:00"), BERLIN) == at("2025-01-01 00:00")


def test_a_time_skipped_by_the_spring_change_fires_after_it_once() -> None:
    cron = Cron.parse("30 2 * * *")  # 2025-03-30: Berlin jumps from 02:00 to 03:00
    assert cron.previous(at("2025-03-30 03:10"), BERLIN) == at("2025-03-29 02:30")
    fired = cron.previous(at("2025-03-30 03:40"), BERLIN)
    assert fired.astimezone(UTC) == datetime(2025, 3, 30, 1, 30, tzinfo=UTC)  # 03:30 summer time


def test_a_time_repeated_by_the_autumn_change_fires_once() -> None:
    cron = Cron.parse("30 2 * * *")  # 2025-10-26: Berlin goes from 03:00 back to 02:00
    first = datetime(2025, 10, 26, 0, 30, tzinfo=UTC)  # 02:30 summer time
    second = datetime(2025, 10, 26, 1, 30, tzinfo=UTC)  # 02:30 winter time
    assert cron.previous(first, BERLIN) == first
    assert cron.previous(second, BERLIN) == first  # already fired this night: the backup is not repeated


@pytest.mark.parametrize(("text", "problem"), [
    ("0 3 * *", r"needs 5 fields .*e\.g\. '0 3 \* \* \*'"),
    ("60 3 * * *", r"minute 60 is out of range 0-59"),
    ("0 24 * * *", r"hour 24 is out of range 0-23"),
    ("0 3 * * funday", r"bad day of week 'funday'"),
    ("0 3 5-1 * *", r"range '5-1' runs backwards"),
    ("*/0 3 * * *", r"bad step '0'"),
    ("0 0 31 feb *", r"never fires"),
])
def test_bad_expressions_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Cron.parse(text)


def test_a_leap_day_schedule_finds_the_last_leap_year() -> None:
    assert Cron.parse("0 0 29 2 *").previous(at("2027-06-01 00:00"), BERLIN) == at("2024-02-29 00:00")


def test_named_zone_and_host_zone() -> None:
    assert zone_named("Europe/Berlin") == BERLIN
    host = zone_named(None)
    assert host is None or datetime(2025, 6, 1, tzinfo=host).utcoffset() is not None
