"""Carrying out the warms the cache-warmer controller queued (``cache_warms``), one at a time, when it is safe.

A gateway takes a queued warm only while it is idle (no user request in flight, none for
``cache.warmer.idle_seconds``) and the warmer's tokens of the last hour are under
``cache.warmer.budget_tokens_per_hour``; ``cache warm`` runs them at once (an operator's command skips the idle
rule, never the others). Then, for each: the model must be loaded, or queued as planned by the model manager (the
controller checked it fits); an entry that outlives the window is left alone; a full cache makes room only by
evicting an entry the warmer made, never a user's. The answer is asked of Ollama's native API without streaming and
stored like a user's, marked as the warmer's, so hits on it are counted apart (``llm_cache_warm_hits_total``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import psycopg

from singularity_ops.cache_key import ollama_request, request_keys
from singularity_ops.config.cache import CacheConfig
from singularity_ops.exporter.gateway.cache.answer import read_whole
from singularity_ops.exporter.gateway.cache.embed import Embedder
from singularity_ops.exporter.gateway.cache.metrics import CacheMetrics
from singularity_ops.exporter.gateway.cache.store import CacheStore, NewEntry

log = logging.getLogger(__name__)
GENERATE_TIMEOUT = aiohttp.ClientTimeout(total=900, sock_read=300)
_COLUMNS = "id, model, key, tenant, prompt, material, reason, expected_requests, window_end, planned"


@dataclass(frozen=True)
class Warm:
    id: int
    model: str
    key: str
    tenant: str
    prompt: str
    material: dict[str, Any]
    reason: str
    expected_requests: float
    window_end: Any
    planned: bool


class WarmRunner:
    def __init__(self, settings: CacheConfig, store: CacheStore, embedder: Embedder, metrics: CacheMetrics,
                 upstream: str, session: Callable[[], aiohttp.ClientSession | None],
                 digest_of: Callable[[str], str | None], loaded: Callable[[], set[str]],
                 headers: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.embedder = embedder
        self.metrics = metrics
        self.upstream = upstream.rstrip("/")
        self._session = session
        self.digest_of = digest_of
        self.loaded = loaded
        self._headers = headers or {}

    async def budget_left(self) -> int:
        async def work(conn: psycopg.AsyncConnection) -> int:
            row = await (await conn.execute(
                "SELECT coalesce(sum(tokens), 0) FROM cache_warms WHERE finished_at > now() - interval '1 hour'"
            )).fetchone()
            return int(row[0])
        return self.settings.warmer.budget_tokens_per_hour - await self.store.db.run(work)

    async def claim(self) -> Warm | None:
        async def work(conn: psycopg.AsyncConnection) -> Warm | None:
            await conn.execute("UPDATE cache_warms SET status = 'expired', finished_at = now() "
                               "WHERE status IN ('queued', 'running') AND window_end <= now()")
            row = await (await conn.execute(
                f"UPDATE cache_warms SET status = 'running' WHERE id = (SELECT id FROM cache_warms "
                f"WHERE status = 'queued' ORDER BY expected_requests DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED) "
                f"RETURNING {_COLUMNS}")).fetchone()
            return Warm(*row) if row else None
        return await self.store.db.run(work)

    async def finish(self, warm: Warm, status: str, outcome: str | None, tokens: int = 0,
                     seconds: float | None = None) -> None:
        async def work(conn: psycopg.AsyncConnection) -> None:
            await conn.execute("UPDATE cache_warms SET status = %s, outcome = %s, tokens = %s, seconds = %s, "
                               "finished_at = now() WHERE id = %s", (status, outcome, tokens, seconds, warm.id))
        await self.store.db.run(work)

    async def run_next(self) -> tuple[Warm, str, str | None] | None:
        """Take the most expected queued warm and carry it out: (the warm, its status, why), or None when none is
        queued or the budget is spent."""
        if await self.budget_left() <= 0:
            return None
        warm = await self.claim()
        if warm is None:
            return None
        try:
            status, outcome, tokens, seconds = await self.carry_out(warm)
        except Exception as exc:  # a warm never takes the gateway down; the row says what happened
            status, outcome, tokens, seconds = "failed", f"{type(exc).__name__}: {exc}", 0, None
        await self.finish(warm, status, outcome, tokens, seconds)
        level = logging.INFO if status == "warmed" else logging.DEBUG
        log.log(level, "cache warm %s (%s, expected %.1f requests): %s%s", warm.model, warm.reason,
                warm.expected_requests, status, f" ({outcome})" if outcome else "")
        return warm, status, outcome

    async def carry_out(self, warm: Warm) -> tuple[str, str | None, int, float | None]:
        digest = self.digest_of(warm.model)
        if digest is None:
            return "skipped", "model not installed", 0, None
        if warm.model not in self.loaded() and not warm.planned:
            return "skipped", "model not loaded", 0, None
        if await self._outlives_window(warm, digest):
            return "skipped", "cached", 0, None
        if not await self._make_room():
            return "skipped", "cache full of user entries", 0, None
        session = self._session()
        if session is None:
            return "failed", "no upstream session", 0, None
        path, body = ollama_request(warm.material)
        started = time.perf_counter()
        async with session.post(self.upstream + path, json=body, headers=self._headers,
                                timeout=GENERATE_TIMEOUT) as reply:
            data = await reply.read()
            status = reply.status
        seconds = time.perf_counter() - started
        answer = read_whole(data, openai=False) if status == 200 else None
        if answer is None:
            return "failed", f"Ollama answered HTTP {status}", 0, seconds
        tokens = (answer.prompt_tokens or 0) + (answer.output_tokens or 0)
        embedding = None if warm.material.get("images") else await self.embedder.embed(warm.prompt)
        _, scope = request_keys(warm.material, warm.tenant)
        await self.store.put(NewEntry(warm.key, scope, warm.tenant, warm.model, digest, warm.material["kind"],
                                      warm.prompt, embedding, answer.as_json(), "warmer", self.settings.ttl_seconds,
                                      seconds))
        self.metrics.child(self.metrics.warmed, warm.model, warm.reason).inc()
        return "warmed", None, tokens, seconds

    async def _outlives_window(self, warm: Warm, digest: str) -> bool:
        async def work(conn: psycopg.AsyncConnection) -> bool:
            row = await (await conn.execute(
                "SELECT 1 FROM cache_entries WHERE key = %s AND digest = %s AND expires_at > %s",
                (warm.key, digest, warm.window_end))).fetchone()
            return row is not None
        return await self.store.db.run(work)

    async def _make_room(self) -> bool:
        """Room for one more entry, evicting only what the warmer made (least recently used first)."""
        async def work(conn: psycopg.AsyncConnection) -> bool:
            row = await (await conn.execute("SELECT count(*) FROM cache_entries")).fetchone()
            excess = int(row[0]) - self.settings.max_entries + 1
            if excess <= 0:
                return True
            deleted = await conn.execute(
                "DELETE FROM cache_entries WHERE key IN (SELECT key FROM cache_entries WHERE origin = 'warmer' "
                "ORDER BY last_used_at LIMIT %s)", (excess,))
            return deleted.rowcount >= excess
        return await self.store.db.run(work)

