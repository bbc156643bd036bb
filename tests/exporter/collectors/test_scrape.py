"""One slow or broken source never fails the scrape; it shows up as singularity_collector_success 0."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.exporter.collectors.scrape import ScrapeCollector
from tests.helpers import wait_for


class Healthy(Collector):
    name = "healthy"

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("healthy_value", "a value", value=1)


class Hanging(Collector):
    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        self.release.wait(10)
        yield GaugeMetricFamily("hanging_value", "never in time", value=1)


class Broken(Collector):
    name = "broken"

    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("source exploded")


def scrape(collector: ScrapeCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_a_hanging_source_times_out_and_the_rest_is_served() -> None:
    hanging = Hanging()
    collector = ScrapeCollector([Healthy(), hanging, Broken()], timeout_seconds=0.3)
    try:
        started = time.perf_counter()
        text = scrape(collector)
        assert time.perf_counter() - started < 2
        assert "healthy_value 1.0" in text
        assert "hanging_value" not in text
        assert 'singularity_collector_success{collector="healthy"} 1.0' in text
        assert 'singularity_collector_success{collector="hanging"} 0.0' in text
        assert 'singularity_collector_success{collector="broken"} 0.0' in text

        scrape(collector)  # the hung call is still running: not started a second time
        assert hanging.calls == 1
    finally:
        hanging.release.set()
        collector.close()


def test_a_recovered_source_is_served_again() -> None:
    hanging = Hanging()
    collector = ScrapeCollector([hanging], timeout_seconds=0.2)
    try:
        assert 'singularity_collector_success{collector="hanging"} 0.0' in scrape(collector)
        hanging.release.set()  # the timed-out call finishes; the next scrape runs it again
        text = wait_for(lambda: next((s for s in [scrape(collector)] if "hanging_value 1.0" in s), ""),
                        what="the recovered collector served again")
        assert 'singularity_collector_success{collector="hanging"} 1.0' in text
    finally:
        collector.close()
