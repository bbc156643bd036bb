"""The gateway's in-process index of the cache's entries, in front of PostgreSQL (which stays the store of record):
it decides a miss without a round trip, and names the few entries a hit must be read from the database.

Per entry it keeps what a lookup compares, never the answer: a hash of the key and of the scope (with the model's
digest and the embedding's length), the expiry, a 128-bit SimHash of the embedding (the signs of 128 fixed random
projections: two vectors at angle θ differ in a fraction θ/π of them, whatever the embedding model) and the
embedding in int8. A semantic lookup scans the scope's SimHashes (two XORs and popcounts per entry), keeps those
whose Hamming distance a similarity at the floor could still reach (4 standard deviations of slack: an entry at the
floor is dropped about once in 30,000), re-scores the 256 nearest of them with the int8 vectors (within ~0.005 of
the float cosine) and returns those within MARGIN of the floor; the database then gives their exact similarity and
the answer. About 600 bytes an entry at 384 dimensions with sha256 keys and the arrays' growth slack
(bench/cache_lookup.py measures it).

numpy does the scans; it is imported only by a gateway whose cache is enabled.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Iterable, Sequence

import numpy as np

BITS = 128  # at most 255: Hamming distances are counted in uint8
WORDS = BITS // 64
RESCORED = 256  # nearest by Hamming distance re-scored with the int8 vectors
MARGIN = 0.01  # int8 scores this far under the floor still go to the database for their exact similarity
SLACK = 4.0  # standard deviations of Hamming distance above the floor's expectation
DEAD = 0  # the scope hash of a deleted row (hashes are made odd, never 0)
# A table's arrays with one row per entry along their first axis (``codes`` is word-major: rows along its second).
BY_ROW = ("key_hash", "digest_hash", "scope_hash", "expires", "keys", "vectors", "norms")


def _hash(*parts: str | int) -> int:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") | 1


def _cutoff(floor: float) -> int:
    """The Hamming distance under which an entry may still have a cosine similarity of ``floor`` or more."""
    if floor <= -1.0:
        return BITS
    p = math.acos(max(-1.0, min(1.0, floor))) / math.pi
    return min(BITS, math.ceil(BITS * p + SLACK * math.sqrt(BITS * p * (1 - p))))


# key, scope, the model's digest, the embedding (None: exact lookups only), expiry in seconds since the epoch
Row = tuple[str, str, str, Sequence[float] | None, float]


class _Table:
    """The entries whose embeddings have one length (0: no embedding, exact lookups only); rows are appended and
    marked dead, and compacted once the dead outnumber the living. ``row_of`` finds a key's row without a scan;
    ``in_scope`` counts the living rows of each scope, so that a scope holding most of the table is scanned in place
    (no gather) and an absent one not at all."""

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self.n = 0
        self.dead = 0
        self.row_of: dict[int, int] = {}
        self.in_scope: dict[int, int] = {}
        self.key_hash = np.zeros(0, np.uint64)
        self.digest_hash = np.zeros(0, np.uint64)
        self.scope_hash = np.zeros(0, np.uint64)  # scope + digest + dims: what a semantic lookup must share
        self.expires = np.zeros(0, np.float64)
        self.keys = np.zeros(0, "S1")
        self.codes = np.zeros((WORDS, 0), np.uint64)  # word-major: each word's scan reads contiguous memory
        self.vectors = np.zeros((0, dims), np.int8)
        self.norms = np.zeros(0, np.float32)
        if dims:
            self.planes = np.random.default_rng(dims).standard_normal((BITS, dims)).astype(np.float32)

    def nbytes(self) -> int:
        arrays = [getattr(self, name) for name in BY_ROW] + [self.codes]
        dicts = sys.getsizeof(self.row_of) + sys.getsizeof(self.in_scope) + 32 * (len(self.row_of) + len(self.in_scope))
        return sum(a.nbytes for a in arrays) + dicts + (self.planes.nbytes if self.dims else 0)

    def code(self, vectors: np.ndarray) -> np.ndarray:
        """SimHashes of unit vectors (rows), word-major: (WORDS, rows)."""
        bits = np.packbits((vectors @ self.planes.T) > 0, axis=1)
        return np.ascontiguousarray(bits.view(np.uint64).T)

    def _grow(self, extra: int, key_width: int) -> None:
        need = self.n + extra
        capacity = len(self.key_hash)
        if need > capacity:
            capacity = max(need, capacity + capacity // 2, 64)
            for name in BY_ROW:
                old = getattr(self, name)
                grown = np.zeros((capacity, *old.shape[1:]), old.dtype)
                grown[:self.n] = old[:self.n]
                setattr(self, name, grown)
            codes = np.zeros((WORDS, capacity), np.uint64)
            codes[:, :self.n] = self.codes[:, :self.n]
            self.codes = codes
        if key_width > self.keys.dtype.itemsize:
            self.keys = self.keys.astype(f"S{key_width}")

    def append(self, rows: list[Row], key_hashes: list[int]) -> None:
        encoded = [row[0].encode() for row in rows]
        self._grow(len(rows), max(map(len, encoded)))
        at = slice(self.n, self.n + len(rows))
        scopes = [_hash(scope, digest, self.dims) for _, scope, digest, _, _ in rows]
        self.key_hash[at] = key_hashes
        self.digest_hash[at] = [_hash(digest) for _, _, digest, _, _ in rows]
        self.scope_hash[at] = scopes
        self.expires[at] = [expires_at for *_, expires_at in rows]
        self.keys[at] = encoded
        if self.dims:
            matrix = np.asarray([row[3] for row in rows], np.float32).reshape(len(rows), self.dims)
            matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
            self.codes[:, at] = self.code(matrix)
            scale = 127.0 / np.maximum(np.abs(matrix).max(axis=1, keepdims=True), 1e-12)
            quantised = np.rint(matrix * scale).astype(np.int8)
            self.vectors[at] = quantised
            self.norms[at] = np.maximum(np.linalg.norm(quantised.astype(np.float32), axis=1), 1e-12)
        for offset, (key_hash, scope) in enumerate(zip(key_hashes, scopes, strict=True)):
            self.row_of[key_hash] = self.n + offset
            self.in_scope[scope] = self.in_scope.get(scope, 0) + 1
        self.n += len(rows)

    def kill(self, rows: list[int]) -> None:
        for row in rows:
            del self.row_of[int(self.key_hash[row])]
            scope = int(self.scope_hash[row])
            self.in_scope[scope] -= 1
            if not self.in_scope[scope]:
                del self.in_scope[scope]
        self.key_hash[rows] = DEAD
        self.scope_hash[rows] = DEAD
        self.dead += len(rows)
        if self.dead > max(1024, self.n - self.dead):
            self._compact()

    def _compact(self) -> None:
        keep = np.flatnonzero(self.key_hash[:self.n] != DEAD)
        for name in BY_ROW:
            setattr(self, name, getattr(self, name)[keep])  # indexing by an array copies
        self.codes = np.ascontiguousarray(self.codes[:, keep])
        self.n, self.dead = len(keep), 0
        self.row_of = dict(zip(self.key_hash.tolist(), range(self.n), strict=True))

    def live(self) -> int:
        return self.n - self.dead


class LocalIndex:
    def __init__(self) -> None:
        self._tables: dict[int, _Table] = {}
        self.ready = False  # loaded from the database once; until then lookups go to it
        self.revision = 0  # the highest cache_entries.revision read from the database

    def __len__(self) -> int:
        return sum(table.live() for table in self._tables.values())

    def nbytes(self) -> int:
        return sum(table.nbytes() for table in self._tables.values())

    def add(self, rows: Iterable[Row]) -> None:
        """New entries, or new versions of entries already there (the old ones go)."""
        rows = list({row[0]: row for row in rows}.values())
        if not rows:
            return
        hashes = [_hash(row[0]) for row in rows]
        self._kill(hashes)
        by_dims: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            by_dims.setdefault(len(row[3]) if row[3] is not None else 0, []).append(i)
        for dims, at in by_dims.items():
            table = self._tables.get(dims) or self._tables.setdefault(dims, _Table(dims))
            table.append([rows[i] for i in at], [hashes[i] for i in at])

    def discard(self, keys: Iterable[str]) -> None:
        self._kill([_hash(key) for key in keys])

    def _kill(self, hashes: list[int]) -> None:
        for table in self._tables.values():
            rows = [row for row in map(table.row_of.get, hashes) if row is not None]
            if rows:
                table.kill(rows)

    def purge(self, now: float) -> None:
        """Expired entries out (the database's upkeep deletes them too)."""
        for table in self._tables.values():
            expired = np.flatnonzero((table.expires[:table.n] <= now) & (table.key_hash[:table.n] != DEAD))
            if len(expired):
                table.kill(expired.tolist())

    def keys(self) -> set[str]:
        return {key.decode() for table in self._tables.values()
                for key in table.keys[:table.n][table.key_hash[:table.n] != DEAD]}

    def has(self, key: str, digest: str, now: float) -> bool:
        wanted, digest_hash = _hash(key), _hash(digest)
        for table in self._tables.values():
            row = table.row_of.get(wanted)
            if row is not None and table.digest_hash[row] == digest_hash and table.expires[row] > now:
                return True
        return False

    def candidates(self, scope: str, digest: str, vector: Sequence[float], floor: float | None, limit: int,
                   now: float) -> list[tuple[str, float]]:
        """Keys of the scope's entries that may be as similar as ``floor`` (None: any), with their int8 scores,
        best first; at most ``limit``."""
        table = self._tables.get(len(vector))
        wanted = _hash(scope, digest, len(vector))
        if table is None or not table.in_scope.get(wanted):
            return []
        query = np.array(vector, np.float32)
        query /= max(float(np.linalg.norm(query)), 1e-12)
        low = -1.0 if floor is None else floor - MARGIN
        code = table.code(query[None, :])[:, 0]
        if 2 * table.in_scope[wanted] >= table.n:  # most of the table: scan it in place, other rows filtered after
            distance = _hamming(table.codes[:, :table.n], code)
            near = np.flatnonzero(distance <= _cutoff(low))
            near = near[table.scope_hash[near] == wanted]
            at = near
        else:
            rows = np.flatnonzero(table.scope_hash[:table.n] == wanted)
            distance = _hamming(table.codes[:, rows], code)
            near = np.flatnonzero(distance <= _cutoff(low))
            at = rows[near]
        if len(near) > RESCORED:
            best = np.argpartition(distance[near], RESCORED)[:RESCORED]
            at = at[best]
        at = at[table.expires[at] > now]
        scores = (table.vectors[at].astype(np.float32) @ query) / table.norms[at]
        order = np.argsort(-scores, kind="stable")[:limit]
        return [(table.keys[at[i]].decode(), float(scores[i])) for i in order if scores[i] >= low]


def _hamming(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Bits that differ from ``query``, per column of ``codes`` (at most BITS = 128: uint8 holds it)."""
    scratch = np.empty(codes.shape[1], np.uint64)
    total = np.empty(codes.shape[1], np.uint8)
    counts = np.empty(codes.shape[1], np.uint8)
    np.bitwise_count(np.bitwise_xor(codes[0], query[0], out=scratch), out=total)
    for word in range(1, WORDS):
        np.bitwise_count(np.bitwise_xor(codes[word], query[word], out=scratch), out=counts)
        np.add(total, counts, out=total)
    return total
