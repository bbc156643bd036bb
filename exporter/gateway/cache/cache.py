"""The cache as the proxy uses it: ``before`` (look up; on a hit, the whole response), ``answered`` / ``capture`` +
``streamed`` (store a complete upstream answer of a miss), and the header every inference response carries.

Order of a lookup: the exact key (one indexed read, no embedding), then, for requests whose last turn may be
compared, the embedding and the nearest entry of the same scope, served when its cosine similarity is at least
``cache.similarity``. ``Cache-Control: no-cache`` skips the lookup (the fresh answer is stored), ``no-store``
skips both. Anything that goes wrong on the database (an outage, a slow query past
``cache.lookup_timeout_seconds``) makes that request, and for a short backoff the following ones, a bypass: the
gateway serves on without the cache. Stores, hit counts and the request record are written off the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from aiohttp import web

from singularity_ops.config.cache import CacheConfig
from singularity_ops.exporter.gateway.cache.answer import Answer, StreamCapture, read_whole
from singularity_ops.exporter.gateway.cache.embed import Embedder
from singularity_ops.exporter.gateway.cache.lookup import LOOKUP, Lookup
from singularity_ops.exporter.gateway.cache.metrics import CacheMetrics
from singularity_ops.exporter.gateway.cache.policy import Bypass, Cacheable, classify
from singularity_ops.exporter.gateway.cache.replay import Replay
from singularity_ops.exporter.gateway.cache.store import CacheStore, CacheUnavailable, Entry, NewEntry
from singularity_ops.exporter.gateway.cache.wording import same_content

log = logging.getLogger(__name__)
BACKOFF_SECONDS = (1.0, 30.0)
SETUP_SECONDS = 5.0
NEAREST = 3  # candidates a semantic lookup checks against the guard
MAX_RECORDED = 10_000  # request-record rows waiting for the next upkeep; beyond, the oldest are dropped


class SemanticCache:
    def __init__(self, settings: CacheConfig, metrics: CacheMetrics, store: CacheStore, embedder: Embedder,
                 digest_of: Callable[[str], str | None], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.embedder = embedder
        self.digest_of = digest_of
        self.clock = clock
        self.available = True  # false once the database is known to lack pgvector
        self._set_up = False  # the extension is there (setup done)
        self.in_flight = 0
        self.last_request = clock()
        self._down_until = 0.0
        self._failures = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recorded: deque[tuple[Any, ...]] = deque(maxlen=MAX_RECORDED)

    @property
    def ready(self) -> bool:
        """pgvector is there and the setup was done (the database may still be away for a while)."""
        return self.available and self._set_up

    async def start(self) -> None:
        """The extension and its check, within a few seconds: a database that does not answer yet is tried again by
        the upkeep, and the gateway serves meanwhile (bypass)."""
        await self._setup()
        self.metrics.up.set(1 if self._set_up and not self.is_down() else 0)

    async def _setup(self) -> None:
        try:
            await asyncio.wait_for(self.store.setup(), timeout=SETUP_SECONDS)
        except CacheUnavailable as exc:
            log.error("%s; the gateway serves without the cache", exc)
            self.available = False
            return
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("cache: the database is unavailable (%s); serving without the cache until it answers", exc)
            self._outage("setup", exc)
            return
        self._set_up = True

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await self.store.db.close()

    # --- the request path -----------------------------------------------------------------------------

    async def before(self, request: web.Request, payload: dict[str, Any] | None, client: str | None, label: str,
                     usage_added: bool = False, managed: bool = False) -> web.StreamResponse | None:
        """Called for every inference request once it is authorised and rewritten as Ollama will get it (so the key
        holds the system prompt and history actually sent): the response of a hit, or None. ``usage_added``: the
        gateway, not the client, asked for the OpenAI usage chunk; ``managed``: a managed system prompt (its
        experiments need real answers) — a bypass."""
        lookup = request[LOOKUP] = Lookup("bypass", time.perf_counter())
        self._track(request)
        control = request.headers.get("Cache-Control", "").lower()
        found = classify(request.path, payload, self.settings, client) if payload is not None else Bypass("shape")
        if isinstance(found, Bypass) or managed or not self._set_up or "no-store" in control:
            return self._count(lookup, label)
        if usage_added:
            found = replace(found, include_usage=False)
        lookup.cacheable = found
        digest = self.digest_of(found.model)
        if digest is None or self.is_down():
            return self._count(lookup, label)
        lookup.store = True
        if "no-cache" in control:
            return self._count(lookup, label)
        try:
            entry = await self._lookup(lookup, found, digest)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self._outage("lookup", exc)
            lookup.store = False
            return self._count(lookup, label)
        self._failures = 0
        if entry is None:
            lookup.result = "miss"
            self._record(found, "miss")
            return self._count(lookup, label)
        lookup.result, lookup.store = ("semantic" if lookup.similarity is not None else "hit"), False
        self._record(found, lookup.result)
        self._count(lookup, label)
        return await self._serve(request, lookup, found, entry, payload, label)

    async def _lookup(self, lookup: Lookup, found: Cacheable, digest: str) -> Entry | None:
        timeout = self.settings.lookup_timeout_seconds  # asyncio.timeout, not wait_for: no task per lookup
        started = time.perf_counter()
        async with asyncio.timeout(timeout):
            entry = await self.store.exact(found.key, digest)
        spent = time.perf_counter() - started
        if entry is None and found.semantic:
            lookup.embedding = await self.embedder.embed(found.prompt)
            if lookup.embedding is not None:
                started = time.perf_counter()
                async with asyncio.timeout(timeout):
                    near = await self.store.nearest(found.scope, lookup.embedding, digest, NEAREST,
                                                    self.settings.similarity)
                spent += time.perf_counter() - started
                entry = self._match(found, near)
                if entry is not None:
                    lookup.similarity = float(entry.similarity)
        self.metrics.lookup.observe(spent)
        return entry

    def _match(self, found: Cacheable, near: list[Entry]) -> Entry | None:
        """The nearest entry similar enough (and, with the guard, worded alike), or None."""
        for entry in near:
            if entry.similarity < self.settings.similarity:
                return None
            if not self.settings.semantic_guard or same_content(found.prompt, entry.prompt):
                return entry
        return None

    async def _serve(self, request: web.Request, lookup: Lookup, found: Cacheable, entry: Entry,
                     payload: dict[str, Any] | None, label: str) -> web.StreamResponse:
        model = payload.get("model") if payload else None
        replay = Replay(Answer.from_json(entry.answer), model if isinstance(model, str) else found.model,
                        found.openai, found.kind, lookup.started)
        body = replay.body(found.stream, found.include_usage)
        headers = {"Content-Type": replay.content_type(found.stream)}
        if found.stream:
            response = web.StreamResponse(status=200, headers=headers)
            await response.prepare(request)
            await response.write(body)
            await response.write_eof()
        else:
            response = web.Response(status=200, body=body, headers=headers)
        m = self.metrics
        m.child(m.saved_seconds, label).inc(max(0.0, entry.upstream_seconds - (time.perf_counter() - lookup.started)))
        if entry.origin == "warmer":
            m.child(m.warm_hits, label).inc()
        self._spawn(self.store.touch(entry.key), "touch")
        return response

    def _count(self, lookup: Lookup, label: str) -> None:
        self.metrics.child(self.metrics.requests, label, lookup.result).inc()

    def _track(self, request: web.Request) -> None:
        """In flight until its handler ends (the warms wait for an idle gateway)."""
        self.in_flight += 1
        self.last_request = self.clock()

        def done(_: object) -> None:
            self.in_flight -= 1
            self.last_request = self.clock()

        task = request.task
        if task is not None:
            task.add_done_callback(done)
        else:  # pragma: no cover - aiohttp always runs a handler in a task
            done(None)

    def idle_for(self) -> float:
        """Seconds since the last user request ended; 0 while one is in flight."""
        return 0.0 if self.in_flight else self.clock() - self.last_request

    def _record(self, found: Cacheable, result: str) -> None:
        self._recorded.append((datetime.now(UTC), found.model, found.key, found.tenant, found.material, result))

    # --- after the upstream answer --------------------------------------------------------------------

    def answered(self, request: web.Request, status: int, body: bytes) -> None:
        """A whole (non-streamed) upstream answer."""
        lookup = request.get(LOOKUP)
        if lookup is not None and lookup.store and lookup.cacheable is not None and status == 200:
            answer = read_whole(body, lookup.cacheable.openai)
            if answer is not None:
                self._keep(lookup, lookup.cacheable, answer)

    def capture(self, request: web.Request, status: int) -> StreamCapture | None:
        """Where the proxy puts a stream's chunks as they pass, when the answer is to be stored."""
        lookup = request.get(LOOKUP)
        if lookup is None or not lookup.store or lookup.cacheable is None or status != 200:
            return None
        lookup.capture = StreamCapture(lookup.cacheable.openai)
        return lookup.capture

    def streamed(self, request: web.Request) -> None:
        """The stream ended as upstream ended it (not interrupted)."""
        lookup = request.get(LOOKUP)
        if lookup is not None and lookup.capture is not None and lookup.cacheable is not None:
            answer = lookup.capture.finish()
            if answer is not None:
                self._keep(lookup, lookup.cacheable, answer)

    def _keep(self, lookup: Lookup, found: Cacheable, answer: Answer) -> None:
        digest = self.digest_of(found.model)
        if digest is None:
            return
        upstream_seconds = time.perf_counter() - lookup.started
        self._spawn(self._put(found, digest, answer, lookup.embedding, upstream_seconds), "store")

    async def _put(self, found: Cacheable, digest: str, answer: Answer, embedding: list[float] | None,
                   upstream_seconds: float) -> None:
        if embedding is None and found.semantic:
            embedding = await self.embedder.embed(found.prompt)
        await self.store.put(NewEntry(found.key, found.scope, found.tenant, found.model, digest, found.kind,
                                      found.prompt, embedding, answer.as_json(), "user", self.settings.ttl_seconds,
                                      upstream_seconds))
        self.metrics.child(self.metrics.stored, found.model).inc()

    # --- background ------------------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None], operation: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self._outage(operation, exc)

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def is_down(self) -> bool:
        return self.clock() < self._down_until

    def _outage(self, operation: str, exc: BaseException) -> None:
        self.metrics.child(self.metrics.errors, operation).inc()
        first, most = BACKOFF_SECONDS
        wait = min(most, first * 2 ** min(self._failures, 10))
        if not self.is_down():
            log.warning("cache: %s failed on the database (%s: %s); bypassing the cache for %g s", operation,
                        type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "", wait)
        self._failures += 1
        self._down_until = self.clock() + wait
        self.metrics.up.set(0)

    async def upkeep(self, digests: dict[str, str]) -> None:
        """Periodic (the service's refresh loop): write the request record, expire, evict, invalidate, count."""
        if not self.available:
            return
        if not self._set_up:
            if self.is_down():
                return
            await self._setup()
            if not self._set_up:
                return
        rows = [self._recorded.popleft() for _ in range(len(self._recorded))]
        try:
            if rows:
                await self.store.record_requests(rows)
            counts = await self.store.upkeep(digests, self.settings.max_entries, self.settings.warmer.history_days)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self._outage("upkeep", exc)
            return
        if self._down_until:
            log.info("cache: the database answers again; the cache is back")
        self._down_until, self._failures = 0.0, 0
        self.metrics.up.set(1)
        self.metrics.set_entries(counts)

    async def wait_idle(self) -> None:
        """Tests: until the background writes started so far are done."""
        while self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(set(self._tasks), timeout=5)
