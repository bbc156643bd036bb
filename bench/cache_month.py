"""Hit ratio over a replayed synthetic month: the cache alone against the cache with the predictive warmer, overall
and on the first request of each busy window (what only prediction can win).

Run: ``.venv/bin/python bench/cache_month.py [SEED]`` (from the repository root; no database: the warmer's own
prediction code, predict.py, over an in-memory copy of what store.observe reads).

The generator (seeded; 5 weeks from a Monday, the first only learnt from, the last four counted):

* routines: 30 questions, each on its own weekdays (every weekday, or one to three of them) at its own time between
  08:00 and 17:00, asked in a burst of 1 + Poisson(2) requests over 20 minutes;
* weekly reports: 15 questions asked on one weekday only, 1 + Poisson(1) times within 15 minutes of their hour;
* the morning briefing: 3 questions asked 5 to 10 times each between 09:00 and 09:30 on weekdays; the calendar
  says so (``55 8 * * 1-5``), as an operator would write it;
* popular: 10 questions asked at random all week, about once an hour each in working hours, every 4 hours at night;
* the long tail: one-off questions, 20 an hour in working hours and 3 at night, never asked twice.

The cache: exact keys, ``ttl_seconds`` 24 h, room for all. The warmer: a tick every 10 minutes with the defaults
(30-minute window, 0.5 expected requests at least, 20 prompts a window); a warm waits until no request came in the
last 30 s (the idle rule) and costs 400 tokens of the 20,000-an-hour budget. "First of a busy window": the first
request of each burst of routines, weekly reports and the briefing. Goal (issue 12): warmer ≥ 2x the cache alone on
those.
"""

from __future__ import annotations

import bisect
import random
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from singularity_ops.cache_key import chat_material, request_keys
from singularity_ops.config.cache import CacheConfig, CacheWarmerConfig, CalendarEntryConfig
from singularity_ops.controllers.cache_warmer.predict import Observed, Window, from_calendar, from_history, rank

START = datetime(2026, 2, 2, tzinfo=UTC)  # a Monday
WEEKS, LEARN_WEEKS = 5, 1
TTL = timedelta(hours=24)
TICK = timedelta(minutes=10)
IDLE = timedelta(seconds=30)
WARM_TOKENS = 400
MODEL = "llama3.2:3b"
BRIEFING = ["Summarise the overnight alerts.", "What changed in production yesterday?", "Which on-call pages are open?"]


def generate(seed: int) -> list[tuple[datetime, str, bool]]:
    """(time, prompt, first of a busy window) for the whole run, in time order."""
    rng = random.Random(seed)
    events: list[tuple[datetime, str, bool]] = []

    def burst(day: datetime, prompt: str, at: timedelta, count: int, spread: float) -> None:
        times = sorted(day + at + timedelta(minutes=rng.uniform(0, spread)) for _ in range(count))
        events.extend((t, prompt, i == 0) for i, t in enumerate(times))

    routines = [(f"routine {i}: {rng.choice(['status of', 'summary of', 'risks in'])} project {i}",
                 sorted(rng.sample(range(5), rng.choice([5, 1, 2, 3]))),
                 timedelta(hours=rng.randint(8, 16), minutes=rng.randint(0, 59))) for i in range(30)]
    weekly = [(f"weekly report {i}", rng.randrange(5), timedelta(hours=rng.randint(9, 16))) for i in range(15)]
    popular = [f"popular question {i}" for i in range(10)]
    for day_index in range(7 * WEEKS):
        day = START + timedelta(days=day_index)
        weekday = day.weekday()
        for prompt, days, at in routines:
            if weekday in days:
                burst(day, prompt, at, 1 + _poisson(rng, 2), 20)
        for prompt, on, at in weekly:
            if weekday == on:
                burst(day, prompt, at, 1 + _poisson(rng, 1), 15)
        if weekday < 5:
            for prompt in BRIEFING:
                burst(day, prompt, timedelta(hours=9), rng.randint(5, 10), 30)
        for hour in range(24):
            working = weekday < 5 and 8 <= hour < 18
            for prompt in popular:
                if rng.random() < (1.0 if working else 0.25):
                    events.append((day + timedelta(hours=hour, minutes=rng.uniform(0, 60)), prompt, False))
            for n in range(_poisson(rng, 20 if working else 3)):
                events.append((day + timedelta(hours=hour, minutes=rng.uniform(0, 60)),
                               f"one-off {day_index}-{hour}-{n}", False))
    return sorted(events)


def _poisson(rng: random.Random, mean: float) -> int:
    count, total = 0, rng.expovariate(1.0)
    while total < mean:
        count += 1
        total += rng.expovariate(1.0)
    return count


