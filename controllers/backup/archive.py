"""What the encryption wraps: one gzip stream of records, the backup's members and then its manifest.

A record is a kind byte, a big-endian 32-bit length and the payload: ``F`` starts a member (JSON: name,
type), ``D`` carries up to 1 MiB of its bytes, ``M`` is the manifest (JSON) and ends the archive. Records rather
than tar because a tar member states its size up front and ``pg_dump``'s output size is known only at its end;
writing the dump to disk first would put plaintext there. Decrypted, the stream is a plain ``.gz`` file.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, Protocol

from singularity_ops.controllers.backup.format import BackupCorrupt

BLOCK = 1 << 20
_RECORD = struct.Struct(">cI")
_FILE, _DATA, _MANIFEST = b"F", b"D", b"M"
_MAX_JSON = 16 << 20

Progress = Callable[[int], None]


class Sink(Protocol):
    def write(self, data: bytes) -> int: ...


class ArchiveWriter:
    def __init__(self, sink: Sink, level: int = 1) -> None:
        self._sink = sink
        self._gzip = zlib.compressobj(level, zlib.DEFLATED, 31)
        self.members: list[dict[str, Any]] = []

    def _record(self, kind: bytes, payload: bytes | memoryview) -> None:
        compressed = self._gzip.compress(_RECORD.pack(kind, len(payload)))
        compressed += self._gzip.compress(payload)
        if compressed:
            self._sink.write(compressed)

    def add(self, name: str, source: BinaryIO, kind: str = "file", progress: Progress | None = None) -> dict[str, Any]:
        """Append a member read from ``source`` to its end, one block at a time; returns its manifest entry."""
        self._record(_FILE, json.dumps({"name": name, "type": kind}).encode())
        digest, size = hashlib.sha256(), 0
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        while True:
            count = source.readinto(view)  # type: ignore[attr-defined]
            if not count:
                break
            block = view[:count]
            digest.update(block)
            self._record(_DATA, block)
            size += count
            if progress is not None:
                progress(count)
        entry = {"name": name, "type": kind, "bytes": size, "sha256": digest.hexdigest()}
        self.members.append(entry)
        return entry

    def finish(self, manifest: dict[str, Any]) -> None:
        self._record(_MANIFEST, json.dumps(manifest, sort_keys=True).encode())
        self._sink.write(self._gzip.flush())


def _gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress with bounded output per step, so a highly compressed chunk never expands all at once."""
    inflater = zlib.decompressobj(31)
    for chunk in chunks:
        if inflater.eof:
            raise BackupCorrupt("the archive has data after its end")
        data = chunk
        while True:
            try:
                out = inflater.decompress(data, BLOCK)
            except zlib.error as exc:
                raise BackupCorrupt(f"the archive inside is damaged ({exc})") from None
            if out:
                yield out
            data = inflater.unconsumed_tail
            if not data and len(out) < BLOCK:
                break
        if inflater.unused_data:
            raise BackupCorrupt("the archive has data after its end")
    if not inflater.eof:
        raise BackupCorrupt("the archive inside ends early")


Event = tuple[str, Any]  # ("member", {"name", "type"}), ("data", bytes), ("manifest", dict)


def read_archive(chunks: Iterable[bytes], name: str) -> Iterator[Event]:
    """The records of an archive as events; at the end each member's size and SHA-256 are checked against the
    manifest (the last event)."""
    buffer = bytearray()
    member: dict[str, Any] | None = None
    digest = hashlib.sha256()
    seen: list[dict[str, Any]] = []
    manifest: dict[str, Any] | None = None

    def close_member() -> None:
        if member is not None:
            seen.append({**member, "bytes": member["bytes"], "sha256": digest.hexdigest()})

    for piece in _gunzip(chunks):
        buffer += piece
        while len(buffer) >= _RECORD.size:
            kind, length = _RECORD.unpack_from(buffer)
            if length > (BLOCK if kind == _DATA else _MAX_JSON):
                raise BackupCorrupt(f"{name}: the archive inside is damaged (a {length}-byte record)")
            if len(buffer) < _RECORD.size + length:
                break
            payload = bytes(buffer[_RECORD.size:_RECORD.size + length])
            del buffer[:_RECORD.size + length]
            if manifest is not None:
                raise BackupCorrupt(f"{name}: the archive inside has records after its manifest")
            if kind == _DATA:
                if member is None:
                    raise BackupCorrupt(f"{name}: the archive inside has data outside any member")
                member["bytes"] += length
                digest.update(payload)
                yield "data", payload
            elif kind in (_FILE, _MANIFEST):
                close_member()
                member, digest = None, hashlib.sha256()
                try:
                    decoded = json.loads(payload)
                except ValueError:
                    raise BackupCorrupt(f"{name}: the archive inside has a damaged record") from None
                if kind == _FILE:
                    member = {"name": decoded["name"], "type": decoded["type"], "bytes": 0}
                    yield "member", {"name": member["name"], "type": member["type"]}
                else:
                    manifest = decoded
            else:
                raise BackupCorrupt(f"{name}: the archive inside has an unknown record {kind!r}")
    if manifest is None or buffer:
        raise BackupCorrupt(f"{name}: the archive inside ends without its manifest")
    expected = [{k: m[k] for k in ("name", "type", "bytes", "sha256")} for m in manifest.get("contents", [])]
    if expected != seen:
        raise BackupCorrupt(f"{name}: the members do not match the checksums in its manifest; restore from another "
                            "backup")
    yield "manifest", manifest
