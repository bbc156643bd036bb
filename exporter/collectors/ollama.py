"""Ollama's installed and loaded models, and whether each could be loaded on this box.

Sample exposition::

    ollama_up 1
    ollama_info{version="0.12.6"} 1
    ollama_model_size_bytes{model="llama3.2:3b"} 2.019393189e+09
    ollama_model_loaded_bytes{model="llama3.2:3b"} 3.113132032e+09
    ollama_model_vram_bytes{model="llama3.2:3b"} 0.0
    ollama_model_expires_in_seconds{model="llama3.2:3b"} 287.4
    ollama_model_required_bytes{model="phi4:14b"} 1.0439325184e+10
    ollama_model_fits{model="phi4:14b"} 0.0

Check by hand: ``curl -s $OLLAMA_HOST/api/tags``, ``curl -s $OLLAMA_HOST/api/ps`` and
``singularity-ops check-memory`` (same estimator).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.config import MemoryConfig
from singularity_ops.model_fit import assess_models
from singularity_ops.ollama_state import OllamaSnapshot, OllamaState

FOREVER_SECONDS = 10 * 365 * 86400  # keep_alive < 0: Ollama sets an expiry centuries away


def seconds_until(expires_at: datetime | None, now: datetime) -> float | None:
    if expires_at is None:
        return None
    remaining = (expires_at - now).total_seconds()
    return math.inf if remaining > FOREVER_SECONDS else max(0.0, remaining)


class OllamaCollector(Collector):
    name = "ollama"

    def __init__(self, state: OllamaState, settings: MemoryConfig,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.state = state
        self.settings = settings
        self.now = now
        self._families: tuple[OllamaSnapshot, list[Metric]] | None = None

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self.state.snapshot()
        yield GaugeMetricFamily("ollama_up", "1 when Ollama's API answered the last read, else 0",
                                value=1 if snapshot.up else 0)
        if not snapshot.up:
            return
        # Everything but the countdown is a function of the snapshot: scrapes sharing one read share it too.
        cached = self._families
        if cached is None or cached[0] is not snapshot:
            cached = self._families = (snapshot, list(self._families_of(snapshot)))
        yield from cached[1]
        expires = GaugeMetricFamily("ollama_model_expires_in_seconds",
                                    "Seconds until Ollama unloads the model (+Inf: kept forever)", labels=["model"])
        now = self.now()
        for model in snapshot.loaded:
            remaining = seconds_until(model.expires_at, now)
            if remaining is not None:
                expires.add_metric([model.name], remaining)
        yield expires

    def _families_of(self, snapshot: OllamaSnapshot) -> Iterator[Metric]:
        info = InfoMetricFamily("ollama", "Ollama server version")
        info.add_metric([], {"version": snapshot.version or ""})
        yield info
        yield GaugeMetricFamily("ollama_models_installed", "Models in /api/tags", value=len(snapshot.installed))
        yield GaugeMetricFamily("ollama_models_loaded", "Models in /api/ps", value=len(snapshot.loaded))

        size = GaugeMetricFamily("ollama_model_size_bytes", "Size of the installed model (/api/tags size)",
                                 labels=["model"])
        for model in snapshot.installed:
            size.add_metric([model.name], model.size_bytes)
        yield size

        loaded = GaugeMetricFamily("ollama_model_loaded_bytes", "Memory the loaded model holds (/api/ps size)",
                                   labels=["model"])
        vram = GaugeMetricFamily("ollama_model_vram_bytes", "Part of it in GPU memory (/api/ps size_vram)",
                                 labels=["model"])
        context = GaugeMetricFamily("ollama_model_context_length", "Context the model is loaded with (tokens)",
                                    labels=["model"])
        for model in snapshot.loaded:
            loaded.add_metric([model.name], model.size_bytes)
            vram.add_metric([model.name], model.vram_bytes)
            if model.context_length:
                context.add_metric([model.name], model.context_length)
        yield from (loaded, vram, context)

        budget, fits = assess_models(snapshot, self.settings)
        required = GaugeMetricFamily("ollama_model_required_bytes",
                                     "Estimated memory needed to load the model (docs/MEMORY.md)", labels=["model"])
        fit = GaugeMetricFamily("ollama_model_fits",
                                "1 when the need is at most what could be freed for it, else 0", labels=["model"])
        for row in fits:
            required.add_metric([row.name], row.fit.need.total_bytes)
            fit.add_metric([row.name], 1 if row.fit.fits else 0)
        yield from (required, fit)
        yield GaugeMetricFamily(
            "ollama_memory_obtainable_bytes",
            "Free memory plus what unloading every model would free, less the reserve: what fits compares against",
            value=max(0, budget.obtainable_bytes - self.settings.reserve_bytes),
        )
