"""The last user turn's embedding, from Ollama's ``/api/embed`` with ``cache.embedding_model``.

A failure (the model is not pulled, Ollama is away, it takes longer than ``cache.embedding_timeout_seconds``) is
counted and means an exact-only lookup and an entry without an embedding; it never fails the request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping

import aiohttp

from singularity_ops.exporter.gateway.cache.metrics import CacheMetrics

log = logging.getLogger(__name__)


class Embedder:
    def __init__(self, upstream: str, model: str, timeout_seconds: float, metrics: CacheMetrics,
                 session: Callable[[], aiohttp.ClientSession | None], headers: Mapping[str, str] | None = None) -> None:
        self.url = upstream.rstrip("/") + "/api/embed"
        self.model = model
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.metrics = metrics
        self._session = session
        self._headers = dict(headers or {})
        self._warned: str | None = None

    def _failed(self, reason: str, detail: str) -> None:
        self.metrics.child(self.metrics.embedding_failures, reason).inc()
        if detail != self._warned:  # once per kind of failure, not once per request
            log.warning("cache: embedding with %s failed (%s); looking up exact matches only", self.model, detail)
            self._warned = detail

    async def embed(self, text: str) -> list[float] | None:
        session = self._session()
        if session is None:
            return None
        started = time.perf_counter()
        try:
            async with session.post(self.url, json={"model": self.model, "input": text}, headers=self._headers,
                                    timeout=self.timeout) as reply:
                body = await reply.json(content_type=None)
                status = reply.status
        except TimeoutError:
            self._failed("timeout", "timed out")
            return None
        except (aiohttp.ClientError, ValueError) as exc:
            self._failed("error", f"{type(exc).__name__}: {exc}")
            return None
        self.metrics.embedding.observe(time.perf_counter() - started)
        vectors = body.get("embeddings") if isinstance(body, dict) else None
        if status != 200 or not isinstance(vectors, list) or not vectors or not isinstance(vectors[0], list):
            message = body.get("error") if isinstance(body, dict) else None
            self._failed("error", f"HTTP {status}: {message or 'no embedding in the answer'}")
            return None
        vector = [float(v) for v in vectors[0]]
        norm = math.sqrt(sum(v * v for v in vector))
        if not vector or norm == 0.0 or not math.isfinite(norm):
            self._failed("error", "an empty or zero embedding")
            return None
        if self._warned is not None:
            log.info("cache: embedding with %s works again", self.model)
            self._warned = None
        return vector
