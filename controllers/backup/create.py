"""Making a backup: pg_dump in one snapshot, the config and ``backup.include`` files and the manifest as a tar
stream (archive.py), gzip, age encryption (encryption.py), all streamed to ``.<id>.tar.gz.age.partial``, fsynced,
renamed, then (by default) verified.

The file is written under a temporary name, fsynced, then renamed: a file with the final name is always complete.
A backup is only counted a success (``singularity_backup_last_success_timestamp_seconds``) once its verification
has worked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from singularity_ops.controllers.backup.archive import DUMP, MANIFEST, ArchiveWriter
from singularity_ops.controllers.backup.catalogue import (
    INTERRUPTED,
    KINDS,
    PARTIAL,
    SUFFIX,
    BackupRecord,
    Progress,
    one_line,
)
from singularity_ops.controllers.backup.encryption import encrypt
from singularity_ops.controllers.backup.errors import BackupError
from singularity_ops.controllers.backup.keys import load_keys
from singularity_ops.controllers.backup.pg import (
    PgTools,
    exported_snapshot,
    find_tools,
    server_major,
    server_version,
    start_dump,
    stop,
)
from singularity_ops.controllers.backup.verify import Verifying

log = logging.getLogger(__name__)

FORMAT = 2  # 1: the sgbk format before age (sgbk.py)
COMPRESSION = "gzip"

def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("singularity-ops")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


class Creating(Verifying):
    # -- create ----------------------------------------------------------------------------------------------
    def create(self, kind: str = "manual", *, verify: bool = True, progress: Progress | None = None,
               unless_since: datetime | None = None) -> BackupRecord | None:
        """Make a backup (and by default verify it). ``unless_since``: do nothing (return None) when a backup of
        this kind started at or after it — the scheduler's guard against a second replica repeating one."""
        if kind not in KINDS:
            raise BackupError(f"unknown backup kind {kind!r}; use one of {', '.join(KINDS)}")
        with self.locked() as conn:
            if unless_since is not None and conn.execute(
                    "SELECT 1 FROM backups WHERE kind = %s AND started >= %s", (kind, unless_since)).fetchone():
                return None
            started = self.clock()
            backup_id = f"{started:%Y%m%dT%H%M%SZ}-{kind}-{secrets.token_hex(2)}"
            conn.execute("INSERT INTO backups (id, kind, status, host, started) VALUES (%s, %s, 'running', %s, %s)",
                         (backup_id, kind, self.host, started))
            log.info("backup %s started", backup_id)
            try:
                record = self._write(conn, backup_id, kind, started, progress)
                if verify:
                    try:
                        self._verify(conn, record, progress)
                    except BackupError as exc:
                        raise BackupError(f"backup {backup_id} was written but failed verification: {exc}") from None
            except BaseException as exc:
                error = INTERRUPTED if isinstance(exc, KeyboardInterrupt | SystemExit) else one_line(exc)
                self._remove_files(backup_id, f"the backup failed: {error}")
                with contextlib.suppress(psycopg.Error):
                    self._mark_failed(conn, error, backup_id)
                log.info("backup %s failed: %s", backup_id, error)  # the caller reports it as its error
                if isinstance(exc, BackupError | KeyboardInterrupt | SystemExit):
                    raise
                raise BackupError(f"backup {backup_id} failed: {error}") from exc
            conn.execute("UPDATE backups SET finished = %s WHERE id = %s",  # verification included
                         (self.clock(), backup_id))
            return self._catalogue(conn, "id = %s", (backup_id,))[0]

    def _write(self, conn: psycopg.Connection, backup_id: str, kind: str, started: datetime,
               progress: Progress | None) -> BackupRecord:
        keys = load_keys(self.key_file)
        recipients = keys.recipients(self.settings.recipients)
        database = self._require_database("a backup")
        major = server_major(conn)
        tools = find_tools(major, self.settings.pg_bin_dir)
        skip = self._catalogue_tables(conn)
        files = self._included_files()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = self.directory / f".{backup_id}{SUFFIX}{PARTIAL}"
        final = self.file_for(backup_id)
        level = self.settings.compression_level
        manifest = {
            "format": FORMAT, "id": backup_id, "kind": kind, "created": started.isoformat(), "host": self.host,
            "singularity_ops": _version(),
            "database": {"name": conn.info.dbname, "server_version": server_version(conn),
                         "pg_dump_version": tools.version, "data_not_included": skip},
            "compression": {"method": COMPRESSION, "level": level},
            "encryption": {"method": "age (X25519, ChaCha20-Poly1305)",
                           "recipients": [str(recipient) for recipient in recipients]},
            "archive": {"method": "tar", "dump": f"{DUMP}.NNNNNN parts of {self.dump_part_bytes} bytes",
                        "manifest": MANIFEST},
        }
        archive = ArchiveWriter(level, started.timestamp(), self.dump_part_bytes)
        with open(partial, "xb") as raw:
            with exported_snapshot(database.url, frozenset(skip)) as (snapshot, tables):
                manifest["tables"] = tables
                stream = self._stream(archive, manifest, tools, database.url, snapshot, skip, files, progress)
                size, sha256 = encrypt(stream, raw, recipients)
            raw.flush()
            os.fsync(raw.fileno())
        os.rename(partial, final)
        finished = self.clock()
        sidecar = {**manifest, "finished": finished.isoformat(),
                   "file": {"name": final.name, "bytes": size, "sha256": sha256}}
        self._write_sidecar(backup_id, sidecar)
        _fsync_directory(self.directory)
        conn.execute("UPDATE backups SET status = 'ok', finished = %s, bytes = %s, sha256 = %s, path = %s, "
                     "manifest = %s WHERE id = %s",
                     (finished, size, sha256, str(final), json.dumps(sidecar), backup_id))
        log.info("backup %s written: %d bytes in %.1f s", backup_id, size, (finished - started).total_seconds())
        return self._catalogue(conn, "id = %s", (backup_id,))[0]

    def _stream(self, archive: ArchiveWriter, manifest: dict[str, Any], tools: PgTools, url: str, snapshot: str,
                skip: list[str], files: list[tuple[str, Path]], progress: Progress | None) -> Iterator[bytes]:
        """The compressed tar stream, made as the encryption reads it: the dump (pg_dump's exit code is checked
        before anything follows it), the files, then the manifest, which ``manifest`` becomes."""
        process, stderr = start_dump(tools, url, snapshot, skip)
        try:
            yield from archive.dump(process.stdout, progress)  # type: ignore[arg-type]
            code = process.wait()
        finally:
            stop(process)
        if code != 0:
            raise BackupError(f"pg_dump exited with {code}: {stderr.last()}")
        for name, path in files:
            with open(path, "rb") as source:
                status = os.fstat(source.fileno())
                yield from archive.file(name, source, status.st_size, status.st_mtime)
        manifest["contents"] = archive.members
        yield from archive.finish(manifest)

    def _catalogue_tables(self, conn: psycopg.Connection) -> list[str]:
        """The catalogue's own rows are not backed up: they describe files and attempts on this machine, and a
        restored copy would show the backup being made as forever running (and set the failure count back)."""
        rows = conn.execute("SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n "
                            "ON n.oid = c.relnamespace WHERE c.oid IN (to_regclass('backups'), "
                            "to_regclass('backup_failures'), to_regclass('backup_controllers')) "
                            "ORDER BY c.relname").fetchall()
        return [row[0] for row in rows]

    def _included_files(self) -> list[tuple[str, Path]]:
        """(name in the archive, path): the config file, then backup.include (folders walked, sorted). The
        embedded server's files, the backups folder and the key are never copied."""
        home = self.config.home
        never = [home / "postgres", self.directory]
        key_file = self.key_file
        chosen: list[tuple[str, Path]] = []
        if self.config_file is not None:
            if not self.config_file.is_file():
                raise BackupError(f"config file {self.config_file} is gone; fix SINGULARITY_CONFIG")
            chosen.append((f"config/{self.config_file.name}", self.config_file))
        for entry in self.settings.include:
            path = Path(os.path.expanduser(entry))
            path = path if path.is_absolute() else home / path
            if not path.exists():
                raise BackupError(f"backup.include names {entry!r}, but {path} does not exist; fix backup.include")
            found = [path] if path.is_file() else sorted(
                p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
            for file in found:
                if any(file.is_relative_to(folder) for folder in never) or (key_file and file == key_file):
                    continue
                name = f"home/{file.relative_to(home)}" if file.is_relative_to(home) else f"files{file}"
                chosen.append((name, file))
        return chosen
