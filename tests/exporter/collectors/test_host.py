"""Host memory, swap, CPU and load, read from psutil at scrape time."""

from __future__ import annotations

import psutil
from prometheus_client import CollectorRegistry, generate_latest

from singularity_ops.exporter.collectors.host import HostCollector
from tests.helpers import series


def scrape() -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector())
    return generate_latest(registry).decode()


def test_memory_matches_the_kernels_figures() -> None:
    text = scrape()
    assert series(text, "llm_host_memory_total_bytes") == {"": float(psutil.virtual_memory().total)}
    available = series(text, "llm_host_memory_available_bytes")[""]
    assert abs(available - psutil.virtual_memory().available) < 256 * 2**20
    assert series(text, "llm_host_swap_total_bytes") == {"": float(psutil.swap_memory().total)}


def test_cpu_counters_grow_and_load_has_three_periods() -> None:
    before = series(scrape(), "llm_host_cpu_seconds_total")
    sum(i * i for i in range(2_000_000))  # burn some CPU
    after = series(scrape(), "llm_host_cpu_seconds_total")
    assert set(before) >= {'{mode="user"}', '{mode="idle"}', '{mode="system"}'}
    assert sum(after.values()) > sum(before.values())
    assert set(series(scrape(), "llm_host_load_average")) == {'{period="1m"}', '{period="5m"}', '{period="15m"}'}


def test_temperatures_only_for_sensors_that_exist() -> None:
    sensors = sum(len(v) for v in psutil.sensors_temperatures().values())
    assert len(series(scrape(), "llm_cpu_temperature_celsius")) == sensors
