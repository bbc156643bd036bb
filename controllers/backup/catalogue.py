"""The backup catalogue: what a backup is on record, where its files lie, and the lock that lets one job at a time
change them.

A backup is one encrypted file ``<id>.tar.gz.age`` (``<id>.sgbk`` from before the age format, read only) with a
sidecar ``<id>.manifest.json`` beside it, and a row in the ``backups`` table. Only one backup job runs at a time,
across replicas too (a PostgreSQL advisory lock); a row left ``running`` by a process that died is marked
``failed`` by the next one to take the lock, and its partial file removed; a failed attempt is also a row in
``backup_failures``. ``list`` and ``find`` also read the sidecars, so
backups stay visible with the database gone. Retention (retention.py) and the jobs that write or read a backup
(create.py, verify.py, restore.py) build on this class.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from singularity_ops.config import Config
from singularity_ops.controllers.backup.archive import DUMP_PART_BYTES
from singularity_ops.controllers.backup.errors import BackupError
from singularity_ops.logs import redact
from singularity_ops.store import Database

log = logging.getLogger(__name__)

KINDS = ("daily", "weekly", "manual")
LOCK_KEY = 0x53_4E_42_4B  # "SNBK"; the migrator's is "SNGL"
SUFFIX, SIDECAR, PARTIAL = ".tar.gz.age", ".manifest.json", ".partial"
LEGACY_SUFFIX = ".sgbk"  # the format before age: read only
FORMATS = {1: "sgbk", 2: "age"}  # the manifest's "format" → the name `backup list` shows
INTERRUPTED = "interrupted: the process making it stopped before it finished (killed, or the machine went down)"

Progress = Callable[[int], None]


class BackupBusy(BackupError):
    exit_code = 75  # EX_TEMPFAIL: try again later


@dataclass
class BackupRecord:
    id: str
    kind: str
    status: str
    started: datetime
    finished: datetime | None = None
    bytes: int | None = None
    sha256: str | None = None
    path: Path | None = None
    verified_at: datetime | None = None
    error: str | None = None
    host: str = ""
    manifest: dict[str, Any] | None = field(default=None, repr=False)
    source: str = "catalogue"  # or "file": known only from its sidecar manifest

    @property
    def format(self) -> str | None:
        """``age`` (a tar in an age file), ``sgbk`` (the format before it, read only), None (no file was made)."""
        if self.manifest and self.manifest.get("format") in FORMATS:
            return FORMATS[self.manifest["format"]]
        if self.path is not None:
            return "sgbk" if self.path.name.endswith(LEGACY_SUFFIX) else "age"
        return None

    def as_json(self) -> dict[str, Any]:
        def when(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        tables = (self.manifest or {}).get("tables", {})
        encryption = (self.manifest or {}).get("encryption", {})
        return {"id": self.id, "kind": self.kind, "format": self.format, "status": self.status,
                "started": when(self.started),
                "finished": when(self.finished), "bytes": self.bytes, "sha256": self.sha256,
                "path": str(self.path) if self.path else None, "verified_at": when(self.verified_at),
                "error": self.error, "host": self.host, "tables": len(tables), "rows": sum(tables.values()),
                "recipients": encryption.get("recipients"), "key_id": encryption.get("key_id"), "source": self.source}


def default_key_file(config: Config) -> Path:
    """Where ``backup keygen`` and the controller's first run put the key."""
    return config.home / "backup.key"


def key_file_for(config: Config) -> Path | None:
    """The backup key: ``backup.key_file`` (``SINGULARITY_BACKUP_KEY_FILE``) when set, else the default file when it
    exists; None: there is no key."""
    if config.backup.key_file is not None:
        return config.backup.key_file
    default = default_key_file(config)
    return default if default.exists() else None


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


