"""The ``cache:`` section: the gateway's semantic cache and the predictive warmer (docs/PREDICTIVE_CACHE_WARMING.md).

Its own module, imported by ``schema``: the section is as long as several others together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from singularity_ops.config.fields import _at_most, _cron, _timezone, setting


def _models(value: list[str]) -> list[str]:
    names = [name.strip() for name in value]
    if not names or not all(names):
        raise ValueError('list model names, or ["*"] for every model')
    return names


@dataclass
class CalendarEntryConfig:
    # "weekdays at 08:55, the morning briefing": cron "55 8 * * 1-5", a model and its prompt(s).
    name: str = ""
    cron: str = setting("", check=_cron)
    model: str = ""
    prompt: str | None = None
    prompts: list[str] = field(default_factory=list)
    system: str | None = None  # a system prompt sent with each prompt
    endpoint: Literal["chat", "generate"] = "chat"  # which API the clients use for it: the key differs
    expected_requests: float = setting(1.0, gt=0)  # reported, and ranked against the history's predictions
    client: str | None = None  # the client (API key id or address) the entries are for when cache.shared is false


def _calendar(value: list[CalendarEntryConfig]) -> list[CalendarEntryConfig]:
    for index, entry in enumerate(value):
        label = f"calendar [{index}]" + (f" ({entry.name})" if entry.name else "")
        if not entry.cron:
            raise ValueError(f"{label} needs a cron expression, e.g. '55 8 * * 1-5'")
        if not entry.model.strip():
            raise ValueError(f"{label} needs a model")
        if (entry.prompt is None) == (not entry.prompts):
            raise ValueError(f"{label} needs either 'prompt' or 'prompts' (a list), not both")
    return value


@dataclass
class CacheWarmerConfig:
    enabled: bool = True  # only while cache.enabled
    interval_seconds: float = setting(60.0, gt=0)
    window_minutes: float = setting(30.0, gt=0)  # predictions are for the next window
    min_expected_requests: float = setting(0.5, gt=0)  # predictions below this are not warmed
    max_prompts_per_window: int = setting(20, gt=0)
    idle_seconds: float = setting(30.0, ge=0)  # no user request for this long (and none in flight)
    budget_tokens_per_hour: int = setting(20_000, ge=0)  # prompt + answer tokens the warmer may spend
    history_days: int = setting(28, gt=0)  # retention of the request record it learns from
    half_life_days: float = setting(14.0, gt=0)  # weight of a week-old request: 0.5 ** (7 / half_life_days)
    recency_hours: float = setting(2.0, gt=0)  # the recent-frequency term looks this far back
    recency_weight: float = setting(0.5, ge=0)
    timezone: str | None = setting(None, check=_timezone)  # hours of the week and cron; None: the host's
    calendar: list[CalendarEntryConfig] = field(default_factory=list, metadata={"check": _calendar})


@dataclass
class CacheConfig:
    enabled: bool = False
    models: list[str] = field(default_factory=lambda: ["*"], metadata={"check": _models})
    embedding_model: str = "all-minilm"  # an Ollama embedding model, used through /api/embed
    # Cosine similarity of the last user turns at which a semantic hit is served (bench/cache_threshold.py).
    similarity: float = setting(0.73, gt=0, check=lambda v: _at_most(v, 1.0))
    # A semantic hit also needs the same content words in the same order (numbers, names, negations; typos aside).
    semantic_guard: bool = True
    ttl_seconds: float = setting(86_400.0, gt=0)
    max_entries: int = setting(100_000, gt=0)  # least recently used entries go first
    shared: bool = False  # false: entries never cross API keys / client addresses
    max_temperature: float | None = setting(None, ge=0)  # above: not cached; None: any temperature
    cache_tools: bool = False  # requests that offer tools
    cache_images: bool = False  # requests with images (exact match only)
    lookup_timeout_seconds: float = setting(0.25, gt=0)  # past this a lookup is a bypass
    embedding_timeout_seconds: float = setting(2.0, gt=0)
    connections: int = setting(4, gt=0)  # PostgreSQL connections of one gateway's cache
    warmer: CacheWarmerConfig = field(default_factory=CacheWarmerConfig)
