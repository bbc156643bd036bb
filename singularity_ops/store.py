"""The PostgreSQL history store: an external server from ``SINGULARITY_DATABASE_URL`` or the embedded one.

The embedded server is a real PostgreSQL from the ``pgserver`` wheel, kept under ``SINGULARITY_HOME/postgres``:
created on first use, reused after, and stopped when the last process using it exits; `run` and `exporter` start
it again should it die (embedded_postgres.py).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from singularity_ops.config import DatabaseConfig
from singularity_ops.errors import DatabaseError

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)
T = TypeVar("T")


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for errors and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def start_embedded(home: Path) -> str:
    """Start (or attach to) the embedded PostgreSQL under ``home`` and return a URL to its database; what a killed
    process left behind is cleared first (embedded_postgres.py)."""
    from singularity_ops.embedded_postgres import start

    return start(home)


def check_connection(url: str, timeout: float) -> None:
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(
            f"cannot connect to PostgreSQL at {redact_url(url)}: {reason}; check SINGULARITY_DATABASE_URL "
            "(or unset it to use the embedded server)"
        ) from None


@dataclass
class Database:
    """Where the history lives; connections come from one pool, opened on first use."""

    url: str
    config: DatabaseConfig = field(default_factory=DatabaseConfig)
    embedded: bool = False
    _pool: ConnectionPool | None = field(default=None, init=False, repr=False)

    def __repr__(self) -> str:
        return f"Database(url={redact_url(self.url)!r}, embedded={self.embedded})"

    @classmethod
    def open(cls, config: DatabaseConfig, home: Path) -> Database:
        if config.url is not None:
            url = config.url.get_secret_value()
            check_connection(url, config.connect_timeout_seconds)
            return cls(url, config)
        return cls(start_embedded(home), config, embedded=True)

    @classmethod
    def open_migrated(cls, config: DatabaseConfig, home: Path) -> Database:
        """The one way every part opens the history store: reach it (starting the embedded server if that is the
        one), then apply any pending migration."""
        from singularity_ops.migrate import migrate

        database = cls.open(config, home)
        with database.connect() as conn:
            migrate(conn)
        return database

    @property
    def pool(self) -> ConnectionPool:
        """Pooled connections for callers that need several at once; imported on first use, since the exporter's
        own writers each keep one connection and the pool's modules would cost it RSS for nothing."""
        if self._pool is None:
            from psycopg_pool import ConnectionPool

            self._pool = ConnectionPool(
                self.url,
                min_size=self.config.pool_min_size,
                max_size=self.config.pool_max_size,
                kwargs={"connect_timeout": max(1, round(self.config.connect_timeout_seconds))},
                timeout=self.config.connect_timeout_seconds,
                open=True,
                name="singularity",
            )
        return self._pool

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        """A connection outside the pool, for one-off work such as migrations."""
        try:
            return psycopg.connect(self.url, connect_timeout=max(1, round(self.config.connect_timeout_seconds)),
                                   **kwargs)
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot connect to PostgreSQL at {redact_url(self.url)}: {exc}") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


class DatabaseOnDemand:
    """The history database, opened and migrated on the first success and shared by its users, each of which retries
    in its own time while it is unreachable: a process starts, and serves, while the database is away."""

    def __init__(self, config: DatabaseConfig, home: Path, database: Database | None = None) -> None:
        self.config, self.home = config, home
        self._database = database
        self._lock = threading.Lock()

    def get(self) -> Database:
        with self._lock:
            if self._database is None:
                self._database = Database.open_migrated(self.config, self.home)
            return self._database

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        return self.get().connect(**kwargs)

    def close(self) -> None:
        with self._lock:
            if self._database is not None:
                self._database.close()


class KeptConnection:
    """One autocommit connection kept between uses and shared by its users (the collectors that read the database
    at scrape time): used by one at a time, dropped after an error and reopened on the next use."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = self._connect()
                    self._conn.autocommit = True
                return work(self._conn)
            except psycopg.Error:
                self._drop()
                raise

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def kept(connection: KeptConnection | Callable[[], psycopg.Connection]) -> KeptConnection:
    return connection if isinstance(connection, KeptConnection) else KeptConnection(connection)
