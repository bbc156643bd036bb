"""The warmer's predictions for one window: from the request history and from the calendar.

History, per request key (the exact cache key: same model, options, system prompt, conversation and tenant):

* **seasonal**: the requests seen in the same hours of the week in each of the past weeks, averaged with weights
  ``0.5 ** (age_days / half_life_days)`` (a week ago weighs 0.71 with the default 14-day half-life, four weeks ago
  0.25); weeks before the record starts do not count as zeros;
* **recent**: the requests of the last ``recency_hours`` scaled to the window's length (a prompt asked often right
  now is likely asked again soon), weighted by ``recency_weight``.

``expected_requests`` = seasonal + recency_weight × recent. Calendar entries add their prompts when their cron
fires inside the window, with the entry's ``expected_requests``. Predictions under ``min_expected_requests`` are
dropped; the rest are ranked and the first ``max_prompts_per_window`` kept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from singularity_ops.cache_key import canonical_model, chat_material, generate_material, request_keys, tenant_of
from singularity_ops.config.cache import CacheConfig
from singularity_ops.cron import Cron

log = logging.getLogger(__name__)
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def as_json(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass
class Prediction:
    model: str
    key: str
    tenant: str
    material: dict[str, Any]
    expected_requests: float
    reason: str  # history or calendar
    detail: str
    cached: bool | None = None  # an entry that outlives the window exists
    ready: str | None = None  # loaded / planned, or why the model cannot be run

    @property
    def prompt(self) -> str:
        return str(self.material["prompt"])

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "prompt": self.prompt, "expected_requests": round(self.expected_requests, 3),
                "reason": self.reason, "cached": self.cached, "detail": self.detail, "model_state": self.ready}


@dataclass(frozen=True)
class Observed:
    """What the history says of one key: requests in each past week's copy of the window, and recently."""

    key: str
    model: str
    tenant: str
    material: dict[str, Any]
    weekly: dict[int, int]  # weeks ago (1, 2, ...) -> requests in that week's window
    recent: int


def seasonal(weekly: dict[int, int], weeks_known: int, half_life_days: float) -> float:
    if weeks_known < 1:
        return 0.0
    weights = {k: 0.5 ** (7 * k / half_life_days) for k in range(1, weeks_known + 1)}
    return sum(weights[k] * weekly.get(k, 0) for k in weights) / sum(weights.values())


def weeks_known(window: Window, first_record: datetime | None, history_days: int) -> int:
    """Past weeks whose copy of the window lies wholly after the first record (and within the retention)."""
    if first_record is None:
        return 0
    weeks = 0
    while weeks < history_days // 7 and window.start - (weeks + 1) * WEEK >= first_record:
        weeks += 1
    return weeks


def from_history(observed: Iterable[Observed], window: Window, known: int, settings: CacheConfig) -> list[Prediction]:
    warmer = settings.warmer
    window_hours = (window.end - window.start).total_seconds() / 3600
    found = []
    for item in observed:
        season = seasonal(item.weekly, known, warmer.half_life_days)
        recent = item.recent * window_hours / warmer.recency_hours
        expected = season + warmer.recency_weight * recent
        found.append(Prediction(item.model, item.key, item.tenant, item.material, expected, "history",
                                f"seasonal {season:.2f} over {known} week(s) + recent {recent:.2f} x "
                                f"{warmer.recency_weight:g}"))
    return found


def from_calendar(settings: CacheConfig, window: Window, zone: tzinfo | None) -> list[Prediction]:
    found = []
    for index, entry in enumerate(settings.warmer.calendar):
        cron = Cron.parse(entry.cron)
        fires = cron.next(window.start - timedelta(minutes=1), zone)
        if fires >= window.end:
            continue
        model = canonical_model(entry.model)
        tenant = tenant_of(entry.client, settings.shared)
        name = entry.name or f"calendar[{index}]"
        for prompt in ([entry.prompt] if entry.prompt is not None else entry.prompts):
            make = chat_material if entry.endpoint == "chat" else generate_material
            material = make(model, prompt, entry.system)
            key, _ = request_keys(material, tenant)
            found.append(Prediction(model, key, tenant, material, entry.expected_requests, "calendar",
                                    f"{name}: {entry.cron} fires at {fires.isoformat()}"))
    return found


def rank(predictions: Sequence[Prediction], settings: CacheConfig) -> list[Prediction]:
    """One prediction per key (the calendar's and the history's expectations add up), above the minimum, most
    expected first, at most max_prompts_per_window."""
    merged: dict[str, Prediction] = {}
    for prediction in predictions:
        if prediction.key in merged:
            kept = merged[prediction.key]
            kept.expected_requests += prediction.expected_requests
            kept.detail = f"{kept.detail}; {prediction.detail}"
            if prediction.reason == "calendar":
                kept.reason = "calendar"
        else:
            merged[prediction.key] = Prediction(**vars(prediction))
    kept = [p for p in merged.values() if p.expected_requests >= settings.warmer.min_expected_requests]
    kept.sort(key=lambda p: (-p.expected_requests, p.reason != "calendar"))  # stable: ties keep their order
    return kept[:settings.warmer.max_prompts_per_window]
