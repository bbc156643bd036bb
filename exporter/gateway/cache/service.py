"""The cache's part of the gateway process: built from the config, started and stopped with the gateway, and its
background loop: every few seconds the installed models' digests (a re-pulled model's entries are invalidated),
the upkeep (request record, expiry, eviction, entry counts), and, while the gateway is idle, the queued warms."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import aiohttp
from prometheus_client import CollectorRegistry

from singularity_ops.cache_key import canonical_model as canonical
from singularity_ops.config import Config
from singularity_ops.exporter.gateway.cache.cache import SemanticCache
from singularity_ops.exporter.gateway.cache.embed import Embedder
from singularity_ops.exporter.gateway.cache.index import LocalIndex
from singularity_ops.exporter.gateway.cache.metrics import CacheMetrics
from singularity_ops.exporter.gateway.cache.store import CacheStore, Connections
from singularity_ops.exporter.gateway.cache.warm import WarmRunner
from singularity_ops.ollama_api import upstream_headers
from singularity_ops.ollama_state import OllamaSnapshot

log = logging.getLogger(__name__)
UPKEEP_SECONDS = 5.0


class CacheService:
    def __init__(self, config: Config, registry: CollectorRegistry, snapshot: Callable[[], OllamaSnapshot],
                 database_url: Callable[[], str], session: Callable[[], aiohttp.ClientSession | None],
                 *, upkeep_seconds: float = UPKEEP_SECONDS) -> None:
        settings = config.cache
        headers = upstream_headers(config)  # what the gateway sends Ollama, for the embedding and warming calls
        self.settings = settings
        self.metrics = CacheMetrics(registry)
        self._snapshot = snapshot
        self._database_url = database_url
        self.upkeep_seconds = upkeep_seconds
        self.store = CacheStore(Connections(self._url, settings.connections, config.database.connect_timeout_seconds),
                                index=LocalIndex())
        self.embedder = Embedder(config.ollama.host, settings.embedding_model, settings.embedding_timeout_seconds,
                                 self.metrics, session, headers)
        self.cache = SemanticCache(settings, self.metrics, self.store, self.embedder, self.digest_of)
        self.runner = WarmRunner(settings, self.store, self.embedder, self.metrics, config.ollama.host, session,
                                 self.digest_of, lambda: self._loaded, headers)
        self._digests: dict[str, str] = {}
        self._loaded: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def _url(self) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self._database_url)

    def digest_of(self, model: str) -> str | None:
        return self._digests.get(canonical(model))

    async def refresh(self) -> None:
        """Installed and loaded models from Ollama's state (shared with the gateway's own refresh)."""
        snapshot = await asyncio.get_running_loop().run_in_executor(None, self._snapshot)
        if snapshot.up:  # while Ollama is away the last known digests stand, and hits are still served
            self._digests = {canonical(m.name): m.digest for m in snapshot.installed}
            self._loaded = {canonical(m.name) for m in snapshot.loaded}

    async def start(self) -> None:
        with contextlib.suppress(Exception):
            await self.refresh()
        await self.cache.start()
        self._tasks = [asyncio.create_task(self._upkeep_forever()), asyncio.create_task(self._warm_forever())]

    async def _upkeep_forever(self) -> None:
        while True:
            try:
                await self.refresh()
                await self.cache.upkeep(dict(self._digests))
            except Exception as exc:  # the next round tries again
                log.debug("cache upkeep failed: %s", exc)
            await asyncio.sleep(self.upkeep_seconds)

    async def _warm_forever(self) -> None:
        warmer = self.settings.warmer
        while True:
            await asyncio.sleep(self.upkeep_seconds)
            if not (warmer.enabled and self.cache.ready) or self.cache.is_down():
                continue
            try:
                while self.cache.idle_for() >= warmer.idle_seconds and await self.runner.run_next() is not None:
                    pass
            except Exception as exc:
                log.debug("cache warms failed: %s", exc)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.cache.close()
