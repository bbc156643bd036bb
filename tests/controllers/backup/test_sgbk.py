"""The old backup format (sgbk), which the product still reads: files made by the old writer (kept in the tests,
sgbk_writer.py) read back at every size, and every kind of damage is caught with a clear error before any byte of
the damaged part is handed out."""

from __future__ import annotations

import io
import os

import pytest

from singularity_ops.controllers.backup.errors import BackupCorrupt, BackupError
from singularity_ops.controllers.backup.sgbk import HEADER_SIZE, TAG_SIZE, decrypt, read_archive
from singularity_ops.controllers.backup.sgbk import LegacyKey as BackupKey
from tests.controllers.backup.sgbk_writer import ArchiveWriter, EncryptingWriter

CHUNK_LOG = 12  # 4 KiB chunks: several chunks from little data
CHUNK = 1 << CHUNK_LOG
SEGMENT = CHUNK + TAG_SIZE


def seal(data: bytes, key: BackupKey, *, pieces: int = 1) -> bytes:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, key, CHUNK_LOG)
    step = max(1, len(data) // pieces)
    for start in range(0, len(data), step):
        writer.write(data[start:start + step])
    writer.close()
    return sink.getvalue()


def opened(sealed: bytes, key: BackupKey) -> list[bytes]:
    return list(decrypt(io.BytesIO(sealed), key, "b.sgbk"))


@pytest.fixture
def key() -> BackupKey:
    return BackupKey(os.urandom(32))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK, 5 * CHUNK + 7])
