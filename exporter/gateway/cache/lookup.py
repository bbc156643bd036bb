"""The cache as the proxy meets it on every request, whether or not ``cache.enabled``: the per-request lookup
record, the do-nothing cache used while it is off, and the response header. Kept apart from the cache itself so a
gateway without the cache never imports it (bench/scrape.py: the exporter's memory)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from singularity_ops.exporter.gateway.cache.answer import StreamCapture
    from singularity_ops.exporter.gateway.cache.policy import Cacheable

HEADER = "X-Singularity-Cache"
SIMILARITY_HEADER = "X-Singularity-Cache-Similarity"


@dataclass
class Lookup:
    result: str  # hit, semantic, miss or bypass
    started: float
    cacheable: Cacheable | None = None
    store: bool = False  # a complete answer from upstream is to be stored
    embedding: list[float] | None = None
    similarity: float | None = None
    capture: StreamCapture | None = None


LOOKUP = web.RequestKey("singularity_cache", Lookup)


class NoCache:
    """The proxy's cache while ``cache.enabled`` is false (or pgvector is missing): every hook does nothing."""

    async def before(self, *args: Any, **kwargs: Any) -> None:
        return None

    def answered(self, request: web.Request, status: int, body: bytes) -> None:
        pass

    def capture(self, request: web.Request, status: int) -> None:
        return None

    def streamed(self, request: web.Request) -> None:
        pass


NO_CACHE = NoCache()


async def add_cache_header(request: web.Request, response: web.StreamResponse) -> None:
    """``X-Singularity-Cache`` on every inference response the cache looked at (and the similarity of a semantic
    hit); an aiohttp on_response_prepare signal."""
    lookup = request.get(LOOKUP)
    if lookup is not None:
        response.headers[HEADER] = lookup.result
        if lookup.similarity is not None:
            response.headers[SIMILARITY_HEADER] = f"{lookup.similarity:.4f}"
