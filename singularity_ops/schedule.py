"""Weekly time windows: ``"HH:MM-HH:MM"`` on a set of weekdays, as minutes of the week.

Beside ``cron`` (points in time), this is the other time expression the config uses: the model manager's
profiles and anything else that says "on these days, between these hours". A range whose end is at or before its
start wraps past midnight, and belongs to the day it started on: ``23:00-07:00`` on ``fri`` ends Saturday 07:00.
"""

from __future__ import annotations

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = dict(zip(WEEKDAYS, ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
                      strict=True))
DAY_MINUTES, WEEK_MINUTES = 24 * 60, 7 * 24 * 60


def _clock(text: str, whole: str) -> int:
    hours, sep, minutes = text.strip().partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"bad time {text.strip()!r} in {whole!r}; write HH:MM-HH:MM, e.g. 07:00-12:00")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > DAY_MINUTES:
        raise ValueError(f"bad time {text.strip()!r} in {whole!r}; hours run 00:00 to 24:00")
    return value


def parse_hours(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` → (start, end) in minutes after midnight; an end at or before the start wraps past
    midnight (``"23:00-07:00"``)."""
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}")
    first, last = _clock(start, text), _clock(end, text)
    if first == DAY_MINUTES:
        raise ValueError(f"bad time '24:00' in {text!r}; a range starts at 23:59 at the latest")
    if first == last:
        raise ValueError(f"{text!r} is an empty range; use 00:00-24:00 for the whole day")
    return first, last


def check_hours(value: str) -> str:
    parse_hours(value)
    return value.strip()


def parse_days(value: list[str]) -> list[str]:
    """Day names (``mon`` or ``monday``, any case) → their short names, in the given order, without repeats."""
    days = []
    for day in value:
        short = day.strip().lower()[:3]
        if short not in WEEKDAYS or day.strip().lower() not in (short, _FULL_DAYS[short]):
            raise ValueError(f"unknown day {day!r}; use {', '.join(WEEKDAYS)}")
        if short not in days:
            days.append(short)
    if not days:
        raise ValueError("is empty; leave 'days' out for every day")
    return days


def week_windows(hours: str, days: list[str]) -> list[tuple[int, int]]:
    """The minutes of the week (Monday 00:00 = 0) covered, as [start, end) ranges."""
    start, end = parse_hours(hours)
    length = (end - start) % DAY_MINUTES or DAY_MINUTES
    windows = []
    for day in days:
        first = WEEKDAYS.index(day) * DAY_MINUTES + start
        last = first + length
        windows.append((first, min(last, WEEK_MINUTES)))
        if last > WEEK_MINUTES:  # Sunday night into Monday morning
            windows.append((0, last - WEEK_MINUTES))
    return windows


def minute_name(minute: int) -> str:
    """A minute of the week as ``"fri 23:00"``."""
    day, rest = divmod(minute % WEEK_MINUTES, DAY_MINUTES)
    return f"{WEEKDAYS[day]} {rest // 60:02d}:{rest % 60:02d}"


def week_overlap(first: tuple[str, list[str]], second: tuple[str, list[str]]) -> tuple[str, str] | None:
    """Where two (hours, days) windows first overlap, as named minutes, or None."""
    for a_start, a_end in week_windows(*first):
        for b_start, b_end in week_windows(*second):
            if a_start < b_end and b_start < a_end:
                return minute_name(max(a_start, b_start)), minute_name(min(a_end, b_end))
    return None
