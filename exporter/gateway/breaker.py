"""One circuit breaker per upstream model, with resilience4j's semantics (docs/BREAKER.md).

The breakers by model name and their metrics are ``breaker_registry.BreakerRegistry``.

Why no library: pybreaker, aiobreaker, circuitbreaker and purgatory open after N *consecutive* failures (or a
failure count), with no failure *rate* over a sliding time window, no minimum number of calls and no bounded
number of half-open probes; none has a per-call permit, which is what keeps probe accounting exact while several
requests are in flight. The state machine below is small enough to own.

Usage on the gateway's event loop (everything here is synchronous)::

    breaker = breakers.get(model, known=installed)
    permit = breaker.allow()
    if permit is None:  # 503, Retry-After: breaker.retry_after_seconds(), {"error": breaker.rejection_message()}
        ...
    with permit:  # a permit left uncompleted when the block exits is released as ignored
        ...
        permit.record(success=status < 500)  # or permit.record_ignored() for a 4xx / a client that went away
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

OTHER = "other"  # the one breaker shared by every model name Ollama does not list


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# The only transitions there are; each is exposed (from 0) for every known breaker so rate() sees the first one.
EDGES = (
    (State.CLOSED, State.OPEN),
    (State.OPEN, State.HALF_OPEN),
    (State.HALF_OPEN, State.OPEN),
    (State.HALF_OPEN, State.CLOSED),
)


@dataclass(frozen=True)
class BreakerPolicy:
    """resilience4j's slidingWindowSize (TIME_BASED), failureRateThreshold, minimumNumberOfCalls,
    waitDurationInOpenState and permittedNumberOfCallsInHalfOpenState, in seconds and a 0..1 rate."""

    window_seconds: float = 60.0
    failure_rate_threshold: float = 0.5
    minimum_calls: int = 5
    open_seconds: float = 30.0
    half_open_calls: int = 3

    def __post_init__(self) -> None:
        if not self.window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0, not {self.window_seconds}")
        if not 0 < self.failure_rate_threshold <= 1:
            raise ValueError(f"failure_rate_threshold must be in (0, 1], not {self.failure_rate_threshold}")
        if self.minimum_calls < 1:
            raise ValueError(f"minimum_calls must be >= 1, not {self.minimum_calls}")
        if not self.open_seconds >= 0:
            raise ValueError(f"open_seconds must be >= 0, not {self.open_seconds}")
        if self.half_open_calls < 1:
            raise ValueError(f"half_open_calls must be >= 1, not {self.half_open_calls}")


@dataclass(frozen=True)
class Transition:
    """One row of ``circuit_breaker_events``."""

    breaker: str
    from_state: State
    to_state: State
    reason: str
    failure_rate: float
    window_calls: int
    at: datetime


class PermitAlreadyCompleted(RuntimeError):
    pass


def unavailable_message(name: str, failure_rate: float, seconds: int) -> str:
    """The ``error`` of the 503 the gateway answers while a model's breaker rejects calls."""
    return (f"model '{name}' is unavailable: circuit breaker open after {failure_rate:.0%} failures; "
            f"retry in {seconds} s")


class _Window:
    """Counted outcomes of the last ``seconds`` in per-second buckets (resilience4j's time-based window):
    memory grows with the window's length, never with the number of calls. Resolution is one second."""

    def __init__(self, seconds: float) -> None:
        self.span = max(1, math.ceil(seconds))
        self.buckets: deque[list[int]] = deque()  # [second, calls, failures], oldest first
        self.calls = 0
        self.failures = 0

    def prune(self, now: float) -> None:
        oldest_kept = math.floor(now) - self.span + 1
        while self.buckets and self.buckets[0][0] < oldest_kept:
            _, calls, failures = self.buckets.popleft()
            self.calls -= calls
            self.failures -= failures

    def add(self, now: float, ok: bool) -> None:
        self.prune(now)
        second = math.floor(now)
        if self.buckets and self.buckets[-1][0] >= second:
            bucket = self.buckets[-1]
        else:
            bucket = [second, 0, 0]
            self.buckets.append(bucket)
        bucket[1] += 1
        bucket[2] += not ok
        self.calls += 1
        self.failures += not ok

    def clear(self) -> None:
        self.buckets.clear()
        self.calls = self.failures = 0

    @property
    def rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


