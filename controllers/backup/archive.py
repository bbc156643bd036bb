"""What an age backup holds, as tar members (tarball.py makes and parses the tar stream itself):

- ``database.dump.000000``, ``database.dump.000001``, …: the ``pg_dump --format=custom`` output in parts of 8 MiB
  (the last one shorter). Parts, because a tar member states its size before its data and pg_dump's size is known
  only at its end; holding one part in memory keeps memory flat without writing the dump to disk unencrypted.
  ``cat database.dump.* | pg_restore …`` joins them;
- ``config/<name>``, ``home/…``, ``files/…``: the config file and ``backup.include``;
- ``manifest.json``, last: what the backup holds, each member's size and SHA-256 (the dump as one member), row
  counts.

``ArchiveWriter`` yields the compressed stream; ``ArchiveReader`` takes the members back, hands the dump's bytes and
each file's to the caller, and checks everything against the manifest at the end.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from singularity_ops.controllers.backup.errors import BackupCorrupt
from singularity_ops.controllers.backup.tarball import TarReader, TarWriter

DUMP = "database.dump"
MANIFEST = "manifest.json"
DUMP_PART_BYTES = 8 << 20
READ = 1 << 20
_PART = re.compile(rf"{re.escape(DUMP)}\.(\d{{6}})")
_MAX_MANIFEST = 16 << 20

Progress = Callable[[int], None]
Event = tuple[str, Any]  # ("member", {"name", "type"}), ("data", bytes), ("manifest", dict)


def part_name(index: int) -> str:
    return f"{DUMP}.{index:06d}"


def _read_full(source: BinaryIO, buffer: bytearray) -> int:
    """Fill ``buffer`` from a pipe (which hands out less than asked); fewer bytes only at its end."""
    view, filled = memoryview(buffer), 0
    while filled < len(buffer):
        count = source.readinto(view[filled:])  # type: ignore[attr-defined]
        if not count:
            break
        filled += count
    return filled


def _blocks(view: memoryview) -> Iterator[memoryview]:
    for start in range(0, len(view), READ):
        yield view[start:start + READ]


class ArchiveWriter:
    def __init__(self, level: int, mtime: float, part_bytes: int = DUMP_PART_BYTES) -> None:
        self._tar = TarWriter(level)
        self._mtime = mtime
        self.part_bytes = part_bytes
        self.members: list[dict[str, Any]] = []

    def dump(self, source: BinaryIO, progress: Progress | None = None) -> Iterator[bytes]:
        """pg_dump's output, read from its pipe one part at a time (at least one part, however short)."""
        buffer = bytearray(self.part_bytes)
        digest, size, index = hashlib.sha256(), 0, 0
        while True:
            count = _read_full(source, buffer)
            if count == 0 and index > 0:
                break
            part = memoryview(buffer)[:count]
            digest.update(part)
            yield from self._tar.member(part_name(index), count, _blocks(part), self._mtime)
            if progress is not None and count:
                progress(count)
            size += count
            index += 1
            if count < self.part_bytes:
                break
        self.members.append({"name": DUMP, "type": "pg_dump", "bytes": size, "sha256": digest.hexdigest(),
                             "parts": index})

    def file(self, name: str, source: BinaryIO, size: int, mtime: float) -> Iterator[bytes]:
        """The first ``size`` bytes of a file (its size when opened: what a file that grows meanwhile, such as a
        log, gains is left out; one that shrinks fails the backup)."""
        digest = hashlib.sha256()

        def blocks() -> Iterator[bytes]:
            done = 0
            while done < size and (block := source.read(min(READ, size - done))):
                done += len(block)
                digest.update(block)
                yield block

        yield from self._tar.member(name, size, blocks(), mtime)
        self.members.append({"name": name, "type": "file", "bytes": size, "sha256": digest.hexdigest()})

    def finish(self, manifest: dict[str, Any]) -> Iterator[bytes]:
        data = json.dumps(manifest, sort_keys=True, indent=1).encode() + b"\n"
        yield from self._tar.member(MANIFEST, len(data), [data], self._mtime)
        yield from self._tar.close()


class ArchiveReader:
    """Takes a backup's tar stream (``feed`` the compressed bytes) and calls ``on_event`` with what it holds:
    ("member", {"name", "type"}), ("data", bytes) and, at ``finish``, ("manifest", dict) once every member matched
    the manifest's size and SHA-256."""

    def __init__(self, name: str, on_event: Callable[[str, Any], None]) -> None:
        self.name = name
        self._on_event = on_event
        self._tar = TarReader(name, self._member, self._data)
        self._current: dict[str, Any] | None = None
        self._digest = hashlib.sha256()
        self._seen: list[dict[str, Any]] = []
        self._parts = 0
        self._manifest: bytearray | None = None

    def _corrupt(self, what: str) -> BackupCorrupt:
        return BackupCorrupt(f"{self.name}: {what}; restore from another backup")

    def feed(self, data: bytes | memoryview) -> None:
        self._tar.feed(data)

    def _close_member(self) -> None:
        if self._current is not None:
            self._seen.append({**self._current, "sha256": self._digest.hexdigest()})
            self._current = None

    def _member(self, name: str, size: int) -> None:
        if self._manifest is not None:
            raise self._corrupt(f"the archive has a member ({name}) after its manifest")
        part = _PART.fullmatch(name)
        if part:
            if int(part.group(1)) != self._parts or (self._parts and (self._current or {}).get("name") != DUMP):
                raise self._corrupt(f"the database dump's parts are out of order ({name} after "
                                    f"{self._parts} parts)")
            self._parts += 1
            if self._parts > 1:
                return  # the dump goes on
        self._close_member()
        if name == MANIFEST:
            if size > _MAX_MANIFEST:
                raise self._corrupt(f"its manifest is {size} bytes")
            self._manifest = bytearray()
            return
        kind = "pg_dump" if part else "file"
        self._current = {"name": DUMP if part else name, "type": kind, "bytes": 0}
        self._digest = hashlib.sha256()
        self._on_event("member", {"name": self._current["name"], "type": kind})

    def _data(self, data: memoryview) -> None:
        if self._manifest is not None:
            self._manifest += data
            return
        assert self._current is not None
        self._current["bytes"] += len(data)
        self._digest.update(data)
        self._on_event("data", data)

    def finish(self) -> dict[str, Any]:
        self._tar.finish()
        if self._manifest is None:
            raise self._corrupt("the archive ends without its manifest")
        try:
            manifest = json.loads(self._manifest)
            expected = [{k: m[k] for k in ("name", "type", "bytes", "sha256")} for m in manifest["contents"]]
            parts = next((m.get("parts") for m in manifest["contents"] if m["type"] == "pg_dump"), 0)
        except (ValueError, KeyError, TypeError):
            raise self._corrupt("its manifest is damaged") from None
        if expected != self._seen or parts != self._parts:
            raise self._corrupt("the members do not match the checksums in its manifest")
        self._on_event("manifest", manifest)
        return manifest
