"""The tar stream inside a backup: what the writer makes is a plain .tar.gz that Python's tarfile and GNU tar
read; the push reader takes it back in pieces of any size, and refuses what the writer never makes."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from singularity_ops.controllers.backup.archive import ArchiveReader, ArchiveWriter, part_name
from singularity_ops.controllers.backup.errors import BackupCorrupt, BackupError
from singularity_ops.controllers.backup.tarball import RECORD, TarReader, TarWriter

LONG = "home/" + "deep/" * 30 + "naïve name.txt"  # over 100 bytes and not ASCII: a pax header carries it


def tar_gz(members: list[tuple[str, bytes]], level: int = 6) -> bytes:
    writer = TarWriter(level)
    out = b""
    for name, data in members:
        out += b"".join(writer.member(name, len(data), [data[i:i + 1000] for i in range(0, len(data), 1000)], 1e9))
    return out + b"".join(writer.close())


def read_back(data: bytes, piece: int | None = None) -> list[tuple[str, bytes]]:
    members: list[tuple[str, bytes]] = []
    reader = TarReader("t.tar.gz", lambda name, size: members.append((name, b"")),
                       lambda view: members.__setitem__(-1, (members[-1][0], members[-1][1] + bytes(view))))
    rng = random.Random(piece)
    position = 0
    while position < len(data):
        step = piece or rng.randint(1, 70_000)
        reader.feed(data[position:position + step])
        position += step
    reader.finish()
    return members


MEMBERS = [("database.dump.000000", os.urandom(70_000)), ("config/singularity.yaml", b"home: /srv\n"),
           ("home/empty", b""), (LONG, b"x" * 512), ("manifest.json", b"{}\n")]


@pytest.mark.parametrize("piece", [1, 511, 512, 8192, None])
def test_the_reader_takes_back_what_the_writer_made_in_pieces_of_any_size(piece: int | None) -> None:
    assert read_back(tar_gz(MEMBERS), piece) == MEMBERS


def test_it_is_a_plain_tar_gz_in_whole_records_with_private_modes() -> None:
    data = tar_gz(MEMBERS)
    assert len(gzip.decompress(data)) % RECORD == 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        assert [(m.name, m.size, m.mode, m.isfile()) for m in archive.getmembers()] == [
            (name, len(body), 0o600, True) for name, body in MEMBERS]
        assert archive.extractfile(LONG).read() == b"x" * 512


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
def test_gnu_tar_extracts_it(tmp_path: Path) -> None:
    result = subprocess.run(["tar", "-xz", "-C", str(tmp_path)], input=tar_gz(MEMBERS), capture_output=True)
    assert result.returncode == 0 and result.stderr == b""
    for name, body in MEMBERS:
        assert (tmp_path / name).read_bytes() == body


def damaged_header(data: bytes) -> bytes:
    plain = bytearray(gzip.decompress(data))
    plain[0] ^= 1  # the first header's name: its checksum no longer matches
    return gzip.compress(bytes(plain))


def with_directory(data: bytes) -> bytes:
    out = io.BytesIO()
    folder = tarfile.TarInfo("a-folder")
    folder.type = tarfile.DIRTYPE
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        archive.addfile(folder)
    return out.getvalue()


@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: d[:len(d) // 2], r"ends early \(the gzip stream is cut\)"),
    (lambda d: gzip.compress(gzip.decompress(d)[:3 * 512]), r"ends early \(no end-of-archive blocks\)"),
    (damaged_header, r"has a damaged header \(bad checksum\)"),
    (lambda d: gzip.compress(gzip.decompress(d) + b"\x01"), r"has data after its end-of-archive blocks"),
    (lambda d: d + b"more", r"has data after its end"),
    (lambda d: d[:10] + bytes([d[10] ^ 0xFF]) + d[11:], r"is damaged \(gzip: "),
    (with_directory, r"has a member of type b'5' \(a-folder\), which backups never hold"),
])
def test_what_the_writer_never_makes_is_refused(change: Any, problem: str) -> None:
    with pytest.raises(BackupCorrupt, match=rf"^t\.tar\.gz: the tar archive inside {problem}.*restore from another"):
        read_back(change(tar_gz(MEMBERS)), 4096)


def test_a_member_that_changes_size_while_it_is_read_fails_the_backup() -> None:
    writer = TarWriter(1)
    with pytest.raises(BackupError, match=r"notes shrank while it was being backed up \(3 of 10 bytes\)"):
        b"".join(writer.member("notes", 10, [b"abc"], 0))
    with pytest.raises(BackupError, match=r"notes grew while it was being backed up"):
        b"".join(TarWriter(1).member("notes", 2, [b"abc"], 0))


# -- the backup's members: the dump in parts, files, the manifest ----------------------------------------------------
def backup_stream(dump: bytes, part_bytes: int, files: dict[str, bytes] | None = None) -> tuple[bytes, dict]:
    writer = ArchiveWriter(1, 1e9, part_bytes)
    out = b"".join(writer.dump(io.BytesIO(dump)))
    for name, body in (files or {}).items():
        out += b"".join(writer.file(name, io.BytesIO(body), len(body), 1e9))
    manifest = {"id": "b1", "contents": writer.members}
    return out + b"".join(writer.finish(manifest)), manifest


def events(data: bytes) -> Iterator[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    reader = ArchiveReader("b.tar.gz.age", lambda event, value: found.append(
        (event, bytes(value) if event == "data" else value)))
    for start in range(0, len(data), 3000):
        reader.feed(data[start:start + 3000])
    reader.finish()
    return iter(found)


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 5000])
def test_the_dump_goes_in_parts_and_comes_back_as_one_member(size: int) -> None:
    dump = os.urandom(size)
    data, manifest = backup_stream(dump, 1000, {"config/c.yaml": b"a: 1\n"})
    parts = max(1, -(-size // 1000))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        assert archive.getnames() == [*(part_name(i) for i in range(parts)), "config/c.yaml", "manifest.json"]
        assert json.load(archive.extractfile("manifest.json")) == manifest
    assert manifest["contents"][0] == {"name": "database.dump", "type": "pg_dump", "bytes": size, "parts": parts,
                                       "sha256": manifest["contents"][0]["sha256"]}
    seen = list(events(data))
    assert seen[0] == ("member", {"name": "database.dump", "type": "pg_dump"})
    assert b"".join(value for event, value in seen if event == "data")[:size] == dump
    assert [value for event, value in seen if event == "member"][1] == {"name": "config/c.yaml", "type": "file"}
    assert seen[-1] == ("manifest", manifest)


def rewrite(data: bytes, change: Any) -> bytes:
    """The same archive's members, changed by ``change(list of (name, bytes))``, written again."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        members = [(m.name, archive.extractfile(m).read()) for m in archive.getmembers()]
    return tar_gz(change(members), level=1)