class Catalogue:
    """The catalogue of one configuration. ``database`` is the history database: the catalogue lives there and it
    is what is backed up; ``None`` where it is gone (then list and restore read the sidecars)."""

    def __init__(self, config: Config, database: Database | None, *, config_file: Path | None = None,
                 dump_part_bytes: int = DUMP_PART_BYTES,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self.clock = clock  # when a backup starts and finishes: the times the controller's schedule compares
        self.settings = config.backup
        self.database = database
        self.config_file = config_file
        self.dump_part_bytes = dump_part_bytes
        self.directory = self.settings.directory or config.home / "backups"
        self.host = socket.gethostname()

    @property
    def key_file(self) -> Path | None:
        return key_file_for(self.config)  # looked up each time: the controller may create it after start

    # -- paths -----------------------------------------------------------------------------------------------
    def file_for(self, backup_id: str) -> Path:
        return self.directory / f"{backup_id}{SUFFIX}"

    def _sidecar_for(self, backup_id: str) -> Path:
        return self.directory / f"{backup_id}{SIDECAR}"

    def _files_of(self, backup_id: str) -> list[Path]:
        """Every file a backup may have: its file (in either format) and sidecar, and their partial copies while it
        is being made."""
        return [self.file_for(backup_id), self.directory / f"{backup_id}{LEGACY_SUFFIX}", self._sidecar_for(backup_id),
                self.directory / f".{backup_id}{SUFFIX}{PARTIAL}", self.directory / f".{backup_id}{SIDECAR}{PARTIAL}"]

    def _remove_files(self, backup_id: str, why: str, *, dry_run: bool = False) -> list[Path]:
        """Delete the files of a backup; returns those that were there (dry run: that would be deleted), each
        deletion a log line with ``why``."""
        deleted = []
        for path in self._files_of(backup_id):
            if dry_run:
                if path.exists():
                    deleted.append(path)
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            log.info("deleted %s (%s)", path, why)
            deleted.append(path)
        return deleted

    # -- the lock and the catalogue --------------------------------------------------------------------------
    def _require_database(self, doing: str) -> Database:
        if self.database is None:
            raise BackupError(f"{doing} needs the history database, which is not reachable; check "
                              "SINGULARITY_DATABASE_URL")
        return self.database

    @contextlib.contextmanager
    def locked(self) -> Iterator[psycopg.Connection]:
        """A connection holding the backup lock, after clearing what an interrupted job left; raises BackupBusy
        when another process holds the lock."""
        with self._lock() as conn:
            self._sweep(conn)
            yield conn

    @contextlib.contextmanager
    def _lock(self) -> Iterator[psycopg.Connection]:
        conn = self._require_database("a backup").connect(autocommit=True)
        try:
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
                row = conn.execute("SELECT id, host, started FROM backups WHERE status = 'running' "
                                   "ORDER BY started DESC LIMIT 1").fetchone()
                what = f"backup {row[0]} (started {row[2]:%Y-%m-%d %H:%M:%S %Z} on {row[1]})" if row else "a backup"
                raise BackupBusy(f"another backup job holds the backup lock: {what}; wait for it to finish and "
                                 "try again")
            yield conn
        finally:
            conn.close()  # ends the session and with it the lock

    def _sweep(self, conn: psycopg.Connection, *, dry_run: bool = False) -> list[Path]:
        """With the lock held nothing else is writing a backup: rows still 'running' belong to a process that
        died, and files still named .partial are its leftovers. Returns the files deleted (dry run: that would
        be)."""
        if dry_run:
            stale = [row[0] for row in conn.execute("SELECT id FROM backups WHERE status = 'running'").fetchall()]
        else:
            stale = self._mark_failed(conn, INTERRUPTED)
        deleted = []
        for backup_id in stale:
            if not dry_run:
                log.warning("backup %s was interrupted; marked failed", backup_id)
            deleted += self._remove_files(backup_id, f"left by the interrupted backup {backup_id}", dry_run=dry_run)
        if self.directory.is_dir():
            for leftover in sorted(self.directory.glob(f".*{PARTIAL}")):
                if leftover in deleted:
                    continue
                if not dry_run:
                    try:
                        leftover.unlink()
                    except FileNotFoundError:
                        continue
                    log.info("deleted %s (left by an interrupted backup)", leftover)
                deleted.append(leftover)
        return deleted

    def _mark_failed(self, conn: psycopg.Connection, error: str, backup_id: str | None = None, *,
                     finished: bool = True) -> list[str]:
        """Mark ``backup_id`` (None: every row left 'running') failed and count each as a failure: a row in
        backup_failures, never deleted, so singularity_backup_failures_total never goes down. Returns the ids."""
        where = "id = %(id)s" if backup_id is not None else "status = 'running'"
        rows = conn.execute(
            "WITH failed AS (UPDATE backups SET status = 'failed', error = %(error)s, "
            f"finished = CASE WHEN %(finished)s THEN now() ELSE finished END WHERE {where} RETURNING id, kind) "
            "INSERT INTO backup_failures (kind, backup_id, error) SELECT kind, id, %(error)s FROM failed "
            "RETURNING backup_id", {"error": error, "id": backup_id, "finished": finished}).fetchall()
        return [row[0] for row in rows]

    def _record(self, row: tuple) -> BackupRecord:
        (backup_id, kind, status, host, started, finished, size, sha256, path, verified_at, error, manifest) = row
        return BackupRecord(backup_id, kind, status, started, finished, size, sha256, Path(path) if path else None,
                            verified_at, error, host, manifest)

    _COLUMNS = "id, kind, status, host, started, finished, bytes, sha256, path, verified_at, error, manifest"

    def _catalogue(self, conn: psycopg.Connection, where: str = "TRUE", params: tuple = ()) -> list[BackupRecord]:
        rows = conn.execute(f"SELECT {self._COLUMNS} FROM backups WHERE {where} ORDER BY started DESC, id DESC",
                            params).fetchall()
        return [self._record(row) for row in rows]

    def _write_sidecar(self, backup_id: str, sidecar: dict[str, Any]) -> None:
        temporary = self.directory / f".{backup_id}{SIDECAR}{PARTIAL}"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(sidecar, file, indent=2, sort_keys=True)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.rename(temporary, self._sidecar_for(backup_id))

    # -- list ------------------------------------------------------------------------------------------------
    def list(self) -> list[BackupRecord]:
        """The catalogue, plus backups known only from a sidecar in the backups folder (a restored or new
        database, or none reachable)."""
        records: list[BackupRecord] = []
        if self.database is not None:
            with self.database.connect() as conn:
                records = self._catalogue(conn)
        known = {record.id for record in records}
        records += [record for record in self._sidecars() if record.id not in known]
        return sorted(records, key=lambda r: (r.started, r.id), reverse=True)

    def _sidecars(self) -> list[BackupRecord]:
        found = []
        if not self.directory.is_dir():
            return found
        for path in sorted(self.directory.glob(f"*{SIDECAR}")):
            record = self._from_sidecar(path)
            if record is not None:
                found.append(record)
        return found

    def _from_sidecar(self, path: Path) -> BackupRecord | None:
        try:
            sidecar = json.loads(path.read_text(encoding="utf-8"))
            backup_id = sidecar["id"]
            default = SUFFIX if sidecar.get("format") != 1 else LEGACY_SUFFIX
            data = path.with_name(sidecar.get("file", {}).get("name") or path.name.removesuffix(SIDECAR) + default)
            if data.parent != path.parent:
                raise ValueError("the sidecar names a file in another folder")
            return BackupRecord(
                backup_id, sidecar["kind"], "ok", datetime.fromisoformat(sidecar["created"]),
                datetime.fromisoformat(sidecar["finished"]), sidecar["file"]["bytes"], sidecar["file"]["sha256"],
                data, None, None if data.exists() else f"{data.name} is missing", sidecar.get("host", ""), sidecar,
                "file")
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring %s: not a backup manifest", path)
            return None

    def find(self, reference: str | None) -> BackupRecord:
        """A backup by id (or by the path of its file); None: the newest successful one."""
        suffix = next((s for s in (SUFFIX, LEGACY_SUFFIX) if reference and reference.endswith(s)), None)
        if reference and suffix and Path(reference).is_file():
            path = Path(reference)
            sidecar = path.with_name(path.name.removesuffix(suffix) + SIDECAR)
            record = self._from_sidecar(sidecar) if sidecar.is_file() else None
            if record is None:
                raise BackupError(f"{path} has no readable manifest beside it ({sidecar.name}); copy it along")
            record.path = path
            return record
        records = [r for r in self.list() if r.status == "ok"] if reference is None else [
            r for r in self.list() if r.id == reference]
        if not records:
            if reference is None:
                raise BackupError(f"there is no successful backup yet (catalogue and {self.directory}); make one "
                                  "with `singularity-ops backup create`")
            raise BackupError(f"no backup {reference!r} in the catalogue or in {self.directory}; see "
                              "`singularity-ops backup list`")
        return records[0]
