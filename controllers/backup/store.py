"""Backups of the history database and the product's files: create, list, verify, restore, prune.

A backup is one encrypted file ``<id>.sgbk`` (backup_format: AES-256-GCM STREAM around backup_archive's gzip
records: the pg_dump, the config file, ``backup.include``, the manifest) with a sidecar ``<id>.manifest.json``
beside it, and a row in the ``backups`` table. The file is written under a temporary name, fsynced, then renamed:
a file with the final name is always complete. Only one backup runs at a time, across replicas too (a PostgreSQL
advisory lock); a row left ``running`` by a process that died is marked ``failed`` by the next one to take the
lock, and its partial file removed. Verifying restores into a scratch database and compares row counts with the
manifest; a backup is only counted a success (``singularity_backup_last_success_timestamp_seconds``) once that
has worked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg

from singularity_ops.config import Config
from singularity_ops.controllers.backup.archive import ArchiveWriter, read_archive
from singularity_ops.controllers.backup.format import (
    DEFAULT_CHUNK_LOG,
    BackupCorrupt,
    BackupError,
    BackupKey,
    EncryptingWriter,
    decrypt,
    load_key,
)
from singularity_ops.controllers.backup.pg import (
    PgTools,
    exported_snapshot,
    find_tools,
    row_counts,
    scratch_database,
    server_major,
    server_version,
    start_dump,
    start_restore,
    stop,
    user_relations,
)
from singularity_ops.logs import redact
from singularity_ops.store import Database, redact_url

log = logging.getLogger(__name__)

KINDS = ("daily", "weekly", "manual")
LOCK_KEY = 0x53_4E_42_4B  # "SNBK"; the migrator's is "SNGL"
SUFFIX, SIDECAR, PARTIAL = ".sgbk", ".manifest.json", ".partial"
DUMP_MEMBER = "database.dump"
FORMAT = 1
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

    def as_json(self) -> dict[str, Any]:
        def when(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        tables = (self.manifest or {}).get("tables", {})
        return {"id": self.id, "kind": self.kind, "status": self.status, "started": when(self.started),
                "finished": when(self.finished), "bytes": self.bytes, "sha256": self.sha256,
                "path": str(self.path) if self.path else None, "verified_at": when(self.verified_at),
                "error": self.error, "host": self.host, "tables": len(tables), "rows": sum(tables.values()),
                "key_id": (self.manifest or {}).get("encryption", {}).get("key_id"), "source": self.source}


@dataclass
class VerifyResult:
    record: BackupRecord
    tables: dict[str, int]
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {"backup": self.record.as_json(), "verified": True, "tables": self.tables,
                "seconds": round(self.seconds, 3)}


@dataclass
class RestoreResult:
    record: BackupRecord
    target: str  # redacted
    tables: dict[str, int]
    files: list[str]
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {"backup": self.record.id, "target": self.target, "tables": self.tables, "files": self.files,
                "seconds": round(self.seconds, 3)}


class _HashingSink:
    """Counts and hashes what goes to the file: the catalogue's size and SHA-256 of the ciphertext."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file, self.digest, self.size = file, hashlib.sha256(), 0

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.file.write(data)


class _HashingSource:
    def __init__(self, file: IO[bytes]) -> None:
        self.file, self.digest, self.size = file, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


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