class Permit:
    """One admitted call. Complete it exactly once: ``record(success=...)`` for an outcome that counts (a
    connection error, a timeout or a 5xx is ``success=False``), ``record_ignored()`` for one that does not (a 4xx,
    a client that went away). An ignored half-open probe frees its slot for another probe."""

    __slots__ = ("_epoch", "breaker", "done", "probe")

    def __init__(self, breaker: CircuitBreaker, epoch: int, probe: bool) -> None:
        self.breaker = breaker
        self._epoch = epoch
        self.probe = probe
        self.done = False

    def record(self, *, success: bool) -> None:
        self.breaker._complete(self, success)

    def record_ignored(self) -> None:
        self.breaker._complete(self, None)

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self.done:
            self.record_ignored()


class CircuitBreaker:
    """Transitions happen only inside ``allow()``, a permit's ``record*()``, ``state`` and ``retry_after()`` — the
    gateway's calls on its event loop — so ``on_transition`` runs there. ``snapshot()`` (and the registry's
    ``collect()``, which runs in the metrics thread) only read: an open breaker whose wait has passed is *shown*
    half-open, and its open → half_open transition is emitted, once, by the next call that acts."""

    def __init__(self, name: str, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic,
                 on_transition: Callable[[Transition], None] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.name = name
        self.policy = policy
        self.clock = clock
        self.on_transition = on_transition
        self.now = now
        self._lock = threading.Lock()  # collect() reads from the metrics thread
        self._state = State.CLOSED
        self._epoch = 0  # bumped by every transition: outcomes of permits from an earlier state are dropped
        self._window = _Window(policy.window_seconds)
        self._open_until = 0.0
        self._opened_at: datetime | None = None
        self._open_rate = 0.0  # what the last opening saw, for the 503 message
        self._open_calls = 0
        self._probes_in_flight = 0
        self._probe_calls = 0
        self._probe_failures = 0
        self._transitions = dict.fromkeys(EDGES, 0)

    @property
    def state(self) -> State:
        events: list[Transition] = []
        with self._lock:
            self._advance(self.clock(), events)
            state = self._state
        self._emit(events)
        return state

    def allow(self) -> Permit | None:
        """A permit for one upstream call, or None: reject it at once (see ``retry_after_seconds()``)."""
        events: list[Transition] = []
        with self._lock:
            self._advance(self.clock(), events)
            permit = None
            if self._state is State.CLOSED:
                permit = Permit(self, self._epoch, probe=False)
            elif (self._state is State.HALF_OPEN
                  and self._probes_in_flight + self._probe_calls < self.policy.half_open_calls):
                self._probes_in_flight += 1
                permit = Permit(self, self._epoch, probe=True)
        self._emit(events)
        return permit

    def retry_after(self) -> float:
        """Seconds until the breaker goes half-open; 0 when it is not open."""
        events: list[Transition] = []
        with self._lock:
            now = self.clock()
            self._advance(now, events)
            seconds = max(0.0, self._open_until - now) if self._state is State.OPEN else 0.0
        self._emit(events)
        return seconds

    def retry_after_seconds(self) -> int:
        """Whole seconds for a rejected call's Retry-After: at least 1 (a full half-open breaker frees up soon)."""
        return max(1, math.ceil(self.retry_after()))

    def rejection_message(self) -> str:
        seconds = self.retry_after_seconds()
        with self._lock:
            rate = self._open_rate
        return unavailable_message(self.name, rate, seconds)

    def snapshot(self) -> dict[str, Any]:
        """name, state, failure_rate, window_calls, retry_after_seconds, opened_at (ISO 8601 or None), transitions.

        The rate and calls are the window's while closed, the ones that opened it while open, the probes'
        while half-open."""
        with self._lock:
            now = self.clock()
            state, transitions = self._state, dict(self._transitions)
            rate, calls, retry = 0.0, 0, 0.0
            if state is State.OPEN and now >= self._open_until:
                state = State.HALF_OPEN
                transitions[State.OPEN, State.HALF_OPEN] += 1
            elif state is State.OPEN:
                rate, calls, retry = self._open_rate, self._open_calls, self._open_until - now
            elif state is State.HALF_OPEN:
                rate, calls = self._probe_rate(), self._probe_calls
            if state is State.CLOSED:
                self._window.prune(now)
                rate, calls = self._window.rate, self._window.calls
            opened_at = None if state is State.CLOSED or self._opened_at is None else self._opened_at.isoformat()
        return {
            "name": self.name,
            "state": str(state),
            "failure_rate": rate,
            "window_calls": calls,
            "retry_after_seconds": round(retry, 3),
            "opened_at": opened_at,
            "transitions": [{"from_state": str(a), "to_state": str(b), "count": transitions[a, b]} for a, b in EDGES],
        }

    def _complete(self, permit: Permit, success: bool | None) -> None:
        events: list[Transition] = []
        with self._lock:
            if permit.done:
                raise PermitAlreadyCompleted(f"a permit of circuit breaker '{self.name}' was completed twice")
            permit.done = True
            now = self.clock()
            self._advance(now, events)
            if permit._epoch == self._epoch:
                if permit.probe:
                    self._probe_done(now, success, events)
                elif success is not None:
                    self._window.add(now, success)
                    self._check_window(now, events)
        self._emit(events)

    def _check_window(self, now: float, events: list[Transition]) -> None:
        window, policy = self._window, self.policy
        if window.calls >= policy.minimum_calls and window.rate >= policy.failure_rate_threshold:
            reason = (f"failure rate {window.rate:.0%} >= {policy.failure_rate_threshold:.0%} "
                      f"over {window.calls} calls in {policy.window_seconds:g} s")
            self._open(now, window.rate, window.calls, reason, events)

    def _probe_done(self, now: float, success: bool | None, events: list[Transition]) -> None:
        self._probes_in_flight -= 1
        if success is None:
            return
        self._probe_calls += 1
        self._probe_failures += not success
        if self._probe_calls < self.policy.half_open_calls:
            return
        rate, calls, failed = self._probe_rate(), self._probe_calls, self._probe_failures
        if rate >= self.policy.failure_rate_threshold:
            self._open(now, rate, calls, f"{failed} of {calls} half-open probes failed", events)
        else:
            self._move(State.CLOSED, f"{calls - failed} of {calls} half-open probes succeeded", rate, calls,
                       self.now(), events)

    def _probe_rate(self) -> float:
        return self._probe_failures / self._probe_calls if self._probe_calls else 0.0

    def _open(self, now: float, rate: float, calls: int, reason: str, events: list[Transition]) -> None:
        self._open_until = now + self.policy.open_seconds
        self._open_rate, self._open_calls = rate, calls
        self._opened_at = self.now()
        self._move(State.OPEN, reason, rate, calls, self._opened_at, events)

    def _advance(self, now: float, events: list[Transition]) -> None:
        if self._state is State.OPEN and now >= self._open_until:
            # Dated when the wait ended, not when someone first noticed.
            at = self.now() - timedelta(seconds=now - self._open_until)
            self._move(State.HALF_OPEN, f"waited {self.policy.open_seconds:g} s in open", self._open_rate,
                       self._open_calls, at, events)

    def _move(self, to: State, reason: str, rate: float, calls: int, at: datetime, events: list[Transition]) -> None:
        events.append(Transition(self.name, self._state, to, reason, rate, calls, at))
        self._transitions[self._state, to] += 1
        self._state = to
        self._epoch += 1
        self._window.clear()
        self._probes_in_flight = self._probe_calls = self._probe_failures = 0

    def _emit(self, events: list[Transition]) -> None:
        if self.on_transition is None:
            return
        for event in events:
            try:
                self.on_transition(event)
            except Exception:
                log.exception("circuit breaker %s: on_transition failed for %s -> %s",
                              self.name, event.from_state, event.to_state)
