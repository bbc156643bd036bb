"""Runs every collector in parallel with its own timeout; a slow or failing source never fails the scrape.

Sample exposition::

    singularity_collector_success{collector="ollama"} 1.0
    singularity_collector_duration_seconds{collector="ollama"} 0.0021

A collector still running from an earlier, timed-out scrape is not started again: the scrape reports it
failed instead of piling threads onto a hung source.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class ScrapeCollector(Collector):
    def __init__(self, collectors: Sequence[Collector], timeout_seconds: float = 3.0) -> None:
        self.collectors = list(collectors)
        self.timeout_seconds = timeout_seconds
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.collectors)), thread_name_prefix="collector")
        self._running: dict[str, Future[tuple[list[Metric], float]]] = {}
        self._lock = threading.Lock()
        self._failing: set[str] = set()

    def describe(self) -> list[Metric]:
        return []

    @staticmethod
    def _run(collector: Collector) -> tuple[list[Metric], float]:
        started = time.perf_counter()
        metrics = list(collector.collect())
        return metrics, time.perf_counter() - started

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        with self._lock:
            futures = {}
            for collector in self.collectors:
                name = collector.name  # type: ignore[attr-defined]
                previous = self._running.get(name)
                if previous is None or previous.done():
                    self._running[name] = self._pool.submit(self._run, collector)
                    futures[name] = self._running[name]
                else:
                    futures[name] = None
        success = GaugeMetricFamily("singularity_collector_success",
                                    "1 when the collector finished without error within its timeout",
                                    labels=["collector"])
        duration = GaugeMetricFamily("singularity_collector_duration_seconds",
                                     "Time the collector took in this scrape", labels=["collector"])
        for name, future in futures.items():
            ok, seconds, metrics = False, 0.0, []
            if future is None:
                problem = "still running from an earlier scrape"
            else:
                remaining = max(0.0, self.timeout_seconds - (time.perf_counter() - started))
                try:
                    metrics, seconds = future.result(timeout=remaining)
                    ok, problem = True, ""
                except FutureTimeout:
                    problem = f"timed out after {self.timeout_seconds:g} s"
                    seconds = time.perf_counter() - started
                except Exception as exc:
                    problem = f"{type(exc).__name__}: {exc}"
            self._report(name, ok, problem)
            yield from metrics
            success.add_metric([name], 1 if ok else 0)
            duration.add_metric([name], seconds)
        yield success
        yield duration

    def _report(self, name: str, ok: bool, problem: str) -> None:
        if ok and name in self._failing:
            self._failing.discard(name)
            log.info("collector %s recovered", name)
        elif not ok and name not in self._failing:
            self._failing.add(name)
            log.warning("collector %s failed: %s", name, problem)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