@pytest.mark.parametrize("pieces", [1, 3, 1000])
def test_round_trip_at_every_size_and_write_pattern(key: BackupKey, size: int, pieces: int) -> None:
    data = os.urandom(size)
    sealed = seal(data, key, pieces=pieces)
    chunks = max(1, -(-size // CHUNK))
    assert len(sealed) == HEADER_SIZE + size + chunks * TAG_SIZE
    assert b"".join(opened(sealed, key)) == data


def test_the_same_data_never_encrypts_the_same_way(key: BackupKey) -> None:
    data = b"a" * 3 * CHUNK
    assert seal(data, key)[HEADER_SIZE:] != seal(data, key)[HEADER_SIZE:]


def damaged_at(sealed: bytes, offset: int) -> bytes:
    changed = bytearray(sealed)
    changed[offset] ^= 0x01
    return bytes(changed)


def test_any_flipped_byte_is_caught_and_nothing_after_it_is_handed_out(key: BackupKey) -> None:
    data = os.urandom(4 * CHUNK + 100)
    sealed = seal(data, key)
    # every header byte, and a few in every chunk (first, middle, tag)
    offsets = list(range(HEADER_SIZE)) + [HEADER_SIZE + n * SEGMENT + inner for n in range(5)
                                          for inner in (0, 1000, SEGMENT - 1) if HEADER_SIZE + n * SEGMENT + inner
                                          < len(sealed)]
    for offset in offsets:
        handed_out = []
        with pytest.raises(BackupError) as caught:
            for chunk in decrypt(io.BytesIO(damaged_at(sealed, offset)), key, "b.sgbk"):
                handed_out.append(chunk)
        damaged_chunk = max(0, (offset - HEADER_SIZE) // SEGMENT) if offset >= HEADER_SIZE else 0
        assert b"".join(handed_out) == data[:damaged_chunk * CHUNK], offset
        assert "b.sgbk" in str(caught.value)


def test_a_flipped_byte_in_a_chunk_names_the_chunk(key: BackupKey) -> None:
    sealed = seal(os.urandom(4 * CHUNK + 100), key)
    with pytest.raises(BackupCorrupt, match=r"b\.sgbk is damaged or was tampered with: chunk 2 .*fails "
                                            r"authentication.*restore from another backup"):
        opened(damaged_at(sealed, HEADER_SIZE + 2 * SEGMENT + 10), key)


def test_a_cut_at_a_chunk_boundary_is_reported_as_truncation(key: BackupKey) -> None:
    sealed = seal(os.urandom(4 * CHUNK + 100), key)
    with pytest.raises(BackupCorrupt, match=r"b\.sgbk is truncated: it ends after chunk 2 .* without its final chunk"):
        opened(sealed[:HEADER_SIZE + 3 * SEGMENT], key)


def test_a_cut_inside_a_chunk_is_caught(key: BackupKey) -> None:
    sealed = seal(os.urandom(4 * CHUNK + 100), key)
    for end in (len(sealed) - 1, HEADER_SIZE + 2 * SEGMENT + 100, HEADER_SIZE + 5, HEADER_SIZE, 20):
        with pytest.raises(BackupCorrupt, match=r"truncated|damaged"):
            opened(sealed[:end], key)


def test_swapped_chunks_are_caught(key: BackupKey) -> None:
    sealed = seal(os.urandom(4 * CHUNK + 100), key)
    first, second = (HEADER_SIZE + n * SEGMENT for n in (1, 2))
    swapped = sealed[:first] + sealed[second:second + SEGMENT] + sealed[first:second] + sealed[second + SEGMENT:]
    assert len(swapped) == len(sealed)
    with pytest.raises(BackupCorrupt, match=r"chunk 1 .*fails authentication.*out of order"):
        opened(swapped, key)


def test_bytes_appended_after_the_last_chunk_are_caught(key: BackupKey) -> None:
    sealed = seal(os.urandom(2 * CHUNK + 100), key)
    with pytest.raises(BackupCorrupt, match=r"chunk 2 .*fails authentication"):  # the tail joins the last chunk
        opened(sealed + b"extra", key)
    whole_chunk = seal(os.urandom(CHUNK), key)  # ends exactly on a chunk boundary: a whole chunk more is appended
    with pytest.raises(BackupCorrupt, match=rf"has {SEGMENT} unexpected bytes after its final chunk \(chunk 0 "):
        opened(whole_chunk + whole_chunk[HEADER_SIZE:], key)


def test_the_wrong_key_is_named_by_its_id_not_its_bytes(key: BackupKey) -> None:
    sealed = seal(b"history", key)
    other = BackupKey(os.urandom(32))
    with pytest.raises(BackupError, match=rf"encrypted with backup key {key.key_id}, but the key file holds key "
                                          rf"{other.key_id}; set SINGULARITY_BACKUP_KEY_FILE"):
        opened(sealed, other)


def test_a_file_that_is_not_a_backup_says_so(key: BackupKey) -> None:
    with pytest.raises(BackupCorrupt, match=r"b\.sgbk is not a Singularity Ops backup"):
        opened(b"PGDMP\x01\x0e\x00" + os.urandom(100), key)
    newer = bytearray(seal(b"x", key))
    newer[6] = 2
    with pytest.raises(BackupError, match=r"format version 2; this singularity-ops reads version 1"):
        opened(bytes(newer), key)


def test_the_key_never_shows_itself(key: BackupKey) -> None:
    secret = key._secret
    for text in (repr(key), str(key), f"{key}"):
        assert secret.hex() not in text and key.key_id in text


def test_archive_members_and_manifest_round_trip(key: BackupKey) -> None:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, key, CHUNK_LOG)
    archive = ArchiveWriter(writer, level=6)
    dump = os.urandom(3 * CHUNK) + b"text " * 5000
    archive.add("database.dump", io.BytesIO(dump), "pg_dump")
    archive.add("config/singularity.yaml", io.BytesIO(b"home: /srv\n"))
    archive.add("home/empty", io.BytesIO(b""))
    archive.finish({"id": "b1", "contents": archive.members})
    writer.close()
    members: dict[str, bytes] = {}
    current = ""
    for event, value in read_archive(decrypt(io.BytesIO(sink.getvalue()), key, "b.sgbk"), "b.sgbk"):
        if event == "member":
            current = value["name"]
            members[current] = b""
        elif event == "data":
            members[current] += value
        else:
            manifest = value
    assert members == {"database.dump": dump, "config/singularity.yaml": b"home: /srv\n", "home/empty": b""}
    assert [m["bytes"] for m in manifest["contents"]] == [len(dump), 11, 0]


def test_a_highly_compressible_member_is_unpacked_in_bounded_steps(key: BackupKey) -> None:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, key)
    archive = ArchiveWriter(writer, level=9)
    archive.add("zeros", io.BytesIO(bytes(64 << 20)))
    archive.finish({"contents": archive.members})
    writer.close()
    assert len(sink.getvalue()) < 1 << 20  # 64 MiB of zeros fit in one encrypted chunk...
    sizes = [len(value) for event, value in read_archive(decrypt(io.BytesIO(sink.getvalue()), key, "z"), "z")
             if event == "data"]
    assert sum(sizes) == 64 << 20 and max(sizes) <= 1 << 20  # ...and still come out a mebibyte at a time
