"""Per-model circuit breakers: resilience4j's time-based window, minimum calls, wait in open and half-open probes."""

from __future__ import annotations

import json
import shutil
import subprocess
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from singularity_ops.exporter.gateway.breaker import (
    BreakerPolicy,
    CircuitBreaker,
    Permit,
    PermitAlreadyCompleted,
    State,
    Transition,
    unavailable_message,
)
from singularity_ops.exporter.gateway.breaker_registry import BreakerRegistry
from tests.helpers import series

START = datetime(2025, 1, 1, tzinfo=UTC)
POLICY = BreakerPolicy(window_seconds=60, failure_rate_threshold=0.5, minimum_calls=5, open_seconds=30,
                       half_open_calls=3)


class Clock:
    """Test clock: monotonic seconds that only move when the test says so, and the wall time they map to."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return START + timedelta(seconds=self.t)

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> list[Transition]:
    return []


@pytest.fixture
def breaker(clock: Clock, events: list[Transition]) -> CircuitBreaker:
    return CircuitBreaker("llama3.2:3b", POLICY, clock, events.append, clock.wall)


def call(breaker: CircuitBreaker, success: bool) -> None:
    permit = breaker.allow()
    assert permit is not None, f"breaker is {breaker.state}"
    permit.record(success=success)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(POLICY.minimum_calls):
        call(breaker, success=False)
    assert breaker.state is State.OPEN


def test_stays_closed_below_minimum_calls_even_when_every_call_fails(breaker: CircuitBreaker) -> None:
    for _ in range(POLICY.minimum_calls - 1):
        call(breaker, success=False)
    assert breaker.state is State.CLOSED
    assert breaker.snapshot()["failure_rate"] == 1.0


def test_opens_exactly_when_the_rate_reaches_the_threshold(breaker: CircuitBreaker, events: list[Transition],
                                                           clock: Clock) -> None:
    for ok in (True, True, True, False, False):  # 2 of 5 = 40%
        call(breaker, ok)
    assert breaker.state is State.CLOSED
    call(breaker, success=False)  # 3 of 6 = 50%: reaches it
    assert breaker.state is State.OPEN
    assert events == [Transition("llama3.2:3b", State.CLOSED, State.OPEN,
                                 "failure rate 50% >= 50% over 6 calls in 60 s", 0.5, 6, clock.wall())]


def test_old_failures_slide_out_of_the_window(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(4):
        call(breaker, success=False)
    clock.advance(61)
    call(breaker, success=False)  # the earlier four are gone: 1 call, below the minimum
    assert breaker.state is State.CLOSED
    assert breaker.snapshot()["window_calls"] == 1
    for _ in range(3):
        call(breaker, success=True)
    call(breaker, success=False)  # 2 of 5 within the window
    assert breaker.state is State.CLOSED


def test_a_storm_of_client_errors_never_opens_it(breaker: CircuitBreaker) -> None:
    for _ in range(1000):
        permit = breaker.allow()
        assert permit is not None
        permit.record_ignored()
    assert breaker.state is State.CLOSED
    assert breaker.snapshot()["window_calls"] == 0


def test_open_rejects_with_the_seconds_left_and_a_message_naming_the_model(breaker: CircuitBreaker,
                                                                           clock: Clock) -> None:
    trip(breaker)
    clock.advance(12.5)
    assert breaker.allow() is None
    assert breaker.retry_after() == pytest.approx(17.5)
    assert breaker.retry_after_seconds() == 18
    assert breaker.rejection_message() == (
        "model 'llama3.2:3b' is unavailable: circuit breaker open after 100% failures; retry in 18 s")
    assert json.dumps({"error": breaker.rejection_message()})  # the gateway's Ollama-style body
    assert unavailable_message("phi4:14b", 0.6, 3) == (
        "model 'phi4:14b' is unavailable: circuit breaker open after 60% failures; retry in 3 s")


def test_after_the_wait_only_the_permitted_probes_get_through(breaker: CircuitBreaker, clock: Clock,
                                                              events: list[Transition]) -> None:
    trip(breaker)
    clock.advance(30)
    assert breaker.state is State.HALF_OPEN
    assert breaker.retry_after() == 0
    probes = [breaker.allow() for _ in range(POLICY.half_open_calls)]
    assert all(isinstance(p, Permit) for p in probes)
    assert breaker.allow() is None  # rejected as if open
    assert breaker.retry_after_seconds() == 1
    assert [(e.from_state, e.to_state) for e in events] == [(State.CLOSED, State.OPEN), (State.OPEN, State.HALF_OPEN)]


def test_an_ignored_probe_frees_its_slot_without_counting(breaker: CircuitBreaker, clock: Clock) -> None:
    trip(breaker)
    clock.advance(30)
    first, second, third = (breaker.allow() for _ in range(3))
    assert first and second and third
    first.record_ignored()  # a 4xx says nothing about the model
    fourth = breaker.allow()
    assert fourth is not None
    for permit in (second, third):
        permit.record(success=True)
    assert breaker.state is State.HALF_OPEN  # two of three probes finished
    fourth.record(success=True)
    assert breaker.state is State.CLOSED


def test_probes_that_succeed_close_it_and_clear_the_window(breaker: CircuitBreaker, clock: Clock,
                                                           events: list[Transition]) -> None:
    trip(breaker)
    clock.advance(30)
    for _ in range(POLICY.half_open_calls):
        call(breaker, success=True)
    assert breaker.state is State.CLOSED
    assert breaker.snapshot()["window_calls"] == 0
    assert events[-1] == Transition("llama3.2:3b", State.HALF_OPEN, State.CLOSED,
                                    "3 of 3 half-open probes succeeded", 0.0, 3, clock.wall())
    for _ in range(POLICY.minimum_calls - 1):  # the failures before opening count no more
        call(breaker, success=False)
    assert breaker.state is State.CLOSED


def test_a_failing_probe_opens_it_again_with_a_fresh_wait(breaker: CircuitBreaker, clock: Clock,
                                                          events: list[Transition]) -> None:
    trip(breaker)
    clock.advance(45)
    probes = [breaker.allow() for _ in range(3)]
    assert all(probes)
    probes[0].record(success=False)
    probes[1].record(success=False)
    assert breaker.state is State.HALF_OPEN  # decided when all three have finished
    probes[2].record(success=True)
    assert breaker.state is State.OPEN
    assert breaker.retry_after() == 30
    assert events[-1] == Transition("llama3.2:3b", State.HALF_OPEN, State.OPEN,
                                    "2 of 3 half-open probes failed", pytest.approx(2 / 3), 3, clock.wall())
    assert breaker.rejection_message().endswith("open after 67% failures; retry in 30 s")


def test_one_failing_probe_of_three_is_below_the_threshold_and_closes_it(breaker: CircuitBreaker,
                                                                          clock: Clock) -> None:
    trip(breaker)
    clock.advance(30)
    for ok in (False, True, True):
        call(breaker, ok)
    assert breaker.state is State.CLOSED


def test_calls_admitted_before_a_transition_do_not_count_after_it(breaker: CircuitBreaker, clock: Clock) -> None:
    slow = breaker.allow()  # a long generation admitted while closed
    assert slow is not None
    trip(breaker)
    clock.advance(30)
    probes = [breaker.allow() for _ in range(3)]
    slow.record(success=False)  # finishes during half-open: not a probe
    for probe in probes:
        assert probe is not None
        probe.record(success=True)
    assert breaker.state is State.CLOSED


def test_every_transition_is_emitted_exactly_once(breaker: CircuitBreaker, clock: Clock,
                                                  events: list[Transition]) -> None:
    trip(breaker)
    opened = clock.wall()
    clock.advance(40)  # the wait ended 10 s ago; nobody looked
    for _ in range(3):
        assert breaker.state is State.HALF_OPEN
        breaker.retry_after()
    for _ in range(3):
        call(breaker, success=True)
    assert [(e.from_state, e.to_state, e.reason, e.failure_rate, e.window_calls) for e in events] == [
        (State.CLOSED, State.OPEN, "failure rate 100% >= 50% over 5 calls in 60 s", 1.0, 5),
        (State.OPEN, State.HALF_OPEN, "waited 30 s in open", 1.0, 5),
        (State.HALF_OPEN, State.CLOSED, "3 of 3 half-open probes succeeded", 0.0, 3),
    ]
    assert events[0].at == opened
    assert events[1].at == opened + timedelta(seconds=30)  # when the wait ended, not when it was noticed
    assert all(e.breaker == "llama3.2:3b" for e in events)


def test_a_failing_listener_does_not_break_the_breaker(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    def broken(transition: Transition) -> None:
        raise RuntimeError("database is down")

    breaker = CircuitBreaker("llama3.2:3b", POLICY, clock, broken, clock.wall)
    trip(breaker)
    assert breaker.allow() is None
    assert "on_transition failed" in caplog.text
    assert "database is down" in caplog.text


def test_a_permit_completed_twice_raises(breaker: CircuitBreaker) -> None:
    permit = breaker.allow()
    assert permit is not None
    permit.record(success=True)
    with pytest.raises(PermitAlreadyCompleted):
        permit.record(success=False)
    with pytest.raises(PermitAlreadyCompleted):
        permit.record_ignored()
    assert breaker.snapshot()["window_calls"] == 1


def test_a_permit_left_open_by_an_exception_is_released(breaker: CircuitBreaker, clock: Clock) -> None:
    trip(breaker)
    clock.advance(30)
    for _ in range(3):
        with pytest.raises(ConnectionResetError), breaker.allow():  # type: ignore[union-attr]
            raise ConnectionResetError("client went away")
    assert breaker.allow() is not None  # every slot came back


@pytest.mark.slow
def test_memory_stays_bounded_over_100k_calls(breaker: CircuitBreaker, clock: Clock) -> None:
    def burst(n: int) -> None:
        for i in range(n):
            call(breaker, success=i % 4 != 0)  # 25% failures: stays closed
            clock.advance(0.01)

    burst(10_000)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    burst(100_000)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 64 * 1024
    assert breaker.state is State.CLOSED
    assert breaker.snapshot()["window_calls"] <= 61 * 100  # the last minute at 100 calls a second


def test_unknown_models_share_the_other_breaker(clock: Clock) -> None:
    registry = BreakerRegistry(POLICY, clock)
    installed = {"llama3.2:3b", "phi4:14b"}
    assert registry.get("llama3.2:3b", known=installed) is registry.get("llama3.2:3b")
    assert registry.get("gpt-4o", known=installed) is registry.get("made-up", known=installed)
    assert registry.get("gpt-4o", known=installed).name == "other"
    assert [b.name for b in registry.breakers()] == ["llama3.2:3b", "other"]


def scrape(registry: BreakerRegistry) -> str:
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(registry)
    return generate_latest(collectors).decode()


def test_metrics_show_one_series_per_state_and_count_transitions(clock: Clock) -> None:
    registry = BreakerRegistry(POLICY, clock)
    registry.get("phi4:14b")
    trip(registry.get("llama3.2:3b"))
    text = scrape(registry)
    assert series(text, "llm_circuit_breaker_state") == {
        '{breaker="llama3.2:3b",state="closed"}': 0.0,
        '{breaker="llama3.2:3b",state="open"}': 1.0,
        '{breaker="llama3.2:3b",state="half_open"}': 0.0,
        '{breaker="phi4:14b",state="closed"}': 1.0,
        '{breaker="phi4:14b",state="open"}': 0.0,
        '{breaker="phi4:14b",state="half_open"}': 0.0,
    }
    counts = series(text, "llm_circuit_breaker_transitions_total")
    assert counts['{breaker="llama3.2:3b",from_state="closed",to_state="open"}'] == 1.0
    assert counts['{breaker="phi4:14b",from_state="closed",to_state="open"}'] == 0.0
    assert len(counts) == 8  # four possible transitions for each breaker, from 0

    clock.advance(30)  # scrapes only read: half-open shows at once, its transition is counted once
    for _ in range(2):
        text = scrape(registry)
        assert series(text, "llm_circuit_breaker_state")['{breaker="llama3.2:3b",state="half_open"}'] == 1.0
        assert series(text, "llm_circuit_breaker_transitions_total")[
            '{breaker="llama3.2:3b",from_state="open",to_state="half_open"}'] == 1.0
    assert registry.get("llama3.2:3b").state is State.HALF_OPEN
    for _ in range(3):
        call(registry.get("llama3.2:3b"), success=False)
    clock.advance(30)
    for _ in range(3):
        call(registry.get("llama3.2:3b"), success=True)
    counts = series(scrape(registry), "llm_circuit_breaker_transitions_total")
    assert {k: v for k, v in counts.items() if "llama3.2" in k} == {
        '{breaker="llama3.2:3b",from_state="closed",to_state="open"}': 1.0,
        '{breaker="llama3.2:3b",from_state="open",to_state="half_open"}': 2.0,
        '{breaker="llama3.2:3b",from_state="half_open",to_state="open"}': 1.0,
        '{breaker="llama3.2:3b",from_state="half_open",to_state="closed"}': 1.0,
    }


def test_metrics_pass_promtool_check_metrics(clock: Clock) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed: apt-get install prometheus (scripts/test does it)"
    registry = BreakerRegistry(POLICY, clock)
    trip(registry.get("llama3.2:3b"))
    registry.get("other")
    result = subprocess.run([promtool, "check", "metrics"], input=scrape(registry), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_snapshot_is_json_for_the_cli(clock: Clock) -> None:
    registry = BreakerRegistry(POLICY, clock, now=clock.wall)
    call(registry.get("phi4:14b"), success=True)
    trip(registry.get("llama3.2:3b"))
    clock.advance(10)
    rows = json.loads(json.dumps(registry.snapshot()))
    assert [(r["name"], r["state"], r["failure_rate"], r["window_calls"], r["retry_after_seconds"], r["opened_at"])
            for r in rows] == [
        ("llama3.2:3b", "open", 1.0, 5, 20.0, (clock.wall() - timedelta(seconds=10)).isoformat()),
        ("phi4:14b", "closed", 0.0, 1, 0.0, None),
    ]


@pytest.mark.parametrize("bad", [
    {"window_seconds": 0}, {"failure_rate_threshold": 0}, {"failure_rate_threshold": 1.5},
    {"minimum_calls": 0}, {"open_seconds": -1}, {"half_open_calls": 0},
])
def test_a_policy_out_of_range_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(**bad)  # type: ignore[arg-type]
