"""Request rates: a token bucket per client, and the global request rate against its own recent baseline.

Both are O(1) per request and hold a fixed amount of memory: a bucket is two floats in the client's state, the
spike detector keeps one number per interval of its baseline.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass


class Bucket:
    """A token bucket (nginx ``limit_req`` with ``burst``, Envoy's local rate limit): ``burst`` tokens, refilled at
    ``rate`` per second; a request takes one."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, rate: float, burst: float) -> float:
        """0 when the request may go; otherwise the seconds until a token is there (nothing is taken)."""
        tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / rate


@dataclass(frozen=True)
class Spike:
    """A change of the spike detector's state: it started (``active``) or ended."""

    active: bool
    rate: float  # requests per second in the interval that decided
    baseline: float  # the baseline's median, requests per second
    z: float  # robust z-score of ``rate``


class SpikeDetector:
    """The global request rate, per ``interval`` seconds, against the median and MAD of the last ``intervals``.

    A spike starts as soon as the running interval's count passes ``max(min_rate, median + threshold × scale)``
    (scale: 1.4826 × MAD, at least the Poisson noise √(median/interval), so a quiet, steady baseline does not make
    every blip a spike), and ends at the first interval that closes below it. Spike intervals go into the baseline
    like any other: a flood that lasts half the baseline becomes the new normal instead of a permanent alarm.
    """

    def __init__(self, interval: float, intervals: int, threshold: float, min_rate: float, now: float,
                 min_history: int = 6) -> None:
        self.interval = interval
        self.threshold = threshold
        self.min_rate = min_rate
        self.min_history = min(min_history, intervals)
        self.history: deque[float] = deque(maxlen=intervals)  # requests per second of closed intervals
        self.slot = math.floor(now / interval)
        self.count = 0
        self.trigger = math.inf  # count in one interval that starts a spike; inf until there is a baseline
        self.median = 0.0
        self.scale = 1.0
        self.active = False

    def observe(self, now: float) -> Spike | None:
        """Count one request; a ``Spike`` when this request started or ended one."""
        change = None
        slot = math.floor(now / self.interval)
        if slot != self.slot:
            change = self._close(slot)
        self.count += 1
        if not self.active and self.count >= self.trigger:
            self.active = True
            rate = self.count / self.interval
            return Spike(True, rate, self.median, (rate - self.median) / self.scale)
        return change

    def _close(self, slot: int) -> Spike | None:
        rate = self.count / self.interval
        ended = None
        if self.active and self.count < self.trigger:
            self.active = False
            ended = Spike(False, rate, self.median, (rate - self.median) / self.scale)
        self.history.append(rate)
        for _ in range(min(slot - self.slot - 1, self.history.maxlen or 0)):  # idle intervals count as 0
            self.history.append(0.0)
            if self.active:
                self.active = False
                ended = Spike(False, 0.0, self.median, -self.median / self.scale)
        self.slot, self.count = slot, 0
        if len(self.history) >= self.min_history:
            median = statistics.median(self.history)
            mad = statistics.median(abs(r - median) for r in self.history)
            self.median = median
            self.scale = max(1.4826 * mad, math.sqrt(median / self.interval), 1.0 / self.interval)
            limit = max(self.min_rate, median + self.threshold * self.scale)
            self.trigger = max(1, math.ceil(limit * self.interval))
        return ended
