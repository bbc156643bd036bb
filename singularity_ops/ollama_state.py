"""Ollama's state read once and shared: concurrent scrapes and commands within ``cache_seconds`` reuse one read.

``/api/show`` answers are kept per digest (a digest's content never changes), so a scrape costs three
small calls (version, tags, ps) however many models are installed; new models cost one show each, once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from singularity_ops.errors import OllamaError
from singularity_ops.ollama_api import InstalledModel, LoadedModel, ModelDetails, OllamaClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OllamaSnapshot:
    up: bool
    error: str | None = None
    version: str | None = None
    installed: list[InstalledModel] = field(default_factory=list)
    loaded: list[LoadedModel] = field(default_factory=list)
    details: dict[str, ModelDetails] = field(default_factory=dict)  # by digest
    taken_at: float = 0.0  # time.monotonic()

    def details_for(self, digest: str) -> ModelDetails | None:
        return self.details.get(digest)

    @property
    def loaded_bytes(self) -> int:
        return sum(m.size_bytes for m in self.loaded)


class OllamaState:
    def __init__(self, client: OllamaClient, cache_seconds: float = 1.0) -> None:
        self.client = client
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._snapshot: OllamaSnapshot | None = None
        self._details: dict[str, ModelDetails] = {}
        self._last_error: str | None = None

    def snapshot(self) -> OllamaSnapshot:
        with self._lock:
            current = self._snapshot
            if current is not None and time.monotonic() - current.taken_at < self.cache_seconds:
                return current
            self._snapshot = self._read()
            return self._snapshot

    def _read(self) -> OllamaSnapshot:
        try:
            version = self.client.version()
            installed = self.client.installed()
            loaded = self.client.loaded()
        except OllamaError as exc:
            if str(exc) != self._last_error:
                log.warning("ollama unavailable: %s", exc)
                self._last_error = str(exc)
            return OllamaSnapshot(up=False, error=str(exc), taken_at=time.monotonic())
        if self._last_error is not None:
            log.info("ollama reachable again at %s (version %s)", self.client.base_url, version)
            self._last_error = None
        wanted = {m.digest: m.name for m in installed} | {m.digest: m.name for m in loaded}
        self._details = {d: v for d, v in self._details.items() if d in wanted}
        for digest, name in wanted.items():
            if digest not in self._details:
                try:
                    self._details[digest] = self.client.show(name)
                except OllamaError as exc:
                    log.warning("ollama show %s failed: %s", name, exc)
        return OllamaSnapshot(True, None, version, installed, loaded, dict(self._details), time.monotonic())
