"""Reading a backup back: decrypt, authenticate and unpack it, restore it into a database, and compare the row
counts with its manifest. ``verify`` does that into a scratch database; restore.py does it into a real one.

An age backup takes the path of docs/BACKUPS.md's "restore without singularity-ops": age decryption, the tar
stream, the dump's parts joined into ``pg_restore``. A backup from before (``.sgbk``) is read by sgbk.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg

from singularity_ops.controllers.backup import sgbk
from singularity_ops.controllers.backup.archive import ArchiveReader
from singularity_ops.controllers.backup.catalogue import PARTIAL, BackupRecord, Catalogue, Progress, one_line
from singularity_ops.controllers.backup.encryption import decrypt
from singularity_ops.controllers.backup.errors import BackupCorrupt, BackupError
from singularity_ops.controllers.backup.keys import LEGACY_LINE, BackupKeys, load_keys
from singularity_ops.controllers.backup.pg import (
    PgTools,
    find_tools,
    row_counts,
    scratch_database,
    server_major,
    start_restore,
    stop,
)

log = logging.getLogger(__name__)


@dataclass
class VerifyResult:
    record: BackupRecord
    tables: dict[str, int]
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {"backup": self.record.as_json(), "verified": True, "tables": self.tables,
                "seconds": round(self.seconds, 3)}


class _HashingSource:
    def __init__(self, file: IO[bytes]) -> None:
        self.file, self.digest, self.size = file, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


Handler = Callable[[str, Any], None]


class Verifying(Catalogue):
    # -- reading a backup ------------------------------------------------------------------------------------
    def _read(self, record: BackupRecord, keys: BackupKeys, on_dump: Callable[[bytes], None] | None,
              on_file: Callable[[str], Callable[[bytes], None] | None] | None, progress: Progress | None
              ) -> dict[str, Any]:
        """Decrypt, authenticate and unpack the backup, handing the dump's bytes to ``on_dump`` and each file
        member to the writer ``on_file(name)`` returns; then check it is the backup the catalogue and sidecar
        describe. Returns its manifest."""
        if record.path is None or not record.path.is_file():
            raise BackupError(f"backup {record.id}: its file {record.path} is missing; copy it back into "
                              f"{self.directory}")
        name = record.path.name
        sink: list[Callable[[bytes], None] | None] = [None]
        found: dict[str, Any] = {}

        def handle(event: str, value: Any) -> None:
            if event == "member":
                is_dump = value["type"] == "pg_dump"
                sink[0] = on_dump if is_dump else (on_file(value["name"]) if on_file else None)
            elif event == "data":
                if sink[0] is not None:
                    sink[0](value)
                if progress is not None:
                    progress(len(value))
            else:
                found.update(value)

        read = self._read_sgbk if record.format == "sgbk" else self._read_age
        sha256 = read(record, keys, name, handle)
        manifest = found
        if manifest.get("id") != record.id:
            raise BackupCorrupt(f"{name} holds backup {manifest.get('id')}, not {record.id}: the wrong file was put "
                                "in its place; find the right file or restore another backup")
        expected = record.sha256 or (record.manifest or {}).get("file", {}).get("sha256")
        if expected and expected != sha256:
            raise BackupCorrupt(f"{name} does not match the checksum recorded when it was made; restore from "
                                "another backup")
        sidecar = record.manifest or {}
        if sidecar and {k: v for k, v in sidecar.items() if k not in ("file", "finished")} != manifest:
            raise BackupCorrupt(f"the manifest beside {name} was changed: it does not match the one inside the "
                                "backup; the one inside is authentic")
        return manifest

    def _read_age(self, record: BackupRecord, keys: BackupKeys, name: str, handle: Handler) -> str:
        if not keys.public_keys:
            raise BackupError(f"{name} is an age backup, but the key file {keys.path} holds only an old-format key; "
                              "set SINGULARITY_BACKUP_KEY_FILE to the key file the backup was made with")

        def wrong_key() -> BackupError:
            made_for = (record.manifest or {}).get("encryption", {}).get("recipients") or []
            if set(made_for) & set(keys.public_keys):
                return BackupCorrupt(f"{name} lists {', '.join(made_for)} as its recipients, but the key file's "
                                     "identity does not open it: its header is damaged; restore from another backup")
            return BackupError(f"{name} was encrypted to {', '.join(made_for) or 'other keys'}, but the key file "
                               f"{keys.path} holds the identity of {', '.join(keys.public_keys)}; set "
                               "SINGULARITY_BACKUP_KEY_FILE to a key the backup was made for")

        reader = ArchiveReader(name, handle)
        with open(record.path, "rb") as raw:  # type: ignore[arg-type]
            _, sha256 = decrypt(raw, keys.identities, reader.feed, name, wrong_key)
        reader.finish()
        return sha256

    def _read_sgbk(self, record: BackupRecord, keys: BackupKeys, name: str, handle: Handler) -> str:
        if keys.legacy is None:
            raise BackupError(
                f"{name} was made before the age format and needs the old backup key (64 hex digits), which the key "
                f"file {keys.path} does not hold: set SINGULARITY_BACKUP_KEY_FILE to the old key file, or add the "
                f"old key to this one as the line `{LEGACY_LINE}HEX` (docs/BACKUPS.md#keys)")
        with open(record.path, "rb") as raw:  # type: ignore[arg-type]
            source = _HashingSource(raw)
            for event, value in sgbk.read_archive(sgbk.decrypt(source, keys.legacy, name), name):  # type: ignore[arg-type]
                handle(event, value)
        return source.digest.hexdigest()

    # -- verify ----------------------------------------------------------------------------------------------
    def verify(self, reference: str | None = None, progress: Progress | None = None) -> VerifyResult:
        """Restore the backup into a scratch database and compare its row counts with the manifest."""
        database = self._require_database("verifying (a restore into a scratch database on the history server)")
        record = self.find(reference)
        with database.connect(autocommit=True) as conn:
            try:
                return self._verify(conn, record, progress)
            except BackupCorrupt as exc:
                if record.source == "catalogue":
                    self._mark_failed(conn, one_line(exc), record.id, finished=False)
                raise

    def _verify(self, conn: psycopg.Connection, record: BackupRecord, progress: Progress | None) -> VerifyResult:
        began = time.monotonic()
        keys = load_keys(self.key_file)
        database = self._require_database("verifying")
        tools = find_tools(server_major(conn), self.settings.pg_bin_dir)
        with scratch_database(database.url) as scratch:
            _, tables = self._restore_into(record, keys, tools, scratch, clean=False, files_to=None,
                                           progress=progress)
        if record.source == "catalogue":
            # The latest verification decides: a backup that failed one (a damaged file, since put right) is good
            # again, and retention treats it so.
            conn.execute("UPDATE backups SET status = 'ok', verified_at = now(), error = NULL WHERE id = %s",
                         (record.id,))
            if record.status == "failed":
                log.info("backup %s had failed verification (%s); it verifies now and counts as good again",
                         record.id, record.error)
            record = next(iter(self._catalogue(conn, "id = %s", (record.id,))), record)
        seconds = time.monotonic() - began
        log.info("backup %s verified: %d tables match in %.1f s", record.id, len(tables), seconds)
        return VerifyResult(record, tables, seconds)

    def _restore_into(self, record: BackupRecord, keys: BackupKeys, tools: PgTools, url: str, *, clean: bool,
                      files_to: Path | None, progress: Progress | None) -> tuple[dict[str, Any], dict[str, int]]:
        process, stderr = start_restore(tools, url, clean=clean)
        written: list[tuple[Path, Path]] = []

        def to_restore(data: bytes) -> None:
            try:
                process.stdin.write(data)  # type: ignore[union-attr]
            except BrokenPipeError:
                raise BackupError(f"pg_restore stopped: {stderr.last()}") from None

        def to_file(name: str) -> Callable[[bytes], None] | None:
            if files_to is None:
                return None
            target = inside(files_to, name)
            temporary = target.with_name(f".{target.name}{PARTIAL}")
            target.parent.mkdir(parents=True, exist_ok=True)
            for file in opened:
                file.close()
            opened[:] = [open(temporary, "wb")]  # noqa: SIM115 - closed when the next member starts or at the end
            written.append((temporary, target))
            return opened[0].write  # type: ignore[return-value]

        opened: list[IO[bytes]] = []
        try:
            manifest = self._read(record, keys, to_restore, to_file, progress)
            process.stdin.close()  # type: ignore[union-attr]
            code = process.wait()
            if code != 0:
                raise BackupError(f"pg_restore exited with {code}: {stderr.last()}")
        except BaseException:
            stop(process)  # its single transaction rolls back
            for file in opened:
                file.close()
            for temporary, _ in written:
                with contextlib.suppress(FileNotFoundError):
                    temporary.unlink()
            raise
        for file in opened:
            file.close()
        for temporary, target in written:
            os.replace(temporary, target)
        with psycopg.connect(url) as target_conn:
            skip = frozenset(manifest["database"].get("data_not_included", []))
            restored = row_counts(target_conn, skip)
        expected = manifest["tables"]
        wrong = {name: (count, restored.get(name)) for name, count in expected.items() if restored.get(name) != count}
        if wrong:
            details = ", ".join(f"{name} {got} rows, manifest {count}"
                                for name, (count, got) in list(wrong.items())[:3])
            raise BackupCorrupt(f"backup {record.id} restored with other row counts than its manifest ({details})")
        return manifest, {name: restored[name] for name in expected}


def inside(folder: Path, name: str) -> Path:
    """``folder / name`` for a member name, refusing names that would leave the folder."""
    target = (folder / name).resolve()
    if not target.is_relative_to(folder.resolve()) or name.startswith("/"):
        raise BackupCorrupt(f"member name {name!r} would be written outside {folder}; refusing")
    return target
