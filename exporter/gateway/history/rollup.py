"""Per-minute, per-model aggregates of finished requests: the rows of ``real_time_metrics``.

The gateway calls ``observe`` for every finished request and, about once a minute, ``close_minutes(now)``, whose
rows it submits to the history writer. Minutes are UTC. Not thread-safe: the gateway's event loop is its one caller.

Per row: ``requests``; ``tokens_per_second`` = Σ output tokens / Σ generation seconds over the requests that
report both (cache hits and failures generate nothing, and would only dilute it); ``cost_per_response`` = Σ cost /
requests that report a cost (None when currencies differ within the minute); ``compression_ratio``, the mean over
requests that report one; the CPU and GPU temperature read when the minute is closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

# Returns (cpu °C, gpu °C), either or both None when there is no sensor; None for neither.
Temperatures = Callable[[], tuple[float | None, float | None] | None]


def minute_of(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("request times must be timezone-aware")
    return at.astimezone(UTC).replace(second=0, microsecond=0)


@dataclass
class _Minute:
    requests: int = 0
    output_tokens: int = 0
    generation_seconds: float = 0.0
    cost: float = 0.0
    costed: int = 0
    currencies: set[str] = field(default_factory=set)
    ratio_sum: float = 0.0
    ratios: int = 0


class MinuteRollup:
    def __init__(self, temperatures: Temperatures | None = None) -> None:
        self._temperatures = temperatures
        self._minutes: dict[tuple[datetime, str], _Minute] = {}
        self._closed_before: datetime | None = None
        self.late = 0  # requests that finished in a minute already closed: its row is gone, so they are not counted

    def observe(self, model: str, *, at: datetime, output_tokens: int | None = None,
                generation_seconds: float | None = None, cost: float | None = None, currency: str | None = None,
                compression_ratio: float | None = None) -> None:
        minute = minute_of(at)
        if self._closed_before is not None and minute < self._closed_before:
            self.late += 1
            return
        bucket = self._minutes.get((minute, model))
        if bucket is None:
            bucket = self._minutes[minute, model] = _Minute()
        bucket.requests += 1
        if output_tokens is not None and generation_seconds is not None and generation_seconds > 0:
            bucket.output_tokens += output_tokens
            bucket.generation_seconds += generation_seconds
        if cost is not None:
            bucket.cost += cost
            bucket.costed += 1
            if currency is not None:
                bucket.currencies.add(currency)
        if compression_ratio is not None:
            bucket.ratio_sum += compression_ratio
            bucket.ratios += 1

    def close_minutes(self, now: datetime) -> list[dict[str, Any]]:
        """Rows for every minute before ``now``'s, oldest first, each returned once."""
        current = minute_of(now)
        if self._closed_before is None or current > self._closed_before:
            self._closed_before = current
        done = sorted(key for key in self._minutes if key[0] < current)
        if not done:
            return []
        cpu, gpu = self._read_temperatures()
        return [self._row(minute, model, self._minutes.pop((minute, model)), cpu, gpu) for minute, model in done]

    def _read_temperatures(self) -> tuple[float | None, float | None]:
        if self._temperatures is None:
            return None, None
        try:
            return self._temperatures() or (None, None)
        except Exception as exc:  # a sensor read must not cost the minute's row
            log.warning("temperatures unavailable for the per-minute metrics: %s", exc)
            return None, None

    @staticmethod
    def _row(minute: datetime, model: str, bucket: _Minute, cpu: float | None, gpu: float | None) -> dict[str, Any]:
        one_currency = len(bucket.currencies) <= 1
        return {
            "minute": minute,
            "model": model,
            "requests": bucket.requests,
            "tokens_per_second": (bucket.output_tokens / bucket.generation_seconds
                                  if bucket.generation_seconds > 0 else None),
            "cost_per_response": bucket.cost / bucket.costed if bucket.costed and one_currency else None,
            "currency": next(iter(bucket.currencies)) if len(bucket.currencies) == 1 else None,
            "cpu_temperature_celsius": cpu,
            "gpu_temperature_celsius": gpu,
            "compression_ratio": bucket.ratio_sum / bucket.ratios if bucket.ratios else None,
        }
