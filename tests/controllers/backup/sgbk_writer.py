"""The writer of the old backup format (sgbk), as it was in the product before the age format: kept in the tests
only, to make old-format files to read back and damage (the product reads this format and never writes it)."""

from __future__ import annotations

import hashlib
import json
import secrets
import zlib
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from singularity_ops.controllers.backup.sgbk import (
    BLOCK,
    CHUNK_LOGS,
    DATA,
    FILE,
    HEADER,
    MAGIC,
    MANIFEST,
    RECORD,
    TAG_SIZE,
    VERSION,
    LegacyKey,
    nonce,
)


class EncryptingWriter:
    """Bytes written are sealed chunk by chunk into ``sink``; ``close()`` seals the last one."""

    def __init__(self, sink: BinaryIO, key: LegacyKey, chunk_log: int = 20) -> None:
        assert chunk_log in CHUNK_LOGS
        self._sink = sink
        self.chunk_size = 1 << chunk_log
        salt, self._prefix = secrets.token_bytes(32), secrets.token_bytes(7)
        self.header = HEADER.pack(MAGIC, VERSION, chunk_log, bytes.fromhex(key.key_id), salt, self._prefix)
        self._aead = AESGCM(key.subkey(salt, self.header))
        self._out = bytearray(self.chunk_size + TAG_SIZE)
        self._pending = bytearray()
        self._counter = 0
        sink.write(self.header)

    def _seal(self, chunk: bytes | bytearray | memoryview, last: bool) -> None:
        out = memoryview(self._out)[:len(chunk) + TAG_SIZE]
        self._aead.encrypt_into(nonce(self._prefix, self._counter, last), chunk, self.header, out)
        self._sink.write(out)
        self._counter += 1

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        size, chunk = len(view), self.chunk_size
        if len(self._pending) + size <= chunk:  # a full chunk is sealed only once more is known to follow
            self._pending += view
            return size
        if self._pending:
            need = chunk - len(self._pending)
            self._pending += view[:need]
            view = view[need:]
            self._seal(self._pending, last=False)
            self._pending.clear()
        while len(view) > chunk:
            self._seal(view[:chunk], last=False)
            view = view[chunk:]
        self._pending += view
        return size

    def close(self) -> None:
        self._seal(self._pending, last=True)


class ArchiveWriter:
    """The gzip stream of records: ``F`` (a member), ``D`` (up to 1 MiB of it), ``M`` (the manifest, last)."""

    def __init__(self, sink: EncryptingWriter, level: int = 1) -> None:
        self._sink = sink
        self._gzip = zlib.compressobj(level, zlib.DEFLATED, 31)
        self.members: list[dict[str, Any]] = []

    def _record(self, kind: bytes, payload: bytes | memoryview) -> None:
        out = self._gzip.compress(RECORD.pack(kind, len(payload))) + self._gzip.compress(payload)
        if out:
            self._sink.write(out)

    def add(self, name: str, source: BinaryIO, kind: str = "file") -> None:
        self._record(FILE, json.dumps({"name": name, "type": kind}).encode())
        digest, size = hashlib.sha256(), 0
        while block := source.read(BLOCK):
            digest.update(block)
            self._record(DATA, block)
            size += len(block)
        self.members.append({"name": name, "type": kind, "bytes": size, "sha256": digest.hexdigest()})

    def finish(self, manifest: dict[str, Any]) -> None:
        self._record(MANIFEST, json.dumps(manifest, sort_keys=True).encode())
        self._sink.write(self._gzip.flush())
