"""A gzip-compressed tar stream in constant memory: ``TarWriter`` yields it member by member (the encryption pulls
it), ``TarReader`` parses it as it is pushed in (the decryption pushes it), handing out each member's bytes as they
come. What ``tar -xz`` reads: POSIX ustar headers, with a pax header where a name or a size needs one; regular
files only, mode 0600. No member is ever held whole in memory.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator

from singularity_ops.controllers.backup.errors import BackupCorrupt, BackupError

BLOCK = 512
RECORD = 20 * BLOCK  # tar's default record: the archive is padded to a multiple of it
STEP = 1 << 20  # at most this much is compressed or decompressed in one call
_ZERO = bytes(BLOCK)
_MAX_PAX = 1 << 20


class TarWriter:
    """The compressed bytes of a tar archive, yielded as they are made."""

    def __init__(self, level: int) -> None:
        self._gzip = zlib.compressobj(level, zlib.DEFLATED, 31)
        self._written = 0  # uncompressed

    def _compress(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        view = memoryview(data).cast("B")
        self._written += len(view)
        for start in range(0, len(view), STEP):
            out = self._gzip.compress(view[start:start + STEP])
            if out:
                yield out

    def member(self, name: str, size: int, chunks: Iterable[bytes | bytearray | memoryview],
               mtime: float) -> Iterator[bytes]:
        """One regular file of exactly ``size`` bytes, read from ``chunks``."""
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime, info.type = size, 0o600, int(mtime), tarfile.REGTYPE
        yield from self._compress(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        done = 0
        for chunk in chunks:
            done += len(chunk)
            if done > size:
                raise BackupError(f"{name} grew while it was being backed up")
            yield from self._compress(chunk)
        if done != size:
            raise BackupError(f"{name} shrank while it was being backed up ({done} of {size} bytes)")
        yield from self._compress(bytes(-size % BLOCK))

    def close(self) -> Iterator[bytes]:
        """The end-of-archive blocks, the padding to a whole record, and the end of the gzip stream."""
        end = 2 * BLOCK
        end += -(self._written + end) % RECORD
        yield from self._compress(bytes(end))
        yield self._gzip.flush()


class TarReader:
    """Parses a compressed tar stream pushed in with ``feed``: ``on_member(name, size)`` at each member's header,
    then ``on_data`` with its bytes, piece by piece. ``finish`` checks that the archive and the gzip stream ended."""

    def __init__(self, name: str, on_member: Callable[[str, int], None],
                 on_data: Callable[[memoryview], None]) -> None:
        self.name = name
        self._on_member, self._on_data = on_member, on_data
        self._inflater = zlib.decompressobj(31)
        self._header = bytearray()
        self._state = "header"  # header | pax | data | padding | end
        self._left = 0
        self._padding = 0
        self._pax = bytearray()
        self._overrides: dict[str, str] = {}

    def _corrupt(self, what: str) -> BackupCorrupt:
        return BackupCorrupt(f"{self.name}: the tar archive inside {what}; restore from another backup")

    def feed(self, data: bytes | memoryview) -> None:
        if self._inflater.eof:
            if data:
                raise self._corrupt("has data after its end")
            return
        pending: bytes | memoryview = data
        while True:
            try:
                out = self._inflater.decompress(pending, STEP)
            except zlib.error as exc:
                raise self._corrupt(f"is damaged (gzip: {exc})") from None
            if out:
                self._parse(memoryview(out))
            pending = self._inflater.unconsumed_tail
            if self._inflater.eof:
                if pending or self._inflater.unused_data:
                    raise self._corrupt("has data after its end")
                return
            if not pending and len(out) < STEP:
                return

    def finish(self) -> None:
        if not self._inflater.eof:
            raise self._corrupt("ends early (the gzip stream is cut)")
        if self._state != "end":
            raise self._corrupt("ends early (no end-of-archive blocks)")

    def _parse(self, view: memoryview) -> None:
        while view:
            if self._state == "end":
                if any(view):
                    raise self._corrupt("has data after its end-of-archive blocks")
                return
            if self._state == "header":
                need = BLOCK - len(self._header)
                self._header += view[:need]
                view = view[need:]
                if len(self._header) == BLOCK:
                    self._start(bytes(self._header))
                    self._header.clear()
                continue
            take = view[:self._left]
            view = view[len(take):]
            self._left -= len(take)
            if self._state == "data":
                self._on_data(take)
            elif self._state == "pax":
                self._pax += take
            if self._left == 0:
                self._advance()

    def _start(self, block: bytes) -> None:
        if block == _ZERO:
            self._state = "end"
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise self._corrupt(f"has a damaged header ({exc})") from None
        if info.type == tarfile.XHDTYPE:
            if info.size > _MAX_PAX:
                raise self._corrupt(f"has a {info.size}-byte pax header")
            self._state, self._left, self._padding = "pax", info.size, -info.size % BLOCK
        elif info.type in tarfile.REGULAR_TYPES:
            name = self._overrides.get("path", info.name)
            try:
                size = int(self._overrides.get("size", info.size))
            except ValueError:
                raise self._corrupt("has a damaged pax size") from None
            self._overrides = {}
            self._on_member(name, size)
            self._state, self._left, self._padding = "data", size, -size % BLOCK
        else:
            raise self._corrupt(f"has a member of type {info.type!r} ({info.name}), which backups never hold")
        if self._left == 0:
            self._advance()

    def _advance(self) -> None:
        """The current data (or pax payload) is complete: skip its padding, then the next header."""
        if self._state == "pax":
            self._overrides = _pax_records(bytes(self._pax), self._corrupt)
            self._pax.clear()
        if self._state in ("data", "pax") and self._padding:
            self._state, self._left, self._padding = "padding", self._padding, 0
        else:
            self._state = "header"


def _pax_records(data: bytes, corrupt: Callable[[str], BackupCorrupt]) -> dict[str, str]:
    """``LENGTH key=value\\n`` records (POSIX pax extended header)."""
    records, position = {}, 0
    while position < len(data):
        space = data.find(b" ", position)
        try:
            length = int(data[position:space])
        except ValueError:
            raise corrupt("has a damaged pax header") from None
        record = data[space + 1:position + length]
        if length <= 0 or space < 0 or not record.endswith(b"\n") or b"=" not in record:
            raise corrupt("has a damaged pax header")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        position += length
    return records
