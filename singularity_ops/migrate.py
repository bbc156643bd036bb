"""Numbered plain-SQL migrations (``migrations/NNNN_name.sql``), applied in order, once each.

Each file runs in its own transaction together with its row in ``schema_migrations`` (name, checksum,
applied_at), so a failing file leaves nothing half-applied. A session-level advisory lock makes
concurrent starters (``run`` and a separate controller, say) apply each file exactly once.
A file changed after it was applied is refused: history must be amended by a new migration.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

from singularity_ops.errors import MigrationError

log = logging.getLogger(__name__)

NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
LOCK_KEY = 0x51_4E_47_4C  # "SNGL": one advisory lock id for every migrator
_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name        text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path | None = None) -> list[Migration]:
    if directory is None:
        files = [(f.name, f.read_text(encoding="utf-8")) for f in resources.files("singularity_ops.migrations")
                 .iterdir() if f.name.endswith(".sql")]
    else:
        files = [(p.name, p.read_text(encoding="utf-8")) for p in directory.glob("*.sql")]
    migrations = []
    numbers: dict[str, str] = {}
    for name, sql in sorted(files):
        match = NAME.match(name)
        if not match:
            raise MigrationError(f"migration file {name!r} is not named NNNN_lowercase_name.sql; rename it")
        if match.group(1) in numbers:
            raise MigrationError(f"migrations {numbers[match.group(1)]} and {name} share a number; renumber one")
        numbers[match.group(1)] = name
        migrations.append(Migration(name, sql))
    return migrations


def migrate(conn: psycopg.Connection, directory: Path | None = None) -> list[str]:
    """Apply pending migrations; return the names applied now (empty when up to date)."""
    migrations = load_migrations(directory)
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.execute(_TABLE)
        applied = dict(conn.execute("SELECT name, checksum FROM schema_migrations").fetchall())
        known = {m.name for m in migrations}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise MigrationError(
                f"the database has migrations this version does not know ({', '.join(unknown)}); "
                "upgrade singularity-ops or point SINGULARITY_DATABASE_URL elsewhere"
            )
        done = []
        for migration in migrations:
            if migration.name in applied:
                if applied[migration.name] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} was changed after it was applied (checksum "
                        f"{applied[migration.name][:12]} in the database, {migration.checksum[:12]} on disk); "
                        "restore the file and put the change in a new migration"
                    )
                continue
            try:
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                        (migration.name, migration.checksum),
                    )
            except psycopg.Error as exc:
                raise MigrationError(f"migration {migration.name} failed and was rolled back: {exc}") from None
            log.info("applied migration %s", migration.name)
            done.append(migration.name)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