class History:
    """What store.observe reads from cache_requests, in memory: every request in time order."""

    def __init__(self) -> None:
        self.times: list[datetime] = []
        self.keys: list[str] = []
        self.material: dict[str, dict] = {}

    @property
    def first(self) -> datetime | None:
        return self.times[0] if self.times else None

    def add(self, at: datetime, key: str, material: dict) -> None:
        self.times.append(at)
        self.keys.append(key)
        self.material[key] = material

    def _between(self, start: datetime, end: datetime) -> list[str]:
        return self.keys[bisect.bisect_left(self.times, start):bisect.bisect_left(self.times, end)]

    def observe(self, window: Window, now: datetime, weeks: int, recency: timedelta) -> list[Observed]:
        weekly: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for k in range(1, weeks + 1):
            for key in self._between(window.start - k * timedelta(days=7), window.end - k * timedelta(days=7)):
                weekly[key][k] += 1
        recent: dict[str, int] = defaultdict(int)
        for key in self._between(now - recency, now):
            recent[key] += 1
        return [Observed(key, MODEL, "", self.material[key], dict(weekly.get(key, {})), recent.get(key, 0))
                for key in sorted(set(weekly) | set(recent))]


def replay(events: list[tuple[datetime, str, bool]], settings: CacheConfig, warm: bool) -> dict[str, float]:
    expires: dict[str, datetime] = {}
    warmed: set[str] = set()
    history = History()
    counted = {"requests": 0, "hits": 0, "first": 0, "first_hits": 0, "warms": 0, "warm_hits": 0, "useful": 0}
    families: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # kind of question -> [warms, used]
    credited: set[str] = set()
    next_tick = START
    last_request = START - IDLE
    spent: list[tuple[datetime, int]] = []
    warmer = settings.warmer
    for at, prompt, first in events:
        while warm and next_tick <= at:
            window = Window(next_tick, next_tick + timedelta(minutes=warmer.window_minutes))
            weeks = 0
            while weeks < warmer.history_days // 7 and history.first and window.start - (weeks + 1) * timedelta(
                    days=7) >= history.first:
                weeks += 1
            observed = history.observe(window, next_tick, weeks, timedelta(hours=warmer.recency_hours))
            predictions = rank(from_history(observed, window, weeks, settings) + from_calendar(settings, window, UTC),
                               settings)
            when = max(next_tick, last_request + IDLE)
            for prediction in predictions:
                if expires.get(prediction.key, START) > window.end or when >= window.end:
                    continue
                spent = [(t, n) for t, n in spent if t > when - timedelta(hours=1)]
                if sum(n for _, n in spent) + WARM_TOKENS > warmer.budget_tokens_per_hour:
                    break
                spent.append((when, WARM_TOKENS))
                expires[prediction.key] = when + TTL
                warmed.add(prediction.key)
                credited.discard(prediction.key)
                counted["warms"] += int(at >= START + timedelta(days=7 * LEARN_WEEKS))
                families[prediction.prompt.split(" ")[0]][0] += int(at >= START + timedelta(days=7 * LEARN_WEEKS))
            next_tick += TICK
        material = chat_material(MODEL, prompt)
        key = request_keys(material, "")[0]
        hit = expires.get(key, START) > at
        if at >= START + timedelta(days=7 * LEARN_WEEKS):
            counted["requests"] += 1
            counted["hits"] += hit
            counted["first"] += first
            counted["first_hits"] += hit and first
            counted["warm_hits"] += hit and key in warmed
            if hit and key in warmed and key not in credited:
                credited.add(key)
                counted["useful"] += 1
                families[prompt.split(" ")[0]][1] += 1
        if not hit:
            expires[key] = at + TTL
            warmed.discard(key)
        history.add(at, key, material)
        last_request = at
    counted["families"] = dict(families)
    return counted


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    events = generate(seed)
    calendar = CalendarEntryConfig(name="morning briefing", cron="55 8 * * 1-5", model=MODEL, prompts=BRIEFING,
                                   expected_requests=5.0)
    settings = CacheConfig(enabled=True, warmer=CacheWarmerConfig(calendar=[calendar]))
    alone, warmer = replay(events, settings, warm=False), replay(events, settings, warm=True)
    counted = sum(1 for at, _, _ in events if at >= START + timedelta(days=7 * LEARN_WEEKS))
    print(f"seed {seed}: {len(events)} requests over {WEEKS} weeks; {counted} counted "
          f"(weeks {LEARN_WEEKS + 1}-{WEEKS})")
    for name, c in (("cache alone", alone), ("cache + warmer", warmer)):
        print(f"  {name:15s} hit ratio {c['hits'] / c['requests']:6.1%}   first of a busy window "
              f"{c['first_hits'] / c['first']:6.1%} ({c['first_hits']}/{c['first']})")
        if c["warms"]:
            print(f"  {'':15s} warms {c['warms']}, of which used {c['useful']} ({c['useful'] / c['warms']:.0%}); "
                  f"hits on warmed entries {c['warm_hits']}")
            print(f"  {'':15s} warms (used) by kind: " + ", ".join(
                f"{kind} {n} ({used})" for kind, (n, used) in sorted(c["families"].items(), key=lambda f: -f[1][0])))
    ratio = (warmer["first_hits"] / warmer["first"]) / max(alone["first_hits"] / alone["first"], 1e-9)
    print(f"  first-of-window hit ratio, warmer / alone: {ratio:.1f}x; overall: "
          f"{(warmer['hits'] / warmer['requests']) / (alone['hits'] / alone['requests']):.2f}x")


if __name__ == "__main__":
    main()
