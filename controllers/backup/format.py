"""The encrypted backup file: AES-256-GCM in the STREAM construction, constant memory whatever the size.

The layout follows Tink's streaming AEAD (itself Hoang–Reyhanitabar–Rogaway–Vizár's STREAM): a header, then
fixed-size chunks each sealed with a subkey derived from the file's random salt and a nonce made of a random
prefix, the chunk's counter and a last-chunk flag. A flipped byte fails that chunk's tag; reordered chunks fail
because the counter is in the nonce; a file cut at a chunk boundary fails because its new last chunk was sealed
as "not last"; bytes appended after the last chunk fail the other way round. The header is the associated data
of every chunk, so it cannot be changed either. docs/BACKUPS.md#the-file-format has the byte layout.

Nothing here ever hands out a byte that has not been authenticated: ``decrypt`` yields a chunk only after its
tag checked out, so a consumer sees a prefix of the genuine plaintext and then an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import string
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from singularity_ops.errors import SingularityError

log = logging.getLogger(__name__)

MAGIC = b"SNGBAK"
VERSION = 1
# magic, version, log2 of the plaintext chunk size, key id, HKDF salt, nonce prefix
_HEADER = struct.Struct(">6sBB8s32s7s")
HEADER_SIZE = _HEADER.size  # 55
TAG_SIZE = 16
DEFAULT_CHUNK_LOG = 20  # 1 MiB of plaintext per chunk
_CHUNK_LOGS = range(10, 25)  # 1 KiB .. 16 MiB
_MAX_CHUNKS = 2**32
_KEY_HEX_DIGITS = 64


class BackupError(SingularityError):
    """A backup could not be made, read, verified or restored; the message says why and what to do."""


class BackupCorrupt(BackupError):
    """The file is not the backup it claims to be: it fails authentication or its checksums."""


class BackupKey:
    """The 32-byte master key. Its bytes never leave this object except into HKDF; ``key_id`` is a one-way
    fingerprint, safe to print, that tells which key a backup needs."""

    __slots__ = ("_secret", "key_id")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("a backup key is 32 bytes")
        self._secret = secret
        self.key_id = _derive(secret, None, b"singularity-ops backup key id", 8).hex()

    def subkey(self, salt: bytes, header: bytes) -> bytes:
        return _derive(self._secret, salt, b"singularity-ops backup v1 " + header[:8], 32)

    def __repr__(self) -> str:
        return f"BackupKey(key_id={self.key_id!r})"

    __str__ = __repr__


def _derive(secret: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=SHA256(), length=length, salt=salt, info=info).derive(secret)


def _key_problem(path: Path) -> BackupError:
    return BackupError(f"backup key file {path} does not hold a key (expected {_KEY_HEX_DIGITS} hex digits, as "
                       "written by `singularity-ops backup keygen` or `openssl rand -hex 32`); point "
                       "SINGULARITY_BACKUP_KEY_FILE at the right file")


def load_key(path: Path | None) -> BackupKey:
    if path is None:
        raise BackupError("no backup key: set SINGULARITY_BACKUP_KEY_FILE to a key file (create one with "
                          "`singularity-ops backup keygen`); backups are never written unencrypted")
    try:
        with open(path, "rb") as file:
            raw = file.read(4 * _KEY_HEX_DIGITS)
            mode = os.fstat(file.fileno()).st_mode
    except OSError as exc:
        raise BackupError(f"cannot read backup key file {path}: {exc.strerror}; check SINGULARITY_BACKUP_KEY_FILE "
                          "(create a key with `singularity-ops backup keygen`)") from None
    text = raw.strip()
    if len(text) != _KEY_HEX_DIGITS or not all(chr(c) in string.hexdigits for c in text):
        raise _key_problem(path)
    if mode & 0o077:
        log.warning("backup key file %s can be read by other users (mode %03o); chmod 600 it", path, mode & 0o777)
    return BackupKey(bytes.fromhex(text.decode("ascii")))


def write_new_key(path: Path) -> BackupKey:
    """Create ``path`` (mode 0600) holding a new random key. An existing file is never replaced: the backups
    made with it would become unreadable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BackupError(f"{path} already exists; keygen never replaces a key (the backups made with it need it). "
                          "Move it away first, or name another file with --output") from None
    except OSError as exc:
        raise BackupError(f"cannot create key file {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(secret.hex().encode() + b"\n")
        file.flush()
        os.fsync(file.fileno())
    return BackupKey(secret)


@dataclass(frozen=True)
class Header:
    raw: bytes
    version: int
    chunk_size: int
    key_id: str
    salt: bytes
    nonce_prefix: bytes


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class EncryptingWriter:
    """A file-like sink: bytes written are sealed chunk by chunk into ``sink``; ``close()`` seals the last one.
    Holds at most one chunk of plaintext."""

    def __init__(self, sink: BinaryIO, key: BackupKey, chunk_log: int = DEFAULT_CHUNK_LOG) -> None:
        if chunk_log not in _CHUNK_LOGS:
            raise ValueError(f"chunk_log must be in {_CHUNK_LOGS.start}..{_CHUNK_LOGS.stop - 1}")
        self._sink = sink
        self.chunk_size = 1 << chunk_log
        salt, self._prefix = secrets.token_bytes(32), secrets.token_bytes(7)
        self.header = _HEADER.pack(MAGIC, VERSION, chunk_log, bytes.fromhex(key.key_id), salt, self._prefix)
        self._aead = AESGCM(key.subkey(salt, self.header))
        self._out = bytearray(self.chunk_size + TAG_SIZE)
        self._pending = bytearray()
        self._counter = 0
        self.closed = False
        self.plaintext_bytes = 0
        sink.write(self.header)

    def _seal(self, chunk: bytes | bytearray | memoryview, last: bool) -> None:
        if self._counter >= _MAX_CHUNKS:
            raise BackupError("backup too large for one file (2^32 chunks)")
        size = len(chunk) + TAG_SIZE
        out = memoryview(self._out)[:size]
        self._aead.encrypt_into(_nonce(self._prefix, self._counter, last), chunk, self.header, out)
        self._sink.write(out)
        self._counter += 1

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        size, chunk = len(view), self.chunk_size
        self.plaintext_bytes += size
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
        if not self.closed:
            self._seal(self._pending, last=True)
            self._pending.clear()
            self.closed = True


def read_header(source: BinaryIO, name: str) -> Header:
    raw = source.read(HEADER_SIZE)
    if len(raw) < len(MAGIC) or raw[:len(MAGIC)] != MAGIC:
        raise BackupCorrupt(f"{name} is not a Singularity Ops backup (it does not start with {MAGIC.decode()}); "
                            "pick a .sgbk file from `singularity-ops backup list`")
    if raw[len(MAGIC)] != VERSION:
        raise BackupError(f"{name} is backup format version {raw[len(MAGIC)]}; this singularity-ops reads version "
                          f"{VERSION}: use the singularity-ops version that made it")
    if len(raw) < HEADER_SIZE:
        raise BackupCorrupt(f"{name} is truncated: it ends inside its header")
    _, version, chunk_log, key_id, salt, prefix = _HEADER.unpack(raw)
    if chunk_log not in _CHUNK_LOGS:
        raise BackupCorrupt(f"{name} has a damaged header (chunk size 2^{chunk_log}); restore from another backup")
    return Header(raw, version, 1 << chunk_log, key_id.hex(), salt, prefix)


def decrypt(source: BinaryIO, key: BackupKey, name: str) -> Iterator[bytes]:
    """The plaintext of the backup in ``source``, chunk by chunk, each authenticated before it is yielded."""
    header = read_header(source, name)
    if not hmac.compare_digest(header.key_id, key.key_id):
        raise BackupError(f"{name} was encrypted with backup key {header.key_id}, but the key file holds key "
                          f"{key.key_id}; set SINGULARITY_BACKUP_KEY_FILE to the key the backup was made with")
    aead = AESGCM(key.subkey(header.salt, header.raw))
    segment = header.chunk_size + TAG_SIZE
    current = source.read(segment)
    counter, offset = 0, HEADER_SIZE
    while True:
        following = source.read(segment) if len(current) == segment else b""
        last = not following
        try:
            plain = aead.decrypt(_nonce(header.nonce_prefix, counter, last), current, header.raw)
        except InvalidTag:
            raise _diagnose(aead, header, current, counter, offset, last, name, source, following) from None
        yield plain
        if last:
            return
        offset += len(current)
        current, counter = following, counter + 1


def _diagnose(aead: AESGCM, header: Header, chunk: bytes, counter: int, offset: int, last: bool, name: str,
              source: BinaryIO, following: bytes) -> BackupCorrupt:
    """Tell a cut or an appended tail from a damaged chunk: a chunk that opens with the other flag says which."""
    where = f"chunk {counter} (bytes {offset}..{offset + len(chunk)})"
    if len(chunk) < TAG_SIZE:
        return BackupCorrupt(f"{name} is truncated: it ends {len(chunk)} bytes into {where}; restore from another "
                             "backup")
    try:
        aead.decrypt(_nonce(header.nonce_prefix, counter, not last), chunk, header.raw)
    except InvalidTag:
        return BackupCorrupt(f"{name} is damaged or was tampered with: {where} fails authentication (a changed "
                             "byte, or chunks missing or out of order); restore from another backup")
    if last:
        return BackupCorrupt(f"{name} is truncated: it ends after {where} without its final chunk; restore from "
                             "another backup")
    extra = len(following) + sum(len(block) for block in iter(lambda: source.read(1 << 20), b""))
    return BackupCorrupt(f"{name} has {extra} unexpected bytes after its final chunk ({where}); it was appended "
                         "to: restore from another backup")


def sha256_file(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file, read in blocks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()
