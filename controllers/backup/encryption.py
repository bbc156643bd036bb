"""age encryption of a backup, through pyrage (bindings to rage, the Rust implementation of age): the file is a
standard age file (X25519 recipients, ChaCha20-Poly1305 in 64 KiB chunks, the last one marked), which
``age -d -i KEY`` opens. No cryptography here beyond calling it.

Both directions stream in constant memory: ``encrypt`` pulls the plaintext from an iterator and writes the
ciphertext to a file, hashing it; ``decrypt`` reads the file (hashing it) and pushes the plaintext into a
consumer, a chunk at a time and only after that chunk authenticated, so a consumer sees a prefix of the genuine
content and then an error. pyrage reports an exception raised in our reader or writer only as text, and drops one
raised in its final flush; so each adapter keeps the first exception it raised, and that one is raised again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

import pyrage
from pyrage import x25519

from singularity_ops.controllers.backup.errors import BackupCorrupt, BackupError


class _Adapter:
    error: BaseException | None = None

    def _failed(self, exc: BaseException) -> BaseException:
        if self.error is None:
            self.error = exc
        return exc


class _Pull(_Adapter):
    """A readable file over an iterator of byte strings (pyrage asks for 8 KiB at a time)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._current = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        try:
            while not self._current:
                piece = next(self._pieces, None)
                if piece is None:
                    return b""
                self._current = memoryview(piece)
            size = len(self._current) if size < 0 else size
            out = self._current[:size].tobytes()
            self._current = self._current[size:]
            return out
        except BaseException as exc:
            raise self._failed(exc) from None


class _HashingSink(_Adapter):
    """Writes to the file, counting and hashing: the catalogue's size and SHA-256 of the encrypted file."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.digest, self.size = file, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        try:
            self.file.write(data)
        except BaseException as exc:
            raise self._failed(exc) from None
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


class _HashingSource(_Adapter):
    def __init__(self, file: BinaryIO) -> None:
        self.file, self.digest, self.size = file, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.file.read(size)
        except BaseException as exc:
            raise self._failed(exc) from None
        self.digest.update(data)
        self.size += len(data)
        return data


class _Push(_Adapter):
    """A writable file handing what is written to ``consume``."""

    def __init__(self, consume: Callable[[bytes], None]) -> None:
        self._consume = consume
        self.size = 0

    def write(self, data: bytes) -> int:
        if self.error is not None:  # pyrage's final flush after a failure: nothing more is taken
            raise self.error
        try:
            self._consume(data)
        except BaseException as exc:
            raise self._failed(exc) from None
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _raise_recorded(*adapters: _Adapter) -> None:
    for adapter in adapters:
        if adapter.error is not None:
            raise adapter.error


def encrypt(pieces: Iterator[bytes], file: BinaryIO, recipients: Sequence[x25519.Recipient]) -> tuple[int, str]:
    """Encrypt what ``pieces`` yields into ``file``; returns the encrypted size and SHA-256."""
    reader, sink = _Pull(pieces), _HashingSink(file)
    try:
        pyrage.encrypt_io(reader, sink, list(recipients))
    except (pyrage.EncryptError, OSError) as exc:
        _raise_recorded(reader, sink)
        raise BackupError(f"age encryption failed: {str(exc).splitlines()[0]}") from None
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
    _raise_recorded(reader, sink)
    return sink.size, sink.digest.hexdigest()


def decrypt(file: BinaryIO, identities: Sequence[x25519.Identity], consume: Callable[[bytes], None], name: str,
            wrong_key: Callable[[], BackupError]) -> tuple[int, str]:
    """Decrypt ``file`` into ``consume``; returns the encrypted size and SHA-256. ``wrong_key()`` is the error
    when none of ``identities`` opens it (age cannot tell another key from a damaged recipient stanza)."""
    source, sink = _HashingSource(file), _Push(consume)
    try:
        pyrage.decrypt_io(source, sink, list(identities))
    except (pyrage.DecryptError, OSError) as exc:
        _raise_recorded(source, sink)
        raise _diagnose(exc, name, source.size, sink.size, wrong_key) from None
    _raise_recorded(source, sink)
    return source.size, source.digest.hexdigest()


def _diagnose(exc: Exception, name: str, read: int, handed_out: int,
              wrong_key: Callable[[], BackupError]) -> BackupError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, pyrage.DecryptError):
        if "No matching keys" in text:
            return wrong_key()
        if read == 0:
            return BackupCorrupt(f"{name} is empty; restore from another backup")
        if "Incomplete header" in text or "fill whole buffer" in text:
            return BackupCorrupt(f"{name} is truncated: it ends inside its age header; restore from another backup")
        return BackupCorrupt(f"{name} is not an age file or its header is damaged ({text}); restore from another "
                             "backup")
    if "truncated" in text:
        return BackupCorrupt(f"{name} is truncated: it ends without its final chunk (after {handed_out} bytes of "
                             "content); restore from another backup")
    return BackupCorrupt(f"{name} is damaged or was tampered with: it fails authentication after {handed_out} bytes "
                         "of content (a changed byte, or data missing, added or out of order); restore from another "
                         "backup")
