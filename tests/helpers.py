"""Helpers the tests share: reading an exposition, running an exporter in a thread, waiting for a condition.

Waiting is always polling for a condition with a deadline, never a fixed sleep followed by an assertion.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from singularity_ops.exporter.app import Exporter

T = TypeVar("T")


def series(text: str, name: str) -> dict[str, float]:
    """``{'{label="value",…}': value}`` of every sample named ``name`` (``""`` for one without labels) in an
    exposition text, parsed by prometheus_client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                labels = ",".join(f'{key}="{value}"' for key, value in sample.labels.items())
                found[f"{{{labels}}}" if labels else ""] = sample.value
    return found


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             what: str = "the condition") -> T:
    """Poll ``condition`` until it returns something truthy (returned) or ``timeout`` seconds pass (an error)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)


class Running:
    """An exporter served on its configured address from a thread, for a ``with`` block."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        self.url = f"http://{exporter.config.exporter.metrics_listen}"
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from singularity_ops.exporter.app import serve

        self._loop.run_until_complete(serve(self.exporter, self._stop))

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def __enter__(self) -> Running:
        self._thread.start()
        wait_for(self._healthy, timeout=10, interval=0.05, what="the exporter answering /healthz")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def scrape(self) -> str:
        response = httpx.get(self.url + "/metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        return response.text


class FakeClock:
    """A monotonic clock the test moves by hand: inject it, then ``advance`` instead of sleeping."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
