"""MinuteRollup: per-minute, per-model rows for real_time_metrics, each minute handed out once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from singularity_ops.exporter.gateway.history.rollup import MinuteRollup

MINUTE = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_two_requests_in_a_minute_and_one_in_the_next() -> None:
    reads = []
    rollup = MinuteRollup(lambda: reads.append(1) or (55.5, 71.0))
    rollup.observe("llama3.2:3b", at=MINUTE + timedelta(seconds=5), output_tokens=100, generation_seconds=2.0,
                   cost=0.002, currency="EUR", compression_ratio=1.0)
    rollup.observe("llama3.2:3b", at=MINUTE + timedelta(seconds=59.9), output_tokens=50, generation_seconds=3.0,
                   cost=0.004, currency="EUR", compression_ratio=0.5)
    rollup.observe("llama3.2:3b", at=MINUTE + timedelta(minutes=1, seconds=1), output_tokens=30,
                   generation_seconds=1.0, cost=0.001, currency="EUR", compression_ratio=1.0)

    assert rollup.close_minutes(MINUTE + timedelta(seconds=59)) == []  # the minute is still open
    first = rollup.close_minutes(MINUTE + timedelta(minutes=1, seconds=30))
    assert first == [{
        "minute": MINUTE, "model": "llama3.2:3b", "requests": 2,
        "tokens_per_second": 150 / 5.0,  # Σ tokens / Σ seconds, not the mean of 50 and 16.7
        "cost_per_response": pytest.approx(0.003), "currency": "EUR",
        "cpu_temperature_celsius": 55.5, "gpu_temperature_celsius": 71.0, "compression_ratio": 0.75,
    }]
    assert rollup.close_minutes(MINUTE + timedelta(minutes=1, seconds=40)) == []  # closed once
    second = rollup.close_minutes(MINUTE + timedelta(minutes=5))
    assert second == [{
        "minute": MINUTE + timedelta(minutes=1), "model": "llama3.2:3b", "requests": 1, "tokens_per_second": 30.0,
        "cost_per_response": 0.001, "currency": "EUR", "cpu_temperature_celsius": 55.5,
        "gpu_temperature_celsius": 71.0, "compression_ratio": 1.0,
    }]
    assert rollup.close_minutes(MINUTE + timedelta(minutes=6)) == []
    assert len(reads) == 2  # sensors are read when there is something to close


def test_models_get_their_own_rows_and_minutes_are_utc() -> None:
    rollup = MinuteRollup()
    local = timezone(timedelta(hours=5, minutes=30))
    rollup.observe("phi4:14b", at=datetime(2025, 3, 1, 17, 30, 10, tzinfo=local), output_tokens=10,
                   generation_seconds=1.0)
    rollup.observe("llama3.2:3b", at=MINUTE + timedelta(seconds=20))

    rows = rollup.close_minutes(MINUTE + timedelta(minutes=1))

    assert [(row["minute"], row["model"], row["requests"]) for row in rows] == [
        (MINUTE, "llama3.2:3b", 1), (MINUTE, "phi4:14b", 1)]
    assert rows[0]["tokens_per_second"] is None  # nothing generated: unknown, not zero
    assert rows[0]["cost_per_response"] is rows[0]["compression_ratio"] is rows[0]["currency"] is None
    assert rows[0]["cpu_temperature_celsius"] is rows[0]["gpu_temperature_celsius"] is None


def test_requests_without_generation_do_not_dilute_tokens_per_second() -> None:
    rollup = MinuteRollup()
    rollup.observe("llama3.2:3b", at=MINUTE, output_tokens=80, generation_seconds=2.0, cost=0.01)
    rollup.observe("llama3.2:3b", at=MINUTE, output_tokens=80, generation_seconds=None)  # a cache hit
    rollup.observe("llama3.2:3b", at=MINUTE, output_tokens=None, generation_seconds=None, cost=None)  # a failure

    [row] = rollup.close_minutes(MINUTE + timedelta(minutes=1))

    assert row["requests"] == 3
    assert row["tokens_per_second"] == 40.0
    assert row["cost_per_response"] == 0.01  # over the requests that report a cost


def test_mixed_currencies_give_no_cost_per_response() -> None:
    rollup = MinuteRollup()
    rollup.observe("llama3.2:3b", at=MINUTE, cost=1.0, currency="EUR")
    rollup.observe("llama3.2:3b", at=MINUTE, cost=1.0, currency="USD")

    [row] = rollup.close_minutes(MINUTE + timedelta(minutes=1))

    assert row["cost_per_response"] is None and row["currency"] is None


def test_a_request_finishing_in_a_closed_minute_is_counted_as_late_not_emitted_twice() -> None:
    rollup = MinuteRollup()
    rollup.observe("llama3.2:3b", at=MINUTE)
    assert len(rollup.close_minutes(MINUTE + timedelta(minutes=1))) == 1

    rollup.observe("llama3.2:3b", at=MINUTE + timedelta(seconds=30))

    assert rollup.close_minutes(MINUTE + timedelta(minutes=2)) == []
    assert rollup.late == 1


def test_a_failing_sensor_costs_only_the_temperatures() -> None:
    def broken() -> tuple[float | None, float | None]:
        raise OSError("no sensors")

    rollup = MinuteRollup(broken)
    rollup.observe("llama3.2:3b", at=MINUTE)

    [row] = rollup.close_minutes(MINUTE + timedelta(minutes=1))

    assert row["requests"] == 1
    assert row["cpu_temperature_celsius"] is row["gpu_temperature_celsius"] is None


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        MinuteRollup().observe("llama3.2:3b", at=datetime(2025, 3, 1, 12, 0))
