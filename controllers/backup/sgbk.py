"""The old backup format (``.sgbk``, format 1), read only: backups made before the age format still list,
verify and restore; nothing writes this format any more.

The file is AES-256-GCM in the STREAM construction (Hoang–Reyhanitabar–Rogaway–Vizár, laid out as Tink's
streaming AEAD): a 55-byte header (magic, version, chunk size, key id, salt, nonce prefix), then chunks sealed with
an HKDF-SHA256 subkey under a nonce made of the prefix, the chunk's counter and a last-chunk flag, with the header as
associated data. A flipped byte fails its chunk's tag, reordered chunks fail on the counter, a cut at a chunk
boundary fails on the flag. Inside is one gzip stream of records (a kind byte, a 32-bit length, the payload): ``F``
starts a member, ``D`` carries up to 1 MiB of it, ``M`` is the manifest and ends it. docs/BACKUPS.md#the-old-format
has the byte layout. Nothing is handed out before its chunk's tag checked out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import string
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from singularity_ops.controllers.backup.errors import BackupCorrupt, BackupError

MAGIC = b"SNGBAK"
VERSION = 1
# magic, version, log2 of the plaintext chunk size, key id, HKDF salt, nonce prefix
HEADER = struct.Struct(">6sBB8s32s7s")
HEADER_SIZE = HEADER.size  # 55
TAG_SIZE = 16
CHUNK_LOGS = range(10, 25)  # 1 KiB .. 16 MiB
KEY_HEX_DIGITS = 64
BLOCK = 1 << 20
RECORD = struct.Struct(">cI")
FILE, DATA, MANIFEST = b"F", b"D", b"M"
_MAX_JSON = 16 << 20


class LegacyKey:
    """The old format's 32-byte key. Its bytes never leave this object except into HKDF; ``key_id`` is a one-way
    fingerprint, safe to print, that tells which key a backup needs."""

    __slots__ = ("_secret", "key_id")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("a backup key is 32 bytes")
        self._secret = secret
        self.key_id = _derive(secret, None, b"singularity-ops backup key id", 8).hex()

    @classmethod
    def from_hex(cls, text: str) -> LegacyKey | None:
        text = text.strip()
        if len(text) != KEY_HEX_DIGITS or not all(c in string.hexdigits for c in text):
            return None
        return cls(bytes.fromhex(text))

    def hex(self) -> str:
        """The key as the key file holds it: only for writing it into a key file again."""
        return self._secret.hex()

    def subkey(self, salt: bytes, header: bytes) -> bytes:
        return _derive(self._secret, salt, b"singularity-ops backup v1 " + header[:8], 32)

    def __repr__(self) -> str:
        return f"LegacyKey(key_id={self.key_id!r})"

    __str__ = __repr__


def _derive(secret: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=SHA256(), length=length, salt=salt, info=info).derive(secret)


@dataclass(frozen=True)
class Header:
    raw: bytes
    version: int
    chunk_size: int
    key_id: str
    salt: bytes
    nonce_prefix: bytes


def nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def read_header(source: BinaryIO, name: str) -> Header:
    raw = source.read(HEADER_SIZE)
    if len(raw) < len(MAGIC) or raw[:len(MAGIC)] != MAGIC:
        raise BackupCorrupt(f"{name} is not a Singularity Ops backup (it does not start with {MAGIC.decode()}); "
                            "pick a backup file from `singularity-ops backup list`")
    if raw[len(MAGIC)] != VERSION:
        raise BackupError(f"{name} is backup format version {raw[len(MAGIC)]}; this singularity-ops reads version "
                          f"{VERSION}: use the singularity-ops version that made it")
    if len(raw) < HEADER_SIZE:
        raise BackupCorrupt(f"{name} is truncated: it ends inside its header")
    _, version, chunk_log, key_id, salt, prefix = HEADER.unpack(raw)
    if chunk_log not in CHUNK_LOGS:
        raise BackupCorrupt(f"{name} has a damaged header (chunk size 2^{chunk_log}); restore from another backup")
    return Header(raw, version, 1 << chunk_log, key_id.hex(), salt, prefix)


def decrypt(source: BinaryIO, key: LegacyKey, name: str) -> Iterator[bytes]:
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
            plain = aead.decrypt(nonce(header.nonce_prefix, counter, last), current, header.raw)
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
        aead.decrypt(nonce(header.nonce_prefix, counter, not last), chunk, header.raw)
    except InvalidTag:
        return BackupCorrupt(f"{name} is damaged or was tampered with: {where} fails authentication (a changed "
                             "byte, or chunks missing or out of order); restore from another backup")
    if last:
        return BackupCorrupt(f"{name} is truncated: it ends after {where} without its final chunk; restore from "
                             "another backup")
    extra = len(following) + sum(len(block) for block in iter(lambda: source.read(1 << 20), b""))
    return BackupCorrupt(f"{name} has {extra} unexpected bytes after its final chunk ({where}); it was appended "
                         "to: restore from another backup")


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
        while len(buffer) >= RECORD.size:
            kind, length = RECORD.unpack_from(buffer)
            if length > (BLOCK if kind == DATA else _MAX_JSON):
                raise BackupCorrupt(f"{name}: the archive inside is damaged (a {length}-byte record)")
            if len(buffer) < RECORD.size + length:
                break
            payload = bytes(buffer[RECORD.size:RECORD.size + length])
            del buffer[:RECORD.size + length]
            if manifest is not None:
                raise BackupCorrupt(f"{name}: the archive inside has records after its manifest")
            if kind == DATA:
                if member is None:
                    raise BackupCorrupt(f"{name}: the archive inside has data outside any member")
                member["bytes"] += length
                digest.update(payload)
                yield "data", payload
            elif kind in (FILE, MANIFEST):
                close_member()
                member, digest = None, hashlib.sha256()
                try:
                    decoded = json.loads(payload)
                except ValueError:
                    raise BackupCorrupt(f"{name}: the archive inside has a damaged record") from None
                if kind == FILE:
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
