"""model_manager configuration: the documented shape loads, and every mistake is one line naming the profile."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from singularity_ops.config import load_config
from singularity_ops.controllers.model_manager.plan import active_profile
from singularity_ops.errors import ConfigError

pytestmark = pytest.mark.usefixtures("clean_env")

DOCUMENTED = """
model_manager:
  timezone: Europe/Moscow          # IANA name; default: the host's
  interval_seconds: 30
  reserve_bytes: 268435456         # never plan to use the last 256 MiB
  keep_alive: 30m                  # keep_alive sent with loads
  profiles:
    - name: morning
      hours: "07:00-12:00"         # may wrap midnight, e.g. "23:00-07:00"
      days: [mon, tue, wed, thu, fri]   # optional, default every day
      models: [qwen2.5-coder:1.5b] # in priority order
    - name: night
      hours: "23:00-07:00"
      models: [tinyllama:1.1b]
      exclusive: true              # unload every model not listed
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(config_file=path, environ={})


def profiles(tmp_path: Path, *entries: dict):
    return load(tmp_path, yaml.safe_dump({"model_manager": {"profiles": list(entries)}}))


def test_the_documented_example_loads(tmp_path: Path) -> None:
    settings = load(tmp_path, DOCUMENTED).model_manager
    assert (settings.timezone, settings.interval_seconds, settings.reserve_bytes, settings.keep_alive) == \
        ("Europe/Moscow", 30.0, 268435456, "30m")
    morning, night = settings.profiles
    assert (morning.name, morning.hours, morning.days, morning.models, morning.exclusive) == \
        ("morning", "07:00-12:00", ["mon", "tue", "wed", "thu", "fri"], ["qwen2.5-coder:1.5b"], False)
    assert night.days == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] and night.exclusive


def test_defaults_manage_memory_and_demand_without_profiles() -> None:
    settings = load_config(environ={}).model_manager
    assert settings.enabled and not settings.dry_run and settings.profiles == []
    assert (settings.timezone, settings.keep_alive, settings.demand_minutes) == (None, "30m", 15)


def test_profiles_follow_the_clock_in_their_zone(tmp_path: Path) -> None:
    settings = load(tmp_path, DOCUMENTED).model_manager
    moscow = ZoneInfo("Europe/Moscow")
    monday = datetime(2025, 6, 2, 7, 0, tzinfo=moscow)
    assert active_profile(settings.profiles, monday, moscow).name == "morning"
    assert active_profile(settings.profiles, monday.replace(hour=6, minute=59), moscow).name == "night"
    assert active_profile(settings.profiles, monday.replace(hour=12), moscow) is None, "the end is not included"
    assert active_profile(settings.profiles, datetime(2025, 6, 7, 8, tzinfo=moscow), moscow) is None, "Saturday"
    assert active_profile(settings.profiles, datetime(2025, 6, 2, 4, tzinfo=UTC), moscow).name == "morning"


def test_whole_day_profiles_and_full_day_names(tmp_path: Path) -> None:
    (weekend,) = profiles(tmp_path, {"name": "weekend", "days": ["Saturday", "sun"], "models": ["x"]}) \
        .model_manager.profiles
    assert (weekend.hours, weekend.days) == ("00:00-24:00", ["sat", "sun"])
    assert active_profile([weekend], datetime(2025, 6, 8, 23, 59, tzinfo=UTC), UTC) is weekend
    assert active_profile([weekend], datetime(2025, 6, 9, 0, 0, tzinfo=UTC), UTC) is None


@pytest.mark.parametrize(("entries", "message"), [
    ([{"name": "a", "hours": "25:00-07:00"}],
     r"'model_manager\.profiles\[0\]\.hours': bad time '25:00' in '25:00-07:00'; hours run 00:00 to 24:00"),
    ([{"name": "a", "hours": "7-12"}], r"'model_manager\.profiles\[0\]\.hours': bad time '7' in '7-12'; write HH:MM"),
    ([{"name": "a", "hours": "07:00"}], r"'model_manager\.profiles\[0\]\.hours': expected HH:MM-HH:MM, got '07:00'"),
    ([{"name": "a", "hours": "07:00-07:00"}], r"'07:00-07:00' is an empty range; use 00:00-24:00"),
    ([{"name": "a", "days": ["mon", "fun"]}],
     r"'model_manager\.profiles\[0\]\.days': unknown day 'fun'; use mon, tue, wed, thu, fri, sat, sun"),
    ([{"name": "a", "days": "mon"}], r"'model_manager\.profiles\[0\]\.days' must be a list, got str"),
    ([{"hours": "07:00-08:00"}], r"profile \[0\] has no name; give each profile a 'name'"),
    ([{"name": "a", "hours": "01:00-02:00"}, {"name": "a", "hours": "03:00-04:00"}],
     r"profiles \[0\] and \[1\] are both named 'a'; rename one"),
    ([{"name": "a", "hours": "07:00-12:00", "days": ["mon"]}, {"name": "b", "hours": "11:00-13:00"}],
     r"'model_manager\.profiles': profiles 'a' \(07:00-12:00\) and 'b' \(11:00-13:00\) overlap from mon 11:00 "
     r"to mon 12:00; change the hours or days of one"),
    ([{"name": "sunday-night", "hours": "23:00-07:00", "days": ["sun"]},
      {"name": "monday-early", "hours": "06:00-08:00", "days": ["mon"]}],
     r"overlap from mon 06:00 to mon 07:00"),
    ([{"name": "a", "hours": "07:00-12:00", "colour": "red"}], r"unknown key 'model_manager\.profiles\[0\]\.colour'"),
])
def test_a_bad_profile_is_one_line_naming_it(tmp_path: Path, entries: list[dict], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        profiles(tmp_path, *entries)
    assert "\n" not in str(error.value)


def test_profiles_on_different_days_may_share_hours(tmp_path: Path) -> None:
    weekdays = {"name": "work", "hours": "07:00-12:00", "days": ["mon", "tue", "wed", "thu", "fri"]}
    weekend = {"name": "rest", "hours": "07:00-12:00", "days": ["sat", "sun"]}
    assert [p.name for p in profiles(tmp_path, weekdays, weekend).model_manager.profiles] == ["work", "rest"]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("timezone", "Mars/Olympus", r"unknown time zone 'Mars/Olympus'; use an IANA name such as Europe/Moscow"),
    ("keep_alive", "half an hour", r"expected a duration such as 30m, 1h30m or -1 \(forever\)"),
    ("interval_seconds", 0, r"'model_manager\.interval_seconds'.*greater than 0"),
    ("profiles", {"name": "a"}, r"'model_manager\.profiles' must be a list, got dict"),
])
def test_bad_settings_are_named(tmp_path: Path, key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, yaml.safe_dump({"model_manager": {key: value}}))


def test_keep_alive_takes_go_durations_and_seconds(tmp_path: Path) -> None:
    for value, expected in (("1h30m", "1h30m"), (-1, "-1"), (600, "600")):
        assert load(tmp_path, yaml.safe_dump({"model_manager": {"keep_alive": value}})).model_manager.keep_alive \
            == expected
