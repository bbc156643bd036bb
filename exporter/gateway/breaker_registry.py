"""The gateway's circuit breakers by model name, created on first use, and their metrics.

Sample exposition::

    llm_circuit_breaker_state{breaker="llama3.2:3b",state="closed"} 0.0
    llm_circuit_breaker_state{breaker="llama3.2:3b",state="open"} 1.0
    llm_circuit_breaker_state{breaker="llama3.2:3b",state="half_open"} 0.0
    llm_circuit_breaker_transitions_total{breaker="llama3.2:3b",from_state="closed",to_state="open"} 1.0

Check by hand: ``singularity-ops breakers --json`` (``BreakerRegistry.snapshot()``) and
``SELECT * FROM circuit_breaker_events ORDER BY at DESC``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Container, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.exporter.gateway.breaker import OTHER, BreakerPolicy, CircuitBreaker, State, Transition


class BreakerRegistry(Collector):
    """The gateway's breakers by model name, created on first use, and their metrics."""

    name = "breakers"

    def __init__(self, policy: BreakerPolicy | None = None, clock: Callable[[], float] = time.monotonic,
                 on_transition: Callable[[Transition], None] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.policy = policy or BreakerPolicy()
        self.clock = clock
        self.on_transition = on_transition
        self.now = now
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, name: str, known: Container[str] | None = None) -> CircuitBreaker:
        """The breaker for ``name``; with ``known`` (Ollama's model list), a name not in it gets the shared
        ``"other"`` breaker, so request text can never grow the registry."""
        if known is not None and name not in known:
            name = OTHER
        breaker = self._breakers.get(name)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.setdefault(
                    name, CircuitBreaker(name, self.policy, self.clock, self.on_transition, self.now))
        return breaker

    def breakers(self) -> list[CircuitBreaker]:
        with self._lock:
            return sorted(self._breakers.values(), key=lambda b: b.name)

    def snapshot(self) -> list[dict[str, Any]]:
        return [breaker.snapshot() for breaker in self.breakers()]

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("llm_circuit_breaker_state",
                                  "1 on the breaker's current state (closed, open, half_open), 0 on the others",
                                  labels=["breaker", "state"])
        transitions = CounterMetricFamily("llm_circuit_breaker_transitions",
                                          "State changes of the breaker since the gateway started",
                                          labels=["breaker", "from_state", "to_state"])
        for row in self.snapshot():
            for each in State:
                state.add_metric([row["name"], each.value], 1 if row["state"] == each else 0)
            for edge in row["transitions"]:
                transitions.add_metric([row["name"], edge["from_state"], edge["to_state"]], edge["count"])
        yield state
        yield transitions
