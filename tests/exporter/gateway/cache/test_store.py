"""The cache's PostgreSQL side: exact and semantic lookups, a scope's matches found among many other scopes, the
upkeep (expiry, a re-pulled model's entries, eviction of the least recently used), and a server without pgvector.
The lookups hold with the gateway's in-process index in front of the table (``lookups`` = "index") and without it
("table": the CLI, and a gateway until its index is loaded)."""

from __future__ import annotations

import asyncio
import math
import random
import struct
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import pytest

from singularity_ops.exporter.gateway.cache.index import LocalIndex
from singularity_ops.exporter.gateway.cache.store import CacheStore, CacheUnavailable, Connections, NewEntry

T = TypeVar("T")


@pytest.fixture(params=["table", "index"])
def lookups(request: pytest.FixtureRequest) -> str:
    return request.param


def store_for(url: str, extension: str = "vector", *, indexed: bool = False) -> CacheStore:
    async def address() -> str:
        return url

    return CacheStore(Connections(address, 2, 5.0), extension, index=LocalIndex() if indexed else None)


def run(url: str, work: Callable[[CacheStore], Awaitable[T]], extension: str = "vector", lookups: str = "table") -> T:
    async def main() -> T:
        store = store_for(url, extension, indexed=lookups == "index")
        try:
            await store.setup()
            if store.index is not None:
                await store.sync_index()
            return await work(store)
        finally:
            await store.db.close()
    return asyncio.run(main())


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


def entry(key: str, embedding: list[float] | None, *, scope: str = "s", model: str = "m:latest", digest: str = "d1",
          origin: str = "user", ttl: float = 3600.0, text: str = "Paris") -> NewEntry:
    return NewEntry(key, scope, "", model, digest, "chat", f"prompt {key}", embedding, {"text": text}, origin, ttl,
                    2.5)


def test_an_exact_lookup_finds_the_key_of_the_same_digest_before_it_expires(vector_database_url: str,
                                                                           lookups: str) -> None:
    async def work(store: CacheStore) -> list[Any]:
        await store.put(entry("k1", None))
        await store.put(entry("k0", None, ttl=0.001))
        await asyncio.sleep(0.01)
        return [await store.exact("k1", "d1"), await store.exact("k1", "d2"), await store.exact("k0", "d1")]

    found, other_digest, expired = run(vector_database_url, work, lookups=lookups)
    assert found is not None and found.answer == {"text": "Paris"} and found.upstream_seconds == 2.5
    assert other_digest is None and expired is None


def test_a_semantic_lookup_returns_the_nearest_entry_of_the_scope_with_its_similarity(vector_database_url: str,
                                                                                     lookups: str) -> None:
    async def work(store: CacheStore) -> list[Any]:
        await store.put(entry("paris", unit([1, 0.1, 0, 0])))
        await store.put(entry("rome", unit([0, 1, 0.1, 0]), text="Rome"))
        await store.put(entry("elsewhere", unit([1, 0.1, 0, 0]), scope="other", text="not this scope"))
        near = await store.nearest("s", unit([1, 0.12, 0, 0]), "d1", limit=3)
        stale = await store.nearest("s", unit([1, 0.12, 0, 0]), "d2")
        return [near, stale]

    near, stale = run(vector_database_url, work, lookups=lookups)
    assert [e.key for e in near] == ["paris", "rome"] and near[0].similarity == pytest.approx(0.9998, abs=1e-3)
    assert near[0].prompt == "prompt paris"
    assert stale == []


def test_an_embedding_is_stored_as_the_float4s_it_was_given(vector_database_url: str, lookups: str) -> None:
    """Sent in pgvector's binary form: no rounding through text, every dimension of a real model's size kept."""
    rng = random.Random(5)
    vector = unit([rng.gauss(0, 1) for _ in range(768)])

    async def work(store: CacheStore) -> Any:
        await store.put(entry("k", vector))
        return await store.nearest("s", vector, "d1")

    found = run(vector_database_url, work, lookups=lookups)
    with psycopg.connect(vector_database_url) as conn:
        stored = conn.execute("SELECT embedding::real[] FROM cache_entries WHERE key = 'k'").fetchone()[0]
    assert struct.pack("768f", *stored) == struct.pack("768f", *vector)  # as float4 (text with 7 digits is not)
    assert found[0].key == "k" and found[0].similarity == pytest.approx(1.0, abs=1e-6)