class Backups:
    """The backup operations over one configuration. ``database`` is the history database: the catalogue lives
    there and it is what is backed up; ``None`` where it is gone (then list and restore read the sidecars)."""

    def __init__(self, config: Config, database: Database | None, *, config_file: Path | None = None,
                 chunk_log: int = DEFAULT_CHUNK_LOG) -> None:
        self.config = config
        self.settings = config.backup
        self.database = database
        self.config_file = config_file
        self.chunk_log = chunk_log
        self.directory = self.settings.directory or config.home / "backups"
        self.host = socket.gethostname()

    # -- paths -----------------------------------------------------------------------------------------------
    def file_for(self, backup_id: str) -> Path:
        return self.directory / f"{backup_id}{SUFFIX}"

    def _sidecar_for(self, backup_id: str) -> Path:
        return self.directory / f"{backup_id}{SIDECAR}"

    def _remove_files(self, backup_id: str) -> None:
        for path in (self.file_for(backup_id), self._sidecar_for(backup_id),
                     self.directory / f".{backup_id}{SUFFIX}{PARTIAL}",
                     self.directory / f".{backup_id}{SIDECAR}{PARTIAL}"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -- the lock and the catalogue --------------------------------------------------------------------------
    def _require_database(self, doing: str) -> Database:
        if self.database is None:
            raise BackupError(f"{doing} needs the history database, which is not reachable; check "
                              "SINGULARITY_DATABASE_URL")
        return self.database

    @contextlib.contextmanager
    def locked(self) -> Iterator[psycopg.Connection]:
        """A connection holding the backup lock; raises BackupBusy when another process holds it."""
        conn = self._require_database("a backup").connect(autocommit=True)
        try:
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
                row = conn.execute("SELECT id, host, started FROM backups WHERE status = 'running' "
                                   "ORDER BY started DESC LIMIT 1").fetchone()
                what = f"backup {row[0]} (started {row[2]:%Y-%m-%d %H:%M:%S %Z} on {row[1]})" if row else "a backup"
                raise BackupBusy(f"another backup job holds the backup lock: {what}; wait for it to finish and "
                                 "try again")
            self._sweep(conn)
            yield conn
        finally:
            conn.close()  # ends the session and with it the lock

    def _sweep(self, conn: psycopg.Connection) -> None:
        """With the lock held nothing else is writing a backup: rows still 'running' belong to a process that
        died, and files still named .partial are its leftovers."""
        stale = conn.execute("UPDATE backups SET status = 'failed', finished = now(), error = %s "
                             "WHERE status = 'running' RETURNING id", (INTERRUPTED,)).fetchall()
        for (backup_id,) in stale:
            log.warning("backup %s was interrupted; marked failed", backup_id)
            self._remove_files(backup_id)
        if self.directory.is_dir():
            for leftover in self.directory.glob(f".*{PARTIAL}"):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    def _record(self, row: tuple) -> BackupRecord:
        (backup_id, kind, status, host, started, finished, size, sha256, path, verified_at, error, manifest) = row
        return BackupRecord(backup_id, kind, status, started, finished, size, sha256, Path(path) if path else None,
                            verified_at, error, host, manifest)

    _COLUMNS = "id, kind, status, host, started, finished, bytes, sha256, path, verified_at, error, manifest"

    def _catalogue(self, conn: psycopg.Connection, where: str = "TRUE", params: tuple = ()) -> list[BackupRecord]:
        rows = conn.execute(f"SELECT {self._COLUMNS} FROM backups WHERE {where} ORDER BY started DESC, id DESC",
                            params).fetchall()
        return [self._record(row) for row in rows]

    # -- create ----------------------------------------------------------------------------------------------
    def create(self, kind: str = "manual", *, verify: bool = True, progress: Progress | None = None,
               unless_since: datetime | None = None, prune: bool = False) -> BackupRecord | None:
        """Make a backup (and by default verify it). ``unless_since``: do nothing (return None) when a backup of
        this kind started at or after it — the scheduler's guard against a second replica repeating one."""
        if kind not in KINDS:
            raise BackupError(f"unknown backup kind {kind!r}; use one of {', '.join(KINDS)}")
        with self.locked() as conn:
            if unless_since is not None and conn.execute(
                    "SELECT 1 FROM backups WHERE kind = %s AND started >= %s", (kind, unless_since)).fetchone():
                return None
            started = datetime.now(UTC)
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
                error = INTERRUPTED if isinstance(exc, KeyboardInterrupt | SystemExit) else _one_line(exc)
                self._remove_files(backup_id)
                with contextlib.suppress(psycopg.Error):
                    conn.execute("UPDATE backups SET status = 'failed', finished = now(), error = %s WHERE id = %s",
                                 (error, backup_id))
                log.warning("backup %s failed: %s", backup_id, error)  # the caller reports it as its error
                if isinstance(exc, BackupError | KeyboardInterrupt | SystemExit):
                    raise
                raise BackupError(f"backup {backup_id} failed: {error}") from exc
            conn.execute("UPDATE backups SET finished = now() WHERE id = %s", (backup_id,))  # verification included
            if prune:
                self._prune(conn, dry_run=False)
            return self._catalogue(conn, "id = %s", (backup_id,))[0]

    def _write(self, conn: psycopg.Connection, backup_id: str, kind: str, started: datetime,
               progress: Progress | None) -> BackupRecord:
        key = load_key(self.settings.key_file)
        database = self._require_database("a backup")
        major = server_major(conn)
        tools = find_tools(major, self.settings.pg_bin_dir)
        skip = self._catalogue_table(conn)
        files = self._included_files()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = self.directory / f".{backup_id}{SUFFIX}{PARTIAL}"
        final = self.file_for(backup_id)
        with open(partial, "xb") as raw:
            sink = _HashingSink(raw)
            writer = EncryptingWriter(sink, key, self.chunk_log)
            archive = ArchiveWriter(writer, self.settings.compression_level)
            with exported_snapshot(database.url, frozenset(skip)) as (snapshot, tables):
                self._dump(archive, tools, database.url, snapshot, skip, progress)
            for name, path in files:
                with open(path, "rb") as source:
                    archive.add(name, source, "file")
            manifest = {
                "format": FORMAT, "id": backup_id, "kind": kind, "created": started.isoformat(), "host": self.host,
                "singularity_ops": _version(),
                "database": {"name": conn.info.dbname, "server_version": server_version(conn),
                             "pg_dump_version": tools.version, "data_not_included": skip},
                "tables": tables,
                "contents": archive.members,
                "compression": {"method": "gzip", "level": self.settings.compression_level},
                "encryption": {"method": "AES-256-GCM STREAM, HKDF-SHA256 subkey", "chunk_bytes": writer.chunk_size,
                               "key_id": key.key_id},
            }
            archive.finish(manifest)
            writer.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.rename(partial, final)
        finished = datetime.now(UTC)
        sidecar = {**manifest, "finished": finished.isoformat(),
                   "file": {"name": final.name, "bytes": sink.size, "sha256": sink.digest.hexdigest()}}
        self._write_sidecar(backup_id, sidecar)
        _fsync_directory(self.directory)
        conn.execute("UPDATE backups SET status = 'ok', finished = %s, bytes = %s, sha256 = %s, path = %s, "
                     "manifest = %s WHERE id = %s",
                     (finished, sink.size, sink.digest.hexdigest(), str(final), json.dumps(sidecar), backup_id))
        log.info("backup %s written: %d bytes in %.1f s", backup_id, sink.size, (finished - started).total_seconds())
        return self._catalogue(conn, "id = %s", (backup_id,))[0]

    def _dump(self, archive: ArchiveWriter, tools: PgTools, url: str, snapshot: str, skip: list[str],
              progress: Progress | None) -> None:
        process, stderr = start_dump(tools, url, snapshot, skip)
        try:
            archive.add(DUMP_MEMBER, process.stdout, "pg_dump", progress)  # type: ignore[arg-type]
            code = process.wait()
        finally:
            stop(process)
        if code != 0:
            raise BackupError(f"pg_dump exited with {code}: {stderr.last()}")

    def _catalogue_table(self, conn: psycopg.Connection) -> list[str]:
        """The catalogue's own rows are not backed up: they describe files on this machine, and a restored copy
        would show the backup being made as forever running."""
        row = conn.execute("SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n "
                           "ON n.oid = c.relnamespace WHERE c.oid = to_regclass('backups')").fetchone()
        return [row[0]] if row else []

    def _included_files(self) -> list[tuple[str, Path]]:
        """(name in the archive, path): the config file, then backup.include (folders walked, sorted). The
        embedded server's files, the backups folder and the key are never copied."""
        home = self.config.home
        never = [home / "postgres", self.directory]
        key_file = self.settings.key_file
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
            data = path.with_name(path.name.removesuffix(SIDECAR) + SUFFIX)
            return BackupRecord(
                backup_id, sidecar["kind"], "ok", datetime.fromisoformat(sidecar["created"]),
                datetime.fromisoformat(sidecar["finished"]), sidecar["file"]["bytes"], sidecar["file"]["sha256"],
                data, None, None if data.exists() else f"{data.name} is missing", sidecar.get("host", ""), sidecar,
                "file")
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring %s: not a backup manifest", path)
            return None

    def find(self, reference: str | None) -> BackupRecord:
        """A backup by id (or by the path of its .sgbk file); None: the newest successful one."""
        if reference and reference.endswith(SUFFIX) and Path(reference).is_file():
            path = Path(reference)
            sidecar = path.with_name(path.name.removesuffix(SUFFIX) + SIDECAR)
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

    # -- reading a backup ------------------------------------------------------------------------------------
    def _read(self, record: BackupRecord, key: BackupKey, on_dump: Callable[[bytes], None] | None,
              on_file: Callable[[str], Callable[[bytes], None] | None] | None, progress: Progress | None
              ) -> dict[str, Any]:
        """Decrypt, authenticate and unpack the backup, handing the dump's bytes to ``on_dump`` and each file
        member to the writer ``on_file(name)`` returns; then check it is the backup the catalogue and sidecar
        describe. Returns its manifest."""
        if record.path is None or not record.path.is_file():
            raise BackupError(f"backup {record.id}: its file {record.path} is missing; copy it back into "
                              f"{self.directory}")
        name = record.path.name
        with open(record.path, "rb") as raw:
            source = _HashingSource(raw)
            sink: Callable[[bytes], None] | None = None
            manifest: dict[str, Any] = {}
            for event, value in read_archive(decrypt(source, key, name), name):  # type: ignore[arg-type]
                if event == "member":
                    is_dump = value["type"] == "pg_dump"
                    sink = on_dump if is_dump else (on_file(value["name"]) if on_file else None)
                elif event == "data":
                    if sink is not None:
                        sink(value)
                    if progress is not None:
                        progress(len(value))
                else:
                    manifest = value
        if manifest.get("id") != record.id:
            raise BackupCorrupt(f"{name} holds backup {manifest.get('id')}, not {record.id}: the wrong file was put "
                                "in its place; find the right file or restore another backup")
        expected = record.sha256 or (record.manifest or {}).get("file", {}).get("sha256")
        if expected and expected != source.digest.hexdigest():
            raise BackupCorrupt(f"{name} does not match the checksum recorded when it was made; restore from "
                                "another backup")
        sidecar = record.manifest or {}
        if sidecar and {k: v for k, v in sidecar.items() if k not in ("file", "finished")} != manifest:
            raise BackupCorrupt(f"the manifest beside {name} was changed: it does not match the one inside the "
                                "backup; the one inside is authentic")
        return manifest

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
                    conn.execute("UPDATE backups SET status = 'failed', error = %s WHERE id = %s",
                                 (_one_line(exc), record.id))
                raise

    def _verify(self, conn: psycopg.Connection, record: BackupRecord, progress: Progress | None) -> VerifyResult:
        began = time.monotonic()
        key = load_key(self.settings.key_file)
        database = self._require_database("verifying")
        tools = find_tools(server_major(conn), self.settings.pg_bin_dir)
        with scratch_database(database.url) as scratch:
            _, tables = self._restore_into(record, key, tools, scratch, clean=False, files_to=None,
                                           progress=progress)
        if record.source == "catalogue":
            conn.execute("UPDATE backups SET verified_at = now(), error = NULL WHERE id = %s", (record.id,))
            record = self._catalogue(conn, "id = %s", (record.id,))[0]
        seconds = time.monotonic() - began
        log.info("backup %s verified: %d tables match in %.1f s", record.id, len(tables), seconds)
        return VerifyResult(record, tables, seconds)

    def _restore_into(self, record: BackupRecord, key: BackupKey, tools: PgTools, url: str, *, clean: bool,
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
            target = _inside(files_to, name)
            temporary = target.with_name(f".{target.name}{PARTIAL}")
            target.parent.mkdir(parents=True, exist_ok=True)
            for file in opened:
                file.close()
            opened[:] = [open(temporary, "wb")]  # noqa: SIM115 - closed when the next member starts or at the end
            written.append((temporary, target))
            return opened[0].write  # type: ignore[return-value]

        opened: list[IO[bytes]] = []
        try:
            manifest = self._read(record, key, to_restore, to_file, progress)
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

    # -- restore ---------------------------------------------------------------------------------------------
    def restore(self, reference: str, target_url: str, *, force: bool = False, files_to: Path | None = None,
                progress: Progress | None = None) -> RestoreResult:
        """Restore into the database at ``target_url`` (and the files into ``files_to``). The whole backup is
        authenticated first, so a damaged one restores nothing; the database part is one transaction."""
        began = time.monotonic()
        record = self.find(reference)
        key = load_key(self.settings.key_file)
        shown = redact(redact_url(target_url))
        try:
            with psycopg.connect(target_url, connect_timeout=10) as conn:
                major = server_major(conn)
                present = user_relations(conn, ("r", "p", "v", "m", "S"))
        except psycopg.Error as exc:
            raise BackupError(f"cannot connect to the restore target {shown}: {_one_line(exc)}; create the "
                              "database first (createdb) or fix the URL") from None
        if present and not force:
            raise BackupError(f"the restore target {shown} is not empty ({len(present)} relations, e.g. "
                              f"{present[0]}); restore into an empty database, or add --force to replace what the "
                              "backup holds")
        tools = find_tools(major, self.settings.pg_bin_dir)
        self._read(record, key, None, None, None)  # authenticate everything before touching anything
        if files_to is not None and not force:
            manifest = record.manifest or {}
            clashes = [m["name"] for m in manifest.get("contents", [])
                       if m["type"] == "file" and _inside(files_to, m["name"]).exists()]
            if clashes:
                raise BackupError(f"{_inside(files_to, clashes[0])} already exists; choose an empty --files folder "
                                  "or add --force")
        manifest, tables = self._restore_into(record, key, tools, target_url, clean=force, files_to=files_to,
                                              progress=progress)
        files = [m["name"] for m in manifest["contents"] if m["type"] == "file"] if files_to is not None else []
        seconds = time.monotonic() - began
        log.info("backup %s restored into %s in %.1f s", record.id, shown, seconds)
        return RestoreResult(record, shown, tables, files, seconds)

    # -- prune -----------------------------------------------------------------------------------------------
    def prune(self, *, dry_run: bool = False) -> tuple[list[BackupRecord], list[BackupRecord]]:
        """(removed, kept): per kind the newest ``backup.keep`` successful backups stay, and so does the newest
        verified one whatever its age. Failed rows stay (they are the failure count); files they left go."""
        with self.locked() as conn:
            return self._prune(conn, dry_run=dry_run)

    def _prune(self, conn: psycopg.Connection, *, dry_run: bool) -> tuple[list[BackupRecord], list[BackupRecord]]:
        removed, kept = [], []
        for kind in KINDS:
            good = self._catalogue(conn, "kind = %s AND status = 'ok'", (kind,))
            keep = {record.id for record in good[:self.settings.keep]}
            verified = [record for record in good if record.verified_at is not None]
            if verified:
                keep.add(max(verified, key=lambda r: r.started).id)
            for record in good:
                (kept if record.id in keep else removed).append(record)
        if not dry_run:
            for record in removed:
                self._remove_files(record.id)
                conn.execute("DELETE FROM backups WHERE id = %s", (record.id,))
                log.info("pruned backup %s", record.id)
            for (backup_id,) in conn.execute("SELECT id FROM backups WHERE status = 'failed'").fetchall():
                self._remove_files(backup_id)
        return removed, kept


def _inside(folder: Path, name: str) -> Path:
    """``folder / name`` for a member name, refusing names that would leave the folder."""
    target = (folder / name).resolve()
    if not target.is_relative_to(folder.resolve()) or name.startswith("/"):
        raise BackupCorrupt(f"member name {name!r} would be written outside {folder}; refusing")
    return target
