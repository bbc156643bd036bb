"""The gateway's in-process index: it must never lose an entry similar enough to be served (the database then
decides exactly), and it keeps scopes, model digests, embedding sizes and expiry apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from singularity_ops.exporter.gateway.cache.index import MARGIN, LocalIndex

LATER, NOW = 2e9, 1e9


def unit_rows(rng: np.random.Generator, count: int, dims: int) -> np.ndarray:
    """Vectors in topics, as real embeddings come: members of one topic are ~0.73 alike."""
    centres = rng.standard_normal((max(1, count // 200), dims))
    rows = centres[rng.integers(0, len(centres), count)] + 0.6 * rng.standard_normal((count, dims))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def at_similarity(rng: np.random.Generator, vector: np.ndarray, similarity: float) -> np.ndarray:
    other = rng.standard_normal(len(vector))
    other -= (other @ vector) * vector
    other /= np.linalg.norm(other)
    return similarity * vector + np.sqrt(1 - similarity ** 2) * other


@pytest.mark.parametrize("dims", [384, 768])
def test_every_entry_as_similar_as_the_floor_is_a_candidate_scored_within_the_margin(dims: int) -> None:
    rng = np.random.default_rng(dims)
    matrix = unit_rows(rng, 20_000, dims)
    index = LocalIndex()
    index.add((f"k{i}", "scope", "d", matrix[i], LATER) for i in range(len(matrix)))
    floor = 0.73
    for i in rng.integers(0, len(matrix), 300):
        query = at_similarity(rng, matrix[i], rng.uniform(floor, 0.999))
        exact = matrix @ query.astype(np.float32)
        best = int(np.argmax(exact))
        found = index.candidates("scope", "d", query.tolist(), floor, 3, NOW)
        assert found and found[0][0] == f"k{best}"
        assert abs(found[0][1] - exact[best]) < MARGIN / 2
        assert all(score >= floor - MARGIN for _, score in found)


def test_nothing_is_a_candidate_below_the_floor_less_the_margin() -> None:
    rng = np.random.default_rng(1)
    matrix = unit_rows(rng, 5_000, 384)
    index = LocalIndex()
    index.add((f"k{i}", "scope", "d", matrix[i], LATER) for i in range(len(matrix)))
    for _ in range(100):
        query = rng.standard_normal(384)
        for key, score in index.candidates("scope", "d", query.tolist(), 0.5, 5, NOW):
            exact = float(matrix[int(key[1:])] @ (query / np.linalg.norm(query)))
            assert score >= 0.5 - MARGIN and exact >= 0.5 - MARGIN - 0.005


def test_scopes_digests_sizes_and_expiry_keep_entries_apart() -> None:
    index = LocalIndex()
    vector = [1.0, 0.1, 0.0, 0.0]
    index.add([("mine", "s", "d1", vector, LATER), ("other-scope", "t", "d1", vector, LATER),
               ("old-digest", "s", "d0", vector, LATER), ("expired", "s", "d1", vector, NOW - 1),
               ("longer", "s", "d1", [*vector, 0.0], LATER), ("exact-only", "s", "d1", None, LATER)])
    assert [key for key, _ in index.candidates("s", "d1", vector, 0.9, 10, NOW)] == ["mine"]
    assert [key for key, _ in index.candidates("s", "d0", vector, 0.9, 10, NOW)] == ["old-digest"]
    assert [key for key, _ in index.candidates("s", "d1", [*vector, 0.0], None, 10, NOW)] == ["longer"]
    assert index.has("exact-only", "d1", NOW) and not index.has("exact-only", "d0", NOW)
    assert not index.has("expired", "d1", NOW) and not index.has("nobody", "d1", NOW)
    index.purge(NOW)
    assert len(index) == 5 and index.keys() == {"mine", "other-scope", "old-digest", "longer", "exact-only"}


def test_a_key_added_again_replaces_its_entry() -> None:
    index = LocalIndex()
    index.add([("k", "s", "d", [1.0, 0.0, 0.0], LATER)])
    index.add([("k", "s", "d", [0.0, 1.0, 0.0], LATER)])
    assert len(index) == 1
    assert index.candidates("s", "d", [1.0, 0.0, 0.0], 0.5, 3, NOW) == []
    assert [key for key, _ in index.candidates("s", "d", [0.0, 1.0, 0.0], 0.5, 3, NOW)] == ["k"]


def test_discarded_entries_are_gone_and_the_rest_survive_compaction() -> None:
    rng = np.random.default_rng(2)
    matrix = unit_rows(rng, 3_000, 64)
    index = LocalIndex()
    index.add((f"k{i}", "s", "d", matrix[i], LATER) for i in range(len(matrix)))
    index.discard(f"k{i}" for i in range(0, 3_000, 4))
    index.discard(f"k{i}" for i in range(1, 3_000, 4))
    index.discard(f"k{i}" for i in range(2, 3_000, 4))  # the dead now outnumber the living: compacted
    assert len(index) == 750 and index.nbytes() < 750 * 2 * (64 + 100)
    for i in range(3, 3_000, 100):  # kept
        assert index.candidates("s", "d", matrix[i].tolist(), 0.99, 1, NOW)[0][0] == f"k{i}"
    for i in range(0, 3_000, 100):  # discarded
        assert not index.has(f"k{i}", "d", NOW)
        assert all(key != f"k{i}" for key, _ in index.candidates("s", "d", matrix[i].tolist(), 0.5, 9, NOW))


def test_a_gateway_without_the_cache_never_loads_numpy(tmp_path: Path) -> None:
    """numpy (20 MiB) is the cache's alone: the default exporter stays as small as bench/scrape.py measures it."""
    code = ("import sys\n"
            "from singularity_ops.config import load_config\n"
            "from singularity_ops.exporter.app import Exporter\n"
            f"flags = {{'home': {str(tmp_path)!r}, 'gateway.listen': '127.0.0.1:0'}}\n"
            "config = load_config(flags=flags, environ={})\n"
            "Exporter.build(config, with_database=False, with_gateway=True)\n"
            "print(sorted(m for m in ('numpy', 'singularity_ops.exporter.gateway.cache.index') if m in sys.modules))\n")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert found.stdout.strip() == "[]", found.stderr