def test_a_scope_is_found_among_thousands_of_entries_of_other_scopes(vector_database_url: str, lookups: str) -> None:
    """The HNSW index orders by distance first; the scope filter must not hide a scope's only entry."""
    rng = random.Random(3)
    target = unit([rng.gauss(0, 1) for _ in range(32)])
    with psycopg.connect(vector_database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        with conn.cursor().copy("COPY cache_entries (key, scope, model, digest, kind, prompt, embedding, dims, answer, "
                                "expires_at) FROM STDIN") as copy:
            for i in range(3000):  # other scopes, some of them closer to the query than the wanted entry
                near = unit([t + rng.gauss(0, 0.05) for t in target])
                copy.write_row((f"o{i}", f"scope{i % 50}", "m:latest", "d1", "chat", "p", near, 32, '{"text": "x"}',
                                "2999-01-01"))

    async def work(store: CacheStore) -> Any:
        await store.put(entry("mine", unit([t + rng.gauss(0, 0.3) for t in target]), scope="lonely"))
        return await store.nearest("lonely", target, "d1")

    found = run(vector_database_url, work, lookups=lookups)
    assert [e.key for e in found] == ["mine"]


def test_upkeep_drops_expired_and_repulled_entries_and_the_least_recently_used_beyond_the_limit(
        vector_database_url: str, lookups: str) -> None:
    async def work(store: CacheStore) -> list[Any]:
        for key in ("a", "b", "c"):
            await store.put(entry(key, None))
        await store.put(entry("old-digest", None, digest="d0"))
        await store.put(entry("other-model", None, model="n:latest", digest="x"))
        await store.touch("a")  # used again: b is now the least recently used
        counts = await store.upkeep({"m:latest": "d1"}, max_entries=3, history_days=28)
        digests = {"other-model": "x"}
        left = [k for k in ("a", "b", "c", "old-digest", "other-model") if await store.exact(k, digests.get(k, "d1"))]
        return [counts, left]

    counts, left = run(vector_database_url, work, lookups=lookups)
    assert left == ["a", "c", "other-model"]
    assert counts == {"m:latest": 2, "n:latest": 1}


def test_a_server_without_pgvector_is_a_clear_error_naming_the_extension(vector_database_url: str) -> None:
    with pytest.raises(CacheUnavailable, match=r"extension 'vector_not_installed' \(pgvector\)"):
        run(vector_database_url, lambda store: asyncio.sleep(0), extension="vector_not_installed")


class CountingStore:
    """The store's database calls, counted: what a lookup through the index costs in round trips."""

    def __init__(self, store: CacheStore) -> None:
        self.calls = 0
        run_query = store.db.run

        async def counted(work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
            self.calls += 1
            return await run_query(work)
        store.db.run = counted  # type: ignore[method-assign]


def test_with_the_index_loaded_a_miss_asks_the_database_nothing(vector_database_url: str) -> None:
    async def work(store: CacheStore) -> list[Any]:
        await store.put(entry("paris", unit([1, 0.1, 0, 0])))
        counter = CountingStore(store)
        misses = [await store.exact("unknown", "d1"), await store.exact("paris", "d0"),
                  await store.nearest("s", unit([0, 0, 1, 0.1]), "d1", 3, floor=0.8),
                  await store.nearest("elsewhere", unit([1, 0.1, 0, 0]), "d1", 3, floor=0.8)]
        quiet = counter.calls
        hits = [await store.exact("paris", "d1"), await store.nearest("s", unit([1, 0.11, 0, 0]), "d1", 3, floor=0.8)]
        return [misses, quiet, hits, counter.calls - quiet]

    misses, quiet, hits, asked = run(vector_database_url, work, lookups="index")
    assert misses == [None, None, [], []] and quiet == 0
    assert hits[0].key == "paris" and [e.key for e in hits[1]] == ["paris"] and asked == 2


def test_the_index_loads_what_is_stored_and_reads_what_another_replica_writes(vector_database_url: str) -> None:
    async def work(store: CacheStore) -> list[Any]:
        other = store_for(vector_database_url)  # another gateway (or `cache warm`) writing to the same table
        try:
            await other.setup()
            await other.put(entry("rome", unit([0, 1, 0.1, 0]), text="Rome"))
            before = await store.exact("rome", "d1")
            await store.upkeep({"m:latest": "d1"}, max_entries=100, history_days=28)
            return [before, await store.exact("rome", "d1"), await store.nearest("s", unit([0, 1, 0.1, 0]), "d1"),
                    await store.exact("paris", "d1")]
        finally:
            await other.db.close()

    with psycopg.connect(vector_database_url, autocommit=True) as conn:  # written before this gateway started
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("INSERT INTO cache_entries (key, scope, model, digest, kind, prompt, embedding, dims, answer, "
                     "expires_at) VALUES ('paris', 's', 'm:latest', 'd1', 'chat', 'p', '{1,0.1,0,0}', 4, "
                     "'{\"text\": \"Paris\"}', '2999-01-01')")
    before, after, near, loaded = run(vector_database_url, work, lookups="index")
    assert before is None  # not yet read: the index follows the table at each upkeep
    assert after is not None and after.answer == {"text": "Rome"} and [e.key for e in near] == ["rome"]
    assert loaded is not None and loaded.answer == {"text": "Paris"}


def test_entries_deleted_elsewhere_leave_the_index(vector_database_url: str) -> None:
    """`cache clear`, or another replica's eviction: the next upkeep sees the counts part and reads the keys again;
    a lookup that meets a gone entry before then drops it."""
    async def work(store: CacheStore) -> list[Any]:
        for key in ("a", "b", "c"):
            await store.put(entry(key, unit([1, 0.1, 0, 0])))
        assert store.index is not None and len(store.index) == 3
        with psycopg.connect(vector_database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM cache_entries WHERE key IN ('a', 'b')")
        gone = await store.exact("a", "d1")
        held = len(store.index)
        await store.upkeep({"m:latest": "d1"}, max_entries=100, history_days=28)
        return [gone, held, store.index.keys(), await store.nearest("s", unit([1, 0.1, 0, 0]), "d1", 3, floor=0.5)]

    gone, held, keys, near = run(vector_database_url, work, lookups="index")
    assert gone is None and held == 2
    assert keys == {"c"} and [e.key for e in near] == ["c"]


def test_a_replaced_entry_is_found_by_its_new_embedding_only(vector_database_url: str) -> None:
    async def work(store: CacheStore) -> list[Any]:
        await store.put(entry("k", unit([1, 0.1, 0, 0])))
        await store.put(entry("k", unit([0, 0, 1, 0.1]), text="new"))
        return [await store.nearest("s", unit([1, 0.1, 0, 0]), "d1", 3, floor=0.9),
                await store.nearest("s", unit([0, 0, 1, 0.1]), "d1", 3, floor=0.9)]

    old, new = run(vector_database_url, work, lookups="index")
    assert old == [] and [(e.key, e.answer) for e in new] == [("k", {"text": "new"})]


def test_an_entry_another_replica_replaced_with_another_embedding_size_is_not_served(vector_database_url: str) -> None:
    async def work(store: CacheStore) -> list[Any]:
        await store.put(entry("k", unit([1, 0.1, 0, 0])))
        other = store_for(vector_database_url)
        try:
            await other.setup()
            await other.put(entry("k", unit([1, 0.1, 0, 0, 0]), text="from a 5-dimension model"))
        finally:
            await other.db.close()
        assert store.index is not None
        return [await store.nearest("s", unit([1, 0.1, 0, 0]), "d1", 3, floor=0.5), store.index.keys()]

    near, held = run(vector_database_url, work, lookups="index")
    assert near == [] and held == set()
