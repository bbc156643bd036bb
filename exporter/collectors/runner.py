"""Real resident memory of each model runner process.

Sample exposition::

    ollama_model_runner_rss_bytes{model="llama3.2:3b"} 2.264924e+09

Check by hand: ``ps -o rss,args -C ollama`` (the ``--model`` blob) against ``ollama show --modelfile NAME``
(its ``FROM`` line). No runner visible here (Ollama in another container or host) → no series, not a zero.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.ollama_state import OllamaState
from singularity_ops.runners import blob_key, find_runner_rss


class RunnerScan:
    """``find_runner_rss`` shared for ``cache_seconds``: a process scan costs about 1 ms per 100 processes."""

    def __init__(self, cache_seconds: float = 1.0, scan: Callable[[], dict[str, int]] = find_runner_rss) -> None:
        self.cache_seconds = cache_seconds
        self._scan = scan
        self._lock = threading.Lock()
        self._result: dict[str, int] = {}
        self._taken_at = float("-inf")

    def rss_by_blob(self) -> dict[str, int]:
        with self._lock:
            if time.monotonic() - self._taken_at >= self.cache_seconds:
                self._result = self._scan()
                self._taken_at = time.monotonic()
            return self._result


class RunnerCollector(Collector):
    name = "runner"

    def __init__(self, state: OllamaState, scan: RunnerScan) -> None:
        self.state = state
        self.scan = scan

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        rss = self.scan.rss_by_blob()
        snapshot = self.state.snapshot()
        family = GaugeMetricFamily("ollama_model_runner_rss_bytes",
                                   "Resident memory of the runner process serving the model", labels=["model"])
        # Several tags can share one blob; the loaded name wins, then the first installed one.
        names: dict[str, str] = {}
        for model in [*snapshot.loaded, *snapshot.installed]:
            details = snapshot.details_for(model.digest)
            if details is not None and details.blob_path:
                names.setdefault(blob_key(details.blob_path), model.name)
        for blob, value in sorted(rss.items()):
            if blob in names:
                family.add_metric([names[blob]], value)
        yield family
