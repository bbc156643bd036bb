"""age encryption through pyrage: standard age files, streamed both ways, and every failure of ours (a dump that
fails, a full disk, a consumer that stops) raised as itself rather than lost inside pyrage."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyrage import x25519

from singularity_ops.controllers.backup.encryption import decrypt, encrypt
from singularity_ops.controllers.backup.errors import BackupCorrupt, BackupError
from tests.controllers.backup.helpers import AGE_SEGMENT, age_payload, flip

CHUNK = 64 << 10
IDENTITY = x25519.Identity.generate()


def sealed(data: bytes, recipients: list[x25519.Recipient] | None = None, piece: int = 10_000) -> bytes:
    out = io.BytesIO()
    encrypt(iter([data[i:i + piece] for i in range(0, len(data), piece)]), out, recipients or [IDENTITY.to_public()])
    return out.getvalue()


def opened(data: bytes, identities: list[x25519.Identity] | None = None) -> bytes:
    out = bytearray()
    decrypt(io.BytesIO(data), identities or [IDENTITY], out.extend, "b.tar.gz.age",
            lambda: BackupError("another key"))
    return bytes(out)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7])
def test_round_trip_at_every_size(size: int) -> None:
    data = os.urandom(size)
    out = io.BytesIO()
    written, digest = encrypt(iter([data[:7], b"", data[7:]]), out, [IDENTITY.to_public()])
    assert (written, digest) == (len(out.getvalue()), hashlib.sha256(out.getvalue()).hexdigest())
    assert opened(out.getvalue()) == data


def test_every_recipient_opens_it_alone() -> None:
    offsite = x25519.Identity.generate()
    data = sealed(b"history", [IDENTITY.to_public(), offsite.to_public()])
    assert opened(data, [offsite]) == opened(data, [IDENTITY]) == b"history"


@pytest.mark.skipif(shutil.which("age") is None, reason="needs Debian's age (scripts/test installs it)")
def test_the_age_binary_opens_it(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(f"{IDENTITY}\n")
    data = os.urandom(3 * CHUNK + 5)
    result = subprocess.run(["age", "-d", "-i", str(key)], input=sealed(data), capture_output=True)
    assert result.returncode == 0 and result.stdout == data


def test_an_error_in_the_source_is_raised_as_itself() -> None:
    def failing() -> Iterator[bytes]:
        yield b"x" * 100_000
        raise BackupError("pg_dump exited with 1: connection lost")

    with pytest.raises(BackupError, match=r"^pg_dump exited with 1: connection lost$"):
        encrypt(failing(), io.BytesIO(), [IDENTITY.to_public()])

    def interrupted() -> Iterator[bytes]:
        yield b"x"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encrypt(interrupted(), io.BytesIO(), [IDENTITY.to_public()])


class FullDisk(io.BytesIO):
    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


@pytest.mark.parametrize(("size", "room"), [(300_000, 0), (300_000, 200_000), (100, 50)])
def test_a_full_disk_fails_the_backup_even_in_the_last_write(size: int, room: int) -> None:
    """pyrage writes its last buffered bytes (here all of a small file) while dropping its writer, and ignores an
    error there."""
    with pytest.raises(OSError, match="No space left on device"):
        encrypt(iter([os.urandom(size)]), FullDisk(room), [IDENTITY.to_public()])


def test_the_consumer_sees_only_authenticated_content_and_its_own_error_is_raised() -> None:
    data = os.urandom(4 * CHUNK)
    genuine = sealed(data)
    damaged = flip(genuine, age_payload(genuine) + 2 * AGE_SEGMENT + 5)
    got = bytearray()
    with pytest.raises(BackupCorrupt, match=r"fails authentication after 131072 bytes of content"):
        decrypt(io.BytesIO(damaged), [IDENTITY], got.extend, "b", lambda: BackupError("x"))
    assert bytes(got) == data[:2 * CHUNK]

    def stops(_: bytes) -> None:
        raise BackupError("pg_restore stopped: disk full")

    with pytest.raises(BackupError, match=r"^pg_restore stopped: disk full$"):
        decrypt(io.BytesIO(sealed(data)), [IDENTITY], stops, "b", lambda: BackupError("x"))


def test_another_key_is_what_wrong_key_says() -> None:
    with pytest.raises(BackupError, match=r"^another key$"):
        opened(sealed(b"x"), [x25519.Identity.generate()])
