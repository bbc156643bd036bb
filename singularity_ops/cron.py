"""Five-field cron expressions (minute hour day-of-month month day-of-week), read as crontab(5) reads them.

Written here rather than taken from a package: the backup schedule needs parsing and "when did it last fire",
about a hundred lines, and the widely used parser changed hands and behaviour more than once.
Supported: ``*``, numbers, ``a-b`` ranges, ``/step``, lists, month and day names (``jan``, ``sun``), ``7`` for
Sunday, and ``@hourly``/``@daily``/``@weekly``/``@monthly``/``@yearly``. As in Vixie cron, when both day fields
are restricted a day matches if either does. Times are wall-clock times in the given zone; a time that a
daylight-saving jump skips fires at the same distance after the jump, one that repeats fires once.
"""

from __future__ import annotations

import calendar
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
           "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_DAYS = {name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# name, lowest, highest, names
_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, _MONTHS),
           ("day of week", 0, 7, _DAYS))
_MINUTE = timedelta(minutes=1)
_SEARCH_LIMIT = 200_000  # steps back; a month and a day jump are one step each, so this covers decades


def _value(text: str, low: int, high: int, names: dict[str, int], field: str, whole: str) -> int:
    number = names.get(text.lower()) if names else None
    if number is None:
        if not text.isdigit():
            raise ValueError(f"bad {field} {text!r} in cron expression {whole!r}")
        number = int(text)
    if not low <= number <= high:
        raise ValueError(f"{field} {number} is out of range {low}-{high} in cron expression {whole!r}")
    return number


def _field(text: str, low: int, high: int, names: dict[str, int], field: str, whole: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        spread, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"bad step {step_text!r} in {field} of cron expression {whole!r}")
            step = int(step_text)
        if spread == "*":
            first, last = low, high
        elif "-" in spread:
            start, _, end = spread.partition("-")
            first, last = (_value(start, low, high, names, field, whole), _value(end, low, high, names, field, whole))
            if first > last:
                raise ValueError(f"range {spread!r} runs backwards in {field} of cron expression {whole!r}")
        else:
            first = _value(spread, low, high, names, field, whole)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    either_day: bool  # both day fields restricted: a day matches if either does

    @classmethod
    def parse(cls, text: str) -> Cron:
        whole = text.strip()
        parts = _MACROS.get(whole.lower(), whole).split()
        if len(parts) != 5:
            raise ValueError(f"cron expression {whole!r} needs 5 fields (minute hour day month weekday), "
                             f"e.g. '0 3 * * *' for 03:00 daily")
        minutes, hours, days, months, weekdays = (
            _field(part, low, high, names, name, whole) for part, (name, low, high, names) in zip(parts, _FIELDS,
                                                                                                   strict=True))
        weekdays = frozenset(day % 7 for day in weekdays)
        cron = cls(whole, minutes, hours, days, months, weekdays,
                   either_day=not parts[2].startswith("*") and not parts[4].startswith("*"))
        if not cron.either_day and not parts[2].startswith("*") and not any(
                day <= (29 if month == 2 else calendar.monthrange(2001, month)[1]) for month in months for day in days):
            raise ValueError(f"cron expression {whole!r} never fires: no chosen month has the chosen day")
        return cron

    def _day_matches(self, moment: datetime) -> bool:
        in_days = moment.day in self.days
        in_weekdays = (moment.weekday() + 1) % 7 in self.weekdays
        return (in_days or in_weekdays) if self.either_day else (in_days and in_weekdays)

    def matches(self, moment: datetime) -> bool:
        """Whether the wall-clock minute of ``moment`` is one the expression fires on."""
        return (moment.minute in self.minutes and moment.hour in self.hours and moment.month in self.months
                and self._day_matches(moment))

    def previous(self, now: datetime, zone: tzinfo | None = None) -> datetime:
        """The latest firing time at or before ``now`` (aware), read on the wall clock of ``zone`` (None: the
        host's), in UTC: aware datetimes in one zone compare by wall clock, which is wrong across a DST change."""
        local = now.astimezone(zone)
        zone = local.tzinfo
        moment = local.replace(second=0, microsecond=0, tzinfo=None, fold=0)
        for _ in range(_SEARCH_LIMIT):
            if moment.month not in self.months:
                moment = moment.replace(day=1, hour=0, minute=0) - _MINUTE
            elif not self._day_matches(moment):
                moment = moment.replace(hour=0, minute=0) - _MINUTE
            elif moment.hour not in self.hours:
                moment = moment.replace(minute=0) - _MINUTE
            elif moment.minute not in self.minutes:
                moment -= _MINUTE
            else:
                fired = moment.replace(tzinfo=zone).astimezone(UTC)
                if fired > now:  # a wall-clock time a daylight-saving jump skipped: it fires after the jump
                    return self.previous(fired - timedelta(hours=1), zone)
                return fired
        raise ValueError(f"cron expression {self.text!r} did not fire in the decades before {now:%Y-%m-%d}")

    def next(self, now: datetime, zone: tzinfo | None = None) -> datetime:
        """The first firing time after ``now``, in UTC, for messages such as 'next backup at ...'."""
        local = now.astimezone(zone)
        zone = local.tzinfo
        moment = local.replace(second=0, microsecond=0, tzinfo=None, fold=0) + _MINUTE
        for _ in range(_SEARCH_LIMIT):
            if moment.month not in self.months:
                moment = (moment.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(moment):
                moment = moment.replace(hour=0, minute=0) + timedelta(days=1)
            elif moment.hour not in self.hours:
                moment = moment.replace(minute=0) + timedelta(hours=1)
            elif moment.minute not in self.minutes:
                moment += _MINUTE
            else:
                return moment.replace(tzinfo=zone).astimezone(UTC)
        raise ValueError(f"cron expression {self.text!r} does not fire in the decades after {now:%Y-%m-%d}")


def zone_named(name: str | None) -> tzinfo | None:
    """``name`` as a zone; None: the host's own, with its daylight-saving rules (``TZ``, else /etc/localtime),
    falling back to None (the current fixed offset) where neither is readable."""
    if name:
        return ZoneInfo(name)
    try:
        if os.environ.get("TZ"):
            return ZoneInfo(os.environ["TZ"].lstrip(":"))
        with open("/etc/localtime", "rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return None


def check_cron(text: str) -> str:
    """Config check: the expression as written, after making sure it parses."""
    return Cron.parse(text).text