@pytest.mark.parametrize(("change", "problem"), [
    (lambda m: [m[1], m[0], *m[2:]], r"the database dump's parts are out of order \(database\.dump\.000001 after 0"),
    (lambda m: [m[0], m[2], m[1], *m[3:]], r"parts are out of order \(database\.dump\.000002 after 1 parts\)"),
    (lambda m: [*m[:1], *m[2:]], r"parts are out of order"),
    (lambda m: [*m[:2], (m[2][0], m[2][1] + b"!"), *m[3:]], r"do not match the checksums in its manifest"),
    (lambda m: [*m[:3], *m[4:]], r"do not match the checksums in its manifest"),
    (lambda m: m[:-1], r"the archive ends without its manifest"),
    (lambda m: [*m, ("late", b"")], r"has a member \(late\) after its manifest"),
    (lambda m: [*m[:-1], ("manifest.json", b"{not json")], r"its manifest is damaged"),
])
def test_members_that_do_not_match_the_manifest_are_refused(change: Any, problem: str) -> None:
    data, _ = backup_stream(os.urandom(2500), 1000, {"config/c.yaml": b"a: 1\n"})
    with pytest.raises(BackupCorrupt, match=rf"^b\.tar\.gz\.age: .*{problem}.*; restore from another backup$"):
        list(events(rewrite(data, change)))


def test_memory_stays_bounded_however_compressible_the_member() -> None:
    data, _ = backup_stream(bytes(64 << 20), 8 << 20)
    assert len(data) < 1 << 20  # 64 MiB of zeros compress to a few hundred KiB...
    sizes = [len(value) for event, value in events(data) if event == "data"]
    assert sum(sizes) == 64 << 20 and max(sizes) <= 1 << 20  # ...and still come out a mebibyte at a time
