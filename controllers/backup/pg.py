"""PostgreSQL's side of a backup: the right pg_dump/pg_restore, a snapshot with its row counts, scratch databases.

The dump is ``pg_dump --format=custom --compress=0`` (the archive compresses everything once) taken in a snapshot
exported by a REPEATABLE READ transaction that also counts the rows of every table, so the manifest's counts
are exactly what the dump holds. Passwords go to the tools through ``PGPASSWORD``, never on a command line.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from singularity_ops.controllers.backup.errors import BackupError
from singularity_ops.logs import redact
from singularity_ops.store import redact_url

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
SCRATCH_PREFIX = "singularity_verify_"
_USER_RELATIONS = """
SELECT format('%%I.%%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = ANY(%s) AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
ORDER BY 1
"""


@dataclass(frozen=True)
class PgTools:
    pg_dump: Path
    pg_restore: Path
    version: str  # e.g. "16.2"


def _tool_version(path: Path) -> tuple[int, str] | None:
    try:
        output = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(output)
    if not match:
        return None
    return int(match.group(1)), f"{match.group(1)}.{match.group(2) or 0}"


def _pgserver_bin() -> Path | None:
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:  # pragma: no cover - pgserver is a dependency
        return None
    return Path(POSTGRES_BIN_PATH)


def find_tools(server_major: int, configured: Path | None = None) -> PgTools:
    """pg_dump and pg_restore of the server's major version: from ``configured`` only when set, else the first
    match among PATH, Debian's /usr/lib/postgresql/N/bin and the embedded server's own (pgserver)."""
    if configured is not None:
        folders = [configured]
    else:
        on_path = shutil.which("pg_dump")
        folders = [Path(on_path).parent] if on_path else []
        folders += [Path(f"/usr/lib/postgresql/{server_major}/bin")]
        folders += [folder for folder in [_pgserver_bin()] if folder is not None]
    seen = []
    for folder in folders:
        dump, restore = folder / "pg_dump", folder / "pg_restore"
        if not (dump.exists() and restore.exists()):
            continue
        found = _tool_version(dump)
        if found is None:
            continue
        major, version = found
        if major == server_major:
            return PgTools(dump, restore, version)
        seen.append(f"{version} at {dump}")
    found_text = f" (found {', '.join(seen)})" if seen else ""
    if configured is not None:
        raise BackupError(f"no pg_dump/pg_restore for PostgreSQL {server_major} in backup.pg_bin_dir {configured}"
                          f"{found_text}; point it at a PostgreSQL {server_major} bin folder")
    raise BackupError(f"no pg_dump for PostgreSQL {server_major}, the history server's version{found_text}; install "
                      f"postgresql-client-{server_major} or set backup.pg_bin_dir")


def server_major(conn: psycopg.Connection) -> int:
    return conn.info.server_version // 10000


def server_version(conn: psycopg.Connection) -> str:
    number = conn.info.server_version
    return f"{number // 10000}.{number % 10000}"


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """(conninfo without the password, environment carrying it) for a libpq command-line tool."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {**os.environ}
    if password:
        env["PGPASSWORD"] = str(password)
    return psycopg.conninfo.make_conninfo(**params), env


def with_database(url: str, name: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo(**params)


def user_relations(conn: psycopg.Connection, kinds: tuple[str, ...] = ("r",)) -> list[str]:
    """Schema-qualified names of the relations outside the system schemas (plain tables by default)."""
    return [row[0] for row in conn.execute(_USER_RELATIONS, (list(kinds),)).fetchall()]


def row_counts(conn: psycopg.Connection, skip: frozenset[str] = frozenset()) -> dict[str, int]:
    counts = {}
    for name in user_relations(conn):
        if name in skip:
            continue
        schema, table = _split(name)
        query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        counts[name] = conn.execute(query).fetchone()[0]
    return counts


def _split(qualified: str) -> tuple[str, str]:
    """Undo format('%I.%I'): identifiers may be quoted and contain dots."""
    schema, table = (part[1:-1].replace('""', '"') if part.startswith('"') else part
                     for part in re.findall(r'"(?:[^"]|"")*"|[^.]+', qualified))
    return schema, table


class StderrTail:
    """Reads a child's stderr in a thread, keeping its last lines for the error message."""

    def __init__(self, stream: object) -> None:
        self.lines: deque[str] = deque(maxlen=20)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            text = line.decode(errors="replace").strip()
            if text:
                self.lines.append(text)

    def last(self) -> str:
        self._thread.join(5)
        return redact(redact_url(self.lines[-1])) if self.lines else "no message"


@contextlib.contextmanager
def exported_snapshot(url: str, skip: frozenset[str]) -> Iterator[tuple[str, dict[str, int]]]:
    """(snapshot id, row count per table) from one REPEATABLE READ transaction kept open while the caller dumps."""
    with psycopg.connect(url) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        counts = row_counts(conn, skip)
        yield snapshot, counts
        conn.rollback()


def start_dump(tools: PgTools, url: str, snapshot: str, exclude_data: list[str]) -> tuple[subprocess.Popen, StderrTail]:
    conninfo, env = libpq_target(url)
    command = [str(tools.pg_dump), "--format=custom", "--compress=0", "--no-password", f"--snapshot={snapshot}",
               *(f"--exclude-table-data={name}" for name in exclude_data), f"--dbname={conninfo}"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env)
    return process, StderrTail(process.stderr)


def start_restore(tools: PgTools, url: str, *, clean: bool) -> tuple[subprocess.Popen, StderrTail]:
    """pg_restore reading the dump from its stdin, in one transaction: an error or a kill leaves the target as
    it was. Owners and grants are not restored (the roles may not exist where it is restored)."""
    conninfo, env = libpq_target(url)
    command = [str(tools.pg_restore), "--format=custom", "--exit-on-error", "--single-transaction", "--no-owner",
               "--no-privileges", "--no-password", f"--dbname={conninfo}"]
    if clean:
        command += ["--clean", "--if-exists"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=env)
    return process, StderrTail(process.stderr)


def stop(process: subprocess.Popen) -> None:
    """End a child that is no longer wanted, and reap it."""
    if process.poll() is None:
        process.kill()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    process.wait()


@contextlib.contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """A new empty database on the server of ``url``, dropped on the way out whatever happened."""
    name = f"{SCRATCH_PREFIX}{secrets.token_hex(6)}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise BackupError(f"cannot create a scratch database to verify into on {redact_url(url)}: "
                          f"{str(exc).strip().splitlines()[0]}; the history database's role needs CREATEDB") from None
    try:
        yield with_database(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
